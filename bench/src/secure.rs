//! Keys and TLS for the `tollgate-secure` target.
//!
//! Each run issues a fresh CA and a server certificate for `127.0.0.1` and
//! `localhost` (rcgen, ECDSA P-256), written into the run's directory for
//! `[tls]`; the config names one `ingest` key and a metrics token
//! (`[auth] mode = "keys"`). The client side trusts only that CA and sends
//! the bearer token: the load generator over gRPC (a rustls connector
//! offering h2, as an OTLP exporter does) and HTTP, the poller on `/metrics`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{self, Poll};

use anyhow::Context;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};

/// The `ingest` key the load generator sends (at least 24 characters, as
/// the collector requires).
pub const INGEST_KEY: &str = "tg-bench-key-0123456789abcdef0123456789";
/// `auth.metrics_token`: a scoped ingest key may not read `/metrics`.
pub const METRICS_TOKEN: &str = "tg-bench-metrics-0123456789abcdef012345";
/// The name of the key in `[[auth.keys]]`.
pub const KEY_NAME: &str = "bench";

/// A run's certificates: the server's files and the CA that signed them.
#[derive(Debug, Clone, PartialEq)]
pub struct Credentials {
    /// The server certificate (PEM), for `tls.cert_file`.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8 PEM), for `tls.key_file`.
    pub key_file: PathBuf,
    /// The CA certificate, the only root clients trust.
    pub ca: CertificateDer<'static>,
}

impl Credentials {
    /// Issues a CA and a server certificate; writes `ca.crt`, `server.crt`
    /// and `server.key` into `dir` (created if missing).
    pub fn issue(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tollgate bench CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "tollgate bench server");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;

        let credentials = Self {
            cert_file: dir.join("server.crt"),
            key_file: dir.join("server.key"),
            ca: ca_cert.der().clone(),
        };
        std::fs::write(dir.join("ca.crt"), ca_cert.pem())?;
        std::fs::write(&credentials.cert_file, cert.pem())?;
        std::fs::write(&credentials.key_file, key.serialize_pem())?;
        Ok(credentials)
    }

    /// What the load generator needs: the CA and the ingest key.
    pub fn ingest(&self) -> ClientAuth {
        ClientAuth {
            ca: self.ca.clone(),
            bearer: INGEST_KEY,
        }
    }

    /// What the `/metrics` poller needs: the CA and the metrics token.
    pub fn metrics(&self) -> ClientAuth {
        ClientAuth {
            ca: self.ca.clone(),
            bearer: METRICS_TOKEN,
        }
    }
}

/// How a client reaches a server with keys and TLS on.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientAuth {
    /// The only root trusted.
    pub ca: CertificateDer<'static>,
    /// Sent as `authorization: Bearer <bearer>`.
    pub bearer: &'static str,
}

impl ClientAuth {
    fn header(&self) -> String {
        format!("Bearer {}", self.bearer)
    }

    /// The `authorization` gRPC metadata, made once per exporter.
    pub fn grpc_metadata(&self) -> anyhow::Result<AsciiMetadataValue> {
        MetadataValue::try_from(self.header()).context("the bearer token is not valid metadata")
    }

    /// `builder` trusting only the CA and sending the bearer token on every
    /// request.
    pub fn https_client(&self, builder: reqwest::ClientBuilder) -> anyhow::Result<reqwest::Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut value = reqwest::header::HeaderValue::try_from(self.header())?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
        Ok(builder
            .tls_certs_only([reqwest::Certificate::from_der(&self.ca)?])
            .default_headers(headers)
            .build()?)
    }

    /// rustls (ring) trusting only the CA, offering `alpn`.
    fn rustls_config(&self, alpn: &[u8]) -> anyhow::Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone())?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    }

    /// The connector of the load generator's gRPC channels.
    pub fn grpc_connector(&self) -> anyhow::Result<GrpcTlsConnector> {
        Ok(GrpcTlsConnector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(self.rustls_config(b"h2")?)),
        })
    }
}

/// A tonic connector (`Endpoint::connect_with_connector`): TCP without
/// Nagle, then TLS offering h2 and verifying the URI's host (an IP address
/// or `localhost`).
#[derive(Clone)]
pub struct GrpcTlsConnector {
    tls: tokio_rustls::TlsConnector,
}

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower::Service<Uri> for GrpcTlsConnector {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TlsIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut task::Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other(format!("`{uri}` names no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri
                .port_u16()
                .ok_or_else(|| std::io::Error::other(format!("`{uri}` names no port")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host).map_err(std::io::Error::other)?;
            Ok(TokioIo::new(tls.connect(name, tcp).await?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::{Service, ServiceExt};

    #[test]
    fn secrets_are_long_enough_for_the_collector() {
        assert!(INGEST_KEY.len() >= 24 && METRICS_TOKEN.len() >= 24);
        assert_ne!(INGEST_KEY, METRICS_TOKEN);
    }

    /// A TLS server on the issued files that answers `ok` and reports the
    /// protocol negotiated, or the handshake error.
    async fn serve_once(
        credentials: &Credentials,
    ) -> (
        std::net::SocketAddr,
        tokio::task::JoinHandle<Result<Option<Vec<u8>>, std::io::Error>>,
    ) {
        let chain = vec![CertificateDer::from_pem_file(&credentials.cert_file).unwrap()];
        let key = PrivateKeyDer::from_pem_file(&credentials.key_file).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            tls.write_all(b"ok").await?;
            tls.shutdown().await?;
            Ok(alpn)
        });
        (addr, served)
    }

    async fn connect(auth: &ClientAuth, addr: std::net::SocketAddr) -> std::io::Result<TlsIo> {
        let mut connector = auth.grpc_connector().unwrap();
        let uri: Uri = format!("https://{addr}").parse().unwrap();
        connector.ready().await?.call(uri).await
    }

    /// The issued files serve TLS that the connector verifies (by IP
    /// address, as the load generator connects) and negotiates h2 over; a
    /// CA of another run is not trusted.
    #[tokio::test]
    async fn connector_trusts_the_issued_certificate_only() {
        let dir = tempfile::tempdir().unwrap();
        let credentials = Credentials::issue(dir.path()).unwrap();
        assert!(dir.path().join("ca.crt").is_file());

        let (addr, served) = serve_once(&credentials).await;
        let auth = credentials.ingest();
        let mut stream = connect(&auth, addr).await.unwrap().into_inner();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"ok");
        assert_eq!(served.await.unwrap().unwrap().as_deref(), Some(&b"h2"[..]));
        assert_eq!(
            auth.grpc_metadata().unwrap().to_str().unwrap(),
            format!("Bearer {INGEST_KEY}")
        );

        let other = Credentials::issue(&dir.path().join("other")).unwrap();
        let (addr, served) = serve_once(&credentials).await;
        let stranger = ClientAuth {
            ca: other.ca,
            bearer: INGEST_KEY,
        };
        assert!(connect(&stranger, addr).await.is_err());
        assert!(served.await.unwrap().is_err());
    }
}
