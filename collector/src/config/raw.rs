//! Raw configuration as written in `tollgate.toml`.
//!
//! Every field's `///` doc is user documentation: `tollgate.example.toml`
//! repeats it. Unknown fields are rejected so a typo never goes unnoticed.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tollgate_gateway::GatewayConfig;

use tollgate_rules::pricing::PriceOverride;

/// The whole file. Every section is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub receivers: ReceiversSection,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub pipeline: PipelineSection,
    #[serde(default)]
    pub pricing: PricingSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub alerts: AlertsSection,
    #[serde(default)]
    pub kafka: KafkaSection,
    #[serde(default)]
    pub listeners: ListenersSection,
    #[serde(default)]
    pub memory: MemorySection,
    #[serde(default)]
    pub ledger: LedgerSection,
    #[serde(default)]
    pub durability: DurabilitySection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub tls: TlsSection,
    /// `[[rules]]`: budgets, rate limits, model access, region locks and
    /// custom rules; read one by one so that an error names its rule.
    #[serde(default)]
    pub rules: Vec<toml::Value>,
}

/// Which halves of the collector run when Kafka is on.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KafkaRole {
    /// Receivers (and the gateway) produce to Kafka; a consumer in the same
    /// process writes the store.
    #[default]
    All,
    /// Receivers (and the gateway) produce to Kafka; nothing is consumed here.
    Ingest,
    /// Consume from Kafka, run the rules, write the store; no OTLP receivers
    /// and no gateway (the API and the kill-switch stream stay up).
    Process,
}

/// `[kafka]`: scale-out through a Kafka topic keyed by project.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// Bootstrap servers, `host:port[,host:port…]`; empty = Kafka off.
    #[serde(default)]
    pub brokers: String,
    /// Topic of call records (one message per call, keyed by project).
    #[serde(default = "default_kafka_topic")]
    pub topic: String,
    /// `all` | `ingest` | `process`.
    #[serde(default)]
    pub role: KafkaRole,
    /// Consumer group of the process instances.
    #[serde(default = "default_kafka_group")]
    pub group_id: String,
    /// Producer compression: none, gzip, snappy, lz4.
    #[serde(default = "default_kafka_compression")]
    pub compression: String,
    /// Partitions when the collector creates the topic.
    #[serde(default = "default_kafka_partitions")]
    pub partitions: i32,
    /// Replication factor when the collector creates the topic.
    #[serde(default = "default_kafka_replication")]
    pub replication_factor: i32,
    /// Longest wait for Kafka to acknowledge a request's calls.
    #[serde(default = "default_kafka_produce_timeout", with = "humantime_serde")]
    pub produce_timeout: Duration,
    /// Extra librdkafka properties (TLS, SASL, timeouts), e.g.
    /// `"security.protocol" = "SASL_SSL"`, `"ssl.ca.location"`,
    /// `"sasl.password" = "${KAFKA_PASSWORD}"`. Secret values
    /// ([`is_secret_kafka_option`]) are never printed.
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

/// Whether the value of librdkafka property `key` is a secret (a password,
/// a client secret, a private key in PEM): it is shown as `<redacted>`
/// wherever options are printed.
pub fn is_secret_kafka_option(key: &str) -> bool {
    key.contains("password")
        || key.contains("secret")
        || matches!(key, "ssl.key.pem" | "sasl.oauthbearer.config")
}

/// `options` for printing: secret values replaced by `<redacted>`.
pub fn redacted_kafka_options(
    options: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<&str, &str> {
    options
        .iter()
        .map(|(k, v)| {
            let shown = if is_secret_kafka_option(k) {
                "<redacted>"
            } else {
                v.as_str()
            };
            (k.as_str(), shown)
        })
        .collect()
}

impl std::fmt::Debug for KafkaSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSection")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("role", &self.role)
            .field("group_id", &self.group_id)
            .field("compression", &self.compression)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("produce_timeout", &self.produce_timeout)
            .field("options", &redacted_kafka_options(&self.options))
            .finish()
    }
}

fn default_kafka_topic() -> String {
    "tollgate.calls".to_owned()
}
fn default_kafka_group() -> String {
    "tollgate-process".to_owned()
}
fn default_kafka_compression() -> String {
    "lz4".to_owned()
}
fn default_kafka_partitions() -> i32 {
    12
}
fn default_kafka_replication() -> i32 {
    1
}
fn default_kafka_produce_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for KafkaSection {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            topic: default_kafka_topic(),
            role: KafkaRole::default(),
            group_id: default_kafka_group(),
            compression: default_kafka_compression(),
            partitions: default_kafka_partitions(),
            replication_factor: default_kafka_replication(),
            produce_timeout: default_kafka_produce_timeout(),
            options: Default::default(),
        }
    }
}

/// `[admin]`: the admin API (`/admin/v1/...` on the API port).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Bearer token the admin API requires. Unset = admin API off.
    /// Prefer `token = "${TOLLGATE_ADMIN_TOKEN}"` to writing it here.
    #[serde(default)]
    pub token: Option<String>,
}

/// Whether callers need keys.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No key needed; a key that is sent still scopes the request.
    Open,
    /// Every OTLP request, read and kill-switch stream needs a key.
    Keys,
}

/// `[auth]`: who may send spans, read and administer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `open` or `keys`. Unset: open while every listener is on loopback;
    /// a listener on another address then refuses to start.
    #[serde(default)]
    pub mode: Option<AuthMode>,
    /// Bearer token `/metrics` accepts besides `read` keys (for Prometheus:
    /// `authorization.credentials_file`). Prefer `${TOLLGATE_METRICS_TOKEN}`.
    #[serde(default)]
    pub metrics_token: Option<String>,
    /// Keys written here (from files or the environment) rather than made
    /// through the admin API; they are not stored and cannot be revoked
    /// through the API.
    #[serde(default)]
    pub keys: Vec<AuthKeySection>,
}

/// One `[[auth.keys]]` entry.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthKeySection {
    /// Its id is `cfg_<name>`.
    pub name: String,
    pub roles: Vec<tollgate_gateway::Role>,
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    /// The key itself, e.g. `"${TOLLGATE_INGEST_KEY}"`; or `secret_file`.
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the key (a mounted Secret); surrounding whitespace is ignored.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

/// The key itself is never shown.
impl std::fmt::Debug for AuthKeySection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthKeySection")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("org", &self.org)
            .field("project", &self.project)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .finish()
    }
}

/// Body format of a webhook.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The event as JSON.
    #[default]
    Json,
    /// `{"text": "..."}`, as Slack incoming webhooks (and compatibles) take.
    Slack,
}

/// One `[[alerts.webhooks]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// Name rules use in `alerts = ["name"]`.
    pub name: String,
    /// Where alerts are POSTed.
    pub url: String,
    /// `json` (default) or `slack`.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Also receive alerts of rules that name no sink. Default true.
    #[serde(default = "default_true")]
    pub default: bool,
}

fn default_true() -> bool {
    true
}

/// `[alerts]`: where rule events are sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    #[serde(default)]
    pub webhooks: Vec<WebhookSection>,
    /// An alert not delivered by then is given up (default 24h); until
    /// then it is retried with backoff (200 ms doubling to 30 s), across
    /// restarts.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// No longer used (alerts are retried until `max_age`); accepted so
    /// that older files still load.
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

fn default_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for AlertsSection {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            max_age: default_max_age(),
            max_attempts: None,
        }
    }
}

/// `[receivers]`: where spans come in.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiversSection {
    #[serde(default)]
    pub otlp: OtlpSection,
}

/// `[receivers.otlp]`: the OTLP gRPC and HTTP receivers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSection {
    /// OTLP/gRPC listen address. Use `0.0.0.0:4317` to accept remote agents.
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: String,
    /// OTLP/HTTP listen address (`POST /v1/traces`).
    #[serde(default = "default_http_listen")]
    pub http_listen: String,
    /// Largest gRPC message accepted, in bytes, after decompression. Default 4 MiB.
    #[serde(default = "default_max_message_bytes")]
    pub grpc_max_message_bytes: usize,
    /// Largest HTTP body accepted, in bytes; applies to the body as sent and
    /// again after gzip decompression. Default 4 MiB.
    #[serde(default = "default_max_message_bytes")]
    pub http_max_body_bytes: usize,
    /// Spans reporting more tokens than this in one call are rejected as absurd.
    #[serde(default = "default_max_tokens_per_call")]
    pub max_tokens_per_call: u64,
    /// A cost the sender reports (`tollgate.cost_usd`, `gen_ai.usage.cost`...)
    /// is used only up to this many times the price table's cost for the
    /// same call; above it the row is priced from the table and the sender
    /// is told through OTLP partial success. Default 10 (room for priority
    /// tiers, long-context surcharges and regional prices).
    #[serde(default = "default_max_cost_ratio")]
    pub max_cost_ratio: f64,
    /// A reported cost above this many US dollars for one call is never
    /// used (the row is priced from the table, or left unpriced). Default 100.
    #[serde(default = "default_max_cost_per_call_usd")]
    pub max_cost_per_call_usd: f64,
    /// Custom labels kept from `tollgate.label.<key>` attributes. Empty = any
    /// key, up to `max_labels` per call.
    #[serde(default)]
    pub allowed_labels: Vec<String>,
    /// Most custom labels kept per call.
    #[serde(default = "default_max_labels")]
    pub max_labels: usize,
    /// Distinct values kept per label key (cardinality limit): a value seen
    /// before is always kept; a new value past the limit is dropped from
    /// the row and counted in `tollgate_ingest_labels_dropped_total`.
    #[serde(default = "default_max_label_values")]
    pub max_label_values: usize,
}

fn default_max_label_values() -> usize {
    1_000
}

fn default_grpc_listen() -> String {
    "127.0.0.1:4317".to_owned()
}
fn default_http_listen() -> String {
    "127.0.0.1:4318".to_owned()
}
fn default_max_message_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_max_tokens_per_call() -> u64 {
    10_000_000
}
fn default_max_cost_ratio() -> f64 {
    10.0
}
fn default_max_cost_per_call_usd() -> f64 {
    100.0
}
fn default_max_labels() -> usize {
    16
}

impl Default for OtlpSection {
    fn default() -> Self {
        Self {
            grpc_listen: default_grpc_listen(),
            http_listen: default_http_listen(),
            grpc_max_message_bytes: default_max_message_bytes(),
            http_max_body_bytes: default_max_message_bytes(),
            max_tokens_per_call: default_max_tokens_per_call(),
            max_cost_ratio: default_max_cost_ratio(),
            max_cost_per_call_usd: default_max_cost_per_call_usd(),
            allowed_labels: Vec::new(),
            max_labels: default_max_labels(),
            max_label_values: default_max_label_values(),
        }
    }
}

/// `[api]`: the query API, health checks and Prometheus metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Listen address of `/v1/usage`, `/v1/calls`, `/healthz`, `/readyz`, `/metrics`.
    #[serde(default = "default_api_listen")]
    pub listen: String,
    /// Longest time range one query may cover (`since` of `/v1/usage` and
    /// `/v1/events`). A longer `since` is answered for this range only, and
    /// the answer's `warnings` say so. Default: the store's retention
    /// (`storage.retention_days`) when one is set, else 400 days.
    #[serde(default, with = "humantime_serde")]
    pub max_query_range: Option<Duration>,
    /// Longest one query of the API may run, its wait for a free reader
    /// included; the store stops it then and the API answers 503
    /// `query_timeout`. Start-up work (rebuilding counters) is not bounded.
    #[serde(default = "default_query_timeout", with = "humantime_serde")]
    pub query_timeout: Duration,
}

fn default_api_listen() -> String {
    "127.0.0.1:7070".to_owned()
}
fn default_query_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: default_api_listen(),
            max_query_range: None,
            query_timeout: default_query_timeout(),
        }
    }
}

/// `[listeners]`: limits of every listener (OTLP/gRPC, OTLP/HTTP, API,
/// gateway), against slow and half-open connections and floods.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenersSection {
    /// A connection must send a complete request head within this time of
    /// opening (and of the first byte of each later HTTP/1.1 request), or
    /// it is closed.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request body must arrive whole within this time of its head
    /// (HTTP 408, gRPC DEADLINE_EXCEEDED).
    #[serde(default = "default_body_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// A connection with no request in flight and nothing received for
    /// this long is closed (HTTP/2: with a GOAWAY).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Open connections per listener; more are accepted and closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Concurrent streams per HTTP/2 connection; more are refused (REFUSED_STREAM).
    #[serde(default = "default_http2_max_concurrent_streams")]
    pub http2_max_concurrent_streams: u32,
    /// Streams a client may reset before the server accepted them (the
    /// "rapid reset" flood); past it the connection is closed.
    #[serde(default = "default_http2_max_pending_accept_reset_streams")]
    pub http2_max_pending_accept_reset_streams: usize,
    /// Largest request head in bytes (HTTP/1.1 headers, HTTP/2 header
    /// list, CONTINUATION frames included).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_body_read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_max_connections() -> usize {
    4_096
}
fn default_http2_max_concurrent_streams() -> u32 {
    256
}
fn default_http2_max_pending_accept_reset_streams() -> usize {
    20
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}

impl Default for ListenersSection {
    fn default() -> Self {
        Self {
            header_read_timeout: default_header_read_timeout(),
            body_read_timeout: default_body_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            http2_max_concurrent_streams: default_http2_max_concurrent_streams(),
            http2_max_pending_accept_reset_streams: default_http2_max_pending_accept_reset_streams(
            ),
            max_header_bytes: default_max_header_bytes(),
        }
    }
}

/// `[tls]`: TLS on every listener (OTLP/gRPC, OTLP/HTTP, API, gateway),
/// client certificates on the OTLP receivers, and extra roots for outbound
/// connections. Files are PEM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Certificate chain, end entity first. Set with `key_file`: every
    /// listener then serves TLS only (1.2 and 1.3).
    #[serde(default)]
    pub cert_file: Option<String>,
    /// Private key of the certificate (PKCS#8, RSA or SEC1).
    #[serde(default)]
    pub key_file: Option<String>,
    /// CA bundle: when set, the OTLP receivers require a client certificate
    /// signed by one of these CAs (mTLS); the API and gateway do not. Read
    /// at start-up.
    #[serde(default)]
    pub client_ca_file: Option<String>,
    /// CA bundle trusted for outbound connections (LLM providers, webhooks,
    /// ClickHouse) on top of the usual public roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// How often `cert_file` and `key_file` are read again: a renewed
    /// certificate is served to new connections without a restart; one that
    /// cannot be used keeps the previous certificate (and is logged once).
    #[serde(default = "default_tls_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

fn default_tls_reload_interval() -> Duration {
    Duration::from_secs(5)
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            ca_file: None,
            reload_interval: default_tls_reload_interval(),
        }
    }
}

/// `[memory]`: the memory limiter. Past the ceiling the receivers refuse
/// new data (HTTP 503 + Retry-After, gRPC RESOURCE_EXHAUSTED) and the
/// gateway answers 503, until resident memory is back below the lower mark.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySection {
    /// Ceiling of resident memory in MiB. Default: 80 % of the cgroup's
    /// memory limit, or of the machine's memory when there is none.
    #[serde(default)]
    pub limit_mib: Option<u64>,
    /// Data is accepted again once resident memory is below this share of
    /// the ceiling (default 90).
    #[serde(default)]
    pub resume_below_percent: Option<u8>,
    /// Share of the ceiling that request bodies being read and decoded may
    /// reserve together (default 25); a request that does not fit is
    /// refused before it is read.
    #[serde(default)]
    pub requests_percent: Option<u8>,
    /// How often resident memory is read (default 100ms).
    #[serde(default, with = "humantime_serde")]
    pub check_interval: Option<Duration>,
}

/// What an acknowledgement survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Rows are acknowledged once in the in-memory queue: a crash loses
    /// what the store did not have yet (benchmarks).
    Memory,
    /// Rows are acknowledged once written to the write-ahead log: they
    /// survive the process being killed.
    #[default]
    Process,
    /// Rows are acknowledged once the write-ahead log is flushed to the
    /// device: they survive a power loss.
    Power,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Memory => "memory",
            Durability::Process => "process",
            Durability::Power => "power",
        }
    }
}

/// `[durability]`: what an OK answer to a sender survives.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurabilitySection {
    /// `memory`, `process` (default) or `power`; see the README's table.
    #[serde(default)]
    pub level: Durability,
    /// Directory of the write-ahead log. Default: `wal` inside the SQLite
    /// data directory; `./data/wal` with ClickHouse.
    #[serde(default)]
    pub dir: Option<String>,
    /// Most MiB of acknowledged rows not stored yet the log holds (default
    /// 1024); past it receivers answer 503 / UNAVAILABLE until the store
    /// catches up.
    #[serde(default)]
    pub max_disk_mib: Option<u64>,
}

/// `[ledger]`: the rules' usage counters, one per (rule, scope, window).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// `local` (default): counters in this process's memory, rebuilt from
    /// the store at start-up. `redis`: budgets shared by every instance
    /// through a Redis-protocol server (`[ledger.redis]`), exact across
    /// replicas.
    #[serde(default, rename = "type")]
    pub kind: LedgerKind,
    /// Most counters held in memory (default 250,000). Past it the least
    /// recently used are evicted and read back from the store when their
    /// scope calls again: budgets stay exact, memory stays bounded.
    #[serde(default)]
    pub max_counters: Option<usize>,
    /// `type = "redis"`: the server.
    #[serde(default)]
    pub redis: Option<tollgate_redis::RedisConfig>,
    /// This instance's name in the shared ledger (default: the host name);
    /// a random suffix makes each start a new holder.
    #[serde(default)]
    pub instance: Option<String>,
    /// How long the server keeps an instance's lease after its last
    /// exchange (default 10 s): a dead instance's lease is booked as spent
    /// that long after it died.
    #[serde(default, with = "humantime_serde")]
    pub lease_ttl: Option<std::time::Duration>,
    /// How often spend is reported and idle leases given back (default
    /// 100 ms).
    #[serde(default, with = "humantime_serde")]
    pub sync_interval: Option<std::time::Duration>,
}

/// `ledger.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    #[default]
    Local,
    Redis,
}

/// `[storage]`: where rows are written. Chosen by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StorageSection {
    /// The embedded store (default): SQLite in WAL mode, zero set-up.
    Sqlite {
        /// Directory holding `tollgate.sqlite`; created if missing.
        #[serde(default = "default_data_dir")]
        path: String,
        /// Read-only connections answering the query API: that many queries
        /// run at once, others wait (within `api.query_timeout`). `/readyz`
        /// has a connection of its own besides these.
        #[serde(default = "default_sqlite_readers")]
        readers: usize,
    },
    /// ClickHouse (23.8 LTS and newer), for production and dashboards.
    /// The collector creates the database and migrates the schema itself.
    Clickhouse {
        /// HTTP(S) interface, e.g. `http://127.0.0.1:8123` or `https://ch.example.com:8443`.
        url: String,
        /// Database holding Tollgate's tables; created if missing.
        #[serde(default = "default_clickhouse_database")]
        database: String,
        /// User; prefer `user = "${CLICKHOUSE_USER}"`.
        #[serde(default)]
        user: Option<String>,
        /// Password; prefer `password = "${CLICKHOUSE_PASSWORD}"`. Never logged.
        #[serde(default)]
        password: Option<String>,
        /// `lz4` (default) or `none` (for servers or proxies without it).
        #[serde(default = "default_clickhouse_compression")]
        compression: String,
        /// Days rows are kept (TTL on calls, rule events and rollups); unset keeps them.
        #[serde(default)]
        retention_days: Option<u32>,
        /// Longest one insert or query may take before it is retried.
        #[serde(default = "default_clickhouse_timeout", with = "humantime_serde")]
        timeout: Duration,
    },
}

fn default_clickhouse_database() -> String {
    "tollgate".to_owned()
}
fn default_clickhouse_compression() -> String {
    "lz4".to_owned()
}
fn default_clickhouse_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_data_dir() -> String {
    "./data".to_owned()
}
fn default_sqlite_readers() -> usize {
    4
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection::Sqlite {
            path: default_data_dir(),
            readers: default_sqlite_readers(),
        }
    }
}

/// `[pipeline]`: the bounded queue between receivers and the store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Rows that may wait for the store. When full, receivers push back
    /// (gRPC RESOURCE_EXHAUSTED, HTTP 503 + Retry-After) instead of growing.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity_rows: usize,
    /// Most rows written in one store transaction. Larger transactions
    /// spread each commit's cost (WAL frames, checkpoints, ClickHouse
    /// insert round trips) over more rows.
    #[serde(default = "default_batch_max_rows")]
    pub batch_max_rows: usize,
    /// How long shutdown waits for queued rows to reach the store.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Calls remembered so that an exporter's retry is dropped and a second
    /// description of a call (another instrumentation layer, exported later)
    /// is merged into its row instead of stored as another call. Least
    /// recently seen traces are forgotten first. Refilled from the store at
    /// start-up. About 340 bytes per call with one call a trace, 450 bytes with
    /// ten (45 MB at most at the default). The descriptions of one call
    /// arrive seconds apart: 100,000 calls cover 10 s at 10,000 calls/s.
    #[serde(default = "default_dedup_window_calls")]
    pub dedup_window_calls: usize,
    /// How long a trace's calls are remembered after its last span arrived.
    #[serde(default = "default_dedup_horizon", with = "humantime_serde")]
    pub dedup_horizon: Duration,
}

fn default_queue_capacity() -> usize {
    100_000
}
fn default_batch_max_rows() -> usize {
    25_000
}
fn default_dedup_window_calls() -> usize {
    100_000
}
fn default_dedup_horizon() -> Duration {
    Duration::from_secs(600)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            queue_capacity_rows: default_queue_capacity(),
            batch_max_rows: default_batch_max_rows(),
            shutdown_timeout: default_shutdown_timeout(),
            dedup_window_calls: default_dedup_window_calls(),
            dedup_horizon: default_dedup_horizon(),
        }
    }
}

/// `[pricing]`: the price table and local overrides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingSection {
    /// A price table file replacing the built-in one (same format as
    /// `rules/data/prices.toml`). Default: the built-in table.
    #[serde(default)]
    pub table: Option<String>,
    /// Per-model prices that replace or add to the table (negotiated rates,
    /// self-hosted models).
    #[serde(default)]
    pub models: Vec<PriceOverride>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[log]`: the collector's own logs (never call content or keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `tracing` filter, e.g. `info` or `tollgate_collector=debug`. `RUST_LOG` wins when set.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

fn default_log_level() -> String {
    "info".to_owned()
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: LogFormat::Text,
        }
    }
}
