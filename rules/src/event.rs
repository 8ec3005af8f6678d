//! A rule event: one row of `rule_events`, what a rule did on one call.

use serde::{Deserialize, Serialize};

use crate::CallRecord;
use crate::engine::Violation;

/// A threshold crossing, an exceeded limit, a denied model... as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleEvent {
    /// When the call that caused it ended, Unix nanoseconds.
    pub time_unix_nanos: i64,
    pub rule_id: String,
    /// `threshold`, `limit_exceeded`, `model_not_allowed`, `region_not_allowed`, `custom`.
    pub kind: String,
    /// `project=search,user=alice`.
    pub scope: String,
    pub metric: Option<String>,
    pub limit: Option<f64>,
    pub used: Option<f64>,
    /// The fraction crossed, for threshold events.
    pub threshold: Option<f64>,
    /// `alert`, `block` or `log`.
    pub action: String,
    /// End of the window the counter belongs to.
    pub window_end_unix_nanos: Option<i64>,
    /// The call that caused it.
    pub trace_id: String,
    pub span_id: String,
}

impl RuleEvent {
    /// The event `violation` makes of `record`.
    pub fn new(record: &CallRecord, violation: &Violation) -> Self {
        Self {
            time_unix_nanos: record
                .start_unix_nanos
                .saturating_add(record.duration_nanos),
            rule_id: violation.rule_id.to_string(),
            kind: violation.kind.as_str().to_owned(),
            scope: violation.scope.clone(),
            metric: violation.metric.map(|m| m.as_str().to_owned()),
            limit: violation.limit,
            used: violation.used,
            threshold: violation.threshold,
            action: violation.action.as_str().to_owned(),
            window_end_unix_nanos: violation.window_end,
            trace_id: record.trace_id.clone(),
            span_id: record.span_id.clone(),
        }
    }
}
