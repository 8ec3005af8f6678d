//! [`SqliteStore`]: writes batches and answers queries on the embedded store.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use rusqlite::{Connection, OpenFlags, params};
use tollgate_rules::{CallRecord, RuleEvent};

use super::schema;
use crate::sinks::{Batch, Sink, SinkError};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "tollgate.sqlite";

const INSERT: &str = "INSERT OR IGNORE INTO calls (
    start_unix_nanos, duration_nanos, ttft_nanos, trace_id, span_id, request_id,
    org, project, app, environment, route, user_id, session_id, agent_id, agent_name,
    provider, operation, request_model, response_model, model,
    input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
    cost_usd, cost_source, price_version, status, error_type, http_status, stream,
    finish_reason, mode, decision, rules_fired, attempt, upstream, labels, ident
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
          ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34,
          ?35, ?36, ?37, ?38, ?39, ?40)";

const INSERT_EVENT: &str = "INSERT INTO rule_events (
    time_unix_nanos, rule_id, kind, scope, metric, limit_value, used, threshold, action,
    window_end_unix_nanos, trace_id, span_id
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// The embedded store. One connection writes (SQLite allows one writer),
/// another reads concurrently thanks to WAL.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) writer: Mutex<Connection>,
    pub(super) reader: Mutex<Connection>,
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
    /// Opens (creating and migrating) the store in directory `dir`.
    pub fn open(dir: &Path) -> Result<Self, SinkError> {
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
        schema::migrate(&mut writer).map_err(|e| open_err(&path, e))?;
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_err(&path, e))?;
        reader
            .execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(|e| open_err(&path, e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
                path,
            }),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub(super) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    fn insert(&self, batch: &[CallRecord], events: &[RuleEvent]) -> Result<(), SinkError> {
        let mut conn = self
            .inner
            .writer
            .lock()
            .map_err(|_| SinkError::Unavailable("store writer lock poisoned".into()))?;
        let tx = conn.transaction().map_err(unavailable)?;
        {
            let mut stmt = tx.prepare_cached(INSERT).map_err(unavailable)?;
            for r in batch {
                // Most rows have neither: no JSON encoding, no allocation.
                let rules_fired = if r.rules_fired.is_empty() {
                    Cow::Borrowed("[]")
                } else {
                    Cow::Owned(
                        serde_json::to_string(&r.rules_fired)
                            .map_err(|e| SinkError::Rejected(e.to_string()))?,
                    )
                };
                let labels = if r.labels.is_empty() {
                    Cow::Borrowed("{}")
                } else {
                    Cow::Owned(
                        serde_json::to_string(&r.labels)
                            .map_err(|e| SinkError::Rejected(e.to_string()))?,
                    )
                };
                stmt.execute(params![
                    r.start_unix_nanos,
                    r.duration_nanos,
                    r.ttft_nanos,
                    r.trace_id,
                    r.span_id,
                    r.request_id,
                    r.org,
                    r.project,
                    r.app,
                    r.environment,
                    r.route,
                    r.user,
                    r.session,
                    r.agent_id,
                    r.agent_name,
                    r.provider,
                    r.operation,
                    r.request_model,
                    r.response_model,
                    r.model(),
                    clamp(r.input_tokens),
                    clamp(r.output_tokens),
                    clamp(r.cache_read_tokens),
                    clamp(r.cache_write_tokens),
                    clamp(r.reasoning_tokens),
                    r.cost_usd,
                    r.cost_source.as_str(),
                    r.price_version,
                    r.status.as_str(),
                    r.error_type,
                    r.http_status,
                    r.stream,
                    r.finish_reason,
                    r.mode.as_str(),
                    r.decision,
                    rules_fired.as_ref(),
                    r.attempt,
                    r.upstream,
                    labels.as_ref(),
                    schema::call_ident(&r.trace_id, &r.span_id),
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
        tx.commit().map_err(unavailable)
    }
}

/// SQLite integers are signed 64-bit; counts above that are already refused at ingest.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unavailable(e: rusqlite::Error) -> SinkError {
    SinkError::Unavailable(e.to_string())
}

impl Sink for SqliteStore {
    fn write<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move { run_blocking(|| self.insert(batch.calls, batch.events)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::QueryStore;
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
    async fn round_trips_every_field_and_ignores_retried_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let batch: Vec<_> = (0..3).map(record).collect();
        let write = Batch {
            calls: &batch,
            events: &[],
        };
        store.write(write).await.unwrap();
        // A retried batch (same trace/span ids) is not stored twice.
        store.write(write).await.unwrap();
        let calls = store.calls(10).await.unwrap();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[0], batch[2], "newest first, all fields equal");
        // Reopening keeps the rows and the schema.
        drop(store);
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.calls(10).await.unwrap().len(), 3);
    }
}
