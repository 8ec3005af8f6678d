//! Connecting: a password, a wrong password (a clear error without it), no
//! server (an error within the connect timeout).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tollgate_redis::testing::{RedisServer, ServerOptions};
use tollgate_redis::{Redis, RedisConfig, RedisError};

const PASSWORD: &str = "c0rrect-h0rse";

fn with_password(test: &str) -> Option<RedisServer> {
    RedisServer::start_own(
        test,
        ServerOptions {
            password: Some(PASSWORD.to_owned()),
            ..ServerOptions::default()
        },
    )
}

#[tokio::test]
async fn a_password_opens_the_server() {
    let Some(server) = with_password("a_password_opens_the_server") else {
        return;
    };
    let redis = Redis::connect(&server.config())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    redis.ping().await.unwrap_or_else(|e| panic!("{e}"));
    // In the URL instead.
    let port = server.url().rsplit(':').next().unwrap_or_default();
    let config = RedisConfig::new(format!("redis://:{PASSWORD}@127.0.0.1:{port}"));
    let redis = Redis::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    redis.ping().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!format!("{redis:?}").contains(PASSWORD));
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error_without_the_password() {
    let Some(server) = with_password("a_wrong_password_is_a_clear_error_without_the_password")
    else {
        return;
    };
    let port = server
        .url()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let wrong = "wr0ng-s3cret";
    let mut config = server.config();
    config.password = Some(wrong.to_owned());
    let in_url = RedisConfig::new(format!("redis://default:{wrong}@127.0.0.1:{port}/0"));
    for config in [config, in_url] {
        let e = Redis::connect(&config).await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, RedisError::Auth { .. }), "{e:?}");
        assert!(!e.is_retryable());
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(text.contains("authentication failed"), "{text}");
        assert!(!text.contains(wrong), "{text}");
        assert!(!format!("{e:?}").contains(wrong), "{e:?}");
    }
    // No password at all.
    let e = Redis::connect(&RedisConfig::new(server.url()))
        .await
        .unwrap_err();
    assert!(matches!(e, RedisError::Auth { .. }), "{e:?}");
}

#[tokio::test]
async fn no_server_is_an_error_within_the_connect_timeout() {
    // A port nobody listens on: refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = RedisConfig::new(format!("redis://:pw@127.0.0.1:{port}"));
    config.connect_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let e = Redis::connect(&config).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e, RedisError::Unreachable { .. }), "{e:?}");
    assert!(e.is_retryable());
    let text = e.to_string();
    assert!(
        text.contains(&format!("redis 127.0.0.1:{port}: unreachable")),
        "{text}"
    );

    // A listener that never answers: the connect timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    config.url = format!("redis://127.0.0.1:{port}");
    let started = Instant::now();
    let e = Redis::connect(&config).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1_500),
        "{took:?}"
    );
    assert!(matches!(e, RedisError::Timeout { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    drop(silent);
}

/// A CA, and a certificate it signs for 127.0.0.1, as PEM files in `dir`:
/// (ca, cert, key).
fn test_certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tollgate test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "redis");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.crt"),
        dir.join("redis.crt"),
        dir.join("redis.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(dir.path());
    let Some(server) = RedisServer::start_own(
        "tls_with_a_private_ca",
        ServerOptions {
            password: Some(PASSWORD.to_owned()),
            tls: Some((cert, key)),
            ..ServerOptions::default()
        },
    ) else {
        return;
    };
    assert!(server.url().starts_with("rediss://"), "{}", server.url());
    let mut config = server.config();
    config.ca_file = Some(ca);
    let redis = Redis::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    redis.ping().await.unwrap_or_else(|e| panic!("{e}"));
    // Without the CA, the server's certificate is not trusted.
    config.ca_file = None;
    let e = Redis::connect(&config).await.unwrap_err();
    assert!(matches!(e, RedisError::Unreachable { .. }), "{e:?}");
    assert!(!e.to_string().contains(PASSWORD), "{e}");
}
