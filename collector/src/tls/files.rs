//! Reading the PEM files of `[tls]`: a certificate chain, its private key,
//! CA bundles. Every error names the config field and the file, so that a
//! wrong file stops start-up with one line that says which.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A `[tls]` file that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct TlsError {
    /// The config field naming the file (`tls.cert_file`...).
    pub field: &'static str,
    /// What is wrong, naming the file.
    pub message: String,
}

impl TlsError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// The bytes of `path`.
pub(crate) fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path)
        .map_err(|e| TlsError::new(field, format!("cannot read `{}`: {e}", path.display())))
}

/// Every certificate in `pem` (read from `path`); at least one.
pub(crate) fn certificates(
    field: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError::new(
                field,
                format!("`{}` is not a PEM certificate file: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(TlsError::new(
            field,
            format!(
                "`{}` holds no certificate (expected -----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// The first private key in `pem` (PKCS#8, RSA or SEC1).
pub(crate) fn private_key(
    field: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        TlsError::new(
            field,
            format!(
                "`{}` holds no usable private key (PKCS#8, RSA or SEC1 PEM): {e}",
                path.display()
            ),
        )
    })
}

/// The certificate chain of `cert_pem` with the key of `key_pem`, checked
/// to belong together.
pub(crate) fn certified_key(
    (cert_path, cert_pem): (&Path, &[u8]),
    (key_path, key_pem): (&Path, &[u8]),
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certificates("tls.cert_file", cert_path, cert_pem)?;
    let key = private_key("tls.key_file", key_path, key_pem)?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::new(
            "tls.key_file",
            format!(
                "the key in `{}` does not match the certificate in `{}`",
                key_path.display(),
                cert_path.display()
            ),
        ),
        other => TlsError::new(
            "tls.key_file",
            format!(
                "the key in `{}` cannot be used with the certificate in `{}`: {other}",
                key_path.display(),
                cert_path.display()
            ),
        ),
    })?;
    Ok(Arc::new(certified))
}

/// The CA certificates of the bundle at `path`, for `field`.
pub(crate) fn ca_bundle(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(field, path)?;
    certificates(field, path, &pem)
}

/// `certs` as a root store; a certificate that is no CA fails.
pub(crate) fn root_store(
    field: &'static str,
    path: &Path,
    certs: &[CertificateDer<'static>],
) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert.clone()).map_err(|e| {
            TlsError::new(
                field,
                format!(
                    "`{}` holds a certificate that cannot be a root: {e}",
                    path.display()
                ),
            )
        })?;
    }
    Ok(roots)
}
