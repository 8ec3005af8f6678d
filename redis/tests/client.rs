//! Connecting: a password, a wrong password (a clear error without it), no
//! server (an error within the connect timeout).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
