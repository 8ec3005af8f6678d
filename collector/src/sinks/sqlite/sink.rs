//! [`SqliteStore`]: writes batches and answers queries on the embedded store.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use futures::future::BoxFuture;
use rusqlite::{Connection, params};
use tokio::sync::oneshot;
use tollgate_rules::{CallRecord, RuleEvent};

use super::readers::{ReadConfig, Readers, open_reader};
use super::schema;
use crate::sinks::CallMerge;
use crate::sinks::outbox::{
    AlertOutbox, DeliveryState, OutboxEntry, Outcome, Pending, alert_identity,
};
use crate::sinks::{Batch, Sink, SinkError};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "tollgate.sqlite";

const INSERT: &str = "INSERT INTO calls (
    start_unix_nanos, duration_nanos, ttft_nanos, trace_id, span_id, request_id,
    org, project, app, environment, route, user_id, session_id, agent_id, agent_name,
    provider, operation, request_model, response_model, model,
    input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
    cost_usd, cost_source, price_version, status, error_type, http_status, stream,
    finish_reason, mode, decision, rules_fired, attempt, upstream, labels, parent_span_id
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
          ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34,
          ?35, ?36, ?37, ?38, ?39, ?40)";

/// A later description of a stored call (see `pipeline::identity`): fills
/// what the row lacks, sets the merged usage and cost. Found by its time
/// index key, then its identity.
const MERGE: &str = "UPDATE calls SET
    ttft_nanos = COALESCE(ttft_nanos, ?5),
    request_id = COALESCE(request_id, ?6),
    org = COALESCE(org, ?7), project = COALESCE(project, ?8), app = COALESCE(app, ?9),
    environment = COALESCE(environment, ?10), route = COALESCE(route, ?11),
    user_id = COALESCE(user_id, ?12), session_id = COALESCE(session_id, ?13),
    agent_id = COALESCE(agent_id, ?14), agent_name = COALESCE(agent_name, ?15),
    provider = COALESCE(provider, ?16), operation = COALESCE(operation, ?17),
    request_model = COALESCE(request_model, ?18), response_model = COALESCE(response_model, ?19),
    model = COALESCE(request_model, ?18, response_model, ?19),
    input_tokens = ?20, output_tokens = ?21, cache_read_tokens = ?22,
    cache_write_tokens = ?23, reasoning_tokens = ?24,
    cost_usd = COALESCE(?25, cost_usd),
    cost_source = CASE WHEN ?25 IS NULL THEN cost_source ELSE ?26 END,
    error_type = COALESCE(error_type, ?27), http_status = COALESCE(http_status, ?28),
    stream = stream OR ?29, finish_reason = COALESCE(finish_reason, ?30),
    upstream = COALESCE(upstream, ?31),
    status = CASE WHEN ?32 = 'error' THEN 'error' ELSE status END,
    parent_span_id = CASE WHEN ?33 = '' THEN parent_span_id ELSE ?33 END
  WHERE start_unix_nanos / 1000000000 = ?1 / 1000000000 AND start_unix_nanos = ?1
    AND trace_id = ?2 AND span_id = ?3 AND mode = ?4";

const INSERT_EVENT: &str = "INSERT INTO rule_events (
    time_unix_nanos, rule_id, kind, scope, metric, limit_value, used, threshold, action,
    window_end_unix_nanos, trace_id, span_id
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// Binds each `index: |row| value` whose value differs from the previous
/// row's (every one for the first row of a statement).
macro_rules! bind_changed {
    ($stmt:ident, $prev:ident, $row:ident; $($i:literal: |$c:ident| $value:expr),+ $(,)?) => {
        $(
            let now = {
                let $c = $row;
                $value
            };
            if $prev.is_none_or(|p| {
                let $c = p;
                $value
            } != now)
            {
                $stmt.raw_bind_parameter($i, now).map_err(unavailable)?;
            }
        )+
    };
}

/// The embedded store. One connection writes (SQLite allows one writer);
/// a few read-only ones answer queries concurrently thanks to WAL, and one
/// more answers the readiness check.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    batches: Arc<BatchThread>,
}

/// A batch to write and where to say how it went.
type Job = (Batch, oneshot::Sender<Result<(), SinkError>>);

/// The thread that writes batches. Rows are written on a thread of their
/// own instead of in `block_in_place` on a runtime worker: `block_in_place`
/// hands the worker's queue to another thread on every batch, so the
/// strings of a batch were mostly freed on a different thread from the one
/// that allocated them, which costs the allocator several times a local
/// free. The rows go back to the pipeline, which frees them on the thread
/// that decoded them (bench/ingest: about a tenth less CPU per span).
struct BatchThread {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl BatchThread {
    fn start(inner: Arc<Inner>) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("tollgate-sqlite".into())
            .spawn(move || {
                for (batch, done) in rx {
                    let written =
                        inner.insert(&batch.calls, &batch.events, &batch.merges, &batch.alerts);
                    // The pipeline takes the rows back once this handle is gone.
                    drop(batch);
                    let _ = done.send(written);
                }
            })?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    async fn write(&self, batch: Batch) -> Result<(), SinkError> {
        let stopped = || SinkError::Unavailable("the store's writer thread has stopped".into());
        let (done, written) = oneshot::channel();
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send((batch, done))
            .map_err(|_| stopped())?;
        written.await.map_err(|_| stopped())?
    }
}

impl Drop for BatchThread {
    /// The last handle on the store waits for the batch being written, so
    /// that the file is closed once the store is gone.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(super) struct Inner {
    pub(super) writer: Mutex<Connection>,
    /// The query API's connections.
    pub(super) readers: Readers,
    /// The readiness check's own connection: it never waits behind a query.
    pub(super) health: Mutex<Connection>,
    pub(super) path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn open_err(path: &Path, e: impl std::fmt::Display) -> SinkError {
    SinkError::Rejected(format!("cannot open the store at {}: {e}", path.display()))
}

/// Runs blocking SQLite work without stalling other tasks on a multi-thread runtime.
pub(super) fn run_blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl SqliteStore {
    /// Opens (creating and migrating) the store in directory `dir`, with
    /// the default readers and query timeout.
    pub fn open(dir: &Path) -> Result<Self, SinkError> {
        Self::open_with(dir, ReadConfig::default(), false)
    }

    /// Opens (creating and migrating) the store in directory `dir`; the
    /// query API reads it as `read` says.
    pub fn open_with(dir: &Path, read: ReadConfig, flush_commits: bool) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|e| open_err(dir, e))?;
        let path = dir.join(DB_FILE);
        let mut writer = Connection::open(&path).map_err(|e| open_err(&path, e))?;
        // 16 KiB pages (a new file only; an existing one keeps its size):
        // fewer pages, WAL frames and page splits per batch of rows than
        // with the 4 KiB default. The WAL is checkpointed every 2,500 pages
        // (about 40 MiB) instead of 1,000: index pages rewritten by each
        // batch are copied into the database less often. Together about a
        // third more rows per second into the store (bench/ingest, paired).
        writer
            .execute_batch(
                "PRAGMA page_size = 16384;
                 PRAGMA journal_mode = WAL;
                 PRAGMA wal_autocheckpoint = 2500;
                 PRAGMA synchronous = NORMAL;
                 PRAGMA busy_timeout = 5000;
                 PRAGMA temp_store = MEMORY;
                 PRAGMA cache_size = -65536;",
            )
            .map_err(|e| open_err(&path, e))?;
        if flush_commits {
            writer
                .execute_batch("PRAGMA synchronous = FULL;")
                .map_err(|e| open_err(&path, e))?;
        }
        schema::migrate(&mut writer).map_err(|e| open_err(&path, e))?;
        let readers = Readers::open(&path, read).map_err(|e| open_err(&path, e))?;
        let health = open_reader(&path).map_err(|e| open_err(&path, e))?;
        // The readiness check answers within `/readyz`'s second, locked or not.
        health
            .busy_timeout(std::time::Duration::from_millis(500))
            .map_err(|e| open_err(&path, e))?;
        let inner = Arc::new(Inner {
            writer: Mutex::new(writer),
            readers,
            health: Mutex::new(health),
            path,
        });
        let batches = BatchThread::start(inner.clone())
            .map_err(|e| open_err(&inner.path, format!("cannot start its writer thread: {e}")))?;
        Ok(Self {
            inner,
            batches: Arc::new(batches),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub(super) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Inner {
    /// The writer connection (batches, and the alert outbox's updates).
    fn lock_writer(&self) -> Result<std::sync::MutexGuard<'_, Connection>, SinkError> {
        self.writer
            .lock()
            .map_err(|_| SinkError::Unavailable("store writer lock poisoned".into()))
    }

    fn insert(
        &self,
        batch: &[CallRecord],
        events: &[RuleEvent],
        merges: &[CallMerge],
        alerts: &[OutboxEntry],
    ) -> Result<(), SinkError> {
        let mut conn = self.lock_writer()?;
        let tx = conn.transaction().map_err(unavailable)?;
        {
            let mut stmt = tx.prepare_cached(INSERT).map_err(unavailable)?;
            // A statement keeps its bindings from one row to the next (the
            // cache clears them when the statement is handed out again), so
            // a value equal to the previous row's is not bound again. Calls
            // of one request share most of their 39 values (project, app,
            // operation, provider, price version, status, mode...): about
            // half the binds, each a copy into SQLite, are skipped.
            let mut prev: Option<&CallRecord> = None;
            for r in batch {
                bind_changed!(stmt, prev, r;
                    1: |c| c.start_unix_nanos,
                    2: |c| c.duration_nanos,
                    3: |c| c.ttft_nanos,
                    4: |c| c.trace_id.as_str(),
                    5: |c| c.span_id.as_str(),
                    6: |c| c.request_id.as_deref(),
                    7: |c| c.org.as_deref(),
                    8: |c| c.project.as_deref(),
                    9: |c| c.app.as_deref(),
                    10: |c| c.environment.as_deref(),
                    11: |c| c.route.as_deref(),
                    12: |c| c.user.as_deref(),
                    13: |c| c.session.as_deref(),
                    14: |c| c.agent_id.as_deref(),
                    15: |c| c.agent_name.as_deref(),
                    16: |c| c.provider.as_deref(),
                    17: |c| c.operation.as_deref(),
                    18: |c| c.request_model.as_deref(),
                    19: |c| c.response_model.as_deref(),
                    20: |c| c.model(),
                    21: |c| clamp(c.input_tokens),
                    22: |c| clamp(c.output_tokens),
                    23: |c| clamp(c.cache_read_tokens),
                    24: |c| clamp(c.cache_write_tokens),
                    25: |c| clamp(c.reasoning_tokens),
                    26: |c| c.cost_usd,
                    27: |c| c.cost_source.as_str(),
                    28: |c| c.price_version.as_deref(),
                    29: |c| c.status.as_str(),
                    30: |c| c.error_type.as_deref(),
                    31: |c| c.http_status,
                    32: |c| c.stream,
                    33: |c| c.finish_reason.as_deref(),
                    34: |c| c.mode.as_str(),
                    35: |c| c.decision.as_deref(),
                    37: |c| c.attempt,
                    38: |c| c.upstream.as_deref(),
                    40: |c| c.parent_span_id.as_str(),
                );
                if prev.is_none_or(|p| p.rules_fired != r.rules_fired) {
                    stmt.raw_bind_parameter(
                        36,
                        json_or(&r.rules_fired, r.rules_fired.is_empty(), "[]")?.as_ref(),
                    )
                    .map_err(unavailable)?;
                }
                if prev.is_none_or(|p| p.labels != r.labels) {
                    stmt.raw_bind_parameter(
                        39,
                        json_or(&r.labels, r.labels.is_empty(), "{}")?.as_ref(),
                    )
                    .map_err(unavailable)?;
                }
                stmt.raw_execute().map_err(unavailable)?;
                prev = Some(r);
            }
        }
        if !merges.is_empty() {
            let mut stmt = tx.prepare_cached(MERGE).map_err(unavailable)?;
            for m in merges {
                let d = &m.description;
                stmt.execute(params![
                    m.start_unix_nanos,
                    m.trace_id,
                    m.span_id,
                    d.mode.as_str(),
                    d.ttft_nanos,
                    d.request_id,
                    d.org,
                    d.project,
                    d.app,
                    d.environment,
                    d.route,
                    d.user,
                    d.session,
                    d.agent_id,
                    d.agent_name,
                    d.provider,
                    d.operation,
                    d.request_model,
                    d.response_model,
                    clamp(d.input_tokens),
                    clamp(d.output_tokens),
                    clamp(d.cache_read_tokens),
                    clamp(d.cache_write_tokens),
                    clamp(d.reasoning_tokens),
                    d.cost_usd,
                    d.cost_source.as_str(),
                    d.error_type,
                    d.http_status,
                    d.stream,
                    d.finish_reason,
                    d.upstream,
                    d.status.as_str(),
                    d.parent_span_id,
                ])
                .map_err(unavailable)?;
            }
        }
        if !events.is_empty() {
            let mut stmt = tx.prepare_cached(INSERT_EVENT).map_err(unavailable)?;
            for e in events {
                stmt.execute(params![
                    e.time_unix_nanos,
                    e.rule_id,
                    e.kind,
                    e.scope,
                    e.metric,
                    e.limit,
                    e.used,
                    e.threshold,
                    e.action,
                    e.window_end_unix_nanos,
                    e.trace_id,
                    e.span_id,
                ])
                .map_err(unavailable)?;
            }
        }
        if !alerts.is_empty() {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO alert_outbox
                     (webhook, key, identity, event, created_unix_nanos) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(unavailable)?;
            for a in alerts {
                let event = serde_json::to_string(&a.event)
                    .map_err(|e| SinkError::Rejected(e.to_string()))?;
                stmt.execute(params![
                    a.webhook,
                    a.key,
                    alert_identity(&a.event),
                    event,
                    a.created_unix_nanos
                ])
                .map_err(unavailable)?;
            }
        }
        tx.commit().map_err(unavailable)
    }
}

/// `value` as JSON, or `empty` without encoding or allocating.
fn json_or<T: serde::Serialize>(
    value: &T,
    is_empty: bool,
    empty: &'static str,
) -> Result<Cow<'static, str>, SinkError> {
    if is_empty {
        return Ok(Cow::Borrowed(empty));
    }
    serde_json::to_string(value)
        .map(Cow::Owned)
        .map_err(|e| SinkError::Rejected(e.to_string()))
}

/// SQLite integers are signed 64-bit; counts above that are already refused at ingest.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unavailable(e: rusqlite::Error) -> SinkError {
    SinkError::Unavailable(e.to_string())
}

impl Sink for SqliteStore {
    fn write(&self, batch: Batch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(self.batches.write(batch))
    }
}

impl AlertOutbox for SqliteStore {
    fn pending<'a>(
        &'a self,
        webhook: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Pending>, SinkError>> {
        Box::pin(async move {
            run_blocking(|| {
                let conn = self.inner().lock_writer()?;
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT key, event, created_unix_nanos, attempts FROM alert_outbox
                         WHERE webhook = ?1 AND state = 'pending' ORDER BY id LIMIT ?2",
                    )
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map(params![webhook, limit as i64], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    })
                    .map_err(unavailable)?;
                let mut out = Vec::new();
                for row in rows {
                    let (key, event, created, attempts) = row.map_err(unavailable)?;
                    let Ok(event) = serde_json::from_str(&event) else {
                        continue;
                    };
                    out.push(Pending {
                        entry: OutboxEntry {
                            webhook: webhook.to_owned(),
                            key,
                            event,
                            created_unix_nanos: created,
                        },
                        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    });
                }
                Ok(out)
            })
        })
    }

    fn record<'a>(
        &'a self,
        webhook: &'a str,
        key: &'a str,
        outcome: Outcome,
        at_unix_nanos: i64,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            run_blocking(|| {
                let conn = self.inner().lock_writer()?;
                conn.execute(
                    "UPDATE alert_outbox SET state = ?3, attempts = ?4,
                     last_error = NULLIF(?5, ''), updated_unix_nanos = ?6
                     WHERE webhook = ?1 AND key = ?2",
                    params![
                        webhook,
                        key,
                        outcome.state(),
                        outcome.attempts(),
                        outcome.error(),
                        at_unix_nanos
                    ],
                )
                .map_err(unavailable)?;
                Ok(())
            })
        })
    }

    fn deliveries<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<(String, DeliveryState)>, SinkError>> {
        Box::pin(async move {
            run_blocking(|| {
                let conn = super::readers::open_reader(self.path()).map_err(unavailable)?;
                let mut stmt = conn
                    .prepare(
                        "SELECT identity, webhook, state, attempts FROM alert_outbox
                         WHERE identity = ?1 ORDER BY webhook",
                    )
                    .map_err(unavailable)?;
                let mut out = Vec::new();
                for key in keys {
                    let rows = stmt
                        .query_map([key], |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                DeliveryState {
                                    webhook: r.get(1)?,
                                    state: r.get(2)?,
                                    attempts: u32::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                                },
                            ))
                        })
                        .map_err(unavailable)?;
                    for row in rows {
                        out.push(row.map_err(unavailable)?);
                    }
                }
                Ok(out)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{CallsQuery, QueryStore};
    use tollgate_rules::{CallStatus, CostSource};

    fn record(i: u32) -> CallRecord {
        CallRecord {
            start_unix_nanos: 1_000 + i64::from(i),
            trace_id: "t".repeat(32),
            span_id: format!("{i:016x}"),
            project: Some("search".into()),
            request_model: Some("gpt-4o-mini".into()),
            input_tokens: 10,
            output_tokens: 5,
            cost_usd: Some(0.25),
            cost_source: CostSource::PriceTable,
            status: CallStatus::Ok,
            labels: [("team".to_owned(), "core".to_owned())].into(),
            rules_fired: vec!["daily".into()],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_tenant_reads_its_own_calls_and_events_only() {
        use crate::query::{EventsQuery, Tenant};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let call = |i: u32, org: &str, project: &str| CallRecord {
            org: Some(org.into()),
            project: Some(project.into()),
            ..record(i)
        };
        let event = |i: i64, scope: &str| RuleEvent {
            time_unix_nanos: 1_000 + i,
            rule_id: "r".into(),
            kind: "threshold".into(),
            scope: scope.into(),
            metric: None,
            limit: None,
            used: None,
            threshold: None,
            action: "alert".into(),
            window_end_unix_nanos: None,
            trace_id: "t".repeat(32),
            span_id: format!("{i:016x}"),
        };
        let calls = vec![
            call(1, "acme", "a"),
            call(2, "acme", "b"),
            call(3, "other", "a"),
        ];
        let events = vec![
            event(1, "project=a"),
            event(2, "org=acme,project=a"),
            event(3, "org=other,project=a"),
            event(4, "project=b"),
            // A value that only contains the tenant's project.
            event(5, "project=aa"),
            event(6, "user=u1"),
            event(7, "org=acme"),
        ];
        store.write(Batch::new(calls, events)).await.unwrap();

        let tenant = Tenant {
            org: Some("acme".into()),
            project: Some("a".into()),
            user: None,
        };
        let mut filters = Vec::new();
        tenant.restrict(&mut filters).unwrap();
        let seen = store
            .calls(CallsQuery { limit: 10, filters })
            .await
            .unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].span_id, format!("{:016x}", 1));

        let scopes = |tenant: &Tenant| {
            let store = &store;
            let query = EventsQuery {
                limit: 100,
                ..EventsQuery::default()
            }
            .within(tenant);
            async move {
                let mut s: Vec<String> = store
                    .events(query)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| e.scope)
                    .collect();
                s.sort();
                s
            }
        };
        assert_eq!(scopes(&tenant).await, ["org=acme,project=a", "project=a"]);
        let org_only = Tenant {
            org: Some("acme".into()),
            ..Tenant::default()
        };
        assert_eq!(scopes(&org_only).await, ["org=acme", "org=acme,project=a"]);
        assert_eq!(scopes(&Tenant::default()).await.len(), 7);
    }

    #[test]
    fn a_new_store_uses_large_pages_and_a_larger_checkpoint_interval() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let conn = store.inner.writer.lock().unwrap();
        let pragma = |name: &str| -> i64 {
            conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(pragma("page_size"), 16384);
        assert_eq!(pragma("wal_autocheckpoint"), 2500);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn a_row_does_not_inherit_values_from_the_row_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let full = CallRecord {
            ttft_nanos: Some(7),
            request_id: Some("chatcmpl-1".into()),
            org: Some("acme".into()),
            error_type: Some("timeout".into()),
            http_status: Some(504),
            stream: true,
            decision: Some("allow".into()),
            attempt: 2,
            upstream: Some("api.openai.com".into()),
            ..record(0)
        };
        // Then a row whose values are all absent, empty or zero, then one
        // like the first: each must read back as written.
        let bare = CallRecord {
            start_unix_nanos: 2_000,
            trace_id: "u".repeat(32),
            span_id: "1".repeat(16),
            ..Default::default()
        };
        let again = CallRecord {
            span_id: "2".repeat(16),
            ..full.clone()
        };
        let batch = vec![full, bare, again];
        store
            .write(Batch::new(batch.clone(), vec![]))
            .await
            .unwrap();
        let key = |c: &CallRecord| (c.start_unix_nanos, c.span_id.clone());
        let mut calls = store.calls(CallsQuery::latest(10)).await.unwrap();
        calls.sort_by_key(key);
        let mut want = batch.clone();
        want.sort_by_key(key);
        assert_eq!(calls, want);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_written_batch_is_handed_back_and_a_dropped_store_closes_its_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let batch = Batch::new((0..3).map(record).collect(), vec![]);
        store.write(batch.clone()).await.unwrap();
        // The store holds no handle on the rows once the write is answered,
        // so the pipeline gets them back and frees them where they were made.
        assert_eq!(std::sync::Arc::strong_count(&batch.calls), 1);
        let (calls, _) = batch.into_parts();
        assert_eq!(calls.len(), 3);
        assert_eq!(store.calls(CallsQuery::latest(10)).await.unwrap().len(), 3);
        // A store that is gone has closed its thread and, with it, its
        // connections: a database leaves WAL mode only when no other
        // connection has it open.
        let leave_wal = || {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.busy_timeout(std::time::Duration::ZERO).unwrap();
            let mode = conn.query_row("PRAGMA journal_mode = DELETE", [], |r| {
                r.get::<_, String>(0)
            });
            mode.unwrap_or_else(|e| e.to_string())
        };
        assert_ne!(
            leave_wal(),
            "delete",
            "the open store's connections are seen"
        );
        drop(store);
        assert_eq!(leave_wal(), "delete", "the store's connections outlived it");
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .write(Batch::new(vec![record(3)], vec![]))
            .await
            .unwrap();
        assert_eq!(store.calls(CallsQuery::latest(10)).await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn round_trips_every_field_and_keeps_rows_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let batch: Vec<_> = (0..3).map(record).collect();
        store
            .write(Batch::new(batch.clone(), vec![]))
            .await
            .unwrap();
        let calls = store.calls(CallsQuery::latest(10)).await.unwrap();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[0], batch[2], "newest first, all fields equal");
        // Reopening keeps the rows and the schema.
        drop(store);
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.calls(CallsQuery::latest(10)).await.unwrap().len(), 3);
    }
}
