//! `tls.ca_file`: roots trusted by outbound connections (LLM providers,
//! webhooks, ClickHouse) on top of the usual ones, for a private CA or a
//! TLS-inspecting proxy.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use super::files::{TlsError, ca_bundle, root_store};

/// Extra roots for outbound TLS; empty when `tls.ca_file` is unset.
#[derive(Debug, Clone, Default)]
pub struct OutboundRoots(Arc<[CertificateDer<'static>]>);

impl OutboundRoots {
    /// The CA certificates of `path` (`tls.ca_file`).
    pub fn load(path: &Path) -> Result<Self, TlsError> {
        let certs = ca_bundle("tls.ca_file", path)?;
        root_store("tls.ca_file", path, &certs)?;
        Ok(Self(certs.into()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The certificates, DER.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.0
    }

    /// The roots as reqwest certificates, to merge with a client's own.
    pub fn reqwest_certificates(&self) -> Vec<reqwest::Certificate> {
        self.0
            .iter()
            .filter_map(|c| reqwest::Certificate::from_der(c).ok())
            .collect()
    }

    /// A rustls client configuration (ring provider, safe protocol
    /// versions) trusting the Mozilla roots and these. It offers no ALPN:
    /// connectors (hyper-rustls) set the protocols they speak.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // Checked when loaded; a certificate rustls would not take is skipped.
        let _ = roots.add_parsable_certificates(self.0.iter().cloned());
        Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
    }
}
