//! Assembles and runs the collector: store, queue and writer, receivers,
//! API; stops them in order on shutdown so acknowledged rows are written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tollgate_rules::engine::compile::RuleKind;
use tollgate_rules::engine::window::WindowKind;
use tollgate_rules::engine::{Engine, RuleSet, ViolationKind};

use crate::admin::{AdminLog, AdminState, Reloader, admin_router};
use crate::alerts::Alerts;
use crate::api::{ApiState, api_router};
use crate::config::Config;
use crate::internal_events::InternalEvents;
use crate::killswitch::{KillSwitch, enforcement_router, enforcement_service};
use crate::normalize::{Normalizer, NormalizerConfig};
use crate::pipeline::{DedupWindow, RuleStage, Writer, row_queue};
use crate::query::QueryStore;
use crate::receivers::{HttpReceiverConfig, Ingest, grpc_router, http_router};
use crate::sinks::{SinkError, Store};

/// Why the collector could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("cannot listen on {addr} ({what}): {source}; set {field} to a free address")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        field: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] SinkError),
    #[error(
        "gateway.enabled = true, but the inline gateway is not part of this build yet; set gateway.enabled = false"
    )]
    GatewayUnavailable,
}

/// Addresses the collector actually listens on (ports resolved when 0 was asked).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub api: SocketAddr,
}

async fn bind(
    addr: SocketAddr,
    what: &'static str,
    field: &'static str,
) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr,
            what,
            field,
            source,
        })
}

fn local(l: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(fallback)
}

/// Runs the collector until `shutdown` is cancelled, then drains the queue.
/// `on_ready` is called with the bound addresses once every listener is up.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(BoundAddrs) + Send,
) -> Result<(), ServeError> {
    if config.gateway.enabled {
        return Err(ServeError::GatewayUnavailable);
    }
    let events = InternalEvents::new();
    let Store {
        sink,
        query: store,
        admin: admin_log,
    } = config.storage.build().await?;

    // Rules: counters rebuilt from the store so a restart keeps usage.
    let engine = Engine::new((*config.rules).clone());
    let killswitch = KillSwitch::new();
    let mut dedup = DedupWindow::new(config.dedup_window_calls);
    restore(
        &engine,
        &killswitch,
        &mut dedup,
        store.as_ref(),
        &config.rules,
    )
    .await;
    reapply_admin_actions(&engine, &killswitch, admin_log.as_ref()).await;
    let (alerts, alerts_task) = Alerts::start(&config.alerts, Arc::clone(&events));

    let grpc_listener = bind(
        config.grpc_listen,
        "OTLP/gRPC",
        "receivers.otlp.grpc_listen",
    )
    .await?;
    let http_listener = bind(
        config.http_listen,
        "OTLP/HTTP",
        "receivers.otlp.http_listen",
    )
    .await?;
    let api_listener = bind(config.api_listen, "API", "api.listen").await?;
    let addrs = BoundAddrs {
        otlp_grpc: local(&grpc_listener, config.grpc_listen),
        otlp_http: local(&http_listener, config.http_listen),
        api: local(&api_listener, config.api_listen),
    };

    let (queue, rx) = row_queue(config.queue_capacity_rows);
    let writer = Writer::new(
        rx,
        queue.clone(),
        sink,
        Arc::clone(&events),
        config.batch_max_rows,
    )
    .with_dedup(dedup)
    .with_rules(RuleStage {
        engine: engine.clone(),
        killswitch: killswitch.clone(),
        alerts,
        events: Arc::clone(&events),
    })
    .spawn();
    let normalizer = Normalizer::new(
        NormalizerConfig {
            max_tokens_per_call: config.max_tokens_per_call,
            labels: config.labels.clone(),
        },
        Arc::clone(&config.prices),
    );
    tracing::info!(
        version = normalizer.prices().version(),
        "price table loaded"
    );
    let ingest = Arc::new(Ingest::new(normalizer, queue.clone(), Arc::clone(&events)));

    let receivers_ready = Arc::new(AtomicBool::new(false));
    let tasks = TaskTracker::new();
    // Receivers stop first; the API stays up until the queue has drained.
    let receivers_stop = shutdown.child_token();
    let api_stop = CancellationToken::new();

    let grpc_routes = grpc_router(Arc::clone(&ingest), config.grpc_max_message_bytes)
        .add_service(enforcement_service(killswitch.clone()));
    let grpc_incoming =
        tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let stop = receivers_stop.clone();
    tasks.spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_routes(grpc_routes)
            .serve_with_incoming_shutdown(grpc_incoming, stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "OTLP/gRPC receiver stopped with an error");
        }
    });

    let http_app = http_router(
        Arc::clone(&ingest),
        HttpReceiverConfig {
            max_body_bytes: config.http_max_body_bytes,
        },
    );
    let stop = receivers_stop.clone();
    tasks.spawn(async move {
        let listener = http_listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(listener, http_app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "OTLP/HTTP receiver stopped with an error");
        }
    });

    let reloader = Arc::new(Reloader::new(config.source.clone(), engine.clone()));
    let mut api_app = api_router(ApiState {
        store,
        events: Arc::clone(&events),
        receivers_ready: Arc::clone(&receivers_ready),
    })
    .merge(enforcement_router(killswitch.clone()));
    match &config.admin_token {
        Some(token) => {
            api_app = api_app.merge(admin_router(AdminState {
                token: token.clone(),
                engine: engine.clone(),
                killswitch: killswitch.clone(),
                reloader: Arc::clone(&reloader),
                log: Arc::clone(&admin_log),
            }));
        }
        None => tracing::info!(
            "admin API off: set admin.token (or TOLLGATE_ADMIN__TOKEN) to enable /admin/v1"
        ),
    }
    let watch_stop = receivers_stop.clone();
    tasks.spawn(async move { reloader.watch(Duration::from_secs(2), watch_stop).await });
    let stop = api_stop.clone();
    let api_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(api_listener, api_app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "API server stopped with an error");
        }
    });
    tasks.close();

    receivers_ready.store(true, Ordering::Release);
    tracing::info!(
        otlp_grpc = %addrs.otlp_grpc,
        otlp_http = %addrs.otlp_http,
        api = %addrs.api,
        "tollgate collector listening"
    );
    on_ready(addrs);

    shutdown.cancelled().await;
    tracing::info!(
        queued_rows = queue.depth(),
        "shutting down: draining the queue"
    );
    receivers_ready.store(false, Ordering::Release);
    // Watch streams (gRPC, SSE) would hold their servers open.
    killswitch.close();
    receivers_stop.cancel();
    tasks.wait().await;
    // No receiver is left: refuse stragglers, write what was acknowledged.
    queue.close();
    writer.drain_and_stop(config.shutdown_timeout).await;
    // The writer held the last alert sender: what is queued is delivered now.
    alerts_task.stop(Duration::from_secs(10)).await;
    api_stop.cancel();
    let _ = api_task.await;
    tracing::info!(
        rows_written = events.rows_written_total(),
        "collector stopped"
    );
    Ok(())
}

/// How far back the dedup window is refilled at start-up.
const DEDUP_REFILL_NANOS: i64 = 10 * 60 * 1_000_000_000;

/// Replays stored calls of every window still open into the engine, and
/// re-blocks the scopes whose `block` rules are still over their limit.
/// The replayed calls also refill the dedup window.
async fn restore(
    engine: &Engine,
    killswitch: &KillSwitch,
    dedup: &mut DedupWindow,
    store: &dyn QueryStore,
    rules: &RuleSet,
) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let since = rules
        .rules
        .iter()
        .filter_map(|r| match &r.kind {
            RuleKind::Budget(b) => Some(match b.window.kind {
                WindowKind::Rolling => now - b.window.unit.nominal_nanos(),
                WindowKind::Calendar(_) => b.window.bounds(now).0,
            }),
            _ => None,
        })
        .min()
        // The dedup window wants the last minutes even without budgets.
        .map_or(now - DEDUP_REFILL_NANOS, |s| {
            s.min(now - DEDUP_REFILL_NANOS)
        });
    let started = std::time::Instant::now();
    let mut blocks = Vec::new();
    let replayed = store
        .replay(
            since,
            Box::new(|call| {
                dedup.insert(call);
                for v in engine.observe(call) {
                    if v.kind == ViolationKind::LimitExceeded
                        && v.window_end.is_some_and(|end| end > now)
                    {
                        blocks.push(v);
                    }
                }
            }),
        )
        .await;
    match replayed {
        Ok(n) => {
            killswitch.apply(&blocks);
            tracing::info!(
                calls = n,
                took_ms = started.elapsed().as_millis() as u64,
                "rule counters rebuilt from the store"
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "could not rebuild rule counters from the store; budgets start from zero")
        }
    }
}

/// Applies the stored admin actions still in force, after the counters and
/// rule blocks are back (a stored lift lifts a block the replay re-created).
async fn reapply_admin_actions(engine: &Engine, killswitch: &KillSwitch, log: &dyn AdminLog) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    match log.load(now).await {
        Ok(actions) => {
            for a in &actions {
                if !a.apply(engine, killswitch) {
                    tracing::warn!(action = ?a, "stored admin action names a rule that no longer exists");
                }
            }
            if !actions.is_empty() {
                tracing::info!(actions = actions.len(), "admin actions re-applied");
            }
        }
        Err(e) => tracing::error!(error = %e, "could not read stored admin actions"),
    }
}
