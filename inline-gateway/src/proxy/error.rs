//! Every answer that is not the provider's success, in the caller's dialect:
//! OpenAI's `{"error": {...}}` or Anthropic's `{"type": "error", "error":
//! {...}}`. One exhaustive `match` decides status, type and body; nothing
//! here ever carries a key (messages are built from fixed text, rule data
//! and scrubbed upstream messages).

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};
use tollgate_rules::engine::{Refusal, RefusalReason};

use crate::deps::Block;
use crate::dialect::Dialect;

/// A refused call, as agents get it back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RefusalInfo {
    /// `budget_exceeded`, `rate_limited`, `model_not_allowed`,
    /// `model_unpriced`, `region_not_allowed`, `rule_violation`, `blocked`.
    pub code: &'static str,
    pub status: StatusCode,
    pub rule_id: String,
    pub scope: Option<String>,
    pub metric: Option<&'static str>,
    pub limit: Option<f64>,
    pub used: Option<f64>,
    pub retry_after_s: Option<u64>,
    pub message: String,
}

impl RefusalInfo {
    pub(crate) fn from_refusal(r: &Refusal) -> Self {
        let status = match r.reason {
            RefusalReason::ModelNotAllowed
            | RefusalReason::RegionNotAllowed
            | RefusalReason::CustomRule => StatusCode::FORBIDDEN,
            RefusalReason::BudgetExceeded | RefusalReason::RateLimited | RefusalReason::Blocked => {
                StatusCode::TOO_MANY_REQUESTS
            }
            RefusalReason::Rebuilding
            | RefusalReason::LeaseNeeded
            | RefusalReason::LedgerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        let metric = r.metric.map(|m| m.as_str());
        let message = match (r.reason, r.limit, r.used) {
            (
                RefusalReason::BudgetExceeded | RefusalReason::RateLimited,
                Some(limit),
                Some(used),
            ) => {
                format!(
                    "rule `{}` refused the call for {}: {} {} used of {}{}",
                    r.rule_id,
                    r.scope,
                    used,
                    metric.unwrap_or(""),
                    limit,
                    r.retry_after_s
                        .map(|s| format!("; retry in {s}s"))
                        .unwrap_or_default()
                )
            }
            (RefusalReason::ModelNotAllowed, ..) => {
                format!(
                    "rule `{}` does not allow this model for {}",
                    r.rule_id, r.scope
                )
            }
            (RefusalReason::RegionNotAllowed, ..) => format!(
                "rule `{}` does not allow this provider region for {}",
                r.rule_id, r.scope
            ),
            (RefusalReason::LedgerUnavailable, ..) => format!(
                "the shared budget of rule `{}` for {} cannot be checked: its ledger server is \
                 unreachable and the rule refuses calls then (on_ledger_error = \"deny\"); retry in 1s",
                r.rule_id, r.scope
            ),
            (RefusalReason::Rebuilding, ..) => format!(
                "the usage of rule `{}` for {} could not be read back from the store; retry in 1s",
                r.rule_id, r.scope
            ),
            _ => format!("rule `{}` refused the call for {}", r.rule_id, r.scope),
        };
        Self {
            code: r.reason.as_str(),
            status,
            rule_id: r.rule_id.to_string(),
            scope: Some(r.scope.clone()),
            metric,
            limit: r.limit,
            used: r.used,
            retry_after_s: r.retry_after_s,
            message,
        }
    }

    pub(crate) fn from_block(b: &Block, now_unix_nanos: i64) -> Self {
        // `until` 0: until lifted; no metric: set by hand, nothing measured.
        let measured = !b.metric.is_empty();
        let until = (b.until_unix_nanos > 0).then_some(b.until_unix_nanos);
        let retry_after_s = until.map(|until| {
            u64::try_from(until.saturating_sub(now_unix_nanos).max(0))
                .unwrap_or(0)
                .div_ceil(1_000_000_000)
                .max(1)
        });
        Self {
            code: "blocked",
            status: StatusCode::TOO_MANY_REQUESTS,
            rule_id: b.rule_id.clone(),
            scope: None,
            metric: None,
            limit: measured.then_some(b.limit),
            used: measured.then_some(b.used),
            retry_after_s,
            message: format!(
                "blocked by the kill-switch (rule `{}`): {}",
                b.rule_id, b.reason
            ),
        }
    }

    /// `model` has no price and budget `rule_id` counts cost for `scope`:
    /// the call could not be counted against it.
    pub(crate) fn unpriced(model: &str, rule_id: &str, scope: String) -> Self {
        Self {
            code: "model_unpriced",
            status: StatusCode::FORBIDDEN,
            rule_id: rule_id.to_owned(),
            metric: Some("cost_usd"),
            limit: None,
            used: None,
            retry_after_s: None,
            message: format!(
                "model `{model}` has no price, and rule `{rule_id}` budgets cost for {scope}: \
                 the call could not be counted against it; ask the gateway's operator to \
                 price the model or set gateway.unpriced_cost_per_mtok"
            ),
            scope: Some(scope),
        }
    }

    /// The virtual key's own model list does not allow `model`.
    pub(crate) fn key_model(model: &str) -> Self {
        Self {
            code: "model_not_allowed",
            status: StatusCode::FORBIDDEN,
            rule_id: "key.allowed_models".to_owned(),
            scope: None,
            metric: None,
            limit: None,
            used: None,
            retry_after_s: None,
            message: format!("this key may not use model `{model}`"),
        }
    }
}

/// Why a call got no provider answer.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// No key, an unknown key, or a revoked key.
    Unauthorized(&'static str),
    BadRequest(String),
    TooLarge(usize),
    NotFound,
    ModelNotFound(String),
    /// The links of the model cannot serve this operation.
    Unsupported(String),
    Refused(RefusalInfo),
    UpstreamTimeout,
    UpstreamUnreachable,
    /// The gateway itself sheds load (its process is at its memory limit).
    Overloaded {
        message: &'static str,
        retry_after_s: u64,
    },
    /// Every link's breaker is open.
    NoHealthyUpstream {
        retry_after_s: u64,
    },
    /// The provider rejected the gateway's own credentials.
    UpstreamAuth,
    /// The provider answered with a redirect, which is not followed.
    UpstreamRedirect,
    /// A provider error, re-worded in the caller's dialect.
    Upstream {
        status: StatusCode,
        message: String,
        retry_after: Option<HeaderValue>,
    },
    /// A provider error in the caller's own dialect, passed on (scrubbed).
    UpstreamRaw {
        status: StatusCode,
        body: Bytes,
        retry_after: Option<HeaderValue>,
    },
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) | ApiError::Unsupported(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound | ApiError::ModelNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Refused(r) => r.status,
            ApiError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::UpstreamUnreachable | ApiError::UpstreamAuth | ApiError::UpstreamRedirect => {
                StatusCode::BAD_GATEWAY
            }
            ApiError::NoHealthyUpstream { .. } | ApiError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Upstream { status, .. } | ApiError::UpstreamRaw { status, .. } => *status,
        }
    }

    /// The row's `error_type`.
    pub(crate) fn error_type(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::BadRequest(_) => "invalid_request",
            ApiError::TooLarge(_) => "request_too_large",
            ApiError::NotFound => "not_found",
            ApiError::ModelNotFound(_) => "model_not_found",
            ApiError::Unsupported(_) => "unsupported_operation",
            ApiError::Refused(r) => r.code,
            ApiError::UpstreamTimeout => "upstream_timeout",
            ApiError::UpstreamUnreachable => "upstream_unreachable",
            ApiError::NoHealthyUpstream { .. } => "no_healthy_upstream",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::UpstreamAuth => "upstream_auth_error",
            ApiError::UpstreamRedirect => "upstream_redirect",
            ApiError::Upstream { status, .. } | ApiError::UpstreamRaw { status, .. } => {
                upstream_type(*status)
            }
        }
    }

    pub(crate) fn into_response(self, dialect: Dialect) -> Response {
        let status = self.status();
        let kind = self.error_type();
        let (message, retry_after, extra): (
            String,
            Option<HeaderValue>,
            Option<Map<String, Value>>,
        ) = match self {
            ApiError::UpstreamRaw {
                status,
                body,
                retry_after,
            } => {
                let mut r = Response::new(Body::from(body));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                if let Some(v) = retry_after {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return r;
            }
            ApiError::Unauthorized(m) => (m.to_owned(), None, None),
            ApiError::BadRequest(m) | ApiError::Unsupported(m) => (m, None, None),
            ApiError::TooLarge(limit) => (
                format!("the request body is larger than {limit} bytes"),
                None,
                None,
            ),
            ApiError::NotFound => (
                "no such endpoint on the Tollgate gateway".to_owned(),
                None,
                None,
            ),
            ApiError::ModelNotFound(m) => (
                format!(
                    "model `{m}` is neither a route nor served by a configured provider; \
                         use a route name, `provider/model`, or a model a provider lists"
                ),
                None,
                None,
            ),
            ApiError::Refused(r) => {
                let retry = r
                    .retry_after_s
                    .and_then(|s| HeaderValue::from_str(&s.to_string()).ok());
                let mut extra = Map::new();
                extra.insert("rule_id".into(), Value::from(r.rule_id));
                extra.insert("limit".into(), r.limit.map_or(Value::Null, Value::from));
                extra.insert("used".into(), r.used.map_or(Value::Null, Value::from));
                extra.insert(
                    "retry_after_s".into(),
                    r.retry_after_s.map_or(Value::Null, Value::from),
                );
                extra.insert("metric".into(), r.metric.map_or(Value::Null, Value::from));
                extra.insert("scope".into(), r.scope.map_or(Value::Null, Value::from));
                (r.message, retry, Some(extra))
            }
            ApiError::UpstreamTimeout => ("no provider answered in time".to_owned(), None, None),
            ApiError::UpstreamUnreachable => {
                ("no provider could be reached".to_owned(), None, None)
            }
            ApiError::Overloaded {
                message,
                retry_after_s,
            } => (
                message.to_owned(),
                HeaderValue::from_str(&retry_after_s.max(1).to_string()).ok(),
                None,
            ),
            ApiError::NoHealthyUpstream { retry_after_s } => (
                "every provider of this model is failing; try again later".to_owned(),
                HeaderValue::from_str(&retry_after_s.max(1).to_string()).ok(),
                None,
            ),
            ApiError::UpstreamAuth => (
                "the provider rejected the gateway's credentials; tell the gateway's operator"
                    .to_owned(),
                None,
                None,
            ),
            ApiError::UpstreamRedirect => (
                "the provider answered with a redirect, which the gateway does not follow; \
                 tell the gateway's operator (the provider's base_url may be out of date)"
                    .to_owned(),
                None,
                None,
            ),
            ApiError::Upstream {
                message,
                retry_after,
                ..
            } => (message, retry_after, None),
        };
        let body = envelope(dialect.envelope(), status, kind, message, extra);
        let mut r = (status, axum::Json(body)).into_response();
        if let Some(v) = retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

fn upstream_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "invalid_request",
        403 => "permission_denied",
        404 => "not_found",
        408 | 504 => "upstream_timeout",
        413 => "request_too_large",
        429 => "upstream_rate_limited",
        529 => "upstream_overloaded",
        500..=599 => "upstream_error",
        _ => "upstream_error",
    }
}

/// The answer of a gateway that sheds load before reading a request
/// (HTTP 503 + `Retry-After`), in the dialect of the endpoint asked.
pub fn overloaded(path: &str, message: &'static str, retry_after_s: u64) -> Response {
    let dialect = if path.ends_with("/messages") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    ApiError::Overloaded {
        message,
        retry_after_s,
    }
    .into_response(dialect)
}

/// The error types each dialect's SDKs know, by status.
fn dialect_type(
    dialect: Dialect,
    status: StatusCode,
    kind: &'static str,
) -> (&'static str, Option<&'static str>) {
    match dialect {
        Dialect::OpenAi | Dialect::Responses => match status.as_u16() {
            401 => ("invalid_request_error", Some("invalid_api_key")),
            404 if kind == "model_not_found" => ("invalid_request_error", Some("model_not_found")),
            400..=428 | 430..=499 => ("invalid_request_error", Some(kind)),
            429 => ("rate_limit_error", Some(kind)),
            _ => ("server_error", Some(kind)),
        },
        Dialect::Anthropic => (
            match status.as_u16() {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                504 => "timeout_error",
                529 | 503 => "overloaded_error",
                400..=499 => "invalid_request_error",
                _ => "api_error",
            },
            None,
        ),
    }
}

/// The body of an error; refusals put their own code in `type` (agents key
/// on it) and add the rule's figures.
fn envelope(
    dialect: Dialect,
    status: StatusCode,
    kind: &'static str,
    message: String,
    extra: Option<Map<String, Value>>,
) -> Value {
    let mut error = Map::new();
    match (&extra, dialect) {
        (Some(_), Dialect::OpenAi | Dialect::Responses) => {
            error.insert("type".into(), Value::from(kind));
            error.insert("code".into(), Value::from(kind));
        }
        (Some(_), Dialect::Anthropic) => {
            error.insert("type".into(), Value::from(kind));
        }
        (None, d) => {
            let (t, code) = dialect_type(d, status, kind);
            error.insert("type".into(), Value::from(t));
            if d.envelope() == Dialect::OpenAi {
                error.insert("code".into(), code.map_or(Value::Null, Value::from));
                error.insert("param".into(), Value::Null);
            }
        }
    }
    error.insert("message".into(), Value::from(message));
    if let Some(extra) = extra {
        error.extend(extra);
    }
    match dialect {
        Dialect::OpenAi | Dialect::Responses => json!({ "error": Value::Object(error) }),
        Dialect::Anthropic => json!({ "type": "error", "error": Value::Object(error) }),
    }
}

/// The message of a provider's error body, in either dialect.
pub(crate) fn upstream_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/message")
        .and_then(Value::as_str)
        .or_else(|| v.get("message").and_then(Value::as_str))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use tollgate_rules::engine::config::Metric;

    fn body_of(r: Response) -> Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt
            .block_on(axum::body::to_bytes(r.into_body(), 1 << 20))
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn refusal() -> Refusal {
        Refusal {
            reason: RefusalReason::BudgetExceeded,
            rule_id: Arc::from("daily-tokens"),
            scope: "project=search".into(),
            metric: Some(Metric::Tokens),
            limit: Some(2_000_000.0),
            used: Some(2_001_337.0),
            retry_after_s: Some(3600),
            short: Vec::new(),
        }
    }

    #[test]
    fn budget_refusals_use_the_openai_envelope_with_rule_figures() {
        let r =
            ApiError::Refused(RefusalInfo::from_refusal(&refusal())).into_response(Dialect::OpenAi);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3600");
        let b = body_of(r);
        assert_eq!(b["error"]["type"], "budget_exceeded");
        assert_eq!(b["error"]["code"], "budget_exceeded");
        assert_eq!(b["error"]["rule_id"], "daily-tokens");
        assert_eq!(b["error"]["limit"], 2_000_000.0);
        assert_eq!(b["error"]["used"], 2_001_337.0);
        assert_eq!(b["error"]["retry_after_s"], 3600);
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("daily-tokens")
        );
    }

    #[test]
    fn anthropic_callers_get_anthropic_envelopes() {
        let r = ApiError::Refused(RefusalInfo::from_refusal(&refusal()))
            .into_response(Dialect::Anthropic);
        let b = body_of(r);
        assert_eq!(b["type"], "error");
        assert_eq!(b["error"]["type"], "budget_exceeded");
        assert_eq!(b["error"]["rule_id"], "daily-tokens");
        let r = ApiError::Unauthorized("missing key").into_response(Dialect::Anthropic);
        assert_eq!(r.status(), 401);
        assert_eq!(body_of(r)["error"]["type"], "authentication_error");
    }

    #[test]
    fn model_refusals_are_forbidden_without_retry_after() {
        let mut r = refusal();
        r.reason = RefusalReason::ModelNotAllowed;
        r.retry_after_s = None;
        let resp = ApiError::Refused(RefusalInfo::from_refusal(&r)).into_response(Dialect::OpenAi);
        assert_eq!(resp.status(), 403);
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(body_of(resp)["error"]["type"], "model_not_allowed");
    }

    #[test]
    fn unpriced_refusals_are_forbidden_and_name_the_budget() {
        let info = RefusalInfo::unpriced("my-llm", "monthly-cost", "project=search".into());
        let resp = ApiError::Refused(info).into_response(Dialect::Anthropic);
        assert_eq!(resp.status(), 403);
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
        let b = body_of(resp);
        assert_eq!(b["error"]["type"], "model_unpriced");
        assert_eq!(b["error"]["rule_id"], "monthly-cost");
        assert_eq!(b["error"]["metric"], "cost_usd");
        assert_eq!(b["error"]["scope"], "project=search");
        let m = b["error"]["message"].as_str().unwrap();
        assert!(
            m.contains("`my-llm`") && m.contains("unpriced_cost_per_mtok"),
            "{m}"
        );
    }

    #[test]
    fn blocks_report_when_they_lift() {
        let b = Block {
            rule_id: "admin".into(),
            scope: "project=p".into(),
            reason: "incident".into(),
            until_unix_nanos: 10_500_000_000,
            limit: 0.0,
            used: 0.0,
            metric: String::new(),
            dims: Vec::new(),
        };
        let info = RefusalInfo::from_block(&b, 1_000_000_000);
        assert_eq!(info.retry_after_s, Some(10));
        assert_eq!(info.code, "blocked");
        // Set by hand: nothing measured, no limit reported.
        assert_eq!((info.limit, info.used), (None, None));
        let forever = Block {
            until_unix_nanos: 0,
            ..b
        };
        assert_eq!(RefusalInfo::from_block(&forever, 1).retry_after_s, None);
    }
}
