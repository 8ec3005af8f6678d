//! The listeners' side of TLS: one certificate shared by every listener,
//! swapped when its files change, and one `ServerConfig` per listener.
//!
//! The certificate is served through a `ResolvesServerCert` that hands out
//! whatever is current, so a renewal (cert-manager, certbot, a mounted
//! secret) reaches new connections without a restart; connections already
//! open keep the certificate they were made with. The files are read every
//! `tls.reload_interval` and compared with what was read last: a renewal
//! that cannot be used (half written, key and certificate not matching)
//! keeps the old certificate and is warned about once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use super::files::{TlsError, ca_bundle, certified_key, read, root_store};
use super::outbound::OutboundRoots;

/// `[tls]`, validated.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// TLS on every listener; `None`: the listeners speak plaintext.
    pub server: Option<ServerTlsSettings>,
    /// Extra roots of outbound connections (`tls.ca_file`).
    pub outbound: OutboundRoots,
}

/// The listeners' certificate, key and client CA, read and checked.
#[derive(Clone)]
pub struct ServerTlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Client certificates signed by this CA are required on the OTLP receivers.
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are read again.
    pub reload_interval: Duration,
    /// What was read at start-up.
    loaded: Loaded,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for ServerTlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ServerTlsSettings")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("client_ca_file", &self.client_ca_file)
            .field("reload_interval", &self.reload_interval)
            .finish_non_exhaustive()
    }
}

/// A certificate and key as read from their files.
#[derive(Clone)]
struct Loaded {
    cert_pem: Arc<[u8]>,
    key_pem: Arc<[u8]>,
    certified: Arc<CertifiedKey>,
}

impl ServerTlsSettings {
    /// Reads and checks the files: the chain, a key that matches it, and
    /// the client CA bundle if any.
    pub fn load(
        cert_file: PathBuf,
        key_file: PathBuf,
        client_ca_file: Option<PathBuf>,
        reload_interval: Duration,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = load_pair(&cert_file, &key_file, &provider)?;
        let client_verifier = match &client_ca_file {
            Some(path) => {
                let field = "tls.client_ca_file";
                let roots = root_store(field, path, &ca_bundle(field, path)?)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| {
                    TlsError::new(
                        field,
                        format!("`{}` cannot verify clients: {e}", path.display()),
                    )
                })?;
                Some(verifier)
            }
            None => None,
        };
        Ok(Self {
            cert_file,
            key_file,
            client_ca_file,
            reload_interval,
            loaded,
            client_verifier,
            provider,
        })
    }
}

fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let cert_pem = read("tls.cert_file", cert)?;
    let key_pem = read("tls.key_file", key)?;
    let certified = certified_key((cert, &cert_pem), (key, &key_pem), provider)?;
    Ok(Loaded {
        cert_pem: cert_pem.into(),
        key_pem: key_pem.into(),
        certified,
    })
}

/// What a listener is for, which decides whether clients must show a
/// certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerRole {
    /// An OTLP receiver: client certificates required when
    /// `tls.client_ca_file` is set.
    Receiver,
    /// The API or the gateway: no client certificate asked.
    Service,
}

/// The certificate every listener serves, kept current.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl CurrentCert {
    fn get(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn set(&self, certified: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = certified;
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// TLS of the running listeners.
#[derive(Debug)]
pub struct ServerTls {
    settings: ServerTlsSettings,
    current: Arc<CurrentCert>,
    /// What the watcher read last (used or not), and the last problem it
    /// warned about.
    seen: std::sync::Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    cert_pem: Arc<[u8]>,
    key_pem: Arc<[u8]>,
    problem: Option<String>,
}

/// What one look at the files found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files are what was read last.
    Unchanged,
    /// A new certificate is served from now on.
    Renewed,
    /// The files changed but cannot be used: the old certificate stays.
    Refused(String),
}

impl ServerTls {
    pub fn new(settings: &ServerTlsSettings) -> Arc<Self> {
        let loaded = &settings.loaded;
        Arc::new(Self {
            settings: settings.clone(),
            current: Arc::new(CurrentCert(RwLock::new(Arc::clone(&loaded.certified)))),
            seen: std::sync::Mutex::new(Seen {
                cert_pem: Arc::clone(&loaded.cert_pem),
                key_pem: Arc::clone(&loaded.key_pem),
                problem: None,
            }),
        })
    }

    /// The configuration of one listener: TLS 1.3 and 1.2, the current
    /// certificate, ALPN `h2` (and `http/1.1` unless `http2_only`), client
    /// certificates as `role` wants.
    pub fn server_config(
        &self,
        role: ListenerRole,
        http2_only: bool,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(Arc::clone(&self.settings.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::new("tls", e.to_string()))?;
        let builder = match (role, &self.settings.client_verifier) {
            (ListenerRole::Receiver, Some(verifier)) => {
                builder.with_client_cert_verifier(Arc::clone(verifier))
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config =
            builder.with_cert_resolver(Arc::clone(&self.current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = if http2_only {
            vec![b"h2".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };
        Ok(Arc::new(config))
    }

    /// Reads the files again every `reload_interval` until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let this = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || this.reload()).await;
        }
    }

    /// Reads the files; serves their certificate from now on if they
    /// changed and can be used. Logs a renewal, and a problem once.
    pub fn reload(&self) -> Reload {
        let s = &self.settings;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let read_both = read("tls.cert_file", &s.cert_file)
            .and_then(|c| read("tls.key_file", &s.key_file).map(|k| (c, k)));
        let (cert_pem, key_pem) = match read_both {
            Ok(both) => both,
            Err(e) => {
                // Whatever comes back is read as new.
                seen.cert_pem = Arc::from([]);
                return refuse(&mut seen, e.to_string());
            }
        };
        if *seen.cert_pem == *cert_pem && *seen.key_pem == *key_pem {
            return match &seen.problem {
                Some(p) => Reload::Refused(p.clone()),
                None => Reload::Unchanged,
            };
        }
        seen.cert_pem = cert_pem.clone().into();
        seen.key_pem = key_pem.clone().into();
        match certified_key(
            (&s.cert_file, &cert_pem),
            (&s.key_file, &key_pem),
            &s.provider,
        ) {
            Ok(certified) => {
                self.current.set(certified);
                seen.problem = None;
                tracing::info!(
                    cert_file = %s.cert_file.display(),
                    "TLS certificate renewed: new connections are served the new one"
                );
                Reload::Renewed
            }
            Err(e) => refuse(&mut seen, e.to_string()),
        }
    }

    /// The certificate chain served now (end entity first).
    pub fn current_chain(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        self.current.get().cert.clone()
    }
}

/// Keeps the old certificate; warns unless this problem was warned about.
fn refuse(seen: &mut Seen, problem: String) -> Reload {
    if seen.problem.as_deref() != Some(problem.as_str()) {
        tracing::warn!(
            problem = %problem,
            "the TLS files changed but cannot be used; still serving the previous certificate"
        );
        seen.problem = Some(problem.clone());
    }
    Reload::Refused(problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.path(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    /// A self-signed certificate for `name`: (cert PEM, key PEM).
    fn self_signed(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn load(f: &Files, ca: Option<PathBuf>) -> Result<ServerTlsSettings, TlsError> {
        ServerTlsSettings::load(
            f.path("tls.crt"),
            f.path("tls.key"),
            ca,
            Duration::from_secs(5),
        )
    }

    #[test]
    fn a_key_that_does_not_match_names_both_files() {
        let f = Files::new();
        let (cert, _) = self_signed("a.test");
        let (_, other_key) = self_signed("b.test");
        f.write("tls.crt", &cert);
        f.write("tls.key", &other_key);
        let e = load(&f, None).unwrap_err().to_string();
        assert!(e.starts_with("`tls.key_file`: the key in"), "{e}");
        assert!(e.contains("does not match the certificate"), "{e}");
        assert!(e.contains("tls.crt"), "{e}");
    }

    #[test]
    fn missing_and_malformed_files_name_their_field() {
        let f = Files::new();
        let e = load(&f, None).unwrap_err().to_string();
        assert!(e.starts_with("`tls.cert_file`: cannot read"), "{e}");
        let (cert, key) = self_signed("a.test");
        f.write("tls.crt", &cert);
        f.write("tls.key", "not a key");
        let e = load(&f, None).unwrap_err().to_string();
        assert!(e.starts_with("`tls.key_file`:"), "{e}");
        f.write("tls.key", &key);
        f.write("tls.crt", &key);
        let e = load(&f, None).unwrap_err().to_string();
        assert!(e.starts_with("`tls.cert_file`:"), "{e}");
        f.write("tls.crt", &cert);
        let e = load(&f, Some(f.path("ca.crt"))).unwrap_err().to_string();
        assert!(e.starts_with("`tls.client_ca_file`: cannot read"), "{e}");
        assert!(load(&f, None).is_ok());
    }

    #[test]
    fn a_renewal_is_served_and_a_broken_one_keeps_the_old_certificate() {
        let f = Files::new();
        let (cert, key) = self_signed("old.test");
        f.write("tls.crt", &cert);
        f.write("tls.key", &key);
        let settings = load(&f, None).unwrap();
        let tls = ServerTls::new(&settings);
        let old = tls.current_chain();
        assert_eq!(tls.reload(), Reload::Unchanged);

        // Half a renewal: the new certificate, the old key.
        let (new_cert, new_key) = self_signed("new.test");
        f.write("tls.crt", &new_cert);
        assert!(matches!(tls.reload(), Reload::Refused(p) if p.contains("does not match")));
        assert_eq!(tls.current_chain(), old);
        // Looked at again, it is still refused (and not warned about again).
        assert!(matches!(tls.reload(), Reload::Refused(_)));

        f.write("tls.key", &new_key);
        assert_eq!(tls.reload(), Reload::Renewed);
        let new = tls.current_chain();
        assert_ne!(new, old);
        assert_eq!(tls.reload(), Reload::Unchanged);

        std::fs::remove_file(f.path("tls.key")).unwrap();
        assert!(matches!(tls.reload(), Reload::Refused(p) if p.contains("cannot read")));
        assert_eq!(tls.current_chain(), new);
    }
}
