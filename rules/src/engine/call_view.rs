//! What a rule sees of a call ([`CallView`]), whether it was made
//! (a stored or observed call) or is about to be (an admission): read by
//! the CEL interpreter (`cel.rs`) and by its native guards (`guard.rs`).

use std::collections::BTreeMap;

use super::scope::CallIntent;
use crate::{CallRecord, CallStatus};

/// What a CEL expression sees of a call.
#[derive(Debug)]
pub(crate) struct CallView<'a> {
    pub(crate) model: &'a str,
    pub(crate) provider: &'a str,
    pub(crate) operation: &'a str,
    pub(crate) input_tokens: i64,
    pub(crate) output_tokens: i64,
    pub(crate) cache_read_tokens: i64,
    pub(crate) total_tokens: i64,
    pub(crate) cost_usd: f64,
    pub(crate) priced: bool,
    pub(crate) stream: bool,
    pub(crate) status: &'a str,
    pub(crate) error_type: &'a str,
    pub(crate) org: &'a str,
    pub(crate) project: &'a str,
    pub(crate) app: &'a str,
    pub(crate) environment: &'a str,
    pub(crate) user: &'a str,
    pub(crate) session: &'a str,
    pub(crate) route: &'a str,
    pub(crate) upstream: &'a str,
    pub(crate) labels: &'a BTreeMap<String, String>,
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl<'a> CallView<'a> {
    pub(crate) fn of_record(r: &'a CallRecord) -> Self {
        Self {
            model: r.model().unwrap_or(""),
            provider: r.provider.as_deref().unwrap_or(""),
            operation: r.operation.as_deref().unwrap_or(""),
            input_tokens: int(r.input_tokens),
            output_tokens: int(r.output_tokens),
            cache_read_tokens: int(r.cache_read_tokens),
            total_tokens: int(r.total_tokens()),
            cost_usd: r.cost_usd.unwrap_or(0.0),
            priced: r.cost_usd.is_some(),
            stream: r.stream,
            status: if r.status == CallStatus::Error {
                "error"
            } else {
                "ok"
            },
            error_type: r.error_type.as_deref().unwrap_or(""),
            org: r.org.as_deref().unwrap_or(""),
            project: r.project.as_deref().unwrap_or(""),
            app: r.app.as_deref().unwrap_or(""),
            environment: r.environment.as_deref().unwrap_or(""),
            user: r.user.as_deref().unwrap_or(""),
            session: r.session.as_deref().unwrap_or(""),
            route: r.route.as_deref().unwrap_or(""),
            upstream: r.upstream.as_deref().unwrap_or(""),
            labels: &r.labels,
        }
    }

    pub(crate) fn of_intent(c: &'a CallIntent) -> Self {
        Self {
            model: c.model.as_deref().unwrap_or(""),
            provider: c.provider.as_deref().unwrap_or(""),
            operation: "chat",
            input_tokens: int(c.input_tokens),
            output_tokens: int(c.max_output_tokens),
            cache_read_tokens: 0,
            total_tokens: int(c.input_tokens.saturating_add(c.max_output_tokens)),
            cost_usd: c.worst_case_cost_usd.unwrap_or(0.0),
            priced: c.worst_case_cost_usd.is_some(),
            stream: false,
            status: "ok",
            error_type: "",
            org: c.scope.org.as_deref().unwrap_or(""),
            project: c.scope.project.as_deref().unwrap_or(""),
            app: c.scope.app.as_deref().unwrap_or(""),
            environment: c.scope.environment.as_deref().unwrap_or(""),
            user: c.scope.user.as_deref().unwrap_or(""),
            session: c.scope.session.as_deref().unwrap_or(""),
            route: c.scope.route.as_deref().unwrap_or(""),
            upstream: c.upstream.as_deref().unwrap_or(""),
            labels: &c.labels,
        }
    }
}

impl CallView<'_> {
    /// A string field by name; `None` for the others.
    pub(crate) fn str_field(&self, name: &str) -> Option<&str> {
        Some(match name {
            "model" => self.model,
            "provider" => self.provider,
            "operation" => self.operation,
            "status" => self.status,
            "error_type" => self.error_type,
            "org" => self.org,
            "project" => self.project,
            "app" => self.app,
            "environment" => self.environment,
            "user" => self.user,
            "session" => self.session,
            "route" => self.route,
            "upstream" => self.upstream,
            _ => return None,
        })
    }
}
