//! Route handlers of the HTTP API.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use http::header;
use serde_json::json;

use super::error::ApiError;
use crate::internal_events::InternalEvents;
use crate::query::{Dimension, EventsQuery, QueryStore, UsageQuery, parse_since};

/// Most rows `/v1/calls` and `/v1/usage` return at once.
const MAX_LIMIT: usize = 10_000;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn QueryStore>,
    pub events: Arc<InternalEvents>,
    /// Set once the receivers listen; `/readyz` says ready only then.
    pub receivers_ready: Arc<AtomicBool>,
    /// Where the inline gateway listens, when it runs.
    pub gateway: Option<SocketAddr>,
}

/// `/v1/usage`, `/v1/calls`, `/healthz`, `/readyz`, `/metrics`.
pub fn api_router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/usage", get(usage))
        .route("/v1/calls", get(calls))
        .route("/v1/events", get(events))
        .route("/v1/gateway", get(gateway))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn limit(params: &HashMap<String, String>, default: usize) -> Result<usize, ApiError> {
    match params.get("limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("limit must be between 1 and {MAX_LIMIT}"))
            }),
    }
}

/// `GET /v1/usage?by=project,model&since=1h[&project=x][&limit=N]`.
async fn usage(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let group_by = match params.get("by") {
        Some(by) => Dimension::parse_list(by)?,
        None => Vec::new(),
    };
    let since = parse_since(params.get("since").map_or("24h", String::as_str))?;
    let since_nanos =
        now_nanos().saturating_sub(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX));
    let mut filters = Vec::new();
    for (k, v) in &params {
        match k.as_str() {
            "by" | "since" | "limit" => {}
            other => {
                let d = Dimension::parse(other).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "unknown parameter `{other}`; use by, since, limit or a dimension filter ({})",
                        Dimension::ALL.map(Dimension::as_str).join(", ")
                    ))
                })?;
                filters.push((d, v.clone()));
            }
        }
    }
    filters.sort_by_key(|(d, _)| d.as_str());
    let rows = state
        .store
        .usage(UsageQuery {
            group_by,
            since_unix_nanos: since_nanos,
            filters,
            limit: limit(&params, 1000)?,
        })
        .await?;
    Ok(Json(json!({ "rows": rows })))
}

/// `GET /v1/calls?limit=N`: the latest calls, newest first.
async fn calls(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let rows = state.store.calls(limit(&params, 50)?).await?;
    Ok(Json(json!({ "rows": rows })))
}

/// `GET /v1/events?since=24h[&rule=ID][&kind=threshold][&limit=N]`: rule events, newest first.
async fn events(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    for k in params.keys() {
        if !matches!(k.as_str(), "since" | "rule" | "kind" | "limit") {
            return Err(ApiError::BadRequest(format!(
                "unknown parameter `{k}`; use since, rule, kind or limit"
            )));
        }
    }
    let since = parse_since(params.get("since").map_or("24h", String::as_str))?;
    let rows = state
        .store
        .events(EventsQuery {
            since_unix_nanos: now_nanos()
                .saturating_sub(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)),
            rule_id: params.get("rule").cloned(),
            kind: params.get("kind").cloned(),
            limit: limit(&params, 100)?,
        })
        .await?;
    Ok(Json(json!({ "rows": rows })))
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    if !state.receivers_ready.load(Ordering::Acquire) {
        return Err(ApiError::NotReady("receivers are not listening yet".into()));
    }
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::NotReady(format!("store not ready: {e}")))?;
    Ok(Json(json!({ "status": "ready" })))
}

/// Whether the inline gateway runs and its base URL, so that agents (the
/// SDK shim's gateway setting) follow `gateway.enabled` without a change.
/// A gateway listening on every interface is named by the host this API
/// was reached at.
async fn gateway(State(state): State<ApiState>, headers: http::HeaderMap) -> impl IntoResponse {
    let Some(addr) = state.gateway else {
        return Json(json!({"enabled": false}));
    };
    let host = match addr.ip() {
        ip if ip.is_unspecified() => headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(host_of)
            .unwrap_or_else(|| IpAddr::from([127, 0, 0, 1]).to_string()),
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    Json(json!({
        "enabled": true,
        "url": format!("http://{host}:{}", addr.port()),
    }))
}

/// The host part of a `Host` header (`name`, `name:port`, `[v6]:port`).
fn host_of(value: &str) -> Option<String> {
    let host = match value.strip_prefix('[') {
        Some(rest) => format!("[{}]", rest.split(']').next()?),
        None => value.split(':').next()?.to_owned(),
    };
    (!host.is_empty() && host != "[]").then_some(host)
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.events.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_headers_give_their_host() {
        assert_eq!(host_of("collector:7070").as_deref(), Some("collector"));
        assert_eq!(host_of("collector").as_deref(), Some("collector"));
        assert_eq!(host_of("[::1]:7070").as_deref(), Some("[::1]"));
        assert_eq!(host_of(":7070"), None);
        assert_eq!(host_of("[]:1"), None);
    }
}
