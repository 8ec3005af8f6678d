//! `GET /v1/enforcement` (JSON) and `GET /v1/enforcement/stream` (SSE).
//! A reader whose key is scoped sees only its tenant's scopes.

use std::convert::Infallible;

use axum::Json;
use axum::Router;
use axum::extract::{Extension, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{Stream, StreamExt};
use http::StatusCode;

use super::state::{EnforcementState, KillSwitch, Scope};
use crate::query::Tenant;

/// The enforcement routes (agents read them with `read` keys).
pub fn enforcement_router(killswitch: KillSwitch) -> Router {
    Router::new()
        .route("/v1/enforcement", get(current))
        .route("/v1/enforcement/stream", get(stream))
        .with_state(killswitch)
}

async fn current(
    State(ks): State<KillSwitch>,
    tenant: Option<Extension<Tenant>>,
    Query(scope): Query<Scope>,
) -> Result<Json<EnforcementState>, Forbidden> {
    let scope = within(scope, tenant)?;
    Ok(Json(ks.state_for(&scope)))
}

/// `scope` with the tenant's org, project and user; 403 when it asks for another.
fn within(scope: Scope, tenant: Option<Extension<Tenant>>) -> Result<Scope, Forbidden> {
    let tenant = tenant.map(|t| t.0).unwrap_or_default();
    super::within(scope, &tenant).map_err(Forbidden)
}

/// A scope outside the reader's tenant: 403.
struct Forbidden(String);

impl IntoResponse for Forbidden {
    fn into_response(self) -> Response {
        (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({ "error": "forbidden", "message": self.0 })),
        )
            .into_response()
    }
}

/// The state at once, then again whenever it changes for this scope.
async fn stream(
    State(ks): State<KillSwitch>,
    tenant: Option<Extension<Tenant>>,
    Query(scope): Query<Scope>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Forbidden> {
    let scope = within(scope, tenant)?;
    let events = ks
        .watch(scope)
        .map(|state| Ok(Event::default().data(serde_json::to_string(&state).unwrap_or_default())));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
