//! Rows as ClickHouse stores them, and their conversion from and to
//! [`CallRecord`] / [`RuleEvent`].
//!
//! `org`, `project` and `app` are part of the sorting key, so they are plain
//! `LowCardinality(String)` with `''` for "none"; every other optional field
//! is `Nullable`. Times are kept twice: `DateTime64(6)` for dashboards and
//! exact Unix nanoseconds for the API.

use std::collections::BTreeMap;

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tollgate_rules::{CallRecord, CallStatus, CostSource, Mode, RuleEvent};

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct CallRow {
    /// Start, microseconds (`DateTime64(6, 'UTC')`).
    pub time: i64,
    pub start_unix_nanos: i64,
    pub duration_nanos: i64,
    pub ttft_nanos: Option<i64>,
    pub trace_id: String,
    pub span_id: String,
    pub request_id: Option<String>,
    pub org: String,
    pub project: String,
    pub app: String,
    pub environment: Option<String>,
    pub route: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub provider: Option<String>,
    pub operation: Option<String>,
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_usd: Option<f64>,
    pub cost_source: String,
    pub price_version: Option<String>,
    pub status: String,
    pub error_type: Option<String>,
    pub http_status: Option<u16>,
    pub stream: bool,
    pub finish_reason: Option<String>,
    pub mode: String,
    pub decision: Option<String>,
    pub rules_fired: Vec<String>,
    pub attempt: u32,
    pub upstream: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub parent_span_id: String,
}

fn none_if_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

impl CallRow {
    pub fn from_record(r: &CallRecord) -> Self {
        Self {
            time: r.start_unix_nanos / 1_000,
            start_unix_nanos: r.start_unix_nanos,
            duration_nanos: r.duration_nanos,
            ttft_nanos: r.ttft_nanos,
            trace_id: r.trace_id.clone(),
            span_id: r.span_id.clone(),
            request_id: r.request_id.clone(),
            org: r.org.clone().unwrap_or_default(),
            project: r.project.clone().unwrap_or_default(),
            app: r.app.clone().unwrap_or_default(),
            environment: r.environment.clone(),
            route: r.route.clone(),
            user_id: r.user.clone(),
            session_id: r.session.clone(),
            agent_id: r.agent_id.clone(),
            agent_name: r.agent_name.clone(),
            provider: r.provider.clone(),
            operation: r.operation.clone(),
            request_model: r.request_model.clone(),
            response_model: r.response_model.clone(),
            model: r.model().map(str::to_owned),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cache_read_tokens: r.cache_read_tokens,
            cache_write_tokens: r.cache_write_tokens,
            reasoning_tokens: r.reasoning_tokens,
            cost_usd: r.cost_usd,
            cost_source: r.cost_source.as_str().to_owned(),
            price_version: r.price_version.clone(),
            status: r.status.as_str().to_owned(),
            error_type: r.error_type.clone(),
            http_status: r.http_status,
            stream: r.stream,
            finish_reason: r.finish_reason.clone(),
            mode: r.mode.as_str().to_owned(),
            decision: r.decision.clone(),
            rules_fired: r.rules_fired.clone(),
            attempt: r.attempt,
            upstream: r.upstream.clone(),
            labels: r.labels.clone(),
            parent_span_id: r.parent_span_id.clone(),
        }
    }

    pub fn into_record(self) -> CallRecord {
        CallRecord {
            start_unix_nanos: self.start_unix_nanos,
            duration_nanos: self.duration_nanos,
            ttft_nanos: self.ttft_nanos,
            trace_id: self.trace_id,
            span_id: self.span_id,
            request_id: self.request_id,
            org: none_if_empty(self.org),
            project: none_if_empty(self.project),
            app: none_if_empty(self.app),
            environment: self.environment,
            route: self.route,
            user: self.user_id,
            session: self.session_id,
            agent_id: self.agent_id,
            agent_name: self.agent_name,
            provider: self.provider,
            operation: self.operation,
            request_model: self.request_model,
            response_model: self.response_model,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cache_read_tokens: self.cache_read_tokens,
            cache_write_tokens: self.cache_write_tokens,
            reasoning_tokens: self.reasoning_tokens,
            cost_usd: self.cost_usd,
            cost_source: CostSource::parse(&self.cost_source).unwrap_or_default(),
            price_version: self.price_version,
            status: CallStatus::parse(&self.status).unwrap_or_default(),
            error_type: self.error_type,
            http_status: self.http_status,
            stream: self.stream,
            finish_reason: self.finish_reason,
            mode: Mode::parse(&self.mode).unwrap_or_default(),
            decision: self.decision,
            rules_fired: self.rules_fired,
            attempt: self.attempt,
            upstream: self.upstream,
            labels: self.labels,
            parent_span_id: self.parent_span_id,
            instrumentation: 0,
            settled: false,
        }
    }
}

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct EventRow {
    /// Microseconds (`DateTime64(6, 'UTC')`).
    pub time: i64,
    pub time_unix_nanos: i64,
    pub rule_id: String,
    pub kind: String,
    pub scope: String,
    pub metric: Option<String>,
    pub limit_value: Option<f64>,
    pub used: Option<f64>,
    pub threshold: Option<f64>,
    pub action: String,
    pub window_end_unix_nanos: Option<i64>,
    pub trace_id: String,
    pub span_id: String,
}

impl EventRow {
    pub fn from_event(e: &RuleEvent) -> Self {
        Self {
            time: e.time_unix_nanos / 1_000,
            time_unix_nanos: e.time_unix_nanos,
            rule_id: e.rule_id.clone(),
            kind: e.kind.clone(),
            scope: e.scope.clone(),
            metric: e.metric.clone(),
            limit_value: e.limit,
            used: e.used,
            threshold: e.threshold,
            action: e.action.clone(),
            window_end_unix_nanos: e.window_end_unix_nanos,
            trace_id: e.trace_id.clone(),
            span_id: e.span_id.clone(),
        }
    }

    pub fn into_event(self) -> RuleEvent {
        RuleEvent {
            time_unix_nanos: self.time_unix_nanos,
            rule_id: self.rule_id,
            kind: self.kind,
            scope: self.scope,
            metric: self.metric,
            limit: self.limit_value,
            used: self.used,
            threshold: self.threshold,
            action: self.action,
            window_end_unix_nanos: self.window_end_unix_nanos,
            trace_id: self.trace_id,
            span_id: self.span_id,
        }
    }
}

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct AdminRow {
    pub time_unix_nanos: i64,
    pub until_unix_nanos: Option<i64>,
    pub body: String,
}

/// One group of a usage query: dimension values, then the totals.
#[derive(Debug, Clone, Row, Deserialize)]
pub(super) struct UsageRowCh {
    pub dims: Vec<Option<String>>,
    pub requests: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_usd: f64,
    pub unpriced_requests: u64,
}
