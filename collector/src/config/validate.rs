//! Validation: raw config -> typed [`Config`], rejecting contradictions with
//! a message naming the field and the fix.

use crate::memory::MemoryLimits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tollgate_gateway::{GatewayConfig, ValidConfig};
use tollgate_rules::engine::{RuleSet, compile, parse_rules};
use tollgate_rules::pricing::PriceTable;

use super::error::ConfigError;
use super::kafka::KafkaConfig;
use super::raw::{AlertsSection, KafkaRole, LogSection, RawConfig, StorageSection};
use crate::ledger::{SharedLedgerConfig, instance_name};
use crate::sinks::clickhouse::{ClickhouseCompression, ClickhouseConfig};
use crate::sinks::sqlite::ReadConfig;
use crate::tls::{OutboundRoots, ServerTlsSettings, TlsSettings};

/// A secret from config: never shown by `Debug`, `Display` or logs.
pub use tollgate_gateway::Secret;

/// `[auth]`, validated.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Whether every OTLP request, read and kill-switch stream needs a key.
    pub keys_required: bool,
    /// `mode = "open"` written with a listener off loopback: warned at start.
    pub open_beyond_loopback: bool,
    pub metrics_token: Option<Secret>,
    /// `[[auth.keys]]`, hashed.
    pub keys: Vec<tollgate_gateway::VirtualKey>,
}

impl AuthConfig {
    /// Open, as for tests and embedding on loopback.
    pub fn open() -> Self {
        Self {
            keys_required: false,
            open_beyond_loopback: false,
            metrics_token: None,
            keys: Vec::new(),
        }
    }
}

fn auth_config(
    section: super::raw::AuthSection,
    listeners: &[(&'static str, SocketAddr)],
    admin_token: Option<&Secret>,
) -> Result<AuthConfig, ConfigError> {
    use super::raw::AuthMode;
    let mut keys = Vec::new();
    for (i, k) in section.keys.into_iter().enumerate() {
        let field = |f: &str| format!("auth.keys[{i}].{f}");
        if k.name.trim().is_empty()
            || !k
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                &field("name"),
                "must be letters, digits, `-`, `_` or `.`",
            ));
        }
        let secret = match (k.secret, &k.secret_file) {
            (Some(s), None) => s,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| {
                    invalid(
                        &field("secret_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?
                .trim()
                .to_owned(),
            _ => {
                return Err(invalid(
                    &field("secret"),
                    "give exactly one of `secret` and `secret_file`",
                ));
            }
        };
        if secret.trim().len() < 24 {
            return Err(invalid(
                &field("secret"),
                "must be at least 24 characters (`tollgate keys generate` makes one)",
            ));
        }
        tollgate_gateway::check_roles_and_scope(
            &k.roles,
            k.org.as_deref(),
            k.project.as_deref(),
            None,
        )
        .map_err(|m| invalid(&field("roles"), m))?;
        let mut key = tollgate_gateway::VirtualKey::new(
            format!("{}{}", tollgate_gateway::CONFIG_KEY_PREFIX, k.name),
            secret.trim(),
        );
        key.name = Some(k.name);
        key.roles = k.roles;
        key.org = k.org;
        key.project = k.project;
        if keys.iter().any(|other: &tollgate_gateway::VirtualKey| {
            other.id == key.id || other.hash == key.hash
        }) {
            return Err(invalid(
                &field("name"),
                "two keys with the same name or secret",
            ));
        }
        keys.push(key);
    }
    let off_loopback = listeners.iter().find(|(_, a)| !a.ip().is_loopback());
    let (keys_required, open_beyond_loopback) = match section.mode {
        Some(AuthMode::Keys) => {
            if keys.is_empty() && admin_token.is_none() {
                return Err(invalid(
                    "auth.mode",
                    "is `keys` but no key can ever be made: set admin.token (then `tollgate keys create`) or write [[auth.keys]]",
                ));
            }
            (true, false)
        }
        Some(AuthMode::Open) => (false, off_loopback.is_some()),
        None => match off_loopback {
            None => (false, false),
            Some((field, addr)) => {
                return Err(invalid(
                    field,
                    format!(
                        "{addr} is reachable from other machines but [auth] is not set: set auth.mode = \"keys\" \
                         (with admin.token or [[auth.keys]]) so callers need keys, or auth.mode = \"open\" to let anyone in"
                    ),
                ));
            }
        },
    };
    let metrics_token = match section.metrics_token {
        Some(t) if t.trim().len() < 16 => {
            return Err(invalid(
                "auth.metrics_token",
                "must be at least 16 characters",
            ));
        }
        Some(t) => Some(Secret::new(t)),
        None => None,
    };
    Ok(AuthConfig {
        keys_required,
        open_beyond_loopback,
        metrics_token,
        keys,
    })
}

pub use crate::sinks::StorageConfig;

/// Longest range a query covers when neither `api.max_query_range` nor a
/// retention is set: a year and a month, so "this month last year" fits.
pub const DEFAULT_MAX_QUERY_RANGE: Duration = Duration::from_secs(400 * 86_400);

/// Most readers one SQLite store opens.
const MAX_SQLITE_READERS: usize = 64;

/// Which `tollgate.label.*` keys are kept.
#[derive(Debug, Clone)]
pub struct LabelPolicy {
    /// Empty = any key.
    pub allowed: Vec<String>,
    pub max_labels: usize,
    /// Distinct values kept per label key; new values past it are dropped.
    pub max_values_per_label: usize,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub api_listen: SocketAddr,
    /// Longest range `since` may cover; longer ones are answered for this range.
    pub max_query_range: Duration,
    pub grpc_max_message_bytes: usize,
    pub http_max_body_bytes: usize,
    pub max_tokens_per_call: u64,
    pub max_cost_ratio: f64,
    pub max_cost_per_call_usd: f64,
    pub labels: LabelPolicy,
    pub storage: StorageConfig,
    pub queue_capacity_rows: usize,
    pub batch_max_rows: usize,
    pub dedup_window_calls: usize,
    pub dedup_horizon: Duration,
    pub shutdown_timeout: Duration,
    pub prices: Arc<PriceTable>,
    pub log: LogSection,
    pub gateway: GatewayConfig,
    /// `[gateway]` validated, provider keys loaded; `Some` when enabled.
    pub gateway_valid: Option<Arc<ValidConfig>>,
    /// Admin API bearer token; `None` = admin API off (unless admin keys).
    pub admin_token: Option<Secret>,
    /// Who needs keys, and the keys written in the config.
    pub auth: AuthConfig,
    pub alerts: AlertsSection,
    /// Kafka scale-out; `None` = rows go straight to the store.
    pub kafka: Option<KafkaConfig>,
    pub rules: Arc<RuleSet>,
    /// The file this was loaded from (rules are reloaded from it).
    pub source: Option<PathBuf>,
    /// Limits of every listener.
    pub listeners: ListenerLimits,
    /// The memory limiter's settings.
    pub memory: MemoryLimits,
    /// Most rule counters held in memory (`ledger.max_counters`).
    pub ledger_max_counters: usize,
    /// `[ledger] type = "redis"`: budgets shared with other instances.
    pub shared_ledger: Option<SharedLedgerConfig>,
    /// What an acknowledgement survives, and where the log is.
    pub durability: DurabilityConfig,
    /// Listener TLS and outbound roots (`[tls]`).
    pub tls: TlsSettings,
}

/// `[durability]`, validated.
#[derive(Debug, Clone)]
pub struct DurabilityConfig {
    pub level: super::raw::Durability,
    /// The write-ahead log's directory.
    pub dir: PathBuf,
    pub max_bytes: u64,
}

impl super::raw::LedgerSection {
    /// The shared ledger's settings, when `type = "redis"`.
    fn shared(&self) -> Result<Option<SharedLedgerConfig>, ConfigError> {
        use super::raw::LedgerKind;
        use tollgate_rules::engine::lease::LeasePolicy;
        let redis = match (self.kind, &self.redis) {
            (LedgerKind::Local, None) => return Ok(None),
            (LedgerKind::Local, Some(_)) => {
                return Err(invalid(
                    "ledger.type",
                    "[ledger.redis] is set but type is \"local\": set type = \"redis\" to share budgets through it",
                ));
            }
            (LedgerKind::Redis, None) => {
                return Err(invalid(
                    "ledger.redis",
                    "type = \"redis\" needs [ledger.redis] with at least `url`",
                ));
            }
            (LedgerKind::Redis, Some(r)) => r,
        };
        redis
            .validate()
            .map_err(|e| invalid("ledger.redis", e.to_string()))?;
        let mut policy = LeasePolicy::default();
        if let Some(ttl) = self.lease_ttl {
            let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
            if ms < 1_000 {
                return Err(invalid("ledger.lease_ttl", "must be at least 1s"));
            }
            policy.ttl_ms = ms;
            policy.margin_ms = ms / 5;
            policy.idle_ms = policy.idle_ms.min(ms / 4);
        }
        let sync_interval = self
            .sync_interval
            .unwrap_or(std::time::Duration::from_millis(100));
        if sync_interval.is_zero() || sync_interval.as_millis() as i64 >= policy.ttl_ms / 4 {
            return Err(invalid(
                "ledger.sync_interval",
                "must be more than 0 and less than a quarter of lease_ttl",
            ));
        }
        Ok(Some(SharedLedgerConfig {
            redis: redis.clone(),
            instance: instance_name(self.instance.as_deref()),
            policy,
            sync_interval,
        }))
    }
}

/// `ledger.max_counters` when not set: about 25 MB of calendar counters,
/// 150 MB of rolling ones.
pub const DEFAULT_LEDGER_MAX_COUNTERS: usize = 250_000;

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn addr(field: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            field,
            format!("`{value}` is not an address; write host:port, e.g. 127.0.0.1:4317"),
        )
    })
}

fn positive(field: &str, value: usize) -> Result<usize, ConfigError> {
    if value == 0 {
        return Err(invalid(field, "must be greater than 0"));
    }
    Ok(value)
}

impl RawConfig {
    /// Checks every field and builds the typed configuration.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let otlp = self.receivers.otlp;
        let grpc_listen = addr("receivers.otlp.grpc_listen", &otlp.grpc_listen)?;
        let http_listen = addr("receivers.otlp.http_listen", &otlp.http_listen)?;
        let api_listen = addr("api.listen", &self.api.listen)?;
        let grpc_max_message_bytes = positive(
            "receivers.otlp.grpc_max_message_bytes",
            otlp.grpc_max_message_bytes,
        )?;
        let http_max_body_bytes = positive(
            "receivers.otlp.http_max_body_bytes",
            otlp.http_max_body_bytes,
        )?;
        if otlp.max_tokens_per_call == 0 {
            return Err(invalid(
                "receivers.otlp.max_tokens_per_call",
                "must be greater than 0",
            ));
        }
        for (field, value) in [
            ("receivers.otlp.max_cost_ratio", otlp.max_cost_ratio),
            (
                "receivers.otlp.max_cost_per_call_usd",
                otlp.max_cost_per_call_usd,
            ),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid(field, "must be a positive number"));
            }
        }
        if self.pipeline.dedup_horizon.is_zero() {
            return Err(invalid(
                "pipeline.dedup_horizon",
                "must be longer than 0s (e.g. \"10m\")",
            ));
        }
        let queue_capacity_rows = positive(
            "pipeline.queue_capacity_rows",
            self.pipeline.queue_capacity_rows,
        )?;
        let batch_max_rows = positive("pipeline.batch_max_rows", self.pipeline.batch_max_rows)?;
        let dedup_window_calls = positive(
            "pipeline.dedup_window_calls",
            self.pipeline.dedup_window_calls,
        )?;

        let query_timeout = self.api.query_timeout;
        if query_timeout.is_zero() {
            return Err(invalid(
                "api.query_timeout",
                "must be longer than 0s (e.g. \"10s\")",
            ));
        }
        if self.api.max_query_range.is_some_and(|r| r.is_zero()) {
            return Err(invalid(
                "api.max_query_range",
                "must be longer than 0s (e.g. \"90d\"); leave it unset for the store's retention",
            ));
        }
        let storage = match self.storage {
            StorageSection::Sqlite { path, readers } => {
                if path.trim().is_empty() {
                    return Err(invalid("storage.path", "must name a directory"));
                }
                if !(1..=MAX_SQLITE_READERS).contains(&readers) {
                    return Err(invalid(
                        "storage.readers",
                        format!("must be between 1 and {MAX_SQLITE_READERS}"),
                    ));
                }
                StorageConfig::Sqlite {
                    dir: PathBuf::from(path),
                    read: ReadConfig {
                        readers,
                        query_timeout,
                    },
                    flush_commits: false,
                }
            }
            StorageSection::Clickhouse {
                url,
                database,
                user,
                password,
                compression,
                retention_days,
                timeout,
            } => {
                let parsed = url::Url::parse(&url).map_err(|e| {
                    invalid(
                        "storage.url",
                        format!("`{url}` is not a URL ({e}); write e.g. http://127.0.0.1:8123"),
                    )
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(invalid(
                        "storage.url",
                        "must start with http:// or https://",
                    ));
                }
                if database.is_empty()
                    || !database
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(invalid(
                        "storage.database",
                        "must be a plain name (letters, digits, _)",
                    ));
                }
                let compression = match compression.as_str() {
                    "lz4" => ClickhouseCompression::Lz4,
                    "none" => ClickhouseCompression::None,
                    other => {
                        return Err(invalid(
                            "storage.compression",
                            format!("`{other}` is not one of: lz4, none"),
                        ));
                    }
                };
                if retention_days == Some(0) {
                    return Err(invalid(
                        "storage.retention_days",
                        "must be at least 1 (leave it unset to keep rows forever)",
                    ));
                }
                if timeout.is_zero() {
                    return Err(invalid("storage.timeout", "must be greater than 0"));
                }
                StorageConfig::Clickhouse(ClickhouseConfig {
                    url,
                    database,
                    user: user.filter(|u| !u.is_empty()),
                    password: password.filter(|p| !p.is_empty()).map(Secret::new),
                    compression,
                    retention_days,
                    timeout,
                    query_timeout,
                    extra_roots: OutboundRoots::default(),
                })
            }
        };
        let retention = match &storage {
            StorageConfig::Clickhouse(c) => c
                .retention_days
                .map(|d| Duration::from_secs(u64::from(d) * 86_400)),
            StorageConfig::Sqlite { .. } => None,
        };
        let max_query_range = self
            .api
            .max_query_range
            .or(retention)
            .unwrap_or(DEFAULT_MAX_QUERY_RANGE);

        let base = match &self.pricing.table {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| invalid("pricing.table", format!("cannot read `{file}`: {e}")))?;
                PriceTable::from_toml_str(&text)
                    .map_err(|e| invalid("pricing.table", e.to_string()))?
            }
            None => PriceTable::builtin().map_err(|e| invalid("pricing", e.to_string()))?,
        };
        let prices = base
            .with_overrides(&self.pricing.models)
            .map_err(|e| invalid("pricing.models", e.to_string()))?;

        let tls = self.tls.validate()?;
        let gateway_valid = if self.gateway.enabled {
            let valid = self.gateway.validate().map_err(|e| match e {
                tollgate_gateway::GatewayError::Config { field, message }
                | tollgate_gateway::GatewayError::ProviderKey { field, message } => {
                    invalid(&field, message)
                }
                other => invalid("gateway", other.to_string()),
            })?;
            // Its rows go to Kafka like OTLP calls: a process instance
            // receives nothing.
            if !self.kafka.brokers.trim().is_empty() && self.kafka.role == KafkaRole::Process {
                return Err(invalid(
                    "gateway.enabled",
                    "a Kafka process instance (kafka.role = \"process\") receives no calls; run the gateway on an ingest instance (kafka.role = \"ingest\" or \"all\")",
                ));
            }
            Some(Arc::new(valid.with_extra_roots(
                tls.outbound.certificates().iter().cloned(),
            )))
        } else {
            None
        };

        let rules = parse_rules(self.rules)
            .and_then(|raw| compile(&raw))
            .map_err(ConfigError::Rules)?;
        let mut names = std::collections::HashSet::new();
        for w in &self.alerts.webhooks {
            if !names.insert(w.name.as_str()) {
                return Err(invalid(
                    "alerts.webhooks",
                    format!("`{}` is defined twice", w.name),
                ));
            }
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(invalid(
                    "alerts.webhooks",
                    format!("`{}`: url must start with http:// or https://", w.name),
                ));
            }
        }
        for rule in &rules.rules {
            for sink in &rule.alerts {
                if !names.contains(sink.as_str()) {
                    return Err(ConfigError::Rules(
                        tollgate_rules::engine::RuleError::Invalid {
                            rule: rule.id.to_string(),
                            field: "alerts".to_owned(),
                            message: format!("no webhook named `{sink}` in [[alerts.webhooks]]"),
                        },
                    ));
                }
            }
        }
        let kafka = self
            .kafka
            .validate()
            .map_err(|e| invalid(e.field, e.message))?;
        let admin_token = match self.admin.token {
            Some(t) if t.trim().len() < 16 => {
                return Err(invalid("admin.token", "must be at least 16 characters"));
            }
            Some(t) => Some(Secret::new(t)),
            None => None,
        };

        let mut listening = vec![
            ("receivers.otlp.grpc_listen", grpc_listen),
            ("receivers.otlp.http_listen", http_listen),
            ("api.listen", api_listen),
        ];
        if let Some(g) = &gateway_valid {
            listening.push(("gateway.listen", g.listen()));
        }
        let auth = auth_config(self.auth, &listening, admin_token.as_ref())?;
        let listeners = self.listeners.validate()?;
        let memory = self.memory.validate()?;
        let durability = DurabilityConfig {
            level: self.durability.level,
            dir: match (&self.durability.dir, &storage) {
                (Some(d), _) if d.trim().is_empty() => {
                    return Err(invalid("durability.dir", "must name a directory"));
                }
                (Some(d), _) => PathBuf::from(d),
                (None, StorageConfig::Sqlite { dir, .. }) => dir.join("wal"),
                (None, StorageConfig::Clickhouse(_)) => PathBuf::from("./data/wal"),
            },
            max_bytes: match self.durability.max_disk_mib {
                Some(0) => {
                    return Err(invalid("durability.max_disk_mib", "must be greater than 0"));
                }
                Some(m) => m.saturating_mul(1 << 20),
                None => 1 << 30,
            },
        };
        let mut storage = storage;
        if let StorageConfig::Clickhouse(c) = &mut storage {
            c.extra_roots = tls.outbound.clone();
        }
        if let StorageConfig::Sqlite { flush_commits, .. } = &mut storage {
            *flush_commits = durability.level == super::raw::Durability::Power;
        }
        let ledger_max_counters = match self.ledger.max_counters {
            Some(n) if n < 1_000 => {
                return Err(invalid("ledger.max_counters", "must be at least 1000"));
            }
            Some(n) => n,
            None => DEFAULT_LEDGER_MAX_COUNTERS,
        };
        let shared_ledger = self.ledger.shared()?;
        Ok(Config {
            tls,
            listeners,
            memory,
            ledger_max_counters,
            shared_ledger,
            durability,
            grpc_listen,
            http_listen,
            api_listen,
            max_query_range,
            grpc_max_message_bytes,
            http_max_body_bytes,
            max_tokens_per_call: otlp.max_tokens_per_call,
            max_cost_ratio: otlp.max_cost_ratio,
            max_cost_per_call_usd: otlp.max_cost_per_call_usd,
            labels: LabelPolicy {
                allowed: otlp.allowed_labels,
                max_labels: otlp.max_labels,
                max_values_per_label: positive(
                    "receivers.otlp.max_label_values",
                    otlp.max_label_values,
                )?,
            },
            storage,
            queue_capacity_rows,
            batch_max_rows,
            dedup_window_calls,
            dedup_horizon: self.pipeline.dedup_horizon,
            shutdown_timeout: self.pipeline.shutdown_timeout,
            prices: Arc::new(prices),
            log: self.log,
            gateway: self.gateway,
            gateway_valid,
            admin_token,
            auth,
            alerts: self.alerts,
            kafka,
            rules: Arc::new(rules),
            source: None,
        })
    }
}

/// Limits of every listener (`[listeners]`; see `crate::listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub http2_max_concurrent_streams: u32,
    pub http2_max_pending_accept_reset_streams: usize,
    /// Largest request head: HTTP/1.1 headers, HTTP/2 header list.
    pub max_header_bytes: usize,
}

impl Default for ListenerLimits {
    /// The defaults of `[listeners]`.
    fn default() -> Self {
        let d = super::raw::ListenersSection::default();
        Self {
            header_read_timeout: d.header_read_timeout,
            body_read_timeout: d.body_read_timeout,
            idle_timeout: d.idle_timeout,
            max_connections: d.max_connections,
            http2_max_concurrent_streams: d.http2_max_concurrent_streams,
            http2_max_pending_accept_reset_streams: d.http2_max_pending_accept_reset_streams,
            max_header_bytes: d.max_header_bytes,
        }
    }
}

impl super::raw::ListenersSection {
    fn validate(self) -> Result<ListenerLimits, ConfigError> {
        for (field, d) in [
            ("listeners.header_read_timeout", self.header_read_timeout),
            ("listeners.body_read_timeout", self.body_read_timeout),
            ("listeners.idle_timeout", self.idle_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(field, "must be longer than 0s"));
            }
        }
        Ok(ListenerLimits {
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: positive("listeners.max_connections", self.max_connections)?,
            http2_max_concurrent_streams: u32::try_from(positive(
                "listeners.http2_max_concurrent_streams",
                self.http2_max_concurrent_streams as usize,
            )?)
            .unwrap_or(u32::MAX),
            http2_max_pending_accept_reset_streams: positive(
                "listeners.http2_max_pending_accept_reset_streams",
                self.http2_max_pending_accept_reset_streams,
            )?,
            max_header_bytes: if self.max_header_bytes < 8 * 1024 {
                return Err(invalid(
                    "listeners.max_header_bytes",
                    "must be at least 8192 (HTTP clients send headers of a few KiB)",
                ));
            } else {
                self.max_header_bytes
            },
        })
    }
}

impl super::raw::TlsSection {
    /// Reads and checks the files: a start-up error names the field and file.
    fn validate(self) -> Result<TlsSettings, ConfigError> {
        let tls_err = |e: crate::tls::TlsError| invalid(e.field, e.message);
        let nonempty = |field: &str, v: Option<String>| match v {
            Some(p) if p.trim().is_empty() => Err(invalid(
                field,
                "must name a file (leave it unset to turn it off)",
            )),
            other => Ok(other.map(PathBuf::from)),
        };
        let cert = nonempty("tls.cert_file", self.cert_file)?;
        let key = nonempty("tls.key_file", self.key_file)?;
        let client_ca = nonempty("tls.client_ca_file", self.client_ca_file)?;
        let ca = nonempty("tls.ca_file", self.ca_file)?;
        if self.reload_interval.is_zero() {
            return Err(invalid(
                "tls.reload_interval",
                "must be longer than 0s (e.g. \"5s\")",
            ));
        }
        let server = match (cert, key) {
            (Some(cert), Some(key)) => Some(
                ServerTlsSettings::load(cert, key, client_ca, self.reload_interval)
                    .map_err(tls_err)?,
            ),
            (Some(_), None) => {
                return Err(invalid(
                    "tls.key_file",
                    "must be set with tls.cert_file (the certificate's private key)",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "tls.cert_file",
                    "must be set with tls.key_file (the key's certificate chain)",
                ));
            }
            (None, None) if client_ca.is_some() => {
                return Err(invalid(
                    "tls.client_ca_file",
                    "needs tls.cert_file and tls.key_file (client certificates are asked for over TLS)",
                ));
            }
            (None, None) => None,
        };
        let outbound = match ca {
            Some(path) => OutboundRoots::load(&path).map_err(tls_err)?,
            None => OutboundRoots::default(),
        };
        Ok(TlsSettings { server, outbound })
    }
}

impl super::raw::MemorySection {
    fn validate(self) -> Result<MemoryLimits, ConfigError> {
        let limit_bytes = match self.limit_mib {
            Some(0) => return Err(invalid("memory.limit_mib", "must be greater than 0")),
            Some(mib) => mib.saturating_mul(1 << 20),
            None => MemoryLimits::default_limit_bytes(),
        };
        let percent = |field: &str, value: Option<u8>, default: u8| match value {
            None => Ok(default),
            Some(p) if (1..=100).contains(&p) => Ok(p),
            Some(_) => Err(invalid(field, "must be between 1 and 100")),
        };
        let resume = percent("memory.resume_below_percent", self.resume_below_percent, 90)?;
        let requests = percent("memory.requests_percent", self.requests_percent, 25)?;
        let check_interval = self.check_interval.unwrap_or(Duration::from_millis(100));
        if check_interval.is_zero() {
            return Err(invalid("memory.check_interval", "must be longer than 0s"));
        }
        Ok(MemoryLimits {
            limit_bytes,
            resume_bytes: limit_bytes / 100 * u64::from(resume),
            requests_bytes: limit_bytes / 100 * u64::from(requests),
            check_interval,
        })
    }
}
