//! Kafka over TLS, end to end: the real `tollgate` binary and the real
//! broker (tansu), with a certificate authority made by the test.
//!
//! tansu 0.6 takes `--cert`/`--key` but still serves plaintext, so the test
//! puts a TLS front (rustls) before it and has the broker advertise the
//! front's port: every connection of the collector, to bootstrap and to
//! partition leaders alike, goes through TLS.
//!
//! - calls are stored through the TLS front, which requires a client
//!   certificate (mutual TLS); the key password comes from the environment
//!   and is never printed;
//! - a broker certificate from a CA the collector does not trust stops
//!   start-up, naming the failed verification; nothing is received;
//! - a TLS client against the broker's plaintext port stops start-up,
//!   naming the TLS handshake; nothing is received.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use support::{Collector, KafkaBroker};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// `ssl.key.password`'s value, from the environment: it must never appear
/// in the collector's output.
const KEY_PASSWORD: &str = "key-password-canary-7f3a";

/// A CA, a broker certificate for 127.0.0.1 and a client certificate it
/// signed, as PEM files; and the front's TLS config.
struct Pki {
    dir: tempfile::TempDir,
    server: Arc<rustls::ServerConfig>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, name);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();

        let leaf = |names: &[&str], usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                    .unwrap();
            params.distinguished_name.push(DnType::CommonName, names[0]);
            params.extended_key_usages = vec![usage];
            (params.signed_by(&key, &ca).unwrap(), key)
        };
        let (broker, broker_key) = leaf(&["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        let (client, client_key) = leaf(&["tollgate"], ExtendedKeyUsagePurpose::ClientAuth);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("client.pem"), client.pem()).unwrap();
        std::fs::write(
            dir.path().join("client-key.pem"),
            client_key.serialize_pem(),
        )
        .unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let clients =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(clients)
            .with_single_cert(
                vec![broker.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(broker_key.serialize_der())),
            )
            .unwrap();
        Pki {
            dir,
            server: Arc::new(server),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Terminates TLS on `listener` and forwards each connection in plaintext
/// to the broker on `upstream`; counts the completed handshakes.
fn tls_front(
    listener: TcpListener,
    server: Arc<rustls::ServerConfig>,
    upstream: u16,
) -> Arc<AtomicUsize> {
    let acceptor = TlsAcceptor::from(server);
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&handshakes);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let Ok(mut plain) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    handshakes
}

/// A `[kafka]` table (role `all`) on `port` with `options`.
fn kafka_toml(port: u16, topic: &str, options: &[(&str, String)]) -> String {
    let mut toml = format!(
        "[kafka]\nbrokers = \"127.0.0.1:{port}\"\ntopic = \"{topic}\"\npartitions = 2\n\
         [kafka.options]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n"
    );
    for (key, value) in options {
        toml.push_str(&format!("\"{key}\" = \"{value}\"\n"));
    }
    toml
}

fn tls_options(pki: &Pki) -> Vec<(&'static str, String)> {
    vec![
        ("security.protocol", "SSL".to_owned()),
        ("ssl.ca.location", pki.file("ca.pem").display().to_string()),
        (
            "ssl.certificate.location",
            pki.file("client.pem").display().to_string(),
        ),
        (
            "ssl.key.location",
            pki.file("client-key.pem").display().to_string(),
        ),
        // The key is not encrypted (OpenSSL then ignores the password); the
        // value only has to come from the environment and stay unprinted.
        ("ssl.key.password", "${KAFKA_KEY_PASSWORD}".to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_stored_through_a_tls_broker_with_a_client_certificate() {
    let test = "calls_are_stored_through_a_tls_broker_with_a_client_certificate";
    let pki = Pki::new("tollgate test CA");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap().port();
    let Some(broker) = KafkaBroker::start_advertising(test, Some(front)) else {
        return;
    };
    let handshakes = tls_front(listener, Arc::clone(&pki.server), broker.port());

    let collector = Collector::start_full(
        &kafka_toml(front, "tls-calls", &tls_options(&pki)),
        &[],
        &[("KAFKA_KEY_PASSWORD", KEY_PASSWORD)],
    );
    for id in 1..=20 {
        collector.send_tokens(id, "tls-project", 7).await;
    }
    let calls = collector.wait_calls(20).await;
    assert_eq!(calls.len(), 20);
    assert!(
        calls.iter().all(|c| c["project"] == "tls-project"),
        "{calls:?}"
    );
    // Admin client, producer, consumer and kill-switch sync each connected
    // through the front, with the client certificate.
    let handshakes = handshakes.load(Ordering::SeqCst);
    assert!(handshakes >= 4, "{handshakes} TLS handshakes");

    let stderr = collector.stderr();
    assert!(!stderr.contains(KEY_PASSWORD), "{stderr}");
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_an_untrusted_ca_stops_start_up() {
    let test = "a_broker_certificate_from_an_untrusted_ca_stops_start_up";
    let trusted = Pki::new("the CA the collector trusts");
    let other = Pki::new("another CA");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap().port();
    let Some(broker) = KafkaBroker::start_advertising(test, Some(front)) else {
        return;
    };
    // The broker shows a certificate of `other`; the collector trusts only
    // `trusted`.
    let handshakes = tls_front(listener, Arc::clone(&other.server), broker.port());

    let toml = kafka_toml(front, "tls-untrusted", &tls_options(&trusted));
    let failed = tokio::task::spawn_blocking(move || {
        Collector::start_expecting_exit(&toml, &[("KAFKA_KEY_PASSWORD", KEY_PASSWORD)])
    })
    .await
    .unwrap();
    assert_eq!(failed.code, Some(1), "{failed:?}");
    assert!(!failed.stdout.contains("tollgate listening"), "{failed:?}");
    let last = failed.stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("tollgate: kafka: cannot reach Kafka at ")
            && last.contains("SSL handshake failed")
            && last.contains("certificate verify failed"),
        "{last}"
    );
    assert!(!failed.stderr.contains(KEY_PASSWORD), "{failed:?}");
    assert_eq!(handshakes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_tls_client_on_the_plaintext_port_stops_start_up() {
    let test = "a_tls_client_on_the_plaintext_port_stops_start_up";
    let pki = Pki::new("tollgate test CA");
    let Some(broker) = KafkaBroker::start(test) else {
        return;
    };
    let mut options = tls_options(&pki);
    // tansu waits for the rest of what it reads as a request, so the
    // handshake fails by librdkafka's setup timeout (Kafka itself closes
    // the connection, and librdkafka names a plaintext listener).
    options.push(("socket.connection.setup.timeout.ms", "2000".to_owned()));
    let toml = kafka_toml(broker.port(), "tls-plaintext", &options);
    let failed = tokio::task::spawn_blocking(move || {
        Collector::start_expecting_exit(&toml, &[("KAFKA_KEY_PASSWORD", KEY_PASSWORD)])
    })
    .await
    .unwrap();
    assert_eq!(failed.code, Some(1), "{failed:?}");
    assert!(!failed.stdout.contains("tollgate listening"), "{failed:?}");
    let last = failed.stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "tollgate: kafka: cannot reach Kafka at {} within 15s: ssl://",
            broker.brokers()
        )) && last.contains("SSL_HANDSHAKE"),
        "{last}"
    );
}
