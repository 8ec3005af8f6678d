//! The query API answered by ClickHouse: the same answers as the embedded
//! store for the same rows.

use futures::future::BoxFuture;
use tollgate_rules::{CallRecord, RuleEvent};

use super::row::{CallRow, EventRow, UsageRowCh};
use super::sink::ClickhouseStore;
use crate::query::{
    CallKey, CallsQuery, Dimension, EventsQuery, QueryError, QueryStore, REPLAY_LONGEST_CALL_NANOS,
    ReplayFn, UsageQuery, UsageRow, scopes_condition,
};
use std::collections::HashSet;
use tollgate_rules::engine::ScopeDim;

/// Expression of each dimension, as a `Nullable(String)`. Only these names
/// ever reach SQL text; values are bound.
fn column(d: Dimension) -> &'static str {
    match d {
        Dimension::Org => "nullIf(org, '')",
        Dimension::Project => "nullIf(project, '')",
        Dimension::App => "nullIf(app, '')",
        Dimension::Environment => "toNullable(toString(environment))",
        Dimension::User => "user_id",
        Dimension::Session => "session_id",
        Dimension::Provider => "toNullable(toString(provider))",
        Dimension::Model => "toNullable(toString(model))",
        Dimension::Route => "toNullable(toString(route))",
        Dimension::ErrorType => "toNullable(toString(error_type))",
        Dimension::Operation => "toNullable(toString(operation))",
        Dimension::Agent => "toNullable(toString(agent_name))",
    }
}

fn store_err(e: impl std::fmt::Display) -> QueryError {
    QueryError::Store(format!("ClickHouse: {e}"))
}

/// ClickHouse's `TIMEOUT_EXCEEDED`: the server stopped the query at
/// `max_execution_time`.
const TIMEOUT_EXCEEDED: u32 = 159;

/// Whether ClickHouse answered that the query ran past `max_execution_time`.
fn is_server_timeout(e: &clickhouse::error::Error) -> bool {
    matches!(e, clickhouse::error::Error::BadResponse(m)
        if m.contains(&format!("Code: {TIMEOUT_EXCEEDED}.")) || m.contains("TIMEOUT_EXCEEDED"))
}

/// `SELECT` list of [`CallRow`], in its field order.
const CALL_FIELDS: &str = "time, start_unix_nanos, duration_nanos, ttft_nanos, trace_id, span_id,
    request_id, org, project, app, environment, route, user_id, session_id, agent_id, agent_name,
    provider, operation, request_model, response_model, model, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_usd, cost_source, price_version,
    status, error_type, http_status, stream, finish_reason, mode, decision, rules_fired, attempt,
    upstream, labels, parent_span_id";

impl ClickhouseStore {
    /// A query of the API: ClickHouse stops it at `max_execution_time`
    /// (whole seconds, rounded up) or as soon as the client hangs up, and
    /// the client stops waiting at the query timeout whatever the server
    /// does.
    fn api_query(&self, sql: &str) -> clickhouse::query::Query {
        let secs = self.query_timeout.as_secs_f64().ceil().max(1.0);
        self.client
            .query(sql)
            .with_setting("max_execution_time", format!("{secs}"))
            .with_setting("timeout_overflow_mode", "throw")
            .with_setting("cancel_http_readonly_queries_on_client_close", "1")
    }

    /// Runs `fetch` within the query timeout; a timeout on either side is
    /// [`QueryError::Timeout`].
    async fn bounded<T>(
        &self,
        fetch: impl Future<Output = Result<T, clickhouse::error::Error>>,
    ) -> Result<T, QueryError> {
        let timeout = self.query_timeout;
        match tokio::time::timeout(timeout, fetch).await {
            Err(_) => Err(QueryError::Timeout { timeout }),
            Ok(Err(e)) if is_server_timeout(&e) => Err(QueryError::Timeout { timeout }),
            Ok(Err(e)) => Err(store_err(e)),
            Ok(Ok(rows)) => Ok(rows),
        }
    }

    async fn usage_rows(&self, q: &UsageQuery) -> Result<Vec<UsageRow>, QueryError> {
        let dims: Vec<&str> = q.group_by.iter().map(|d| column(*d)).collect();
        let mut sql = format!(
            // `c.x` for columns: a bare `x` would be the alias `x` of this query.
            // Costs are summed to the nano-dollar, as in the embedded store, so
            // that both round alike whatever order they add in.
            "SELECT [{}]::Array(Nullable(String)) AS dims, count() AS requests,
                countIf(c.status = 'error') AS errors, sum(c.input_tokens) AS input_tokens,
                sum(c.output_tokens) AS output_tokens,
                sum(c.cache_read_tokens) AS cache_read_tokens,
                sum(c.cache_write_tokens) AS cache_write_tokens,
                round(sum(ifNull(c.cost_usd, 0)), 9) AS cost_usd,
                countIf(c.cost_usd IS NULL) AS unpriced_requests
             FROM calls AS c WHERE c.start_unix_nanos >= ?",
            dims.join(", ")
        );
        for (d, _) in &q.filters {
            sql.push_str(&format!(" AND {} = ?", column(*d)));
        }
        if !dims.is_empty() {
            sql.push_str(" GROUP BY dims");
        }
        sql.push_str(" HAVING requests > 0 ORDER BY cost_usd DESC");
        if !dims.is_empty() {
            sql.push_str(", dims");
        }
        sql.push_str(&format!(" LIMIT {}", q.limit));
        let mut query = self.api_query(&sql).bind(q.since_unix_nanos);
        for (_, v) in &q.filters {
            query = query.bind(v.as_str());
        }
        let rows = self.bounded(query.fetch_all::<UsageRowCh>()).await?;
        Ok(rows
            .into_iter()
            .map(|r| UsageRow {
                dims: q.group_by.iter().copied().zip(r.dims).collect(),
                requests: r.requests,
                errors: r.errors,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                cache_read_tokens: r.cache_read_tokens,
                cache_write_tokens: r.cache_write_tokens,
                cost_usd: r.cost_usd,
                unpriced_requests: r.unpriced_requests,
            })
            .collect())
    }

    async fn latest_calls(&self, q: &CallsQuery) -> Result<Vec<CallRecord>, QueryError> {
        let mut filter = String::new();
        for (d, _) in &q.filters {
            filter.push_str(if filter.is_empty() {
                " WHERE "
            } else {
                " AND "
            });
            filter.push_str(&format!("{} = ?", column(*d)));
        }
        let mut query = self.api_query(&format!(
            "SELECT {CALL_FIELDS} FROM calls{filter} ORDER BY start_unix_nanos DESC, span_id DESC LIMIT ?"
        ));
        for (_, v) in &q.filters {
            query = query.bind(v.as_str());
        }
        let query = query.bind(q.limit as u64);
        let rows = self.bounded(query.fetch_all::<CallRow>()).await?;
        Ok(rows.into_iter().map(CallRow::into_record).collect())
    }

    async fn rule_events(&self, q: &EventsQuery) -> Result<Vec<RuleEvent>, QueryError> {
        let mut sql = String::from(
            "SELECT time, time_unix_nanos, rule_id, kind, scope, metric, limit_value, used,
                threshold, action, window_end_unix_nanos, trace_id, span_id
             FROM rule_events WHERE time_unix_nanos >= ?",
        );
        if q.rule_id.is_some() {
            sql.push_str(" AND rule_id = ?");
        }
        if q.kind.is_some() {
            sql.push_str(" AND kind = ?");
        }
        for _ in &q.scope_has {
            sql.push_str(" AND position(concat(',', scope, ','), ?) > 0");
        }
        for _ in &q.scope_not_other {
            sql.push_str(
                " AND (position(concat(',', scope), ?) = 0 OR position(concat(',', scope, ','), ?) > 0)",
            );
        }
        sql.push_str(" ORDER BY time_unix_nanos DESC LIMIT ?");
        let mut query = if q.within_query_timeout {
            self.api_query(&sql)
        } else {
            self.client.query(&sql)
        };
        query = query.bind(q.since_unix_nanos);
        if let Some(r) = &q.rule_id {
            query = query.bind(r.as_str());
        }
        if let Some(k) = &q.kind {
            query = query.bind(k.as_str());
        }
        for (dim, value) in &q.scope_has {
            query = query.bind(format!(",{dim}={value},"));
        }
        for (dim, value) in &q.scope_not_other {
            query = query
                .bind(format!(",{dim}="))
                .bind(format!(",{dim}={value},"));
        }
        let fetch = query.bind(q.limit as u64).fetch_all::<EventRow>();
        let rows = if q.within_query_timeout {
            self.bounded(fetch).await?
        } else {
            fetch.await.map_err(store_err)?
        };
        Ok(rows.into_iter().map(EventRow::into_event).collect())
    }

    async fn replay_calls(
        &self,
        since: i64,
        scopes: &[Vec<(ScopeDim, String)>],
        mut each: ReplayFn<'_>,
    ) -> Result<u64, QueryError> {
        let (condition, binds) = scopes_condition(scopes).unwrap_or_default();
        let and = if condition.is_empty() { "" } else { " AND " };
        let mut query = self
            .client
            .query(&format!(
                "SELECT {CALL_FIELDS} FROM calls
                 WHERE start_unix_nanos >= ? AND start_unix_nanos + duration_nanos >= ?{and}{condition}
                 ORDER BY start_unix_nanos + duration_nanos, span_id"
            ))
            .bind(since.saturating_sub(REPLAY_LONGEST_CALL_NANOS))
            .bind(since);
        for value in binds {
            query = query.bind(value);
        }
        let mut cursor = query.fetch::<CallRow>().map_err(store_err)?;
        let mut n = 0;
        while let Some(row) = cursor.next().await.map_err(store_err)? {
            each(&row.into_record());
            n += 1;
        }
        Ok(n)
    }
}

impl QueryStore for ClickhouseStore {
    fn usage(&self, query: UsageQuery) -> BoxFuture<'_, Result<Vec<UsageRow>, QueryError>> {
        Box::pin(async move { self.usage_rows(&query).await })
    }

    fn calls(&self, query: CallsQuery) -> BoxFuture<'_, Result<Vec<CallRecord>, QueryError>> {
        Box::pin(async move { self.latest_calls(&query).await })
    }

    fn events(&self, query: EventsQuery) -> BoxFuture<'_, Result<Vec<RuleEvent>, QueryError>> {
        Box::pin(async move { self.rule_events(&query).await })
    }

    fn replay<'a>(
        &'a self,
        since_unix_nanos: i64,
        each: ReplayFn<'a>,
    ) -> BoxFuture<'a, Result<u64, QueryError>> {
        Box::pin(self.replay_calls(since_unix_nanos, &[], each))
    }

    fn stored<'a>(
        &'a self,
        calls: &'a [CallKey],
    ) -> BoxFuture<'a, Result<HashSet<CallKey>, QueryError>> {
        Box::pin(async move {
            let mut found = HashSet::new();
            for chunk in calls.chunks(500) {
                let (Some(min), Some(max)) = (
                    chunk.iter().map(|k| k.0).min(),
                    chunk.iter().map(|k| k.0).max(),
                ) else {
                    continue;
                };
                let tuples = vec!["(?, ?, ?)"; chunk.len()].join(", ");
                let mut query = self
                    .client
                    .query(&format!(
                        "SELECT start_unix_nanos, trace_id, span_id FROM calls
                         WHERE start_unix_nanos >= ? AND start_unix_nanos <= ?
                         AND (start_unix_nanos, trace_id, span_id) IN ({tuples})"
                    ))
                    .bind(min)
                    .bind(max);
                for (start, trace, span) in chunk {
                    query = query.bind(*start).bind(trace.as_str()).bind(span.as_str());
                }
                let rows = query
                    .fetch_all::<(i64, String, String)>()
                    .await
                    .map_err(store_err)?;
                found.extend(rows);
            }
            Ok(found)
        })
    }

    fn replay_scopes<'a>(
        &'a self,
        since_unix_nanos: i64,
        scopes: &'a [Vec<(ScopeDim, String)>],
        each: ReplayFn<'a>,
    ) -> BoxFuture<'a, Result<u64, QueryError>> {
        Box::pin(self.replay_calls(since_unix_nanos, scopes, each))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), QueryError>> {
        Box::pin(async move {
            self.client
                .query("SELECT 1")
                .fetch_one::<u8>()
                .await
                .map(|_| ())
                .map_err(store_err)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_s_timeout_is_told_from_other_errors() {
        let timeout = clickhouse::error::Error::BadResponse(
            "Code: 159. DB::Exception: Timeout exceeded: elapsed 1.0 seconds, maximum: 1. (TIMEOUT_EXCEEDED)".into(),
        );
        assert!(is_server_timeout(&timeout));
        let other = clickhouse::error::Error::BadResponse(
            "Code: 60. DB::Exception: Unknown table. (UNKNOWN_TABLE)".into(),
        );
        assert!(!is_server_timeout(&other));
        assert!(!is_server_timeout(&clickhouse::error::Error::TimedOut));
    }
}
