//! `GET /v1/enforcement` (JSON) and `GET /v1/enforcement/stream` (SSE).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;

use super::state::{Block, EnforcementState, KillSwitch, ScopeQuery};

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
    let changes = ks.subscribe();
    let start = (ks, scope, changes, None::<(bool, Vec<Block>)>);
    let events = futures::stream::unfold(start, |(ks, scope, mut changes, last)| async move {
        loop {
            let state = ks.state_for(&scope);
            let key = (state.blocked, state.blocks.clone());
            if last.as_ref() != Some(&key) {
                let event =
                    Event::default().data(serde_json::to_string(&state).unwrap_or_default());
                return Some((Ok(event), (ks, scope, changes, Some(key))));
            }
            // Also wake up now and then so that a block that expires is noticed.
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return None },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
