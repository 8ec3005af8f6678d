//! Who may do what, on every listener: the OTLP receivers need `ingest`
//! keys, the query API and the kill-switch streams `read` keys, the admin
//! API the admin token or an `admin` key (the gateway checks its own
//! `gateway` keys). A key's scope (org, project, user) becomes the
//! request's [`Tenant`]: spans are counted under it, reads see only it.
//!
//! Keys are sent the standard way, `Authorization: Bearer <key>` (gRPC
//! metadata or HTTP header; OTLP exporters:
//! `OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<key>`). Tokens are
//! compared in constant time over their SHA-256, so neither their bytes
//! nor their length leak; failed admin attempts are limited per client
//! address. Every refusal is counted in `tollgate_auth_failures_total`.

mod http;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
pub use tollgate_gateway::bearer;
use tollgate_gateway::{KeyRefusal, KeyStore, Role, VirtualKey, hash_key};

pub use http::{Guard, Style, require};

use crate::admin::KeyCache;
use crate::config::{AuthConfig, Secret};
use crate::internal_events::InternalEvents;
use crate::query::Tenant;

/// Failed admin attempts from one address within [`THROTTLE_WINDOW`]
/// after which its admin attempts are refused until the window ends.
pub const ADMIN_FAILURES_MAX: u32 = 10;
/// The window of [`ADMIN_FAILURES_MAX`].
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(60);

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Send spans (`ingest` keys).
    Ingest,
    /// Read the API and the kill-switch (`read` or `admin` keys).
    Read,
    /// `/metrics`: an unscoped `read` key or `auth.metrics_token`.
    Metrics,
    /// The admin API: the admin token or an `admin` key, even when open.
    Admin,
    /// `GET /v1/gateway` (where the gateway is): any valid key, so that an
    /// agent holding only a gateway key can find it.
    AnyKey,
}

impl Need {
    fn role(self) -> Role {
        match self {
            Need::Ingest => Role::Ingest,
            Need::Read | Need::Metrics => Role::Read,
            Need::Admin => Role::Admin,
            Need::AnyKey => Role::Gateway,
        }
    }
}

/// Who is calling, once let in.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No key, let in because auth is open.
    Anonymous,
    /// The admin token.
    AdminToken,
    /// `auth.metrics_token`.
    MetricsToken,
    Key(Arc<VirtualKey>),
}

impl Caller {
    /// The part of the data this caller acts on.
    pub fn tenant(&self) -> Tenant {
        match self {
            Caller::Key(k) => Tenant {
                org: k.org.clone(),
                project: k.project.clone(),
                user: k.user.clone(),
            },
            _ => Tenant::default(),
        }
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No key (or token) sent.
    Missing,
    /// A key no one issued.
    Unknown,
    /// A known key that may not do this.
    Refused(KeyRefusal),
    /// A scoped key where only an unscoped one will do.
    Scoped,
    /// Too many failed admin attempts from this address.
    Throttled,
}

impl Denied {
    /// For `tollgate_auth_failures_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Missing => "missing",
            Denied::Unknown => "unknown",
            Denied::Refused(r) => r.reason(),
            Denied::Scoped => "scope",
            Denied::Throttled => "throttled",
        }
    }

    /// Whether the caller is known but not allowed (403) rather than not
    /// authenticated (401).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Denied::Refused(KeyRefusal::Role(_)) | Denied::Scoped)
    }

    /// What the caller is told: what was wrong and how to send a key.
    pub fn message(&self, need: Need) -> String {
        let how = match need {
            Need::Ingest => {
                "send an `ingest` key as `Authorization: Bearer <key>` (OTLP exporters: \
                 OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<key>)"
            }
            Need::Read => "send a `read` key as `Authorization: Bearer <key>`",
            Need::AnyKey => "send a key as `Authorization: Bearer <key>`",
            Need::Metrics => {
                "send an unscoped `read` key or auth.metrics_token as `Authorization: Bearer <token>`"
            }
            Need::Admin => {
                "the admin API needs `Authorization: Bearer <admin token>` (admin.token) or an `admin` key"
            }
        };
        match self {
            Denied::Missing => format!("no key: {how}"),
            Denied::Unknown => format!("this key is not valid: {how}"),
            Denied::Refused(r) => format!("{r}: {how}"),
            Denied::Scoped => format!("this key is scoped to a tenant: {how}"),
            Denied::Throttled => format!(
                "too many failed attempts from this address; retry in {} s",
                THROTTLE_WINDOW.as_secs()
            ),
        }
    }
}

/// SHA-256 of a token, compared in constant time (length included).
struct TokenHash([u8; 32]);

impl TokenHash {
    fn of(secret: &Secret) -> Self {
        Self(Sha256::digest(secret.expose().as_bytes()).into())
    }

    fn matches(&self, given: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        self.0.ct_eq(&given).into()
    }
}

/// Decides every request's access; one per process.
pub struct Auth {
    keys_required: bool,
    keys: Arc<KeyCache>,
    admin_token: Option<TokenHash>,
    metrics_token: Option<TokenHash>,
    /// Failed admin attempts per client address, forgotten after the window.
    admin_failures: moka::sync::Cache<IpAddr, Arc<AtomicU32>>,
    events: Arc<InternalEvents>,
}

impl Auth {
    pub fn new(
        config: &AuthConfig,
        admin_token: Option<&Secret>,
        keys: Arc<KeyCache>,
        events: Arc<InternalEvents>,
    ) -> Self {
        Self {
            keys_required: config.keys_required,
            keys,
            admin_token: admin_token.map(TokenHash::of),
            metrics_token: config.metrics_token.as_ref().map(TokenHash::of),
            admin_failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(THROTTLE_WINDOW)
                .build(),
            events,
        }
    }

    /// Whether the admin API can be reached at all (a token or admin keys).
    pub fn admin_possible(&self) -> bool {
        self.admin_token.is_some()
            || self
                .keys
                .list()
                .iter()
                .any(|k| k.roles.contains(&Role::Admin))
    }

    /// Lets in, or not, a request that presents `bearer` (the token after
    /// `Bearer `) from `peer` on `listener` for `need`. Refusals are counted.
    pub fn check(
        &self,
        listener: &'static str,
        bearer: Option<&str>,
        peer: Option<IpAddr>,
        need: Need,
    ) -> Result<Caller, Denied> {
        let answer = self.decide(bearer, peer, need);
        if let Err(denied) = &answer {
            self.events.auth_failed(listener, denied.reason());
            if need == Need::Admin && *denied != Denied::Throttled {
                self.admin_failed(peer);
            }
        }
        answer
    }

    fn decide(
        &self,
        bearer: Option<&str>,
        peer: Option<IpAddr>,
        need: Need,
    ) -> Result<Caller, Denied> {
        if need == Need::Admin && self.admin_throttled(peer) {
            return Err(Denied::Throttled);
        }
        let Some(given) = bearer else {
            return if need != Need::Admin && !self.keys_required {
                Ok(Caller::Anonymous)
            } else {
                Err(Denied::Missing)
            };
        };
        if self.admin_token.as_ref().is_some_and(|t| t.matches(given)) {
            return Ok(Caller::AdminToken);
        }
        if need == Need::Metrics
            && self
                .metrics_token
                .as_ref()
                .is_some_and(|t| t.matches(given))
        {
            return Ok(Caller::MetricsToken);
        }
        let key = self.keys.lookup(&hash_key(given)).ok_or(Denied::Unknown)?;
        match need {
            Need::AnyKey => key.usable(now_nanos()),
            _ => key.permits(need.role(), now_nanos()),
        }
        .map_err(Denied::Refused)?;
        let caller = Caller::Key(key);
        if need == Need::Metrics && !caller.tenant().is_everything() {
            return Err(Denied::Scoped);
        }
        Ok(caller)
    }

    fn admin_throttled(&self, peer: Option<IpAddr>) -> bool {
        let Some(ip) = peer else { return false };
        self.admin_failures
            .get(&ip)
            .is_some_and(|n| n.load(Ordering::Relaxed) >= ADMIN_FAILURES_MAX)
    }

    fn admin_failed(&self, peer: Option<IpAddr>) {
        let Some(ip) = peer else { return };
        self.admin_failures
            .get_with(ip, || Arc::new(AtomicU32::new(0)))
            .fetch_add(1, Ordering::Relaxed);
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
