//! `/admin/v1/...`: reload rules, set and lift blocks, snooze or override
//! rules, create, list and revoke keys. The listener lets in only the
//! admin token or `admin` keys (`crate::auth`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tollgate_rules::engine::Engine;

use crate::admin::{AdminAction, AdminLog, KeyCache, NewKey};
use crate::config::Reloader;
use crate::killswitch::{KillSwitch, Scope};

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub engine: Engine,
    pub killswitch: KillSwitch,
    pub reloader: Arc<Reloader>,
    pub log: Arc<dyn AdminLog>,
    /// Every key (ingest, gateway, read, admin).
    pub keys: Arc<KeyCache>,
}

/// Stores an applied action; the answer says when it could not be stored.
async fn store(state: &AdminState, action: &AdminAction, ok: serde_json::Value) -> Response {
    match state.log.record(action).await {
        Ok(()) => Json(ok).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "admin action applied but not stored");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "not_stored",
                format!("applied, but not stored (it will not survive a restart): {e}"),
            )
        }
    }
}

/// The admin routes (serve them behind the admin check).
pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/v1/reload", post(reload))
        .route(
            "/admin/v1/enforcement",
            post(set_block).delete(lift_block).get(list_blocks),
        )
        .route("/admin/v1/overrides", post(set_override))
        .route("/admin/v1/keys", post(create_key).get(list_keys))
        .route("/admin/v1/keys/{id}", delete(revoke_key))
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": code, "message": message.into() })),
    )
        .into_response()
}

async fn reload(State(state): State<AdminState>) -> Response {
    match state.reloader.reload() {
        Ok(n) => Json(json!({ "status": "reloaded", "rules": n })).into_response(),
        Err(why) => error(
            StatusCode::BAD_REQUEST,
            "invalid_config",
            format!("{why}; the previous rules stay in force"),
        ),
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn until(for_s: Option<u64>) -> i64 {
    for_s.map_or(0, |s| {
        now_nanos().saturating_add(
            i64::try_from(s)
                .unwrap_or(i64::MAX / 2)
                .saturating_mul(1_000_000_000),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBlock {
    scope: Scope,
    #[serde(default)]
    reason: Option<String>,
    /// Seconds; none = until lifted.
    #[serde(default)]
    for_s: Option<u64>,
}

async fn set_block(State(state): State<AdminState>, Json(body): Json<SetBlock>) -> Response {
    if body.scope.dims().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "scope must name at least one dimension",
        );
    }
    let action = AdminAction::Block {
        scope: body.scope,
        reason: body.reason.unwrap_or_else(|| "admin".into()),
        until_unix_nanos: until(body.for_s),
    };
    action.apply(&state.engine, &state.killswitch);
    store(&state, &action, json!({ "status": "blocked" })).await
}

#[derive(Debug, Deserialize)]
struct LiftQuery {
    rule: Option<String>,
    #[serde(flatten)]
    scope: Scope,
}

async fn lift_block(State(state): State<AdminState>, Query(q): Query<LiftQuery>) -> Response {
    let lifted = state.killswitch.lift(&q.scope, q.rule.as_deref());
    if lifted.is_empty() {
        return Json(json!({ "lifted": 0 })).into_response();
    }
    // Remembered until the lifted blocks would have ended by themselves.
    let until_unix_nanos = if lifted.iter().any(|b| b.until_unix_nanos == 0) {
        0
    } else {
        lifted.iter().map(|b| b.until_unix_nanos).max().unwrap_or(0)
    };
    let action = AdminAction::Lift {
        scope: q.scope,
        rule_id: q.rule,
        until_unix_nanos,
    };
    store(&state, &action, json!({ "lifted": lifted.len() })).await
}

async fn list_blocks(State(state): State<AdminState>) -> Response {
    Json(json!({ "blocks": state.killswitch.all() })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetOverride {
    rule_id: String,
    scope: Scope,
    /// `snooze` or `limit`.
    kind: String,
    /// New limit in the rule's unit for `limit`; none = no limit.
    #[serde(default)]
    limit: Option<f64>,
    /// How long it lasts, in seconds.
    for_s: u64,
}

async fn set_override(State(state): State<AdminState>, Json(body): Json<SetOverride>) -> Response {
    let until_unix_nanos = until(Some(body.for_s));
    let (snooze, limit) = match body.kind.as_str() {
        "snooze" => (true, None),
        "limit" => match body.limit {
            Some(l) if !l.is_finite() || l < 0.0 => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "limit must be a non-negative number",
                );
            }
            l => (false, l.map(|l| l.round() as u64)),
        },
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("unknown kind `{other}`; use snooze or limit"),
            );
        }
    };
    let action = AdminAction::Override {
        rule_id: body.rule_id.clone(),
        scope: body.scope,
        limit,
        snooze,
        until_unix_nanos,
    };
    if !action.apply(&state.engine, &state.killswitch) {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_rule",
            format!("no rule `{}`", body.rule_id),
        );
    }
    store(
        &state,
        &action,
        json!({ "status": "ok", "rule_id": body.rule_id, "until_unix_nanos": until_unix_nanos }),
    )
    .await
}

async fn create_key(State(state): State<AdminState>, Json(body): Json<NewKey>) -> Response {
    if let Err(why) = body.check() {
        return error(StatusCode::BAD_REQUEST, "bad_request", why);
    }
    match state.keys.create(body).await {
        Ok((secret, info)) => (
            StatusCode::CREATED,
            Json(json!({
                "key": secret,
                "note": "the key is shown once: only its hash is kept",
                "info": info,
            })),
        )
            .into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_stored",
            format!("the key was not created: {e}"),
        ),
    }
}

async fn list_keys(State(state): State<AdminState>) -> Response {
    Json(json!({ "keys": state.keys.list() })).into_response()
}

async fn revoke_key(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match state.keys.revoke(&id).await {
        Ok(true) => Json(json!({ "id": id, "revoked": true })).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "not_found", format!("no key `{id}`")),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_stored",
            format!("the key was not revoked: {e}"),
        ),
    }
}
