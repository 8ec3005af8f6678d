//! Read-only connections that answer the query API, apart from the writer
//! and from the readiness check.
//!
//! A query takes one of a fixed set of connections (SQLite in WAL mode lets
//! every one of them read while the writer writes) and runs on a thread of
//! its own at a lower scheduling priority (on Linux), so that however many
//! queries keep the cores busy, receiving spans, writing rows and answering
//! health checks come first. Waiting for a free connection counts against
//! the query's timeout. Past the timeout, or once the caller has gone (its HTTP client
//! disconnected), SQLite's progress handler stops the statement, so a query
//! that is no longer wanted stops using CPU instead of running to its end.
//! `/readyz` never waits behind a query: it has a connection of its own.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool::unmanaged::Pool;
use rusqlite::{Connection, OpenFlags};
use tokio::time::Instant;

use crate::query::QueryError;

/// Virtual machine steps between two looks at the clock: about a
/// millisecond of work, a few nanoseconds of overhead each time.
const STEPS_BETWEEN_CHECKS: i32 = 10_000;

/// How much less CPU a query thread gets than the collector's other
/// threads when the cores are all busy (a nice value: 10 is about a tenth).
#[cfg(target_os = "linux")]
const QUERY_NICENESS: i32 = 10;

/// Lowers the calling thread's scheduling priority (Linux keeps a nice
/// value per thread). Best effort: a query runs the same without it.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::nice(QUERY_NICENESS) {
        tracing::debug!(error = %e, "query thread keeps its priority");
    }
}

/// How the query API reads the embedded store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadConfig {
    /// Queries that may run at once; more wait for a free connection.
    pub readers: usize,
    /// Longest a query may take, its wait for a connection included.
    pub query_timeout: Duration,
}

impl Default for ReadConfig {
    fn default() -> Self {
        Self {
            readers: 4,
            query_timeout: Duration::from_secs(10),
        }
    }
}

/// A read-only connection to the database at `path`.
pub(super) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch("PRAGMA busy_timeout = 5000;")?;
    Ok(conn)
}

/// The readers of the query API.
pub(super) struct Readers {
    pool: Pool<Connection>,
    config: ReadConfig,
}

/// Set when the future waiting for a query is dropped, so that the query
/// stops at its next progress check.
struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Readers {
    /// Opens `config.readers` read-only connections to `path`.
    pub(super) fn open(path: &Path, config: ReadConfig) -> rusqlite::Result<Self> {
        let mut conns = Vec::with_capacity(config.readers);
        for _ in 0..config.readers.max(1) {
            conns.push(open_reader(path)?);
        }
        Ok(Self {
            pool: Pool::from(conns),
            config,
        })
    }

    /// Runs `f` on a free reader within the query timeout (`bounded`), or
    /// without a time limit (start-up work such as loading admin actions).
    pub(super) async fn read<T, F>(&self, bounded: bool, f: F) -> Result<T, QueryError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, QueryError> + Send + 'static,
    {
        let timeout = self.config.query_timeout;
        let deadline = bounded.then(|| Instant::now() + timeout);
        let timed_out = || QueryError::Timeout { timeout };
        let mut conn = match deadline {
            Some(d) => tokio::time::timeout_at(d, self.pool.get())
                .await
                .map_err(|_| timed_out())?,
            None => self.pool.get().await,
        }
        .map_err(|e| QueryError::Store(format!("no reader: {e}")))?;
        let abandoned = Arc::new(AtomicBool::new(false));
        let _abandon = AbandonOnDrop(Arc::clone(&abandoned));
        let stopped = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopped);
        let deadline = deadline.map(Instant::into_std);
        let (done, answer) = tokio::sync::oneshot::channel();
        let job = move || {
            lower_priority();
            // The handler is the query's own: a later query on this
            // connection installs its own deadline and flag.
            let handler = move || {
                let stop_now = abandoned.load(Ordering::Relaxed)
                    || deadline.is_some_and(|d| std::time::Instant::now() >= d);
                if stop_now {
                    stop.store(true, Ordering::Relaxed);
                }
                stop_now
            };
            conn.progress_handler(STEPS_BETWEEN_CHECKS, Some(handler))
                .map_err(|e| QueryError::Store(e.to_string()))?;
            let out = f(&conn);
            conn.progress_handler(0, None::<fn() -> bool>)
                .map_err(|e| QueryError::Store(e.to_string()))?;
            out
        };
        // A thread per query, not one of the runtime's blocking threads: its
        // lowered priority ends with it. At most `readers` exist at once.
        std::thread::Builder::new()
            .name("tollgate-query".into())
            .spawn(move || {
                let _ = done.send(job());
            })
            .map_err(|e| QueryError::Store(format!("cannot start a query thread: {e}")))?;
        match answer.await {
            Ok(Err(_)) if stopped.load(Ordering::Relaxed) => Err(timed_out()),
            Ok(out) => out,
            Err(_) => Err(QueryError::Store("the query thread failed".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store file with a table of `rows` integers.
    fn numbers(dir: &Path, rows: i64) -> std::path::PathBuf {
        let path = dir.join("n.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE n (v INTEGER);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows})
             INSERT INTO n SELECT x FROM c;"
        ))
        .unwrap();
        path
    }

    /// Seconds of work for SQLite whatever the machine: a cross join
    /// counted without an index.
    const SLOW: &str = "SELECT count(*) FROM n a, n b, n c WHERE a.v + b.v + c.v = -1";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_past_its_timeout_is_stopped_and_its_reader_serves_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = numbers(dir.path(), 2_000);
        let readers = Readers::open(
            &path,
            ReadConfig {
                readers: 1,
                query_timeout: Duration::from_millis(200),
            },
        )
        .unwrap();
        let started = std::time::Instant::now();
        let err = readers
            .read(true, |c| {
                c.query_row(SLOW, [], |r| r.get::<_, i64>(0))
                    .map_err(|e| QueryError::Store(e.to_string()))
            })
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(err, QueryError::Timeout { timeout } if timeout == Duration::from_millis(200)),
            "{err}"
        );
        assert!(took < Duration::from_secs(2), "stopped after {took:?}");
        // The one reader is free again and has no deadline left over.
        let n = readers
            .read(true, |c| {
                c.query_row("SELECT count(*) FROM n", [], |r| r.get::<_, i64>(0))
                    .map_err(|e| QueryError::Store(e.to_string()))
            })
            .await
            .unwrap();
        assert_eq!(n, 2_000);
        // Unbounded reads (start-up work) are not stopped by the timeout.
        let n = readers
            .read(false, |c| {
                c.query_row(
                    "SELECT count(*) FROM n a, n b WHERE a.v + b.v > 0",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(|e| QueryError::Store(e.to_string()))
            })
            .await
            .unwrap();
        assert_eq!(n, 4_000_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_for_a_busy_reader_counts_against_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = numbers(dir.path(), 2_000);
        let readers = Arc::new(
            Readers::open(
                &path,
                ReadConfig {
                    readers: 1,
                    query_timeout: Duration::from_millis(300),
                },
            )
            .unwrap(),
        );
        // The one reader runs a query without a time limit.
        let busy = {
            let readers = Arc::clone(&readers);
            tokio::spawn(async move {
                readers
                    .read(false, |c| {
                        c.query_row(SLOW, [], |r| r.get::<_, i64>(0))
                            .map_err(|e| QueryError::Store(e.to_string()))
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let waited = readers.read(true, |_| Ok(1)).await;
        let took = started.elapsed();
        assert!(
            matches!(waited, Err(QueryError::Timeout { .. })),
            "{waited:?}"
        );
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(1),
            "{took:?}"
        );
        // Its caller gone, the long query stops and frees the reader.
        busy.abort();
        assert_eq!(readers.read(true, |_| Ok(2)).await.unwrap(), 2);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn queries_run_below_the_collector_s_priority() {
        let dir = tempfile::tempdir().unwrap();
        let readers = Readers::open(&numbers(dir.path(), 1), ReadConfig::default()).unwrap();
        let mine = rustix::process::getpriority_process(None).unwrap();
        let query_s = readers
            .read(true, |_| {
                rustix::process::getpriority_process(None)
                    .map_err(|e| QueryError::Store(e.to_string()))
            })
            .await
            .unwrap();
        assert_eq!(query_s, (mine + QUERY_NICENESS).min(19));
        // The caller's own thread is left as it was.
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), mine);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_whose_caller_left_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = numbers(dir.path(), 2_000);
        let readers = Readers::open(
            &path,
            ReadConfig {
                readers: 1,
                query_timeout: Duration::from_secs(30),
            },
        )
        .unwrap();
        // The caller gives up after 100 ms (an HTTP client that hung up).
        let gave_up = tokio::time::timeout(
            Duration::from_millis(100),
            readers.read(true, |c| {
                c.query_row(SLOW, [], |r| r.get::<_, i64>(0))
                    .map_err(|e| QueryError::Store(e.to_string()))
            }),
        )
        .await;
        assert!(gave_up.is_err());
        // Its reader comes back as soon as the statement notices, not
        // after the 30-second timeout.
        let started = std::time::Instant::now();
        let n = readers.read(true, |_| Ok(7)).await.unwrap();
        assert_eq!(n, 7);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
