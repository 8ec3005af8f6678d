//! What can go wrong talking to the shared ledger. Messages name the
//! server (`host:port`) and never carry a secret.

use std::time::Duration;

/// An error of the Redis client or the ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The `[redis]` settings are wrong (one line naming the field).
    #[error("{0}")]
    Config(String),
    /// No connection: refused, reset, DNS, TLS handshake.
    #[error("redis {server}: unreachable: {detail}")]
    Unreachable { server: String, detail: String },
    /// The server did not answer in time.
    #[error("redis {server}: no answer within {}", humantime::format_duration(*.timeout))]
    Timeout { server: String, timeout: Duration },
    /// The server refused the credentials (or needs some).
    #[error("redis {server}: authentication failed: {detail}")]
    Auth { server: String, detail: String },
    /// The ledger script failed on the server.
    #[error("redis {server}: ledger script failed: {detail}")]
    Script { server: String, detail: String },
    /// The server refused a command for another reason (loading, read-only
    /// replica, out of memory, ...).
    #[error("redis {server}: {detail}")]
    Server {
        server: String,
        detail: String,
        retryable: bool,
    },
    /// The server answered something the ledger does not understand.
    #[error("redis {server}: unexpected reply: {detail}")]
    Reply { server: String, detail: String },
    /// A request the ledger cannot represent.
    #[error("redis ledger: {0}")]
    Invalid(String),
}

impl RedisError {
    /// Whether the same exchange may succeed later (the server is down,
    /// slow, restarting or failing over).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } => true,
            Self::Server { retryable, .. } => *retryable,
            Self::Config(_)
            | Self::Auth { .. }
            | Self::Script { .. }
            | Self::Reply { .. }
            | Self::Invalid(_) => false,
        }
    }

    /// Classifies an error of the client library. `password` is scrubbed
    /// from the text in case a server or a library echoes it.
    pub(crate) fn from_client(
        e: &redis::RedisError,
        server: &str,
        password: Option<&str>,
        timeout: Duration,
    ) -> Self {
        use redis::{ErrorKind, ServerErrorKind};

        let server = server.to_owned();
        let mut detail = e.to_string();
        if let Some(p) = password.filter(|p| !p.is_empty()) {
            detail = detail.replace(p, "***");
        }
        if e.is_timeout() {
            return Self::Timeout { server, timeout };
        }
        let code = e.code().unwrap_or_default();
        if matches!(e.kind(), ErrorKind::AuthenticationFailed)
            || matches!(code, "WRONGPASS" | "NOAUTH")
            || matches!(e.kind(), ErrorKind::Server(ServerErrorKind::NoPerm))
        {
            return Self::Auth { server, detail };
        }
        if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
            return Self::Unreachable { server, detail };
        }
        match e.kind() {
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::ClusterDown,
            ) => Self::Server {
                server,
                detail,
                retryable: true,
            },
            // `BUSY`: another script runs too long.
            ErrorKind::Extension if code == "BUSY" => Self::Server {
                server,
                detail,
                retryable: true,
            },
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => Self::Reply { server, detail },
            _ => Self::Server {
                server,
                detail,
                retryable: false,
            },
        }
    }
}
