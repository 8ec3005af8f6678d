//! Assembles and runs the collector: store, queue and writer, receivers,
//! API; stops them in order on shutdown so acknowledged rows are written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::middleware;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tokio::sync::mpsc;
use tollgate_gateway::{Gateway, GatewayDeps, KeyStore, RowSink};
use tollgate_rules::engine::Engine;

use crate::admin::KeyCache;
use crate::alerts::Alerts;
use crate::api::{AdminState, ApiState, admin_router, api_router};
use crate::auth::{Auth, Guard, Need, Style, require};
use crate::config::Durability;
use crate::config::{Config, Reloader};
use crate::gateway::{KafkaRows, KillSwitchBlocks, QueueRows};
use crate::internal_events::InternalEvents;
use crate::kafka::{CallConsumer, CallProducer, client_error};
use crate::killswitch::{KillSwitch, enforcement_router, enforcement_service};
use crate::listen::{self, Listener, Protocols};
use crate::memory::{MemoryLimiter, RETRY_AFTER_SECS, admit_grpc, admit_http};
use crate::normalize::{Normalizer, NormalizerConfig};
use crate::pipeline::wal::{Recovered, Wal, WalConfig, WalError};
use crate::pipeline::{
    CallIdentity, CounterRebuilder, Enforcer, Restore, RowQueue, RuleStage, Writer, row_queue,
};
use crate::query::{CallKey, QueryStore};

/// How often keys are read again from the store (a key revoked by another
/// process sharing it stops working here within this).
const KEYS_REFRESH: Duration = Duration::from_secs(1);

/// What a request on the gRPC port needs: spans `ingest`, the kill-switch
/// stream `read`.
fn grpc_need(path: &str) -> Option<Need> {
    if path.starts_with("/opentelemetry.proto.collector.trace.v1.TraceService/") {
        Some(Need::Ingest)
    } else {
        Some(Need::Read)
    }
}

/// What a request on the API port needs: nothing for health checks.
fn api_need(path: &str) -> Option<Need> {
    match path {
        "/healthz" | "/readyz" => None,
        "/v1/gateway" => Some(Need::AnyKey),
        "/metrics" => Some(Need::Metrics),
        p if p.starts_with("/admin/") => Some(Need::Admin),
        _ => Some(Need::Read),
    }
}

/// Size past which the write-ahead log starts a new segment file.
const WAL_SEGMENT_BYTES: u64 = 64 << 20;
use crate::receivers::{
    Destination, HttpReceiverConfig, Ingest, grpc_router, http_router, memory_refusal,
};
use crate::sinks::{SinkError, Store};
use crate::tls::{ListenerRole, ServerTls, TlsError};

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
    #[error("gateway: {0}")]
    Gateway(String),
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("{0}")]
    Ledger(String),
    #[error(
        "cannot tell which rows read back from the write-ahead log the store already has ({0}); \
         the collector does not start rather than store them twice"
    )]
    WalReplay(String),
    #[error("invalid config: {0}")]
    Tls(#[from] TlsError),
    #[error("write-ahead log in {dir}: {source}; fix the directory or set durability.dir")]
    Wal {
        dir: String,
        #[source]
        source: WalError,
    },
}

/// Addresses the collector actually listens on (ports resolved when 0 was asked).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    /// OTLP/gRPC and the kill-switch's gRPC stream.
    pub otlp_grpc: SocketAddr,
    /// `None` in the Kafka process role (it receives nothing over OTLP).
    pub otlp_http: Option<SocketAddr>,
    pub api: SocketAddr,
    /// The inline gateway, when `gateway.enabled`.
    pub gateway: Option<SocketAddr>,
    /// Every listener speaks TLS (`[tls]`).
    pub tls: bool,
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
    let events = InternalEvents::new();
    let memory = MemoryLimiter::new(config.memory);
    events.attach_memory(memory.clone());
    let Store {
        sink,
        query: store,
        admin: admin_log,
        outbox,
    } = config.storage.build().await?;

    let kafka = config.kafka.clone();
    let ingests = kafka.as_ref().is_none_or(|k| k.ingests());
    if let Some(k) = &kafka {
        crate::kafka::ensure_topic(k)
            .await
            .map_err(ServeError::Kafka)?;
    }

    // Rules: counters rebuilt from the store so a restart keeps usage.
    let engine = Engine::with_max_counters((*config.rules).clone(), config.ledger_max_counters);
    events.attach_ledger(engine.clone());
    let rebuilder = CounterRebuilder {
        store: Arc::clone(&store),
        events: Arc::clone(&events),
    };
    let killswitch = KillSwitch::new();
    let mut identity = CallIdentity::new(config.dedup_window_calls, config.dedup_horizon)
        .with_prices(Arc::clone(&config.prices));
    let restore = Restore {
        store: Arc::clone(&store),
        admin_log: Arc::clone(&admin_log),
    };
    let already_stored = restore.run(&engine, &killswitch, Some(&mut identity)).await;
    // Budgets shared with other instances: from here on (what was restored
    // is in the shared ledger already).
    let (crossings_tx, crossings_rx) = mpsc::unbounded_channel();
    let shared = match &config.shared_ledger {
        Some(c) => {
            let shared = crate::ledger::connect(c)
                .await
                .map_err(ServeError::Ledger)?;
            // Crossings of shared budgets are followed once the queue is up.
            let tx = crossings_tx.clone();
            shared.attach(&engine, move |crossed| {
                let _ = tx.send(crossed);
            });
            let exported = Arc::clone(&shared);
            events.attach_shared_ledger(move || exported.snapshot());
            tracing::info!(
                instance = shared.instance(),
                "budgets shared through the ledger server"
            );
            Some((shared, c.sync_interval))
        }
        None => None,
    };
    // The kill-switch (unless Kafka carries it), keys and overrides shared
    // through the same server: admin changes are recorded through a log
    // that also hands them to the state stream.
    let state_stream = match &config.shared_ledger {
        Some(c) => Some((
            crate::shared_state::StateStream::connect(&c.redis)
                .await
                .map_err(|e| {
                    ServeError::Ledger(format!("cannot reach the shared state stream: {e}"))
                })?,
            c.instance.clone(),
        )),
        None => None,
    };
    let store_log = Arc::clone(&admin_log);
    let (admin_log, shared_admin) = match &state_stream {
        Some(_) => {
            let (log, rx) = crate::shared_state::SharingLog::new(Arc::clone(&admin_log));
            (log as Arc<dyn crate::admin::AdminLog>, Some(rx))
        }
        None => (admin_log, None),
    };
    let (alerts, alerts_task) = Alerts::start(
        &config.alerts,
        &config.tls.outbound,
        Arc::clone(&outbox),
        Arc::clone(&events),
    );
    // The rules and what follows their violations, the same for observed
    // spans and gateway calls.
    let enforcer = Enforcer {
        engine: engine.clone(),
        killswitch: killswitch.clone(),
        alerts,
        events: Arc::clone(&events),
    };

    let grpc_listener = bind(
        config.grpc_listen,
        "OTLP/gRPC",
        "receivers.otlp.grpc_listen",
    )
    .await?;
    let http_listener = if ingests {
        Some(
            bind(
                config.http_listen,
                "OTLP/HTTP",
                "receivers.otlp.http_listen",
            )
            .await?,
        )
    } else {
        None
    };
    let api_listener = bind(config.api_listen, "API", "api.listen").await?;
    let gateway_listener = match &config.gateway_valid {
        Some(g) => Some(bind(g.listen(), "gateway", "gateway.listen").await?),
        None => None,
    };
    let keys = Arc::new(
        KeyCache::load(Arc::clone(&admin_log), config.auth.keys.clone())
            .await
            .map_err(|e| ServeError::Gateway(format!("cannot load keys: {e}")))?,
    );
    // What other instances changed so far is applied before any listener
    // is up.
    let state_sync = match (state_stream, shared_admin) {
        (Some((stream, instance)), Some(admin)) => Some(
            crate::shared_state::StateSync::start(
                stream,
                instance,
                crate::shared_state::sync::Targets {
                    engine: engine.clone(),
                    killswitch: killswitch.clone(),
                    keys: Arc::clone(&keys),
                    store_log,
                },
                admin,
                kafka.is_none(),
            )
            .await
            .map_err(|e| {
                ServeError::Ledger(format!("cannot replay the shared state stream: {e}"))
            })?,
        ),
        _ => None,
    };
    let auth = Arc::new(Auth::new(
        &config.auth,
        config.admin_token.as_ref(),
        Arc::clone(&keys),
        Arc::clone(&events),
    ));
    if config.auth.open_beyond_loopback {
        tracing::warn!(
            "auth.mode = \"open\" with a listener reachable from other machines: anyone who can \
             reach it can send spend into any project and read every call; set auth.mode = \"keys\""
        );
    }
    let addrs = BoundAddrs {
        otlp_grpc: local(&grpc_listener, config.grpc_listen),
        otlp_http: http_listener.as_ref().map(|l| local(l, config.http_listen)),
        api: local(&api_listener, config.api_listen),
        gateway: gateway_listener.as_ref().and_then(|l| l.local_addr().ok()),
        tls: config.tls.server.is_some(),
    };
    // One certificate for every listener, read again every reload_interval.
    let tls = config.tls.server.as_ref().map(ServerTls::new);
    let tls_config = |role: ListenerRole, protocols: Protocols| {
        tls.as_ref()
            .map(|t| t.server_config(role, protocols == Protocols::Http2Only))
            .transpose()
    };

    let (queue, rx) = row_queue(config.queue_capacity_rows);
    // Receivers and the gateway queue into the log first, unless rows go
    // to Kafka (acknowledged once the broker has them).
    let (queue, recovered) = match config.durability.level {
        Durability::Process | Durability::Power if kafka.is_none() => {
            let d = &config.durability;
            let (wal, recovered) = Wal::open(WalConfig {
                dir: d.dir.clone(),
                durability: d.level,
                max_bytes: d.max_bytes,
                segment_bytes: WAL_SEGMENT_BYTES,
            })
            .map_err(|source| ServeError::Wal {
                dir: d.dir.display().to_string(),
                source,
            })?;
            tokio::spawn(Arc::clone(&wal).run_flusher());
            let stats = Arc::clone(&wal);
            events.attach_wal(move || stats.stats());
            (queue.with_wal(wal), recovered)
        }
        _ => (queue, Recovered::default()),
    };
    let (resync_tx, resync_rx) = mpsc::unbounded_channel();
    // Thresholds of shared budgets found crossed by exchanges with the
    // shared ledger: stored and followed like a batch's.
    drop(crossings_tx);
    tokio::spawn(
        enforcer
            .clone()
            .follow_shared_budgets(crossings_rx, queue.clone()),
    );
    let writer = Writer::new(
        rx,
        queue.clone(),
        sink,
        Arc::clone(&events),
        config.batch_max_rows,
    )
    .with_identity(identity)
    .with_rules(RuleStage {
        enforcer: enforcer.clone(),
        already_stored,
        rebuilder: Some(rebuilder.clone()),
        shared: shared.as_ref().map(|(s, _)| Arc::clone(s)),
    })
    .with_resync(resync_rx, restore)
    .spawn();
    // What was acknowledged but not stored before the last stop, queued
    // again before anything new is accepted.
    if !recovered.entries.is_empty() || recovered.torn_bytes > 0 {
        replay_wal(recovered, &queue, store.as_ref(), &events).await?;
        // Stored before anything is served: a virtual key's limits are read
        // back from the store on its first call.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while queue.depth() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let consumer = match &kafka {
        Some(k) if k.processes() => Some(
            CallConsumer::start(
                k,
                queue.clone(),
                resync_tx,
                Arc::clone(&events),
                config.shutdown_timeout,
            )
            .map_err(|e| {
                ServeError::Kafka(format!("cannot start the consumer: {}", client_error(&e)))
            })?,
        ),
        _ => None,
    };
    let enforcement_sync = match &kafka {
        Some(k) => Some(
            crate::kafka::EnforcementSync::start(k, &killswitch).map_err(|e| {
                ServeError::Kafka(format!(
                    "cannot share the kill-switch: {}",
                    client_error(&e)
                ))
            })?,
        ),
        None => None,
    };
    let producer = match &kafka {
        Some(k) if k.ingests() => Some(CallProducer::new(k).map_err(|e| {
            ServeError::Kafka(format!("cannot start the producer: {}", client_error(&e)))
        })?),
        _ => None,
    };
    let normalizer = Normalizer::new(
        NormalizerConfig {
            max_tokens_per_call: config.max_tokens_per_call,
            max_cost_ratio: config.max_cost_ratio,
            max_cost_per_call_usd: config.max_cost_per_call_usd,
            labels: config.labels.clone(),
        },
        Arc::clone(&config.prices),
    );
    tracing::info!(
        version = normalizer.prices().version(),
        "price table loaded"
    );
    let destination = match &producer {
        Some(p) => Destination::Kafka(p.clone()),
        None => Destination::Queue(queue.clone()),
    };
    let ingest = Arc::new(Ingest::with_destination(
        normalizer,
        destination,
        Arc::clone(&events),
    ));

    let receivers_ready = Arc::new(AtomicBool::new(false));
    let tasks = TaskTracker::new();
    // Receivers stop first; the API stays up until the queue has drained.
    let receivers_stop = shutdown.child_token();
    let api_stop = CancellationToken::new();

    let grpc_routes = if ingests {
        grpc_router(Arc::clone(&ingest), config.grpc_max_message_bytes)
            .add_service(enforcement_service(killswitch.clone()))
    } else {
        tonic::service::Routes::new(enforcement_service(killswitch.clone()))
    };
    let grpc_guard = Guard {
        auth: Arc::clone(&auth),
        listener: "otlp_grpc",
        style: Style::Grpc,
        need: grpc_need,
    };
    let grpc_app = admit_grpc(
        grpc_routes
            .prepare()
            .into_axum_router()
            .layer(middleware::from_fn_with_state(grpc_guard, require)),
        memory.clone(),
        config.grpc_max_message_bytes as u64,
    );
    tasks.spawn(listen::serve(
        Listener {
            tcp: grpc_listener,
            name: "otlp_grpc",
            protocols: Protocols::Http2Only,
            limits: config.listeners,
            tls: tls_config(ListenerRole::Receiver, Protocols::Http2Only)?,
        },
        grpc_app,
        Arc::clone(&events),
        receivers_stop.clone(),
    ));

    let http_app = http_router(
        Arc::clone(&ingest),
        HttpReceiverConfig {
            max_body_bytes: config.http_max_body_bytes,
        },
    );
    if let Some(http_listener) = http_listener {
        let guard = Guard {
            auth: Arc::clone(&auth),
            listener: "otlp_http",
            style: Style::Otlp,
            need: |_| Some(Need::Ingest),
        };
        let http_app = admit_http(
            http_app.layer(middleware::from_fn_with_state(guard, require)),
            memory.clone(),
            config.http_max_body_bytes as u64,
            memory_refusal,
        );
        tasks.spawn(listen::serve(
            Listener {
                tcp: http_listener,
                name: "otlp_http",
                protocols: Protocols::Any,
                limits: config.listeners,
                tls: tls_config(ListenerRole::Receiver, Protocols::Any)?,
            },
            http_app,
            Arc::clone(&events),
            receivers_stop.clone(),
        ));
    }

    let mut gateway_deliveries = None;
    if let (Some(valid), Some(listener)) = (&config.gateway_valid, gateway_listener) {
        // With Kafka the gateway's rows go to the calls topic (the config
        // allows it on ingest instances only); else into the row queue.
        let rows: Arc<dyn RowSink> = match &producer {
            Some(p) => {
                let (rows, deliveries) = KafkaRows::start(
                    p.clone(),
                    config.queue_capacity_rows,
                    queue.clone(),
                    enforcer.clone(),
                    Arc::clone(&events),
                );
                gateway_deliveries = Some(deliveries);
                rows
            }
            None => Arc::new(QueueRows {
                queue: queue.clone(),
                enforcer: enforcer.clone(),
                events: Arc::clone(&events),
            }),
        };
        let deps = GatewayDeps {
            engine: engine.clone(),
            prices: Arc::clone(&config.prices),
            rows,
            keys: Arc::clone(&keys) as Arc<dyn KeyStore>,
            blocks: Arc::new(KillSwitchBlocks(killswitch.clone())),
            rebuild: Some(Arc::new(rebuilder.clone())),
            leases: shared
                .as_ref()
                .map(|(s, _)| Arc::clone(s) as Arc<dyn tollgate_gateway::BudgetLeases>),
        };
        let gateway = Arc::new(
            Gateway::from_valid(valid, deps).map_err(|e| ServeError::Gateway(e.to_string()))?,
        );
        events.attach_gateway(Arc::clone(&gateway));
        let router = admit_http(
            gateway.router(),
            memory.clone(),
            valid.max_body_bytes() as u64,
            |parts, why| {
                tollgate_gateway::overloaded(parts.uri.path(), why.message(), RETRY_AFTER_SECS)
            },
        );
        tasks.spawn(listen::serve(
            Listener {
                tcp: listener,
                name: "gateway",
                protocols: Protocols::Any,
                limits: config.listeners,
                tls: tls_config(ListenerRole::Service, Protocols::Any)?,
            },
            router,
            Arc::clone(&events),
            receivers_stop.clone(),
        ));
    }
    drop(enforcer);

    let reloader = Arc::new(Reloader::new(config.source.clone(), engine.clone()));
    let mut api_app = api_router(ApiState {
        store,
        events: Arc::clone(&events),
        receivers_ready: Arc::clone(&receivers_ready),
        gateway: addrs.gateway,
        max_query_range: config.max_query_range,
        outbox,
    })
    .merge(enforcement_router(killswitch.clone()));
    api_app = api_app.merge(admin_router(AdminState {
        engine: engine.clone(),
        killswitch: killswitch.clone(),
        reloader: Arc::clone(&reloader),
        log: Arc::clone(&admin_log),
        keys: Arc::clone(&keys),
    }));
    if !auth.admin_possible() {
        tracing::info!(
            "admin API off: set admin.token (or TOLLGATE_ADMIN__TOKEN), or write an `admin` key in [[auth.keys]]"
        );
    }
    let api_app = api_app.layer(middleware::from_fn_with_state(
        Guard {
            auth: Arc::clone(&auth),
            listener: "api",
            style: Style::Json,
            need: api_need,
        },
        require,
    ));
    {
        let keys = Arc::clone(&keys);
        let stop = receivers_stop.clone();
        // Keys made or revoked by another process sharing the store.
        tasks.spawn(async move { keys.watch(KEYS_REFRESH, stop).await });
    }
    let watch_stop = receivers_stop.clone();
    tasks.spawn(async move { reloader.watch(Duration::from_secs(2), watch_stop).await });
    let api_task = tokio::spawn(listen::serve(
        Listener {
            tcp: api_listener,
            name: "api",
            protocols: Protocols::Any,
            limits: config.listeners,
            tls: tls_config(ListenerRole::Service, Protocols::Any)?,
        },
        api_app,
        Arc::clone(&events),
        api_stop.clone(),
    ));
    let sampler = tokio::spawn(memory.clone().sample(api_stop.clone()));
    if let Some(tls) = tls {
        tracing::info!(
            client_certificates = config
                .tls
                .server
                .as_ref()
                .is_some_and(|s| s.client_ca_file.is_some()),
            "TLS on every listener"
        );
        tasks.spawn(tls.watch(receivers_stop.clone()));
    }
    tasks.close();

    // Reports spend and keeps leases until the last row was counted.
    let ledger_stop = CancellationToken::new();
    let ledger_task = shared.as_ref().map(|(shared, interval)| {
        tokio::spawn(Arc::clone(shared).run(*interval, ledger_stop.clone()))
    });

    receivers_ready.store(true, Ordering::Release);
    tracing::info!(
        otlp_grpc = %addrs.otlp_grpc,
        otlp_http = ?addrs.otlp_http,
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
    if let Some(sync) = enforcement_sync {
        sync.stop().await;
    }
    if let Some(sync) = state_sync {
        sync.stop().await;
    }
    receivers_stop.cancel();
    tasks.wait().await;
    // The gateway's rows handed to Kafka, acknowledged before the producer flushes.
    if let Some(d) = gateway_deliveries {
        d.finish(config.shutdown_timeout).await;
    }
    if let Some(p) = &producer {
        p.flush(config.shutdown_timeout);
    }
    // Consumed rows are written and their offsets committed before the
    // consumer leaves its group.
    if let Some(c) = consumer {
        c.stop().await;
    }
    // No receiver is left: refuse stragglers, write what was acknowledged.
    queue.close();
    writer.drain_and_stop(config.shutdown_timeout).await;
    // Every call is counted: report the last spend, give the leases back.
    ledger_stop.cancel();
    if let Some(task) = ledger_task {
        let _ = task.await;
    }
    // The writer held the last alert sender: what is queued is delivered now.
    alerts_task.stop(Duration::from_secs(10)).await;
    api_stop.cancel();
    let _ = api_task.await;
    let _ = sampler.await;
    tracing::info!(
        rows_written = events.rows_written_total(),
        "collector stopped"
    );
    Ok(())
}

/// Queues the rows read back from the write-ahead log, but those the store
/// already has (stored after the last checkpoint, before the stop).
async fn replay_wal(
    recovered: Recovered,
    queue: &RowQueue,
    store: &dyn QueryStore,
    events: &InternalEvents,
) -> Result<(), ServeError> {
    let keys: Vec<CallKey> = recovered
        .entries
        .iter()
        .flat_map(|(_, e)| e.rows.iter())
        .map(|r| (r.start_unix_nanos, r.trace_id.clone(), r.span_id.clone()))
        .collect();
    // Without the answer, stored rows would be stored twice: better not start.
    let stored = store
        .stored(&keys)
        .await
        .map_err(|e| ServeError::WalReplay(e.to_string()))?;
    let (mut queued, mut already) = (0, 0);
    for (end, mut entry) in recovered.entries {
        let before = entry.rows.len();
        entry.rows.retain(|r| {
            !stored.contains(&(r.start_unix_nanos, r.trace_id.clone(), r.span_id.clone()))
        });
        already += before - entry.rows.len();
        queued += entry.rows.len();
        if queue.replay(entry.rows, end).await.is_err() {
            break;
        }
    }
    events.wal_replayed(queued);
    tracing::info!(
        rows = queued,
        already_stored = already,
        torn_bytes = recovered.torn_bytes,
        "acknowledged rows read back from the write-ahead log"
    );
    Ok(())
}
