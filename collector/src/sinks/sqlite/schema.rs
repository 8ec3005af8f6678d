//! Schema of the embedded store, migrated with `PRAGMA user_version`.
//!
//! Each migration runs once, in order, inside a transaction. Never edit a
//! released migration: add the next one.

use rusqlite::Connection;

/// Migrations by version (index + 1).
const MIGRATIONS: &[&str] = &[
    // 1: one row per model call. No content columns exist.
    "CREATE TABLE calls (
        id                 INTEGER PRIMARY KEY,
        start_unix_nanos   INTEGER NOT NULL,
        duration_nanos     INTEGER NOT NULL,
        ttft_nanos         INTEGER,
        trace_id           TEXT NOT NULL,
        span_id            TEXT NOT NULL,
        request_id         TEXT,
        org                TEXT,
        project            TEXT,
        app                TEXT,
        environment        TEXT,
        route              TEXT,
        user_id            TEXT,
        session_id         TEXT,
        agent_id           TEXT,
        agent_name         TEXT,
        provider           TEXT,
        operation          TEXT,
        request_model      TEXT,
        response_model     TEXT,
        model              TEXT,
        input_tokens       INTEGER NOT NULL,
        output_tokens      INTEGER NOT NULL,
        cache_read_tokens  INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        reasoning_tokens   INTEGER NOT NULL,
        cost_usd           REAL,
        cost_source        TEXT NOT NULL,
        price_version      TEXT,
        status             TEXT NOT NULL,
        error_type         TEXT,
        http_status        INTEGER,
        stream             INTEGER NOT NULL,
        finish_reason      TEXT,
        mode               TEXT NOT NULL,
        decision           TEXT,
        rules_fired        TEXT NOT NULL,
        attempt            INTEGER NOT NULL,
        upstream           TEXT,
        labels             TEXT NOT NULL
     );
     CREATE INDEX calls_by_time ON calls (start_unix_nanos);
     CREATE INDEX calls_by_project_time ON calls (project, start_unix_nanos);
     -- A retried export must not count a call twice.
     CREATE UNIQUE INDEX calls_by_span ON calls (trace_id, span_id) WHERE span_id <> '';
     -- Nor must two instrumentations of one call (e.g. a provider SDK's own
     -- tracing plus an instrumentation library): one row per provider response.
     CREATE UNIQUE INDEX calls_by_response ON calls (provider, request_id) WHERE request_id IS NOT NULL;",
    // 2: what rules did: threshold crossings, exceeded limits, denied models...
    "CREATE TABLE rule_events (
        id                     INTEGER PRIMARY KEY,
        time_unix_nanos        INTEGER NOT NULL,
        rule_id                TEXT NOT NULL,
        kind                   TEXT NOT NULL,
        scope                  TEXT NOT NULL,
        metric                 TEXT,
        limit_value            REAL,
        used                   REAL,
        threshold              REAL,
        action                 TEXT NOT NULL,
        window_end_unix_nanos  INTEGER,
        trace_id               TEXT NOT NULL,
        span_id                TEXT NOT NULL
     );
     CREATE INDEX rule_events_by_time ON rule_events (time_unix_nanos);
     CREATE INDEX rule_events_by_rule_time ON rule_events (rule_id, time_unix_nanos);",
    // 3: admin actions (overrides, blocks, lifts), re-applied at start-up.
    "CREATE TABLE admin_actions (
        id                INTEGER PRIMARY KEY,
        time_unix_nanos   INTEGER NOT NULL,
        until_unix_nanos  INTEGER,
        body              TEXT NOT NULL
     );",
    // 4: unique keys that cost little to maintain. An exact retry is caught
    // by a key that starts with the call's start time, so inserts land at
    // the end of the index instead of on random pages (the random-key
    // indexes on span and response ids cut write throughput by two thirds).
    // Two instrumentations of one response are dropped before the store by
    // the pipeline's dedup window.
    "DELETE FROM calls WHERE id NOT IN
        (SELECT min(id) FROM calls GROUP BY start_unix_nanos, trace_id, span_id);
     DROP INDEX calls_by_time;
     DROP INDEX calls_by_span;
     DROP INDEX calls_by_response;
     CREATE UNIQUE INDEX calls_by_time_span ON calls (start_unix_nanos, trace_id, span_id);",
    // 5: one index on calls. Usage queries filter on a time range first,
    // which `calls_by_time_span` serves; a project filter is then checked on
    // the rows of that range. The (project, time) index cost every insert a
    // second descent into a second tree, and each batch of rows dirtied one
    // run of its pages per project: about a third of the store's write time.
    "DROP INDEX calls_by_project_time;",
    // 6: the identity key on integers. `ident` is a stable 64-bit hash of
    // (trace id, span id) (see `call_ident`), so an index entry holds two
    // integers instead of 48 characters of hex: a third of the pages, and
    // each insert's descent touches fewer of them (a fifth less time per
    // row into the store). Two calls collide only if they start in the
    // same nanosecond and their ids hash alike; aiming a collision at a
    // call takes knowing its trace id, span id and start time.
    "ALTER TABLE calls ADD COLUMN ident INTEGER NOT NULL DEFAULT 0;
     UPDATE calls SET ident = tollgate_call_ident(trace_id, span_id);
     DELETE FROM calls WHERE id NOT IN
        (SELECT min(id) FROM calls GROUP BY start_unix_nanos, ident);
     DROP INDEX calls_by_time_span;
     CREATE UNIQUE INDEX calls_by_time_ident ON calls (start_unix_nanos, ident);",
    // 7: the time index by second, without the identity. Calls arrive out
    // of start-time order (a span is exported when it ends), so each batch
    // put keys all over the last seconds of the (start time, identity)
    // index: a full descent per row, and every page of that stretch
    // rewritten to the WAL and checkpointed; a third of the store's write
    // time. Keyed by second (then row id), a row lands at the end of its
    // second, mostly on the index's last page: about 0.9 us less CPU per
    // row. Repeats are dropped before the store by the pipeline's dedup
    // window (refilled from the store at start-up), as for ClickHouse.
    "DROP INDEX calls_by_time_ident;
     ALTER TABLE calls DROP COLUMN ident;
     CREATE INDEX calls_by_second ON calls (start_unix_nanos / 1000000000);",
    // 8: the span's parent, which ties a call to its run and lets a later
    // description of the call (another instrumentation layer) find its row.
    "ALTER TABLE calls ADD COLUMN parent_span_id TEXT NOT NULL DEFAULT '';",
    // 9: the alert outbox: an alert per (crossing, webhook), stored with its
    // rule event and kept until delivered or given up.
    "CREATE TABLE alert_outbox (
        id                 INTEGER PRIMARY KEY,
        webhook            TEXT NOT NULL,
        key                TEXT NOT NULL,
        identity           TEXT NOT NULL,
        event              TEXT NOT NULL,
        created_unix_nanos INTEGER NOT NULL,
        state              TEXT NOT NULL DEFAULT 'pending',
        attempts           INTEGER NOT NULL DEFAULT 0,
        last_error         TEXT,
        updated_unix_nanos INTEGER
     );
     CREATE UNIQUE INDEX alert_outbox_by_key ON alert_outbox (webhook, key);
     CREATE INDEX alert_outbox_pending ON alert_outbox (webhook, id) WHERE state = 'pending';
     CREATE INDEX alert_outbox_by_identity ON alert_outbox (identity);",
];

/// The key of `calls_by_second`. A query reads a time range from that index
/// only when it filters (or orders) on this very expression.
pub(crate) const START_SECOND: &str = "start_unix_nanos / 1000000000";

/// SQL condition: the call started at or after the nanosecond time in
/// parameter `param` (e.g. `?1`), its second first so that the range is
/// read from `calls_by_second`.
pub(crate) fn started_since(param: &str) -> String {
    format!("{START_SECOND} >= {param} / 1000000000 AND start_unix_nanos >= {param}")
}

/// A call's identity in schema version 6's unique key (with its start time): the
/// 64-bit XXH3 of its trace and span ids. XXH3 is specified, so the value
/// is the same in every build and process that ever wrote the file.
pub(crate) fn call_ident(trace_id: &str, span_id: &str) -> i64 {
    use std::hash::Hasher;
    let mut h = twox_hash::XxHash3_64::with_seed(0);
    h.write(trace_id.as_bytes());
    h.write_u8(0xff);
    h.write(span_id.as_bytes());
    h.finish() as i64
}

/// Makes [`call_ident`] callable from SQL (migrations).
fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "tollgate_call_ident",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let trace: String = ctx.get(0)?;
            let span: String = ctx.get(1)?;
            Ok(call_ident(&trace, &span))
        },
    )
}

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`SCHEMA_VERSION`]; refuses a newer one.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "database schema version {current} is newer than this tollgate ({SCHEMA_VERSION}); upgrade tollgate"
        )));
    }
    register_functions(conn)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "store schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer_schemas() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err().to_string();
        assert!(err.contains("newer"), "{err}");
    }

    #[test]
    fn calls_keep_one_index_by_second_and_queries_read_ranges_from_it() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'calls'")
            .unwrap();
        let names: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(names, ["calls_by_second"]);
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        // A time-range usage query reads its range from that index...
        let usage = plan(&format!(
            "SELECT project, COUNT(*) FROM calls WHERE {} AND project = 'p' GROUP BY project",
            started_since("5")
        ));
        assert!(usage.contains("USING INDEX calls_by_second ("), "{usage}");
        // ...and the latest calls are read newest second first, sorting
        // only within a second.
        let latest = plan(&format!(
            "SELECT * FROM calls INDEXED BY calls_by_second ORDER BY {START_SECOND} DESC, start_unix_nanos DESC, id DESC LIMIT 5"
        ));
        assert!(latest.contains("USING INDEX calls_by_second"), "{latest}");
        assert!(latest.contains("LAST 2 TERMS OF ORDER BY"), "{latest}");
    }

    #[test]
    fn version_3_stores_keep_their_rows_under_the_new_keys() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        let insert = "INSERT INTO calls (start_unix_nanos, duration_nanos, trace_id, span_id,
            input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
            cost_source, status, stream, mode, rules_fired, attempt, labels)
            VALUES (?1, 1, ?2, ?3, 1, 1, 0, 0, 0, 'unpriced', 'ok', 0, 'observe', '[]', 0, '{}')";
        conn.execute(insert, rusqlite::params![10, "t", "s1"])
            .unwrap();
        conn.execute(insert, rusqlite::params![20, "t", "s2"])
            .unwrap();
        // Version 3 let two id-less calls with one start time in.
        conn.execute(insert, rusqlite::params![30, "t", ""])
            .unwrap();
        conn.execute(insert, rusqlite::params![30, "t", ""])
            .unwrap();
        migrate(&mut conn).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM calls", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3, "the id-less repeat is gone, the other rows kept");
    }

    #[test]
    fn version_5_stores_keep_their_rows_through_the_identity_key_and_after_it() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        let columns = "start_unix_nanos, duration_nanos, trace_id, span_id,
            input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
            cost_source, status, stream, mode, rules_fired, attempt, labels";
        let values = "?1, 1, ?2, ?3, 1, 1, 0, 0, 0, 'unpriced', 'ok', 0, 'observe', '[]', 0, '{}'";
        let insert = format!("INSERT INTO calls ({columns}) VALUES ({values})");
        for (start, trace, span) in [
            (10, "t1", "s1"),
            (10, "t1", "s2"),
            (2_000_000_000, "t1", "s3"),
        ] {
            conn.execute(&insert, rusqlite::params![start, trace, span])
                .unwrap();
        }
        migrate(&mut conn).unwrap();
        let rows: Vec<(i64, String)> = conn
            .prepare("SELECT start_unix_nanos, span_id FROM calls ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let want = [(10, "s1"), (10, "s2"), (2_000_000_000, "s3")];
        assert_eq!(rows, want.map(|(t, s)| (t, s.to_owned())));
        let ident = conn.prepare("SELECT ident FROM calls");
        assert!(ident.is_err(), "the identity column is dropped");
        // The index by second answers what the identity key did for queries.
        let in_second_two: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM calls WHERE {START_SECOND} >= 2"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(in_second_two, 1);
    }

    #[test]
    fn the_identity_hash_is_fixed() {
        // Migration 6 drops repeats of old rows by it (one build's stores
        // migrated by another must agree).
        assert_eq!(call_ident("t1", "s1"), call_ident("t1", "s1"));
        assert_ne!(call_ident("t1", "s1"), call_ident("t1s", "1"));
        assert_eq!(
            call_ident("", ""),
            -2973241909731272914,
            "XXH3-64 of [0xff]"
        );
    }
}
