//! TLS for upstream connections: rustls with the ring provider and the
//! Mozilla roots (webpki-roots) plus any extra roots from the config,
//! built once and shared by every client.

use std::sync::Arc;

use crate::error::GatewayError;

pub(crate) fn client_tls(
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<rustls::ClientConfig, GatewayError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for root in extra_roots {
        roots.add(root.clone()).map_err(|e| GatewayError::Client {
            provider: "*".to_owned(),
            message: format!("an extra root certificate cannot be used: {e}"),
        })?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| GatewayError::Client {
        provider: "*".to_owned(),
        message: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    // reqwest uses a preconfigured config as it is: offer HTTP/2 ourselves.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
