//! The query API answered by the embedded store.

use futures::future::BoxFuture;
use rusqlite::types::Value;
use rusqlite::{Connection, Row, params_from_iter};
use tollgate_rules::{CallRecord, CallStatus, CostSource, Mode, RuleEvent};

use super::readers::open_reader;
use super::schema::{START_SECOND, started_since};
use super::sink::{SqliteStore, run_blocking};
use crate::query::{
    CallKey, CallsQuery, Dimension, EventsQuery, QueryError, QueryStore, REPLAY_LONGEST_CALL_NANOS,
    ReplayFn, UsageQuery, UsageRow, scopes_condition,
};
use std::collections::HashSet;
use tollgate_rules::engine::ScopeDim;

/// Column of each dimension. Only these names ever reach SQL text.
fn column(d: Dimension) -> &'static str {
    match d {
        Dimension::Org => "org",
        Dimension::Project => "project",
        Dimension::App => "app",
        Dimension::Environment => "environment",
        Dimension::User => "user_id",
        Dimension::Session => "session_id",
        Dimension::Provider => "provider",
        Dimension::Model => "model",
        Dimension::Route => "route",
        Dimension::ErrorType => "error_type",
        Dimension::Operation => "operation",
        Dimension::Agent => "agent_name",
    }
}

fn store_err(e: impl std::fmt::Display) -> QueryError {
    QueryError::Store(e.to_string())
}

fn usage_rows(conn: &Connection, q: &UsageQuery) -> Result<Vec<UsageRow>, QueryError> {
    let cols: Vec<&str> = q.group_by.iter().map(|d| column(*d)).collect();
    let mut sql = String::from("SELECT ");
    for c in &cols {
        sql.push_str(c);
        sql.push_str(", ");
    }
    sql.push_str(
        "COUNT(*), SUM(status = 'error'), SUM(input_tokens), SUM(output_tokens),
         SUM(cache_read_tokens), SUM(cache_write_tokens), ROUND(TOTAL(cost_usd), 9), SUM(cost_usd IS NULL)
         FROM calls WHERE ",
    );
    sql.push_str(&started_since("?1"));
    let mut args: Vec<Value> = vec![Value::Integer(q.since_unix_nanos)];
    for (d, v) in &q.filters {
        args.push(Value::Text(v.clone()));
        sql.push_str(&format!(" AND {} = ?{}", column(*d), args.len()));
    }
    if !cols.is_empty() {
        sql.push_str(" GROUP BY ");
        sql.push_str(&cols.join(", "));
    }
    // Most expensive groups first; the cost is select-list position n + 7 (1-based).
    sql.push_str(&format!(" ORDER BY {} DESC", cols.len() + 7));
    if !cols.is_empty() {
        sql.push_str(", 1");
    }
    sql.push_str(&format!(" LIMIT {}", q.limit));

    let mut stmt = conn.prepare(&sql).map_err(store_err)?;
    let n = cols.len();
    let rows = stmt
        .query_map(params_from_iter(args), |row| {
            let mut dims = Vec::with_capacity(n);
            for (i, d) in q.group_by.iter().enumerate() {
                dims.push((*d, row.get::<_, Option<String>>(i)?));
            }
            let count = |i: usize| -> rusqlite::Result<u64> {
                Ok(row.get::<_, Option<i64>>(n + i)?.unwrap_or(0).max(0) as u64)
            };
            Ok(UsageRow {
                dims,
                requests: count(0)?,
                errors: count(1)?,
                input_tokens: count(2)?,
                output_tokens: count(3)?,
                cache_read_tokens: count(4)?,
                cache_write_tokens: count(5)?,
                cost_usd: row.get::<_, f64>(n + 6)?,
                unpriced_requests: count(7)?,
            })
        })
        .map_err(store_err)?;
    let mut out = Vec::new();
    for r in rows {
        let r = r.map_err(store_err)?;
        // COUNT(*) without GROUP BY yields one all-zero row on an empty table.
        if r.requests > 0 {
            out.push(r);
        }
    }
    Ok(out)
}

fn latest_calls(conn: &Connection, q: &CallsQuery) -> Result<Vec<CallRecord>, QueryError> {
    let mut args: Vec<Value> = vec![Value::Integer(i64::try_from(q.limit).unwrap_or(i64::MAX))];
    let mut filter = String::new();
    for (d, v) in &q.filters {
        args.push(Value::Text(v.clone()));
        filter.push_str(if filter.is_empty() {
            " WHERE "
        } else {
            " AND "
        });
        filter.push_str(&format!("{} = ?{}", column(*d), args.len()));
    }
    let mut stmt = conn
        // Newest seconds first from `calls_by_second`; only the rows of
        // the seconds read are sorted. Without statistics the planner
        // would sort the whole table instead.
        .prepare_cached(&format!(
            "SELECT {CALL_COLUMNS} FROM calls INDEXED BY calls_by_second{filter}
                 ORDER BY {START_SECOND} DESC, start_unix_nanos DESC, id DESC LIMIT ?1"
        ))
        .map_err(store_err)?;
    let rows = stmt
        .query_map(params_from_iter(args), read_record)
        .map_err(store_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(store_err)
}

/// `scope` (`project=a,user=b`) names `dim=value` (SQL over `scope`, bound
/// to `?n` = `,dim=value,`).
fn scope_has_sql(n: usize) -> String {
    format!("instr(',' || scope || ',', ?{n}) > 0")
}

fn rule_events(conn: &Connection, q: &EventsQuery) -> Result<Vec<RuleEvent>, QueryError> {
    let mut args: Vec<Value> = vec![
        Value::Integer(q.since_unix_nanos),
        q.rule_id.clone().map_or(Value::Null, Value::Text),
        q.kind.clone().map_or(Value::Null, Value::Text),
        Value::Integer(i64::try_from(q.limit).unwrap_or(i64::MAX)),
    ];
    let mut tenant = String::new();
    for (dim, value) in &q.scope_has {
        args.push(Value::Text(format!(",{dim}={value},")));
        tenant.push_str(&format!(" AND {}", scope_has_sql(args.len())));
    }
    for (dim, value) in &q.scope_not_other {
        args.push(Value::Text(format!(",{dim}=")));
        let any = args.len();
        args.push(Value::Text(format!(",{dim}={value},")));
        tenant.push_str(&format!(
            " AND (instr(',' || scope, ?{any}) = 0 OR {})",
            scope_has_sql(args.len())
        ));
    }
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT time_unix_nanos, rule_id, kind, scope, metric, limit_value, used, threshold,
                    action, window_end_unix_nanos, trace_id, span_id
             FROM rule_events
             WHERE time_unix_nanos >= ?1 AND (?2 IS NULL OR rule_id = ?2) AND (?3 IS NULL OR kind = ?3){tenant}
             ORDER BY time_unix_nanos DESC, id DESC LIMIT ?4",
        ))
        .map_err(store_err)?;
    let rows = stmt
        .query_map(params_from_iter(args), |row| {
            Ok(RuleEvent {
                time_unix_nanos: row.get(0)?,
                rule_id: row.get(1)?,
                kind: row.get(2)?,
                scope: row.get(3)?,
                metric: row.get(4)?,
                limit: row.get(5)?,
                used: row.get(6)?,
                threshold: row.get(7)?,
                action: row.get(8)?,
                window_end_unix_nanos: row.get(9)?,
                trace_id: row.get(10)?,
                span_id: row.get(11)?,
            })
        })
        .map_err(store_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(store_err)
}

impl SqliteStore {
    fn replay_blocking(
        &self,
        since: i64,
        scopes: &[Vec<(ScopeDim, String)>],
        each: &mut ReplayFn<'_>,
    ) -> Result<u64, QueryError> {
        // A connection of its own: a long replay must not hold the API's readers.
        let conn = open_reader(self.path()).map_err(store_err)?;
        let (condition, binds) = scopes_condition(scopes).unwrap_or_default();
        let mut stmt = conn.prepare(&replay_sql(&condition)).map_err(store_err)?;
        let earliest = since.saturating_sub(REPLAY_LONGEST_CALL_NANOS);
        let mut params: Vec<Value> = vec![since.into(), earliest.into()];
        params.extend(binds.into_iter().map(Value::from));
        let mut rows = stmt.query(params_from_iter(params)).map_err(store_err)?;
        let mut n = 0;
        while let Some(row) = rows.next().map_err(store_err)? {
            each(&read_record(row).map_err(store_err)?);
            n += 1;
        }
        Ok(n)
    }
}

/// Calls that ended at or after `?1` and started at or after `?2` (and meet
/// `condition`, if any: its `?` placeholders follow), oldest end first.
/// Start times are read from `calls_by_second`, not by scanning the whole
/// table.
fn replay_sql(condition: &str) -> String {
    let and = if condition.is_empty() { "" } else { " AND " };
    format!(
        "SELECT {CALL_COLUMNS} FROM calls
         WHERE {} AND start_unix_nanos + duration_nanos >= ?1{and}{condition}
         ORDER BY start_unix_nanos + duration_nanos, id",
        started_since("?2")
    )
}

/// Columns read back into a [`CallRecord`], in [`read_record`]'s order.
const CALL_COLUMNS: &str =
    "start_unix_nanos, duration_nanos, ttft_nanos, trace_id, span_id, request_id,
    org, project, app, environment, route, user_id, session_id, agent_id, agent_name,
    provider, operation, request_model, response_model,
    input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
    cost_usd, cost_source, price_version, status, error_type, http_status, stream,
    finish_reason, mode, decision, rules_fired, attempt, upstream, labels, parent_span_id";

fn read_record(row: &Row<'_>) -> rusqlite::Result<CallRecord> {
    let count = |i: usize| -> rusqlite::Result<u64> { Ok(row.get::<_, i64>(i)?.max(0) as u64) };
    let rules_fired: String = row.get(34)?;
    let labels: String = row.get(37)?;
    Ok(CallRecord {
        start_unix_nanos: row.get(0)?,
        duration_nanos: row.get(1)?,
        ttft_nanos: row.get(2)?,
        trace_id: row.get(3)?,
        span_id: row.get(4)?,
        request_id: row.get(5)?,
        org: row.get(6)?,
        project: row.get(7)?,
        app: row.get(8)?,
        environment: row.get(9)?,
        route: row.get(10)?,
        user: row.get(11)?,
        session: row.get(12)?,
        agent_id: row.get(13)?,
        agent_name: row.get(14)?,
        provider: row.get(15)?,
        operation: row.get(16)?,
        request_model: row.get(17)?,
        response_model: row.get(18)?,
        input_tokens: count(19)?,
        output_tokens: count(20)?,
        cache_read_tokens: count(21)?,
        cache_write_tokens: count(22)?,
        reasoning_tokens: count(23)?,
        cost_usd: row.get(24)?,
        cost_source: CostSource::parse(&row.get::<_, String>(25)?).unwrap_or_default(),
        price_version: row.get(26)?,
        status: CallStatus::parse(&row.get::<_, String>(27)?).unwrap_or_default(),
        error_type: row.get(28)?,
        http_status: row.get(29)?,
        stream: row.get(30)?,
        finish_reason: row.get(31)?,
        mode: Mode::parse(&row.get::<_, String>(32)?).unwrap_or_default(),
        decision: row.get(33)?,
        rules_fired: serde_json::from_str(&rules_fired).unwrap_or_default(),
        attempt: row.get(35)?,
        upstream: row.get(36)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        parent_span_id: row.get(38)?,
        instrumentation: 0,
        settled: false,
    })
}

impl QueryStore for SqliteStore {
    fn usage(&self, query: UsageQuery) -> BoxFuture<'_, Result<Vec<UsageRow>, QueryError>> {
        Box::pin(
            self.inner()
                .readers
                .read(true, move |c| usage_rows(c, &query)),
        )
    }

    fn calls(&self, query: CallsQuery) -> BoxFuture<'_, Result<Vec<CallRecord>, QueryError>> {
        Box::pin(
            self.inner()
                .readers
                .read(true, move |c| latest_calls(c, &query)),
        )
    }

    fn events(&self, query: EventsQuery) -> BoxFuture<'_, Result<Vec<RuleEvent>, QueryError>> {
        Box::pin(
            self.inner()
                .readers
                .read(query.within_query_timeout, move |c| rule_events(c, &query)),
        )
    }

    fn replay<'a>(
        &'a self,
        since_unix_nanos: i64,
        mut each: ReplayFn<'a>,
    ) -> BoxFuture<'a, Result<u64, QueryError>> {
        Box::pin(
            async move { run_blocking(|| self.replay_blocking(since_unix_nanos, &[], &mut each)) },
        )
    }

    fn stored<'a>(
        &'a self,
        calls: &'a [CallKey],
    ) -> BoxFuture<'a, Result<HashSet<CallKey>, QueryError>> {
        Box::pin(async move {
            run_blocking(|| {
                // One read of each second the calls started in (the time
                // index), not one search per call: a burst of calls in one
                // second would make that quadratic.
                let wanted: HashSet<&CallKey> = calls.iter().collect();
                let mut seconds: Vec<i64> = calls
                    .iter()
                    .map(|k| k.0.div_euclid(1_000_000_000))
                    .collect();
                seconds.sort_unstable();
                seconds.dedup();
                let conn = open_reader(self.path()).map_err(store_err)?;
                let mut stmt = conn
                    .prepare(&format!(
                        "SELECT start_unix_nanos, trace_id, span_id FROM calls
                         WHERE {START_SECOND} = ?1"
                    ))
                    .map_err(store_err)?;
                let mut found = HashSet::new();
                for second in seconds {
                    let mut rows = stmt.query([second]).map_err(store_err)?;
                    while let Some(row) = rows.next().map_err(store_err)? {
                        let key: CallKey = (
                            row.get(0).map_err(store_err)?,
                            row.get(1).map_err(store_err)?,
                            row.get(2).map_err(store_err)?,
                        );
                        if wanted.contains(&key) {
                            found.insert(key);
                        }
                    }
                }
                Ok(found)
            })
        })
    }

    fn replay_scopes<'a>(
        &'a self,
        since_unix_nanos: i64,
        scopes: &'a [Vec<(ScopeDim, String)>],
        mut each: ReplayFn<'a>,
    ) -> BoxFuture<'a, Result<u64, QueryError>> {
        Box::pin(async move {
            run_blocking(|| self.replay_blocking(since_unix_nanos, scopes, &mut each))
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), QueryError>> {
        Box::pin(async move {
            // Reads the schema version from the file's first page on the
            // readiness check's own connection: microseconds, whatever
            // queries the readers are running.
            run_blocking(|| {
                let conn = self
                    .inner()
                    .health
                    .lock()
                    .map_err(|_| store_err("readiness connection lock poisoned"))?;
                conn.query_row("PRAGMA user_version", [], |_| Ok(()))
                    .map_err(store_err)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::Sink;

    fn call(
        project: &str,
        model: Option<&str>,
        input: u64,
        cost: Option<f64>,
        start: i64,
    ) -> CallRecord {
        CallRecord {
            start_unix_nanos: start,
            trace_id: format!("{start:032x}"),
            span_id: format!("{start:016x}"),
            project: Some(project.into()),
            request_model: model.map(Into::into),
            input_tokens: input,
            output_tokens: 1,
            cost_usd: cost,
            cost_source: if cost.is_some() {
                CostSource::PriceTable
            } else {
                CostSource::Unpriced
            },
            ..Default::default()
        }
    }

    /// A fresh store holding `rows` (and the directory it lives in).
    async fn store_with(rows: &[CallRecord]) -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .write(crate::sinks::Batch::new(rows.to_vec(), vec![]))
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stored_finds_calls_by_key_within_their_second() {
        let second = 1_800_000_000_000_000_000;
        let rows: Vec<CallRecord> = (0..5)
            .map(|i| call("a", Some("m"), 1, None, second + i))
            .chain([call("a", Some("m"), 1, None, second + 2_000_000_000)])
            .collect();
        let (_dir, store) = store_with(&rows).await;
        let key = |r: &CallRecord| (r.start_unix_nanos, r.trace_id.clone(), r.span_id.clone());
        let missing = (second + 7, "x".repeat(32), "y".repeat(16));
        let asked = vec![key(&rows[1]), key(&rows[5]), missing.clone()];
        let found = store.stored(&asked).await.unwrap();
        assert_eq!(found, HashSet::from([key(&rows[1]), key(&rows[5])]));
        // Same ids, another start time: another call.
        let moved = (
            second + 9,
            rows[1].trace_id.clone(),
            rows[1].span_id.clone(),
        );
        assert!(store.stored(&[moved]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn groups_filters_and_orders_by_cost() {
        let rows = vec![
            call("a", Some("m1"), 10, Some(1.0), 100),
            call("a", Some("m1"), 20, Some(2.0), 101),
            call("a", Some("m2"), 5, None, 102),
            call("b", Some("m1"), 7, Some(5.0), 103),
            call("b", None, 1, Some(0.5), 50),
        ];
        let (_dir, store) = store_with(&rows).await;
        let q = |group_by, since, filters| UsageQuery {
            group_by,
            since_unix_nanos: since,
            filters,
            limit: 100,
        };

        let by_project = store
            .usage(q(vec![Dimension::Project], 0, vec![]))
            .await
            .unwrap();
        assert_eq!(by_project.len(), 2);
        assert_eq!(
            by_project[0].dims,
            vec![(Dimension::Project, Some("b".into()))]
        );
        assert_eq!(by_project[0].requests, 2);
        assert_eq!(by_project[1].input_tokens, 35);
        assert_eq!(by_project[1].cost_usd, 3.0);
        assert_eq!(by_project[1].unpriced_requests, 1);

        let recent = store
            .usage(q(
                vec![Dimension::Project, Dimension::Model],
                100,
                vec![(Dimension::Project, "a".into())],
            ))
            .await
            .unwrap();
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].dims[1], (Dimension::Model, Some("m1".into())));
        assert_eq!(recent[0].requests, 2);

        let total = store.usage(q(vec![], 0, vec![])).await.unwrap();
        assert_eq!(total.len(), 1);
        assert_eq!(total[0].requests, 5);
        assert!(
            store
                .usage(q(vec![], i64::MAX, vec![]))
                .await
                .unwrap()
                .is_empty()
        );
        store.ping().await.unwrap();
    }

    #[tokio::test]
    async fn replay_reads_calls_that_ended_since_from_the_time_index() {
        let since = 10 * REPLAY_LONGEST_CALL_NANOS;
        let hour = 3600 * 1_000_000_000;
        let lasting = |project: &str, start: i64, duration: i64| CallRecord {
            duration_nanos: duration,
            ..call(project, Some("m1"), 1, Some(1.0), start)
        };
        let rows = vec![
            // Ended before `since`.
            lasting("ended-before", since - 10 * hour, hour),
            // Started 23 h before and still running at `since`.
            lasting("long", since - 23 * hour, 24 * hour),
            lasting("recent", since + 1, 1),
            // Started more than a day before `since`: not a model call.
            lasting("too-long", since - 25 * hour, 30 * hour),
        ];
        let (_dir, store) = store_with(&rows).await;
        let mut seen = Vec::new();
        let n = store
            .replay(
                since,
                Box::new(|c| seen.push(c.project.clone().unwrap_or_default())),
            )
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(seen, ["recent", "long"], "oldest end first");

        let conn = store.inner().health.lock().unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", replay_sql("")))
            .unwrap()
            .query_map([since, since], |r| r.get(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX calls_by_second (")),
            "{plan:?}"
        );
    }
}
