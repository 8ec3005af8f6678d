//! The floor a proxy can reach here: a bare axum -> reqwest pass-through.
//!
//! It forwards `POST /v1/*` to one upstream base URL with the caller's
//! body and `authorization` header, and answers with the upstream's status,
//! content type and body (streamed through). No auth, rules, rows or
//! translation: what is left is the cost of one more HTTP hop, which is
//! what Tollgate's added latency is compared with. TCP_NODELAY on both
//! sides and one pooled client, as in the gateway.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

struct Upstream {
    client: reqwest::Client,
    /// Base URL ending in `/v1`, without a trailing slash.
    base: String,
}

/// Serves the pass-through on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    upstream_base: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .no_proxy()
        .build()?;
    let state = Arc::new(Upstream {
        client,
        base: upstream_base.trim_end_matches('/').to_owned(),
    });
    let router = Router::new()
        .route("/v1/{*path}", post(forward))
        .with_state(state);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn forward(
    State(upstream): State<Arc<Upstream>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut request = upstream
        .client
        .post(format!("{}/{path}", upstream.base))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, auth);
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
            let mut response = Response::new(Body::from_stream(answer.bytes_stream()));
            *response.status_mut() = status;
            if let Some(ct) = content_type {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.without_url().to_string()).into_response(),
    }
}
