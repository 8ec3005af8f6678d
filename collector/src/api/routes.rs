//! Route handlers of the HTTP API.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Extension, Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use http::header;
use serde_json::json;

use super::error::ApiError;
use crate::internal_events::InternalEvents;
use crate::query::{
    CallsQuery, Dimension, EventsQuery, QueryError, QueryStore, Tenant, UsageQuery, format_since,
    parse_since,
};
use crate::sinks::outbox::{AlertOutbox, DeliveryState, alert_identity};

/// Most rows `/v1/calls` and `/v1/usage` return at once.
const MAX_LIMIT: usize = 10_000;

/// Longest `/readyz` waits for the store to answer before it says not ready.
/// The embedded store answers on a connection no query uses, in microseconds.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn QueryStore>,
    pub events: Arc<InternalEvents>,
    /// Set once the receivers listen; `/readyz` says ready only then.
    pub receivers_ready: Arc<AtomicBool>,
    /// Where the inline gateway listens, when it runs.
    pub gateway: Option<SocketAddr>,
    /// Longest range `since` may cover (`api.max_query_range`).
    pub max_query_range: Duration,
    /// The alert outbox: `/v1/events` shows each event's deliveries.
    pub outbox: Arc<dyn AlertOutbox>,
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

/// The start of a query's range from `since` (default `24h`), no longer
/// than `max` ago.
struct Since {
    start_unix_nanos: i64,
    /// Set when `since` asked for more than `max`.
    warning: Option<String>,
}

fn since(params: &HashMap<String, String>, max: Duration) -> Result<Since, ApiError> {
    let asked = params.get("since").map_or("24h", String::as_str);
    let mut range = parse_since(asked)?;
    let mut warning = None;
    if range > max {
        // Clamped, as a query reaching past a store's retention or
        // look-back limit is elsewhere (Loki, Mimir): the answer covers
        // what may be read, and says so.
        warning = Some(format!(
            "since={} is longer than the longest range a query may cover ({}, api.max_query_range); \
             answered for the last {}",
            asked.trim(),
            format_since(max),
            format_since(max)
        ));
        range = max;
    }
    Ok(Since {
        start_unix_nanos: now_nanos()
            .saturating_sub(i64::try_from(range.as_nanos()).unwrap_or(i64::MAX)),
        warning,
    })
}

/// `{"rows": ...}`, with `warnings` (as in Prometheus' API) when there are any.
fn answer<T: serde::Serialize>(rows: T, since: &Since) -> Json<serde_json::Value> {
    let mut body = json!({ "rows": rows });
    if let Some(w) = &since.warning {
        body["warnings"] = json!([w]);
    }
    Json(body)
}

/// A store's answer; a timeout is counted in `/metrics`.
fn counted<T>(
    state: &ApiState,
    endpoint: &'static str,
    answer: Result<T, QueryError>,
) -> Result<T, ApiError> {
    if let Err(QueryError::Timeout { timeout }) = &answer {
        state.events.query_timed_out(endpoint, *timeout);
    }
    answer.map_err(ApiError::from)
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
    tenant: Option<Extension<Tenant>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let group_by = match params.get("by") {
        Some(by) => Dimension::parse_list(by)?,
        None => Vec::new(),
    };
    let since = since(&params, state.max_query_range)?;
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
    tenant_of(tenant).restrict(&mut filters)?;
    filters.sort_by_key(|(d, _)| d.as_str());
    let query = UsageQuery {
        group_by,
        since_unix_nanos: since.start_unix_nanos,
        filters,
        limit: limit(&params, 1000)?,
    };
    let rows = counted(&state, "usage", state.store.usage(query).await)?;
    Ok(answer(rows, &since))
}

/// The tenant of the request's key; everything when auth let it in without one.
fn tenant_of(tenant: Option<Extension<Tenant>>) -> Tenant {
    tenant.map(|t| t.0).unwrap_or_default()
}

/// `GET /v1/calls?limit=N[&project=x]...`: the latest calls, newest first,
/// with equality filters on any dimension.
async fn calls(
    State(state): State<ApiState>,
    tenant: Option<Extension<Tenant>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let mut filters = Vec::new();
    for (k, v) in &params {
        if k == "limit" {
            continue;
        }
        let d = Dimension::parse(k).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown parameter `{k}`; use limit or a dimension filter ({})",
                Dimension::ALL.map(Dimension::as_str).join(", ")
            ))
        })?;
        filters.push((d, v.clone()));
    }
    tenant_of(tenant).restrict(&mut filters)?;
    filters.sort_by_key(|(d, _)| d.as_str());
    let answer = state
        .store
        .calls(CallsQuery {
            limit: limit(&params, 50)?,
            filters,
        })
        .await;
    let rows = counted(&state, "calls", answer)?;
    Ok(Json(json!({ "rows": rows })))
}

/// `GET /v1/events?since=24h[&rule=ID][&kind=threshold][&limit=N]`: rule events, newest first.
async fn events(
    State(state): State<ApiState>,
    tenant: Option<Extension<Tenant>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    for k in params.keys() {
        if !matches!(k.as_str(), "since" | "rule" | "kind" | "limit") {
            return Err(ApiError::BadRequest(format!(
                "unknown parameter `{k}`; use since, rule, kind or limit"
            )));
        }
    }
    let since = since(&params, state.max_query_range)?;
    let query = EventsQuery {
        since_unix_nanos: since.start_unix_nanos,
        rule_id: params.get("rule").cloned(),
        kind: params.get("kind").cloned(),
        limit: limit(&params, 100)?,
        within_query_timeout: true,
        ..EventsQuery::default()
    }
    .within(&tenant_of(tenant));
    let rows = counted(&state, "events", state.store.events(query).await)?;
    // Each event with its alerts' deliveries (`alerts`: webhook, state,
    // attempts), when it has any.
    let identities: Vec<String> = rows.iter().map(alert_identity).collect();
    let mut deliveries: HashMap<String, Vec<DeliveryState>> = HashMap::new();
    match state.outbox.deliveries(&identities).await {
        Ok(found) => {
            for (identity, d) in found {
                deliveries.entry(identity).or_default().push(d);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read alert deliveries"),
    }
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .zip(&identities)
        .map(|(event, identity)| {
            let mut v = serde_json::to_value(event).unwrap_or_default();
            if let Some(d) = deliveries.get(identity) {
                v["alerts"] = serde_json::to_value(d).unwrap_or_default();
            }
            v
        })
        .collect();
    Ok(answer(rows, &since))
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    if !state.receivers_ready.load(Ordering::Acquire) {
        return Err(ApiError::NotReady("receivers are not listening yet".into()));
    }
    match tokio::time::timeout(READY_CHECK_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({ "status": "ready" }))),
        Ok(Err(e)) => Err(ApiError::NotReady(format!("store not ready: {e}"))),
        Err(_) => Err(ApiError::NotReady(format!(
            "store did not answer within {}s",
            READY_CHECK_TIMEOUT.as_secs_f64()
        ))),
    }
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
    use super::*;

    #[test]
    fn a_since_past_the_longest_range_is_answered_for_that_range_and_says_so() {
        let day = Duration::from_secs(86_400);
        let params = |v: &str| HashMap::from([("since".to_owned(), v.to_owned())]);
        let before = now_nanos();
        let s = since(&params("100000w"), 400 * day).unwrap();
        let after = now_nanos();
        let range = i64::try_from((400 * day).as_nanos()).unwrap();
        assert!((before - range..=after - range).contains(&s.start_unix_nanos));
        let warning = s.warning.unwrap();
        assert!(
            warning.contains("since=100000w") && warning.contains("(400d, api.max_query_range)"),
            "{warning}"
        );
        let body = answer(
            Vec::<u8>::new(),
            &since(&params("500d"), 400 * day).unwrap(),
        );
        assert_eq!(body["warnings"].as_array().map(Vec::len), Some(1));

        let s = since(&params("7d"), 400 * day).unwrap();
        assert!(s.warning.is_none());
        assert!(s.start_unix_nanos >= before - i64::try_from((7 * day).as_nanos()).unwrap());
        assert!(answer(Vec::<u8>::new(), &s).get("warnings").is_none());
        assert!(since(&params("5y"), day).is_err());
        // The default range is a day.
        let s = since(&HashMap::new(), 400 * day).unwrap();
        assert!(s.warning.is_none() && s.start_unix_nanos < now_nanos() - 86_000 * 1_000_000_000);
    }

    #[test]
    fn host_headers_give_their_host() {
        assert_eq!(host_of("collector:7070").as_deref(), Some("collector"));
        assert_eq!(host_of("collector").as_deref(), Some("collector"));
        assert_eq!(host_of("[::1]:7070").as_deref(), Some("[::1]"));
        assert_eq!(host_of(":7070"), None);
        assert_eq!(host_of("[]:1"), None);
    }
}
