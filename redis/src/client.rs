//! The connection to the server: one multiplexed connection shared by every
//! clone, re-established by itself after a failure, with the configured
//! timeouts, and a count of round trips (for benchmarks).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Client, FromRedisValue, Pipeline, TlsCertificates};

use crate::config::{RedisConfig, RedisTarget};
use crate::error::RedisError;

/// A client of one Redis-protocol server. Cheap to clone: clones share the
/// connection and the round-trip count. Commands from several tasks are
/// pipelined on the one connection.
#[derive(Clone)]
pub struct Redis {
    manager: ConnectionManager,
    shared: Arc<Shared>,
}

struct Shared {
    server: String,
    password: Option<String>,
    key_prefix: String,
    command_timeout: Duration,
    round_trips: AtomicU64,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("server", &self.shared.server)
            .field("key_prefix", &self.shared.key_prefix)
            .field("round_trips", &self.round_trips())
            .finish()
    }
}

impl Redis {
    /// Validates `config`, connects and checks that the server answers (and
    /// accepts the credentials) within `connect_timeout`.
    pub async fn connect(config: &RedisConfig) -> Result<Self, RedisError> {
        Self::connect_to(config.validate()?).await
    }

    /// Like [`Redis::connect`], from settings validated already.
    pub async fn connect_to(target: RedisTarget) -> Result<Self, RedisError> {
        let server = target.server.clone();
        let password = target.password.clone();
        let fail = |e: &redis::RedisError| {
            RedisError::from_client(e, &server, password.as_deref(), target.connect_timeout)
        };
        if target.tls {
            // The client builds its TLS settings with the process-wide
            // crypto provider; when a build links both ring and aws-lc,
            // none is chosen by default. Ring, as the rest of Tollgate; an
            // error only means one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = match &target.root_pem {
            Some(pem) => Client::build_with_tls(
                target.info.clone(),
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => Client::open(target.info.clone()),
        }
        .map_err(|e| fail(&e))?;

        // One connection first, to fail fast (a wrong password is not
        // retried) and within the connect timeout.
        let probe_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(target.connect_timeout))
            .set_response_timeout(Some(target.connect_timeout));
        let timeout = RedisError::Timeout {
            server: server.clone(),
            timeout: target.connect_timeout,
        };
        let probe = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&probe_config)
                .await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await
        };
        match tokio::time::timeout(target.connect_timeout, probe).await {
            Err(_) => return Err(timeout),
            Ok(Err(e)) => return Err(fail(&e)),
            Ok(Ok(())) => {}
        }

        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(target.connect_timeout))
            .set_response_timeout(Some(target.command_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| fail(&e))?;
        Ok(Self {
            manager,
            shared: Arc::new(Shared {
                server,
                password,
                key_prefix: target.key_prefix,
                command_timeout: target.command_timeout,
                round_trips: AtomicU64::new(1),
            }),
        })
    }

    /// Round trips to the server so far (the connection check included).
    pub fn round_trips(&self) -> u64 {
        self.shared.round_trips.load(Ordering::Relaxed)
    }

    /// `host:port` of the server.
    pub fn server(&self) -> &str {
        &self.shared.server
    }

    /// Prepended to every key.
    pub fn key_prefix(&self) -> &str {
        &self.shared.key_prefix
    }

    /// Checks that the server answers.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PING").ignore();
        self.query(&pipe).await
    }

    /// Sends `pipe` in one round trip, within the command timeout.
    pub async fn query<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, RedisError> {
        let mut conn = self.manager.clone();
        self.shared.round_trips.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.shared.command_timeout, pipe.query_async(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(&e)),
            Err(_) => Err(RedisError::Timeout {
                server: self.shared.server.clone(),
                timeout: self.shared.command_timeout,
            }),
        }
    }

    /// `text` without the password (should a server ever echo it).
    pub(crate) fn scrub(&self, text: String) -> String {
        match self.shared.password.as_deref() {
            Some(p) if !p.is_empty() => text.replace(p, "***"),
            _ => text,
        }
    }

    /// An error of the client library, classified and scrubbed.
    pub(crate) fn error(&self, e: &redis::RedisError) -> RedisError {
        RedisError::from_client(
            e,
            &self.shared.server,
            self.shared.password.as_deref(),
            self.shared.command_timeout,
        )
    }
}
