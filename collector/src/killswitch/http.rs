//! `GET /v1/enforcement` (JSON) and `GET /v1/enforcement/stream` (SSE).

use std::convert::Infallible;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::{Stream, StreamExt};

use super::state::{EnforcementState, KillSwitch, ScopeQuery};

/// The enforcement routes (no authentication: agents read them).
pub fn enforcement_router(killswitch: KillSwitch) -> Router {
    Router::new()
        .route("/v1/enforcement", get(current))
        .route("/v1/enforcement/stream", get(stream))
        .with_state(killswitch)
}

async fn current(
    State(ks): State<KillSwitch>,
    Query(scope): Query<ScopeQuery>,
) -> Json<EnforcementState> {
    Json(ks.state_for(&scope))
}

/// The state at once, then again whenever it changes for this scope.
async fn stream(
    State(ks): State<KillSwitch>,
    Query(scope): Query<ScopeQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = ks
        .watch(scope)
        .map(|state| Ok(Event::default().data(serde_json::to_string(&state).unwrap_or_default())));
    Sse::new(events).keep_alive(KeepAlive::default())
}
