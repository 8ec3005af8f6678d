//! Operational events of the collector: each one logs (when worth a line)
//! and counts. Metric handles are created once at start-up and cloned into
//! the components; nothing here allocates per request.

mod gateway;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::memory::MemoryLimiter;
pub use gateway::GatewayMetrics;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 2];

/// Which receiver an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    TooLarge,
    UnsupportedMediaType,
    QueueFull,
    ShuttingDown,
    Unavailable,
}

/// Why a listener closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionClose {
    /// The client closed it, or the exchange ended normally.
    Client,
    /// No complete request head in time.
    HeaderTimeout,
    /// Nothing in flight and nothing received for the idle timeout.
    IdleTimeout,
    /// Refused at once: the listener had `max_connections` open.
    OverCap,
    /// Malformed HTTP, oversized heads, HTTP/2 floods.
    ProtocolError,
    /// The peer reset the connection.
    Reset,
    /// The collector is shutting down.
    Shutdown,
}

impl ConnectionClose {
    fn as_str(self) -> &'static str {
        match self {
            ConnectionClose::Client => "client",
            ConnectionClose::HeaderTimeout => "header_timeout",
            ConnectionClose::IdleTimeout => "idle_timeout",
            ConnectionClose::OverCap => "over_cap",
            ConnectionClose::ProtocolError => "protocol_error",
            ConnectionClose::Reset => "reset",
            ConnectionClose::Shutdown => "shutdown",
        }
    }
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::TooLarge => "too_large",
            Refusal::UnsupportedMediaType => "unsupported_media_type",
            Refusal::QueueFull => "queue_full",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::Unavailable => "unavailable",
        }
    }
}

/// All metrics of the collector, and the events that move them.
#[derive(Debug)]
pub struct InternalEvents {
    registry: Registry,
    requests: Family<Labels, Counter>,
    grpc_ok: Counter,
    http_ok: Counter,
    spans_accepted: Counter,
    spans_skipped: Counter,
    spans_rejected: Counter,
    rows_written: Counter,
    rows_lost: Counter,
    queue_depth: Gauge,
    queue_capacity: Gauge,
    write_seconds: Histogram,
    write_errors: Counter,
    store_down: AtomicBool,
    alerts: Family<[(&'static str, &'static str); 1], Counter>,
    rule_events: Counter,
    duplicates: Counter,
    merged_same_batch: Counter,
    merged_late: Counter,
    identity_calls: Gauge,
    identity_bytes: Gauge,
    /// By `kind` (the normaliser's names).
    non_calls: Family<[(&'static str, &'static str); 1], Counter>,
    costs_replaced: Counter,
    kafka: Family<[(&'static str, &'static str); 1], Counter>,
    kafka_rebalances: Family<[(&'static str, &'static str); 1], Counter>,
    query_timeouts: Family<[(&'static str, &'static str); 1], Counter>,
    gateway: GatewayMetrics,
    stage_panics: Family<[(&'static str, &'static str); 1], Counter>,
    alerts_pending: Family<[(&'static str, String); 1], Gauge>,
    labels_dropped: Counter,
    connections_open: Family<[(&'static str, &'static str); 1], Gauge>,
    connections_closed: Family<Labels, Counter>,
    auth_failures: Family<Labels, Counter>,
    memory: MemoryMetrics,
    ledger: LedgerMetrics,
    wal: WalMetrics,
    shared_ledger: SharedLedgerMetrics,
    wal_replayed: Counter,
    ledger_rebuild_seconds: Histogram,
    ledger_rebuilt_calls: Counter,
    ledger_rebuild_errors: Counter,
}

impl InternalEvents {
    /// Registers every metric once.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("tollgate");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "ingest_requests",
            "OTLP export requests by transport and outcome",
            requests.clone(),
        );
        let grpc_ok = requests
            .get_or_create(&[("transport", "grpc"), ("outcome", "ok")])
            .clone();
        let http_ok = requests
            .get_or_create(&[("transport", "http"), ("outcome", "ok")])
            .clone();
        let spans = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "ingest_spans",
            "Spans received: accepted (model calls), skipped (not model calls), rejected (bad values)",
            spans.clone(),
        );
        let spans_accepted = spans.get_or_create(&[("outcome", "accepted")]).clone();
        let spans_skipped = spans.get_or_create(&[("outcome", "skipped")]).clone();
        let spans_rejected = spans.get_or_create(&[("outcome", "rejected")]).clone();
        let rows_written = Counter::default();
        registry.register(
            "store_rows_written",
            "Rows written to the store",
            rows_written.clone(),
        );
        let rows_lost = Counter::default();
        registry.register(
            "store_rows_lost",
            "Acknowledged rows that could not be written before shutdown gave up",
            rows_lost.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth_rows",
            "Rows waiting for the store",
            queue_depth.clone(),
        );
        let queue_capacity = Gauge::default();
        registry.register(
            "queue_capacity_rows",
            "Capacity of the row queue",
            queue_capacity.clone(),
        );
        let write_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "store_write_seconds",
            "Latency of one batch write to the store",
            write_seconds.clone(),
        );
        let write_errors = Counter::default();
        registry.register(
            "store_write_errors",
            "Failed batch writes (retried)",
            write_errors.clone(),
        );
        let alerts = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "alerts",
            "Alert delivery attempts by outcome: delivered, failed (retried later), given_up (refused for good, or older than alerts.max_age)",
            alerts.clone(),
        );
        let rule_events = Counter::default();
        registry.register(
            "rule_events",
            "Rule events (thresholds, limits, denials)",
            rule_events.clone(),
        );
        let duplicates = Counter::default();
        registry.register(
            "pipeline_duplicates_dropped",
            "Spans dropped as repeats of a span already seen (exporter retries, redeliveries)",
            duplicates.clone(),
        );
        let merged = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "pipeline_calls_merged",
            "Spans merged into the row of a call another span already described: \
             in the same batch, or later (the stored row updated)",
            merged.clone(),
        );
        let merged_same_batch = merged.get_or_create(&[("when", "same_batch")]).clone();
        let merged_late = merged.get_or_create(&[("when", "late")]).clone();
        let identity_calls = Gauge::default();
        registry.register(
            "pipeline_identity_calls",
            "Calls the call identity remembers (to drop retries and merge relatives)",
            identity_calls.clone(),
        );
        let identity_bytes = Gauge::default();
        registry.register(
            "pipeline_identity_bytes",
            "Bytes the call identity's maps hold (table capacity included, allocator overhead not)",
            identity_bytes.clone(),
        );
        let non_call = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "ingest_non_call_spans",
            "Spans that are not model calls, by kind (agent runs, workflows, tools, chains, other)",
            non_call.clone(),
        );
        let non_calls = non_call;
        let costs_replaced = Counter::default();
        registry.register(
            "ingest_costs_replaced",
            "Reported call costs not used (not finite, or implausible against the price table)",
            costs_replaced.clone(),
        );
        let kafka = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "kafka_messages",
            "Kafka messages by outcome: produced, produce_failed, gateway_retried (a gateway call's row handed over again), consumed, invalid (undecodable, skipped); commits",
            kafka.clone(),
        );
        let kafka_rebalances = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "kafka_rebalances",
            "Consumer-group rebalances seen by this instance: assign, revoke",
            kafka_rebalances.clone(),
        );
        let query_timeouts = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "api_query_timeouts",
            "Queries of the API stopped at the query timeout (api.query_timeout), by endpoint",
            query_timeouts.clone(),
        );
        let gateway = GatewayMetrics::default();
        registry.register_collector(Box::new(gateway.clone()));
        let labels_dropped = Counter::default();
        registry.register(
            "ingest_labels_dropped",
            "Custom labels dropped because their key had receivers.otlp.max_label_values values already",
            labels_dropped.clone(),
        );
        let alerts_pending = Family::<[(&'static str, String); 1], Gauge>::default();
        registry.register(
            "alerts_pending",
            "Alerts in the outbox not delivered yet, by webhook (up to 64 counted)",
            alerts_pending.clone(),
        );
        let stage_panics = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "pipeline_stage_panics",
            "Batches a pipeline stage panicked on (a bug: the batch was stored without the stage)",
            stage_panics.clone(),
        );
        let connections_open = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        registry.register(
            "listener_connections_open",
            "Connections open, by listener",
            connections_open.clone(),
        );
        let auth_failures = Family::<Labels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused for their key or token, by listener and reason (missing, unknown, revoked, expired, role, scope, throttled)",
            auth_failures.clone(),
        );
        let connections_closed = Family::<Labels, Counter>::default();
        registry.register(
            "listener_connections_closed",
            "Connections closed, by listener and reason (client, header_timeout, idle_timeout, \
             over_cap, protocol_error, reset, shutdown)",
            connections_closed.clone(),
        );
        let ledger = LedgerMetrics::default();
        registry.register_collector(Box::new(ledger.clone()));
        let ledger_rebuild_seconds = Histogram::new(exponential_buckets(0.001, 4.0, 8));
        registry.register(
            "ledger_rebuild_seconds",
            "Time reading evicted counters back from the store, per rebuild",
            ledger_rebuild_seconds.clone(),
        );
        let ledger_rebuilt_calls = Counter::default();
        registry.register(
            "ledger_rebuild_calls_read",
            "Stored calls read to rebuild evicted counters",
            ledger_rebuilt_calls.clone(),
        );
        let ledger_rebuild_errors = Counter::default();
        registry.register(
            "ledger_rebuild_errors",
            "Rebuilds of evicted counters the store failed (retried on the scope's next call)",
            ledger_rebuild_errors.clone(),
        );
        let wal = WalMetrics::default();
        registry.register_collector(Box::new(wal.clone()));
        let shared_ledger = SharedLedgerMetrics::default();
        registry.register_collector(Box::new(shared_ledger.clone()));
        let wal_replayed = Counter::default();
        registry.register(
            "wal_replayed_rows",
            "Acknowledged rows read back from the write-ahead log at start-up",
            wal_replayed.clone(),
        );
        let memory = MemoryMetrics::default();
        registry.register_collector(Box::new(memory.clone()));
        Arc::new(Self {
            registry,
            gateway,
            kafka,
            kafka_rebalances,
            query_timeouts,
            alerts,
            rule_events,
            requests,
            grpc_ok,
            http_ok,
            spans_accepted,
            spans_skipped,
            spans_rejected,
            rows_written,
            rows_lost,
            queue_depth,
            queue_capacity,
            write_seconds,
            write_errors,
            store_down: AtomicBool::new(false),
            duplicates,
            merged_same_batch,
            merged_late,
            identity_calls,
            identity_bytes,
            non_calls,
            costs_replaced,
            stage_panics,
            alerts_pending,
            labels_dropped,
            connections_open,
            connections_closed,
            auth_failures,
            memory,
            ledger,
            wal,
            shared_ledger,
            wal_replayed,
            ledger_rebuild_seconds,
            ledger_rebuilt_calls,
            ledger_rebuild_errors,
        })
    }

    /// Exports the write-ahead log's state (`tollgate_wal_*`), read by
    /// `stats` at scrape time.
    pub fn attach_wal(&self, stats: impl Fn() -> WalStats + Send + Sync + 'static) {
        let _ = self.wal.0.set(Arc::new(stats));
    }

    /// Exports the exchanges with the shared ledger (`[ledger] type =
    /// "redis"`; `tollgate_ledger_exchange*`, `tollgate_ledger_requests`),
    /// read by `stats` at scrape time.
    pub fn attach_shared_ledger(
        &self,
        stats: impl Fn() -> SharedLedgerStats + Send + Sync + 'static,
    ) {
        let _ = self.shared_ledger.0.set(Arc::new(stats));
    }

    pub fn wal_replayed(&self, rows: usize) {
        self.wal_replayed.inc_by(rows as u64);
    }

    /// Exports the rules engine's ledger state (`tollgate_ledger_*`).
    pub fn attach_ledger(&self, engine: tollgate_rules::engine::Engine) {
        let _ = self.ledger.0.set(engine);
    }

    /// Evicted counters of `scopes` scopes were read back from `calls` stored calls.
    pub fn ledger_rebuilt(&self, scopes: usize, calls: u64, took: Duration) {
        self.ledger_rebuild_seconds.observe(took.as_secs_f64());
        self.ledger_rebuilt_calls.inc_by(calls);
        tracing::debug!(
            scopes,
            calls,
            took_ms = took.as_millis() as u64,
            "evicted counters rebuilt"
        );
    }

    pub fn ledger_rebuild_failed(&self) {
        self.ledger_rebuild_errors.inc();
    }

    /// Exports the memory limiter's state (`tollgate_memory_*`).
    pub fn attach_memory(&self, limiter: MemoryLimiter) {
        let _ = self.memory.0.set(limiter);
    }

    pub fn connection_opened(&self, listener: &'static str) {
        self.connections_open
            .get_or_create(&[("listener", listener)])
            .inc();
    }

    /// A connection closed (or, `OverCap`, was refused: it was never open).
    pub fn connection_closed(&self, listener: &'static str, why: ConnectionClose) {
        if why != ConnectionClose::OverCap {
            self.connections_open
                .get_or_create(&[("listener", listener)])
                .dec();
        }
        self.connections_closed
            .get_or_create(&[("listener", listener), ("reason", why.as_str())])
            .inc();
    }

    /// A request was refused for its key or token (never logged with it).
    pub fn auth_failed(&self, listener: &'static str, reason: &'static str) {
        self.auth_failures
            .get_or_create(&[("listener", listener), ("reason", reason)])
            .inc();
    }

    /// Exports the running gateway's counters (`tollgate_gateway_*`).
    pub fn attach_gateway(&self, gateway: Arc<tollgate_gateway::Gateway>) {
        self.gateway.attach(gateway);
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn request_accepted(
        &self,
        transport: Transport,
        accepted: u64,
        skipped: u64,
        rejected: u64,
    ) {
        match transport {
            Transport::Grpc => self.grpc_ok.inc(),
            Transport::Http => self.http_ok.inc(),
        };
        self.spans_accepted.inc_by(accepted);
        self.spans_skipped.inc_by(skipped);
        self.spans_rejected.inc_by(rejected);
        if rejected > 0 {
            tracing::debug!(
                transport = transport.as_str(),
                rejected,
                "spans rejected (partial success)"
            );
        }
    }

    pub fn request_refused(&self, transport: Transport, refusal: Refusal, detail: &str) {
        self.requests
            .get_or_create(&[
                ("transport", transport.as_str()),
                ("outcome", refusal.as_str()),
            ])
            .inc();
        tracing::debug!(
            transport = transport.as_str(),
            reason = refusal.as_str(),
            detail,
            "request refused"
        );
    }

    pub fn queue_capacity(&self, rows: usize) {
        self.queue_capacity
            .set(i64::try_from(rows).unwrap_or(i64::MAX));
    }

    pub fn queue_depth(&self, rows: usize) {
        self.queue_depth
            .set(i64::try_from(rows).unwrap_or(i64::MAX));
    }

    pub fn batch_written(&self, rows: usize, took: Duration) {
        self.rows_written.inc_by(rows as u64);
        self.write_seconds.observe(took.as_secs_f64());
        if self.store_down.swap(false, Ordering::Relaxed) {
            tracing::info!("store is writable again");
        }
    }

    /// A failed write is logged once per outage, not once per retry.
    pub fn batch_failed(&self, rows: usize, error: &dyn std::error::Error) {
        self.write_errors.inc();
        if !self.store_down.swap(true, Ordering::Relaxed) {
            tracing::error!(rows, error = %error, "store write failed; retrying with backoff");
        }
    }

    pub fn rows_lost(&self, rows: usize, why: &str) {
        self.rows_lost.inc_by(rows as u64);
        tracing::error!(rows, why, "acknowledged rows were not written");
    }

    pub fn alert_delivered(&self) {
        self.alerts.get_or_create(&[("outcome", "delivered")]).inc();
    }

    pub fn alert_failed(&self) {
        self.alerts.get_or_create(&[("outcome", "failed")]).inc();
    }

    pub fn alert_given_up(&self, webhook: &str, why: &str) {
        self.alerts.get_or_create(&[("outcome", "given_up")]).inc();
        tracing::warn!(webhook, why, "alert given up");
    }

    /// Pending alerts of a webhook, as its delivery task last read them.
    pub fn alerts_pending(&self, webhook: &str, n: usize) {
        self.alerts_pending
            .get_or_create(&[("webhook", webhook.to_owned())])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Custom labels dropped over their key's cardinality limit.
    pub fn labels_dropped(&self, n: u64) {
        if n > 0 {
            self.labels_dropped.inc_by(n);
        }
    }

    pub fn rule_events(&self, n: usize) {
        self.rule_events.inc_by(n as u64);
    }

    /// What call identity did with a batch: `retries` repeated spans
    /// dropped, `merged` descriptions merged into a call of the batch,
    /// `late` merged into calls already passed on.
    pub fn calls_sorted(&self, retries: usize, merged: usize, late: usize) {
        if retries > 0 {
            self.duplicates.inc_by(retries as u64);
            tracing::debug!(spans = retries, "repeated spans dropped");
        }
        self.merged_same_batch.inc_by(merged as u64);
        self.merged_late.inc_by(late as u64);
    }

    /// A pipeline stage panicked on a batch; `lost` rows could not be kept.
    pub fn stage_panicked(&self, stage: &'static str, lost: usize) {
        self.stage_panics.get_or_create(&[("stage", stage)]).inc();
        if lost > 0 {
            self.rows_lost.inc_by(lost as u64);
        }
        tracing::error!(
            stage,
            rows_lost = lost,
            "a pipeline stage panicked on a batch; the batch is stored without it"
        );
    }

    /// What the call identity holds after a batch.
    pub fn identity_size(&self, calls: u64, bytes: usize) {
        self.identity_calls
            .set(i64::try_from(calls).unwrap_or(i64::MAX));
        self.identity_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Spans of one request that were not model calls, by kind, and
    /// reported costs not used.
    pub fn spans_classified(
        &self,
        non_calls: impl IntoIterator<Item = (&'static str, u64)>,
        costs_replaced: u64,
    ) {
        for (kind, n) in non_calls {
            if n > 0 {
                self.non_calls.get_or_create(&[("kind", kind)]).inc_by(n);
            }
        }
        if costs_replaced > 0 {
            self.costs_replaced.inc_by(costs_replaced);
        }
    }

    pub fn kafka_produced(&self, n: usize) {
        self.kafka
            .get_or_create(&[("outcome", "produced")])
            .inc_by(n as u64);
    }

    pub fn kafka_produce_failed(&self, n: usize, error: &str) {
        self.kafka
            .get_or_create(&[("outcome", "produce_failed")])
            .inc_by(n as u64);
        tracing::debug!(
            calls = n,
            error,
            "Kafka did not take the calls; sender told to retry"
        );
    }

    /// Kafka did not take a gateway call's row (its producer queue was
    /// full, or the delivery failed): it is handed over again, holding its
    /// room, until Kafka takes it.
    pub fn kafka_gateway_row_retried(&self, error: &str) {
        self.kafka
            .get_or_create(&[("outcome", "gateway_retried")])
            .inc();
        tracing::debug!(error, "a gateway call's row is produced to Kafka again");
    }

    pub fn kafka_consumed(&self, n: usize) {
        self.kafka
            .get_or_create(&[("outcome", "consumed")])
            .inc_by(n as u64);
    }

    pub fn kafka_invalid(&self, error: &str) {
        self.kafka.get_or_create(&[("outcome", "invalid")]).inc();
        tracing::warn!(error, "undecodable Kafka message skipped");
    }

    pub fn kafka_committed(&self) {
        self.kafka.get_or_create(&[("outcome", "commits")]).inc();
    }

    pub fn kafka_rebalance(&self, kind: &'static str, partitions: usize) {
        self.kafka_rebalances.get_or_create(&[("kind", kind)]).inc();
        tracing::info!(kind, partitions, "Kafka consumer-group rebalance");
    }

    /// A query of the API (`endpoint`: usage, calls, events) was stopped at
    /// the query timeout.
    pub fn query_timed_out(&self, endpoint: &'static str, timeout: Duration) {
        self.query_timeouts
            .get_or_create(&[("endpoint", endpoint)])
            .inc();
        tracing::warn!(
            endpoint,
            timeout_seconds = timeout.as_secs_f64(),
            "query stopped at the query timeout"
        );
    }

    pub fn rows_written_total(&self) -> u64 {
        self.rows_written.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let ev = InternalEvents::new();
        ev.request_accepted(Transport::Grpc, 3, 1, 0);
        ev.request_refused(Transport::Http, Refusal::QueueFull, "full");
        ev.queue_capacity(10);
        ev.batch_written(3, Duration::from_millis(2));
        ev.query_timed_out("usage", Duration::from_secs(10));
        let text = ev.encode();
        assert!(
            text.contains("tollgate_api_query_timeouts_total{endpoint=\"usage\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tollgate_ingest_spans_total{outcome=\"accepted\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("tollgate_ingest_spans_total{outcome=\"skipped\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "tollgate_ingest_requests_total{transport=\"http\",outcome=\"queue_full\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("tollgate_queue_capacity_rows 10"), "{text}");
        assert!(
            text.contains("tollgate_store_rows_written_total 3"),
            "{text}"
        );
        assert!(
            text.contains("tollgate_store_write_seconds_count 1"),
            "{text}"
        );
    }

    #[test]
    fn shared_ledger_exchanges_are_exported_once_attached() {
        let ev = InternalEvents::new();
        assert!(!ev.encode().contains("tollgate_ledger_exchanges"));
        ev.attach_shared_ledger(|| SharedLedgerStats {
            exchanges: 7,
            failures: 2,
            requests: 19,
            short: 3,
            down: true,
        });
        let text = ev.encode();
        for line in [
            "tollgate_ledger_exchanges_total 7",
            "tollgate_ledger_exchange_failures_total 2",
            "tollgate_ledger_requests_total 19",
            "tollgate_ledger_short_exchanges_total 3",
            "tollgate_ledger_shared_down 1",
        ] {
            assert!(text.contains(line), "no `{line}` in {text}");
        }
    }
}

/// The memory limiter's state, read at scrape time.
#[derive(Debug, Clone, Default)]
struct MemoryMetrics(Arc<std::sync::OnceLock<MemoryLimiter>>);

impl prometheus_client::collector::Collector for MemoryMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(limiter) = self.0.get() else {
            return Ok(());
        };
        let s = limiter.stats();
        let gauges = [
            (
                "memory_resident_bytes",
                "Resident memory of the process at the limiter's last reading",
                s.resident_bytes,
            ),
            (
                "memory_limit_bytes",
                "The memory limiter's ceiling (memory.limit_mib)",
                s.limit_bytes,
            ),
            (
                "memory_requests_in_flight_bytes",
                "Bytes reserved by requests being read and decoded",
                s.requests_in_flight_bytes,
            ),
            (
                "memory_refusing",
                "1 while the process is over its memory ceiling and refuses new data",
                u64::from(s.refusing),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        let counters = [
            (
                "memory_refused_over_limit",
                "Requests refused because resident memory was over the ceiling",
                s.refused_over_limit,
            ),
            (
                "memory_refused_in_flight",
                "Requests refused because their bytes did not fit in the in-flight budget",
                s.refused_in_flight,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

/// The ledger's state, read at scrape time.
#[derive(Debug, Clone, Default)]
struct LedgerMetrics(Arc<std::sync::OnceLock<tollgate_rules::engine::Engine>>);

impl prometheus_client::collector::Collector for LedgerMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(engine) = self.0.get() else {
            return Ok(());
        };
        let s = engine.ledger_stats();
        let gauges = [
            (
                "ledger_counters",
                "Rule counters held in memory (at most ledger.max_counters)",
                s.counters,
            ),
            (
                "ledger_evicted_scopes",
                "Scopes whose counters were evicted and are read back from the store on their next call",
                s.evicted_scopes,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        let counters = [
            (
                "ledger_evictions",
                "Counters evicted from memory to stay within ledger.max_counters",
                s.evictions,
            ),
            (
                "ledger_rebuilds",
                "Evicted counters read back from the store",
                s.rebuilds,
            ),
            (
                "ledger_evictions_deferred",
                "Times the ledger was over ledger.max_counters with nothing evictable (reservations, calls not stored yet)",
                s.evictions_deferred,
            ),
            (
                "ledger_counted_before_rebuild",
                "Evicted counters counted into before being read back (completed from the store once their calls are stored)",
                s.counted_before_rebuild,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

/// The write-ahead log's figures at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalStats {
    pub pending_bytes: u64,
    pub max_bytes: u64,
    pub segments: u64,
    pub appends: u64,
    pub appended_bytes: u64,
    pub refused_full: u64,
    pub write_errors: u64,
    pub flushes: u64,
}

type WalStatsFn = Arc<dyn Fn() -> WalStats + Send + Sync>;

/// The write-ahead log's state, read at scrape time.
#[derive(Clone, Default)]
struct WalMetrics(Arc<std::sync::OnceLock<WalStatsFn>>);

impl std::fmt::Debug for WalMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WalMetrics")
    }
}

impl prometheus_client::collector::Collector for WalMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(stats) = self.0.get() else {
            return Ok(());
        };
        let s = stats();
        let (pending, max) = (s.pending_bytes, s.max_bytes);
        let gauges = [
            (
                "wal_pending_bytes",
                "Bytes of acknowledged rows in the write-ahead log not stored yet",
                pending,
            ),
            (
                "wal_max_bytes",
                "The write-ahead log's limit (durability.max_disk_mib)",
                max,
            ),
            (
                "wal_segments",
                "Segment files of the write-ahead log on disk",
                s.segments,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        let counters = [
            (
                "wal_appends",
                "Records appended to the write-ahead log",
                s.appends,
            ),
            (
                "wal_appended_bytes",
                "Bytes appended to the write-ahead log",
                s.appended_bytes,
            ),
            (
                "wal_refused_full",
                "Appends refused because the write-ahead log reached durability.max_disk_mib",
                s.refused_full,
            ),
            (
                "wal_write_errors",
                "Write-ahead log writes or flushes the disk refused (full or failing)",
                s.write_errors,
            ),
            (
                "wal_flushes",
                "Flushes of the write-ahead log to the device (level power)",
                s.flushes,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

/// The exchanges with the shared ledger at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct SharedLedgerStats {
    /// Round trips that succeeded.
    pub exchanges: u64,
    /// Round trips that failed.
    pub failures: u64,
    /// Counters carried by the successful round trips.
    pub requests: u64,
    /// Calls that were short of lease and waited for an exchange.
    pub short: u64,
    /// Whether the last exchange failed.
    pub down: bool,
}

type SharedLedgerStatsFn = Arc<dyn Fn() -> SharedLedgerStats + Send + Sync>;

/// The shared ledger's exchanges, read at scrape time.
#[derive(Clone, Default)]
struct SharedLedgerMetrics(Arc<std::sync::OnceLock<SharedLedgerStatsFn>>);

impl std::fmt::Debug for SharedLedgerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedLedgerMetrics")
    }
}

impl prometheus_client::collector::Collector for SharedLedgerMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(stats) = self.0.get() else {
            return Ok(());
        };
        let s = stats();
        let down = ConstGauge::new(i64::from(s.down));
        let metric = encoder.encode_descriptor(
            "ledger_shared_down",
            "1 while the last exchange with the shared ledger failed",
            None,
            down.metric_type(),
        )?;
        down.encode(metric)?;
        let counters = [
            (
                "ledger_exchanges",
                "Round trips to the shared ledger that succeeded",
                s.exchanges,
            ),
            (
                "ledger_exchange_failures",
                "Round trips to the shared ledger that failed (unreachable, timed out)",
                s.failures,
            ),
            (
                "ledger_requests",
                "Counters carried by the successful round trips to the shared ledger",
                s.requests,
            ),
            (
                "ledger_short_exchanges",
                "Calls short of lease that waited for an exchange with the shared ledger",
                s.short,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}
