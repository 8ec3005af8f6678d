//! The watcher against real servers on 127.0.0.1: a tonic `Enforcement`
//! server fed by a watch channel, and an axum app serving the JSON fallback.
//! Both record the `authorization` they were sent and can require a key
//! the way the collector does. Timings are shortened so that a reconnect
//! cycle takes milliseconds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tollgate_proto::enforcement::v1::enforcement_server::{Enforcement, EnforcementServer};
use tollgate_proto::enforcement::v1::{Block, EnforcementState, Scope as ProtoScope, WatchRequest};
use tonic::{Request, Status};

use super::{GuardError, KeyRefused, KillSwitch, KillSwitchConfig, KillSwitchError, StateSource};
use crate::call::Scope;

/// What the fake collector asks of a caller, as `[auth] mode` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Auth off: anyone may read.
    Open,
    /// Keys required: this one is let in, anything else is refused.
    Key(&'static str),
    /// The key is known but scoped to another tenant.
    Forbidden,
}

/// The collector's wording, so the tests can check it is passed on.
const NO_KEY: &str = "no key: send a `read` key as `Authorization: Bearer <key>`";
const BAD_KEY: &str = "this key is not valid: send a `read` key as `Authorization: Bearer <key>`";
const OTHER_TENANT: &str = "this key is scoped to project `billing`, not `search`";

/// Refused: whether with 403 rather than 401, and the message.
type Refusal = (bool, &'static str);

impl Gate {
    fn check(self, authorization: Option<&str>) -> Result<(), Refusal> {
        match (self, authorization) {
            (Gate::Open, _) => Ok(()),
            (Gate::Forbidden, _) => Err((true, OTHER_TENANT)),
            (Gate::Key(_), None) => Err((false, NO_KEY)),
            (Gate::Key(key), Some(given)) if given == format!("Bearer {key}") => Ok(()),
            (Gate::Key(_), Some(_)) => Err((false, BAD_KEY)),
        }
    }
}

/// Counts a live server-side stream for as long as it is held.
struct OpenStream(Arc<AtomicUsize>);

impl OpenStream {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `Enforcement/Watch` as the collector serves it: the current state at
/// once, then every change; ends with UNAVAILABLE when the server stops.
#[derive(Clone)]
struct WatchService {
    states: watch::Receiver<EnforcementState>,
    stop: watch::Receiver<bool>,
    scopes: Arc<Mutex<Vec<ProtoScope>>>,
    open_streams: Arc<AtomicUsize>,
    gate: Gate,
    /// The `authorization` metadata of every call, refused ones included.
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
}

#[tonic::async_trait]
impl Enforcement for WatchService {
    type WatchStream = ReceiverStream<Result<EnforcementState, Status>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        self.authorizations
            .lock()
            .unwrap()
            .push(authorization.clone());
        match self.gate.check(authorization.as_deref()) {
            Ok(()) => {}
            Err((true, message)) => return Err(Status::permission_denied(message)),
            Err((false, message)) => return Err(Status::unauthenticated(message)),
        }
        let scope = request.into_inner().scope.unwrap_or_default();
        self.scopes.lock().unwrap().push(scope);
        let (out, rx) = mpsc::channel(4);
        let mut states = self.states.clone();
        let mut stop = self.stop.clone();
        let open = OpenStream::new(self.open_streams.clone());
        tokio::spawn(async move {
            let _open = open;
            loop {
                let state = states.borrow_and_update().clone();
                if out.send(Ok(state)).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = states.changed() => if changed.is_err() { return },
                    () = async { let _ = stop.wait_for(|stopping| *stopping).await; } => {
                        let _ = out.send(Err(Status::unavailable("shutting down"))).await;
                        return;
                    }
                    () = out.closed() => return,
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

struct GrpcServer {
    addr: SocketAddr,
    states: watch::Sender<EnforcementState>,
    stop: watch::Sender<bool>,
    scopes: Arc<Mutex<Vec<ProtoScope>>>,
    open_streams: Arc<AtomicUsize>,
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
    task: JoinHandle<()>,
}

impl GrpcServer {
    /// Serves on `addr` (port 0 for a fresh one), open to anyone.
    async fn start(addr: SocketAddr, initial: EnforcementState) -> Self {
        Self::start_gated(addr, initial, Gate::Open).await
    }

    async fn start_gated(addr: SocketAddr, initial: EnforcementState, gate: Gate) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (states, states_rx) = watch::channel(initial);
        let (stop, stop_rx) = watch::channel(false);
        let service = WatchService {
            states: states_rx,
            stop: stop_rx.clone(),
            scopes: Arc::default(),
            open_streams: Arc::default(),
            gate,
            authorizations: Arc::default(),
        };
        let (scopes, open_streams) = (service.scopes.clone(), service.open_streams.clone());
        let authorizations = service.authorizations.clone();
        let mut shutdown = stop_rx;
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(EnforcementServer::new(service))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    let _ = shutdown.wait_for(|stopping| *stopping).await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            states,
            stop,
            scopes,
            open_streams,
            authorizations,
            task,
        }
    }

    fn set(&self, state: EnforcementState) {
        self.states.send_replace(state);
    }

    /// Ends every stream, closes the port and waits for the server to go.
    async fn stop(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("gRPC server did not stop")
            .unwrap();
    }
}

#[derive(Clone)]
struct HttpShared {
    state: Arc<Mutex<serde_json::Value>>,
    hits: Arc<AtomicUsize>,
    queries: Arc<Mutex<Vec<HashMap<String, String>>>>,
    gate: Arc<Mutex<Gate>>,
    /// The `Authorization` header of every request, refused ones included.
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
}

/// `GET /v1/enforcement` answering whatever the test last set.
struct HttpServer {
    addr: SocketAddr,
    shared: HttpShared,
    task: JoinHandle<()>,
}

impl HttpServer {
    async fn start(initial: &EnforcementState) -> Self {
        Self::start_gated(initial, Gate::Open).await
    }

    async fn start_gated(initial: &EnforcementState, gate: Gate) -> Self {
        async fn current(
            State(shared): State<HttpShared>,
            headers: HeaderMap,
            Query(query): Query<HashMap<String, String>>,
        ) -> Response {
            shared.hits.fetch_add(1, Ordering::SeqCst);
            let authorization = headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            shared
                .authorizations
                .lock()
                .unwrap()
                .push(authorization.clone());
            let gate = *shared.gate.lock().unwrap();
            if let Err((forbidden, message)) = gate.check(authorization.as_deref()) {
                let (status, error) = if forbidden {
                    (StatusCode::FORBIDDEN, "forbidden")
                } else {
                    (StatusCode::UNAUTHORIZED, "unauthorized")
                };
                let body = serde_json::json!({"error": error, "message": message});
                return (status, Json(body)).into_response();
            }
            shared.queries.lock().unwrap().push(query);
            Json(shared.state.lock().unwrap().clone()).into_response()
        }
        let shared = HttpShared {
            state: Arc::new(Mutex::new(json_of(initial))),
            hits: Arc::default(),
            queries: Arc::default(),
            gate: Arc::new(Mutex::new(gate)),
            authorizations: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/v1/enforcement", axum::routing::get(current))
            .with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, shared, task }
    }

    fn set(&self, state: &EnforcementState) {
        *self.shared.state.lock().unwrap() = json_of(state);
    }

    fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    fn authorizations(&self) -> Vec<Option<String>> {
        self.shared.authorizations.lock().unwrap().clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The documented JSON body, written by hand so the test checks the wire
/// format rather than our own deserialiser's idea of it.
fn json_of(state: &EnforcementState) -> serde_json::Value {
    let blocks: Vec<serde_json::Value> = state
        .blocks
        .iter()
        .map(|b| {
            serde_json::json!({
                "rule_id": b.rule_id, "scope": b.scope, "reason": b.reason,
                "until_unix_nanos": b.until_unix_nanos, "limit": b.limit,
                "used": b.used, "metric": b.metric,
            })
        })
        .collect();
    serde_json::json!({"blocked": state.blocked, "blocks": blocks, "revision": state.revision})
}

fn open(revision: i64) -> EnforcementState {
    EnforcementState {
        blocked: false,
        blocks: vec![],
        revision,
    }
}

fn blocked(revision: i64, rule: &str, reason: &str, until_unix_nanos: i64) -> EnforcementState {
    EnforcementState {
        blocked: true,
        blocks: vec![Block {
            rule_id: rule.into(),
            scope: "project=search".into(),
            reason: reason.into(),
            until_unix_nanos,
            limit: 10_000.0,
            used: 12_000.0,
            metric: "tokens".into(),
        }],
        revision,
    }
}

fn nanos_from_now(offset: Duration, later: bool) -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let at = if later { now + offset } else { now - offset };
    i64::try_from(at.as_nanos()).unwrap()
}

fn config(grpc: SocketAddr, http: SocketAddr) -> KillSwitchConfig {
    let scope = Scope {
        project: Some("search".into()),
        user: Some("alice".into()),
        labels: vec![("team".into(), "core".into())],
        ..Scope::default()
    };
    let mut config =
        KillSwitchConfig::new(format!("http://{grpc}"), format!("http://{http}/"), scope)
            .with_app("agent-1");
    // Whatever the environment running the tests says.
    config.key = None;
    config.poll_interval = Duration::from_millis(50);
    config.reconnect_min = Duration::from_millis(20);
    config.reconnect_max = Duration::from_millis(200);
    config.request_timeout = Duration::from_secs(1);
    config
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Waits up to 3 s for `condition`.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn source(ks: &KillSwitch) -> Option<StateSource> {
    ks.snapshot().map(|s| s.source)
}

#[tokio::test]
async fn block_arrives_over_grpc_then_unblock() {
    let until = nanos_from_now(Duration::from_secs(3600), true);
    let grpc = GrpcServer::start(
        "127.0.0.1:0".parse().unwrap(),
        blocked(1, "daily-tokens", "budget_exceeded", until),
    )
    .await;
    let http = HttpServer::start(&open(1)).await;
    let ks = KillSwitch::start(config(grpc.addr, http.addr)).unwrap();

    assert!(ks.wait_ready(Duration::from_secs(2)).await);
    eventually("the gRPC state", || source(&ks) == Some(StateSource::Grpc)).await;
    let refusal = ks.check().unwrap_err();
    assert_eq!(refusal.rule, "daily-tokens");
    assert_eq!(refusal.reason, "budget_exceeded");
    assert_eq!(refusal.scope, "project=search");
    assert_eq!(
        refusal.until,
        Some(UNIX_EPOCH + Duration::from_nanos(u64::try_from(until).unwrap()))
    );
    let usage = refusal.usage.unwrap();
    assert_eq!(
        (usage.metric.as_str(), usage.limit, usage.used),
        ("tokens", 10_000.0, 12_000.0)
    );

    // The SDK scope went out as the protocol's scope; labels are not part of it.
    let asked = grpc.scopes.lock().unwrap()[0].clone();
    assert_eq!(
        asked,
        ProtoScope {
            project: "search".into(),
            user: "alice".into(),
            app: "agent-1".into(),
            ..ProtoScope::default()
        }
    );

    grpc.set(open(2));
    eventually("the unblock", || ks.check().is_ok()).await;
    assert_eq!(ks.snapshot().unwrap().revision, 2);
    grpc.stop().await;
}

#[tokio::test]
async fn http_fallback_while_grpc_is_down_then_grpc_again() {
    let grpc = GrpcServer::start("127.0.0.1:0".parse().unwrap(), open(1)).await;
    let http = HttpServer::start(&open(1)).await;
    let grpc_addr = grpc.addr;
    let ks = KillSwitch::start(config(grpc_addr, http.addr)).unwrap();
    eventually("the gRPC state", || source(&ks) == Some(StateSource::Grpc)).await;
    // The poll was sent with the scope as query parameters, unset ones left out.
    eventually("a first poll", || http.hits() > 0).await;
    let query = http.shared.queries.lock().unwrap()[0].clone();
    let expected: HashMap<String, String> =
        [("project", "search"), ("user", "alice"), ("app", "agent-1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    assert_eq!(query, expected);

    // gRPC goes away; the block is only visible over HTTP.
    grpc.stop().await;
    http.set(&blocked(2, "rpm", "rate_limited", 0));
    eventually("the block over HTTP", || ks.check().is_err()).await;
    let refusal = ks.check().unwrap_err();
    assert_eq!(
        (refusal.rule.as_str(), refusal.reason.as_str()),
        ("rpm", "rate_limited")
    );
    assert_eq!(refusal.until, None);
    assert_eq!(source(&ks), Some(StateSource::Http));

    // gRPC comes back on the same port with news HTTP does not have: the
    // watcher reconnects and gRPC wins.
    let grpc = GrpcServer::start(grpc_addr, open(3)).await;
    eventually("gRPC again", || source(&ks) == Some(StateSource::Grpc)).await;
    assert_eq!(ks.check(), Ok(()));
    assert_eq!(ks.snapshot().unwrap().revision, 3);

    // With the stream up, polling has stopped.
    let hits = http.hits();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(http.hits(), hits);
    assert_eq!(ks.check(), Ok(()));
    grpc.stop().await;
}

#[tokio::test]
async fn a_block_whose_until_passed_is_not_enforced() {
    let past = nanos_from_now(Duration::from_secs(1), false);
    let grpc = GrpcServer::start(
        "127.0.0.1:0".parse().unwrap(),
        blocked(1, "hourly", "budget_exceeded", past),
    )
    .await;
    let http = HttpServer::start(&open(1)).await;
    let ks = KillSwitch::start(config(grpc.addr, http.addr)).unwrap();
    eventually("the gRPC state", || source(&ks) == Some(StateSource::Grpc)).await;
    assert_eq!(ks.snapshot().unwrap().blocks.len(), 1);
    assert_eq!(ks.check(), Ok(()));

    // A block that lifts in 300 ms is enforced now and not after, with no
    // update from the server in between.
    let soon = nanos_from_now(Duration::from_millis(300), true);
    grpc.set(blocked(2, "hourly", "budget_exceeded", soon));
    eventually("the new block", || ks.check().is_err()).await;
    let revision = ks.snapshot().unwrap().revision;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(ks.check(), Ok(()));
    assert_eq!(ks.snapshot().unwrap().revision, revision);
    grpc.stop().await;
}

#[tokio::test]
async fn fails_open_until_a_first_state_arrives() {
    let ks = KillSwitch::start(config(closed_port().await, closed_port().await)).unwrap();
    assert_eq!(ks.check(), Ok(()));
    assert!(!ks.wait_ready(Duration::from_millis(200)).await);
    assert!(!ks.is_ready());
    assert_eq!(ks.check(), Ok(()));
    assert_eq!(ks.snapshot(), None);
}

#[tokio::test]
async fn first_state_can_come_from_http_alone() {
    let http = HttpServer::start(&blocked(4, "admin", "admin", 0)).await;
    let ks = KillSwitch::start(config(closed_port().await, http.addr)).unwrap();
    assert!(ks.wait_ready(Duration::from_secs(2)).await);
    assert_eq!(source(&ks), Some(StateSource::Http));
    assert_eq!(ks.check().unwrap_err().rule, "admin");
}

#[tokio::test]
async fn guarded_call_refuses_without_calling() {
    let grpc = GrpcServer::start(
        "127.0.0.1:0".parse().unwrap(),
        blocked(1, "daily-tokens", "budget_exceeded", 0),
    )
    .await;
    let http = HttpServer::start(&open(1)).await;
    let ks = KillSwitch::start(config(grpc.addr, http.addr)).unwrap();
    // The HTTP fixture says "open": wait for the gRPC block.
    eventually("the gRPC block", || ks.check().is_err()).await;
    let calls = AtomicUsize::new(0);
    let provider = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok::<u32, std::io::Error>(42)
    };

    let refused = ks.guarded_call(provider).await.unwrap_err();
    assert_eq!(
        refused.blocked().map(|b| b.rule.as_str()),
        Some("daily-tokens")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    grpc.set(open(2));
    eventually("the unblock", || ks.check().is_ok()).await;
    assert_eq!(ks.guarded_call(provider).await.unwrap(), 42);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let failed = ks
        .guarded_call(|| async { Err::<u32, _>(std::io::Error::other("provider down")) })
        .await
        .unwrap_err();
    assert!(matches!(&failed, GuardError::Call(e) if e.to_string() == "provider down"));
    assert_eq!(failed.to_string(), "provider down");
    grpc.stop().await;
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_stream() {
    let grpc = GrpcServer::start("127.0.0.1:0".parse().unwrap(), open(1)).await;
    let http = HttpServer::start(&open(1)).await;
    let ks = KillSwitch::start(config(grpc.addr, http.addr)).unwrap();
    let clone = ks.clone();
    eventually("the gRPC state", || source(&ks) == Some(StateSource::Grpc)).await;
    assert_eq!(grpc.open_streams.load(Ordering::SeqCst), 1);

    drop(ks);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(grpc.open_streams.load(Ordering::SeqCst), 1);
    assert!(clone.check().is_ok());

    drop(clone);
    eventually("the stream to close", || {
        grpc.open_streams.load(Ordering::SeqCst) == 0
    })
    .await;
    // And no reconnect follows.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(grpc.scopes.lock().unwrap().len(), 1);
    grpc.stop().await;
}

#[tokio::test]
async fn a_config_that_cannot_work_is_rejected() {
    let scope = Scope::default;
    let err = |config| KillSwitch::start(config).unwrap_err().to_string();

    let bad_uri = KillSwitchConfig::new("http://[not a uri", "http://127.0.0.1:7070", scope());
    assert!(
        err(bad_uri)
            .starts_with("kill-switch grpc_endpoint `http://[not a uri` is not a valid URI")
    );

    let tls = KillSwitchConfig::new("https://collector:4317", "http://127.0.0.1:7070", scope());
    assert_eq!(
        err(tls),
        "kill-switch grpc_endpoint `https://collector:4317` must be a plain http:// URL (TLS is not supported yet)"
    );

    let bad_api = KillSwitchConfig::new("http://127.0.0.1:4317", "127.0.0.1:7070", scope());
    assert!(err(bad_api).starts_with("kill-switch api_base `127.0.0.1:7070`"));

    let mut zero = KillSwitchConfig::new("http://127.0.0.1:4317", "http://127.0.0.1:7070", scope());
    zero.poll_interval = Duration::ZERO;
    assert_eq!(
        err(zero),
        "kill-switch poll_interval is zero; give it a positive duration"
    );

    let mut inverted =
        KillSwitchConfig::new("http://127.0.0.1:4317", "http://127.0.0.1:7070", scope());
    inverted.reconnect_min = Duration::from_secs(10);
    assert!(matches!(
        KillSwitch::start(inverted),
        Err(KillSwitchError::Backoff { min, max }) if min == Duration::from_secs(10) && max == Duration::from_secs(5)
    ));

    let empty_key =
        KillSwitchConfig::new("http://127.0.0.1:4317", "http://127.0.0.1:7070", scope())
            .with_key("");
    assert_eq!(
        err(empty_key),
        "kill-switch key is empty; give the `read` key exactly as it was issued (tg-...)"
    );
    let bad_key = KillSwitchConfig::new("http://127.0.0.1:4317", "http://127.0.0.1:7070", scope())
        .with_key("tg-s3cr3t\n");
    let message = err(bad_key);
    assert_eq!(
        message,
        "kill-switch key contains characters a header cannot carry; give the `read` key exactly as it was issued (tg-...)"
    );
}

#[test]
fn the_key_is_never_printed() {
    let config = KillSwitchConfig::new(
        "http://127.0.0.1:4317",
        "http://127.0.0.1:7070",
        Scope::default(),
    )
    .with_key("tg-s3cr3t");
    let debug = format!("{config:?}");
    assert!(debug.contains("key: Some(VirtualKey(..))"), "{debug}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
    let validated = format!("{:?}", config.validate().unwrap());
    assert!(
        validated.contains("watch_authorization: Some(Sensitive)"),
        "{validated}"
    );
    assert!(!validated.contains("s3cr3t"), "{validated}");
}

#[tokio::test]
async fn the_key_goes_out_on_the_grpc_watch() {
    let grpc = GrpcServer::start_gated(
        "127.0.0.1:0".parse().unwrap(),
        blocked(1, "admin", "admin", 0),
        Gate::Key("tg-read-1"),
    )
    .await;
    let config = config(grpc.addr, closed_port().await).with_key("tg-read-1");
    let ks = KillSwitch::start(config).unwrap();
    eventually("the gRPC state", || source(&ks) == Some(StateSource::Grpc)).await;
    assert_eq!(ks.check().unwrap_err().rule, "admin");
    assert_eq!(
        grpc.authorizations.lock().unwrap().clone(),
        vec![Some("Bearer tg-read-1".to_owned())]
    );
    assert_eq!(ks.key_refused(), None);
    grpc.stop().await;
}

#[tokio::test]
async fn the_key_goes_out_on_every_http_poll() {
    let http = HttpServer::start_gated(
        &blocked(2, "rpm", "rate_limited", 0),
        Gate::Key("tg-read-1"),
    )
    .await;
    let config = config(closed_port().await, http.addr).with_key("tg-read-1");
    let ks = KillSwitch::start(config).unwrap();
    assert!(ks.wait_ready(Duration::from_secs(2)).await);
    assert_eq!(source(&ks), Some(StateSource::Http));
    assert_eq!(ks.check().unwrap_err().rule, "rpm");
    eventually("a third poll", || http.hits() >= 3).await;
    let sent = http.authorizations();
    assert!(
        sent.iter()
            .all(|a| a.as_deref() == Some("Bearer tg-read-1")),
        "{sent:?}"
    );
    assert_eq!(ks.key_refused(), None);
}

#[tokio::test]
async fn without_a_key_no_authorization_is_sent() {
    let grpc = GrpcServer::start("127.0.0.1:0".parse().unwrap(), open(1)).await;
    let http = HttpServer::start(&open(1)).await;
    let ks = KillSwitch::start(config(grpc.addr, http.addr)).unwrap();
    eventually("the gRPC state", || source(&ks) == Some(StateSource::Grpc)).await;
    eventually("a first poll", || http.hits() > 0).await;
    assert_eq!(grpc.authorizations.lock().unwrap().clone(), vec![None]);
    assert_eq!(http.authorizations()[0], None);
    grpc.stop().await;
}

#[tokio::test]
async fn a_refused_key_over_http_is_reported_fails_open_and_is_retried_with_backoff() {
    let http =
        HttpServer::start_gated(&blocked(1, "admin", "admin", 0), Gate::Key("tg-right")).await;
    let config = config(closed_port().await, http.addr).with_key("tg-wrong");
    let ks = KillSwitch::start(config).unwrap();
    assert!(!ks.wait_ready(Duration::from_millis(300)).await);
    // Fail-open, as with an unreachable collector; the reason is kept.
    assert_eq!(ks.check(), Ok(()));
    let refused = ks.key_refused().unwrap();
    assert_eq!(
        refused,
        KeyRefused::Unauthenticated {
            message: BAD_KEY.to_owned(),
            via: StateSource::Http,
        }
    );
    assert_eq!(
        refused.to_string(),
        format!("the collector did not accept the kill-switch key over HTTP: {BAD_KEY}")
    );
    assert!(!refused.to_string().contains("tg-wrong"));

    // Polled every 50 ms this would be about 20 requests a second; the
    // backoff (up to 200 ms here) allows about 10 at most.
    let before = http.hits();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let polls = http.hits() - before;
    assert!(polls <= 12, "{polls} polls in 1 s");

    // The collector accepts the key after all: the state arrives and the
    // refusal is cleared.
    *http.shared.gate.lock().unwrap() = Gate::Open;
    eventually("the block", || ks.check().is_err()).await;
    assert_eq!(ks.key_refused(), None);
    assert!(ks.is_ready());
}

#[tokio::test]
async fn a_forbidden_key_over_grpc_is_reported_and_retried_with_backoff() {
    let grpc = GrpcServer::start_gated(
        "127.0.0.1:0".parse().unwrap(),
        blocked(1, "admin", "admin", 0),
        Gate::Forbidden,
    )
    .await;
    let config = config(grpc.addr, closed_port().await).with_key("tg-other-tenant");
    let ks = KillSwitch::start(config).unwrap();
    eventually("the refusal", || ks.key_refused().is_some()).await;
    assert_eq!(
        ks.key_refused(),
        Some(KeyRefused::Forbidden {
            message: OTHER_TENANT.to_owned(),
            via: StateSource::Grpc,
        })
    );
    assert_eq!(ks.key_refused().unwrap().message(), OTHER_TENANT);
    assert!(!ks.is_ready());
    assert_eq!(ks.check(), Ok(()));

    // Reconnecting at once would be hundreds of attempts a second.
    let attempts = || grpc.authorizations.lock().unwrap().len();
    let before = attempts();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = attempts() - before;
    assert!(during <= 12, "{during} attempts in 1 s");
    let sent = grpc.authorizations.lock().unwrap().clone();
    assert!(
        sent.iter()
            .all(|a| a.as_deref() == Some("Bearer tg-other-tenant"))
    );
    grpc.stop().await;
}

#[tokio::test]
async fn no_key_for_a_collector_that_requires_one_says_so() {
    let grpc = GrpcServer::start_gated(
        "127.0.0.1:0".parse().unwrap(),
        open(1),
        Gate::Key("tg-read-1"),
    )
    .await;
    let http = HttpServer::start_gated(&open(1), Gate::Key("tg-read-1")).await;
    let ks = KillSwitch::start(config(grpc.addr, http.addr)).unwrap();
    eventually("the refusal", || ks.key_refused().is_some()).await;
    let refused = ks.key_refused().unwrap();
    assert!(
        matches!(refused, KeyRefused::Unauthenticated { .. }),
        "{refused:?}"
    );
    assert_eq!(refused.message(), NO_KEY);
    assert!(!ks.is_ready());
    grpc.stop().await;
}

#[test]
fn start_outside_a_runtime_is_an_error_not_a_panic() {
    let config = KillSwitchConfig::new(
        "http://127.0.0.1:4317",
        "http://127.0.0.1:7070",
        Scope::default(),
    );
    assert!(matches!(
        KillSwitch::start(config),
        Err(KillSwitchError::NoRuntime(_))
    ));
}
