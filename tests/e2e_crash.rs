//! Zero acknowledged data lost on a crash: senders over OTLP/gRPC and
//! OTLP/HTTP retry every request not answered OK, as exporters do, while
//! the collector is killed with SIGKILL 20 times at random moments and
//! started again on the same data directory. Every span answered OK is
//! stored, exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use support::{ClickhouseServer, Collector, otlp, wait_for};

const KILLS: usize = 20;
const SPANS_PER_REQUEST: u64 = 100;

/// Request `seq` of sender `sender`: 100 calls with span ids of their own.
fn request(sender: u64, seq: u64) -> ExportTraceServiceRequest {
    let first = (sender << 40) | (seq * SPANS_PER_REQUEST);
    otlp::request(
        (first..first + SPANS_PER_REQUEST)
            .map(|id| {
                let mut span = otlp::span(
                    id.to_be_bytes().to_vec(),
                    vec![
                        otlp::string("gen_ai.request.model", "gpt-4o-mini"),
                        otlp::string("gen_ai.system", "openai"),
                        otlp::int("gen_ai.usage.input_tokens", 10),
                        otlp::string("tollgate.project", "crash"),
                    ],
                );
                let mut trace = [0u8; 16];
                trace[8..].copy_from_slice(&id.to_be_bytes());
                span.trace_id = trace.to_vec();
                span
            })
            .collect(),
    )
}

fn span_ids(sender: u64, seq: u64) -> impl Iterator<Item = String> {
    let first = (sender << 40) | (seq * SPANS_PER_REQUEST);
    (first..first + SPANS_PER_REQUEST).map(|id| hex(&id.to_be_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Copy)]
enum Transport {
    Grpc,
    Http,
}

/// Sends requests until `stop`, each until answered OK; records what was.
async fn sender(
    id: u64,
    transport: Transport,
    addrs: Arc<RwLock<(String, String)>>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u64, u64)>>>,
) -> u64 {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut seq = 0;
    let mut refused = 0;
    while !stop.load(Ordering::Relaxed) {
        let req = request(id, seq);
        loop {
            let (grpc_url, http_url) = addrs.read().unwrap().clone();
            let ok = match transport {
                Transport::Http => http
                    .post(format!("{http_url}/v1/traces"))
                    .header("content-type", "application/x-protobuf")
                    .body(req.encode_to_vec())
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200),
                Transport::Grpc => match TraceServiceClient::connect(grpc_url).await {
                    Ok(mut c) => {
                        tokio::time::timeout(Duration::from_secs(5), c.export(req.clone()))
                            .await
                            .is_ok_and(|r| r.is_ok())
                    }
                    Err(_) => false,
                },
            };
            if ok {
                break;
            }
            refused += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        acked.lock().unwrap().push((id, seq));
        seq += 1;
    }
    refused
}

/// Where the calls are counted from.
enum Store {
    Sqlite(std::path::PathBuf),
    /// The server's URL (the same after it restarts).
    Clickhouse(String),
}

impl Store {
    /// Every stored span id of the test's project, with how many rows it has.
    async fn spans(&self) -> Vec<(String, i64)> {
        match self {
            Store::Sqlite(db) => {
                let conn = rusqlite::Connection::open_with_flags(
                    db,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .unwrap();
                let mut seen = conn
                    .prepare(
                        "SELECT span_id, count(*) FROM calls WHERE project = 'crash' GROUP BY span_id",
                    )
                    .unwrap();
                seen.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            Store::Clickhouse(url) => reqwest::Client::new()
                .post(format!("{url}/?default_format=TabSeparated"))
                .body(
                    "SELECT span_id, count() FROM crash.calls WHERE project = 'crash' \
                     GROUP BY span_id",
                )
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                .lines()
                .filter_map(|l| {
                    let (span, n) = l.split_once('\t')?;
                    Some((span.to_owned(), n.parse().ok()?))
                })
                .collect(),
        }
    }
}

/// Load from four senders, `KILLS` crashes; `mid_run` is called once, at
/// the tenth. Returns once every acknowledged span is stored, checking
/// none is stored twice.
async fn crash_under_load(mut c: Collector, store: Store, mut mid_run: impl FnMut()) {
    let addrs = Arc::new(RwLock::new((c.grpc_url(), c.http_url())));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let senders: Vec<_> = [
        Transport::Grpc,
        Transport::Grpc,
        Transport::Http,
        Transport::Http,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, t)| {
        tokio::spawn(sender(
            i as u64 + 1,
            t,
            Arc::clone(&addrs),
            Arc::clone(&stop),
            Arc::clone(&acked),
        ))
    })
    .collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for kill in 0..KILLS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Between 0.2 and 1.5 s of load, then a kill at whatever moment.
        tokio::time::sleep(Duration::from_millis(200 + x % 1300)).await;
        if kill == KILLS / 2 {
            mid_run();
        }
        c.crash_and_restart();
        *addrs.write().unwrap() = (c.grpc_url(), c.http_url());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut retried = 0;
    for s in senders {
        retried += s.await.unwrap();
    }
    let acked: Vec<(u64, u64)> = acked.lock().unwrap().clone();
    let want: HashSet<String> = acked.iter().flat_map(|(s, q)| span_ids(*s, *q)).collect();
    assert_eq!(want.len(), acked.len() * SPANS_PER_REQUEST as usize);
    // Everything acknowledged reaches the store once the queue drains.
    wait_for("every acknowledged span stored", async || {
        let rows = store.spans().await;
        let have: HashSet<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
        want.iter().all(|s| have.contains(s.as_str()))
    })
    .await;
    let rows = store.spans().await;
    let twice: Vec<_> = rows.iter().filter(|(_, k)| *k > 1).collect();
    assert!(
        twice.is_empty(),
        "{} spans stored more than once: {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    let m = c.metrics().await;
    eprintln!(
        "{} requests acknowledged ({} spans), {} spans stored, {retried} attempts refused or failed; {}",
        acked.len(),
        want.len(),
        rows.len(),
        m.lines()
            .filter(|l| l.starts_with("tollgate_wal_replayed_rows_total"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert!(acked.len() > 100, "the senders made too little progress");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_spans_survive_twenty_kills() {
    let c = Collector::start("");
    let db = c.db_path();
    crash_under_load(c, Store::Sqlite(db), || {}).await;
}

/// The same against ClickHouse, which also restarts once mid-run (the
/// log holds what it could not take meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_spans_survive_twenty_kills_and_a_clickhouse_restart() {
    let Some(mut ch) = ClickhouseServer::start("e2e_crash") else {
        return;
    };
    let c = Collector::start_with_storage(Some(&ch.storage("crash")), "", &[], &[]);
    let store = Store::Clickhouse(ch.url());
    let restart = || {
        ch.stop();
        std::thread::sleep(Duration::from_secs(2));
        ch.start_again();
    };
    crash_under_load(c, store, restart).await;
}

const ADMIN: &str = "admin-token-for-the-crash-test";

/// A virtual key with a monthly cost limit spends until the gateway
/// refuses it; the collector is killed right after the last call it
/// served. After the restart every served call is stored, and the key's
/// next call is still refused: its limit was read back from the store, not
/// started afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_monthly_limit_and_its_served_calls_survive_a_kill() {
    use serde_json::{Value, json};
    use tollgate_mock_provider::{MockConfig, MockProvider};

    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let config = format!(
        r#"
[admin]
token = "{ADMIN}"

[gateway]
enabled = true
listen = "127.0.0.1:0"

[[gateway.providers]]
name = "openai"
kind = "openai"
base_url = "{}/v1"
api_key_env = "CRASH_TEST_OPENAI_KEY"
"#,
        mock.base_url()
    );
    let mut c = Collector::start_full(&config, &[], &[("CRASH_TEST_OPENAI_KEY", "sk-test")]);
    let created: Value = reqwest::Client::new()
        .post(format!("{}/admin/v1/keys", c.api_url()))
        .bearer_auth(ADMIN)
        .json(&json!({
            "name": "limited", "project": "crash-gw",
            // About ten calls of gpt-4o-mini as the mock answers them.
            "limits": {"cost_usd_per_month": 0.00015},
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let call = async |gateway: &str| -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{gateway}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({
                "model": "gpt-4o-mini",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": "Count the calls made with this key."}],
            }))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    };
    let gateway = format!("http://{}", c.gateway.unwrap());
    let mut served = 0;
    let refusal = loop {
        let (status, body) = call(&gateway).await;
        match status {
            200 => served += 1,
            429 => break body,
            other => panic!("{other}: {body}"),
        }
        assert!(served < 50, "the key's limit never refused");
    };
    assert!(served >= 5, "{served} calls served before the limit");
    assert_eq!(refusal["error"]["code"], "budget_exceeded", "{refusal}");
    // One more served call would not fit; kill right after the last one.
    c.crash_and_restart();
    let gateway = format!("http://{}", c.gateway.unwrap());
    let rows = c.wait_gateway_rows(served + 1).await;
    let ok = rows.iter().filter(|r| r["status"] == "ok").count();
    assert_eq!(ok, served, "every served call is stored: {rows:?}");
    let (status, body) = call(&gateway).await;
    assert_eq!(status, 429, "the key's usage was forgotten: {body}");
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    assert_eq!(mock.stats().total_requests, served as u64);
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB at `dir`; `None` (with a notice) when
    /// this machine does not let the test mount one, a failure under
    /// `scripts/test`.
    fn mount(dir: &std::path::Path, mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("TOLLGATE_TEST_STRICT").is_none(),
                "cannot mount a tmpfs (the full-disk test runs as root under scripts/test)"
            );
            eprintln!("skipped: cannot mount a tmpfs here");
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, mib: u64) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot resize the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The store and the log on a small disk that fills up: senders are told
/// 503 (nothing acknowledged is lost), and once space returns ingest
/// resumes by itself and every acknowledged span is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pushes_back_and_ingest_resumes_when_space_returns() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("disk");
    let Some(disk) = Tmpfs::mount(&data, 6) else {
        return;
    };
    let c = Collector::start_with_storage(
        Some(&format!("type = \"sqlite\"\npath = \"{}\"", data.display())),
        &format!("[durability]\ndir = \"{}\"\n", data.join("wal").display()),
        &[],
        &[],
    );
    let http = reqwest::Client::new();
    let post = async |seq: u64| -> u16 {
        http.post(format!("{}/v1/traces", c.http_url()))
            .header("content-type", "application/x-protobuf")
            .body(request(9, seq).encode_to_vec())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // Fill the disk: requests are acknowledged until they are refused.
    let mut acked = Vec::new();
    let mut refused = 0;
    let mut seq = 0;
    while refused < 20 {
        match post(seq).await {
            200 => acked.push(seq),
            503 => refused += 1,
            other => panic!("answered {other}"),
        }
        seq += 1;
        assert!(seq < 5_000, "6 MiB never filled up");
    }
    assert!(!acked.is_empty());
    let m = c.metrics().await;
    assert!(
        m.lines().any(
            |l| l.starts_with("tollgate_wal_write_errors_total ") && !l.ends_with(" 0")
                || l.starts_with("tollgate_store_write_errors_total") && !l.ends_with(" 0")
        ),
        "no disk error counted: {m}"
    );
    // Space returns: the refused requests go through on retry.
    disk.resize(64);
    let before = acked.len();
    for s in seq..seq + 20 {
        let mut tries = 0;
        while post(s).await != 200 {
            tries += 1;
            assert!(tries < 200, "ingest did not resume");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        acked.push(s);
    }
    let want: HashSet<String> = acked.iter().flat_map(|q| span_ids(9, *q)).collect();
    let store = Store::Sqlite(c.db_path_in(&data));
    wait_for("every acknowledged span stored", async || {
        let rows = store.spans().await;
        let have: HashSet<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
        want.iter().all(|s| have.contains(s.as_str()))
    })
    .await;
    eprintln!(
        "{before} requests acknowledged before the disk was full, {refused} refused, 20 after it grew"
    );
}

/// What a webhook receiver got: (Idempotency-Key, the event's threshold).
type Received = Arc<Mutex<Vec<(String, f64)>>>;

/// A webhook receiver on `port` (0: any) until the returned handle is aborted.
async fn receiver(port: u16, got: Received) -> (u16, tokio::task::JoinHandle<()>) {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/hook",
        post(
            move |headers: axum::http::HeaderMap, axum::Json(v): axum::Json<serde_json::Value>| {
                let got = Arc::clone(&got);
                async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|k| k.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let threshold = v["event"]["threshold"].as_f64().unwrap_or(-1.0);
                    got.lock().unwrap().push((key, threshold));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    (
        port,
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }),
    )
}

/// A threshold event is stored while the webhook is down, the collector is
/// killed before it could deliver it, a second event comes after the
/// restart, and the webhook stays down for a minute: once it is back it
/// gets both, each with an Idempotency-Key that is the same on every
/// delivery of the same alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_delivered_at_least_once_across_a_kill_and_a_webhook_outage() {
    let got: Received = Arc::default();
    // A port for the webhook, closed at once: the webhook is down.
    let (port, server) = receiver(0, Arc::clone(&got)).await;
    server.abort();
    let _ = server.await;
    let down_since = std::time::Instant::now();
    let mut c = Collector::start(&format!(
        r#"
[[alerts.webhooks]]
name = "ops"
url = "http://127.0.0.1:{port}/hook"
default = true

[[rules]]
id = "daily-alerts"
type = "budget"
metric = "tokens"
limit = 1000
scope = ["project"]
window = "day"
alert_at = [0.5, 0.8]
action = "alert"
"#
    ));
    let alert_states = async |c: &Collector| -> Vec<serde_json::Value> {
        let (_, body) = c.get("/v1/events?since=1h&rule=daily-alerts").await;
        body["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| e["alerts"].clone())
            .collect()
    };
    // 600 tokens: the 50 % threshold, stored, its delivery failing.
    c.send_tokens(1, "alerted", 600).await;
    wait_for("a failed delivery attempt", async || {
        alert_states(&c)
            .await
            .first()
            .is_some_and(|a| a[0]["attempts"].as_u64().unwrap_or(0) >= 1)
    })
    .await;
    assert_eq!(alert_states(&c).await[0][0]["state"], "pending");
    c.crash_and_restart();
    // After the restart: the 80 % threshold.
    c.send_tokens(2, "alerted", 300).await;
    wait_for("the second event", async || {
        alert_states(&c).await.len() == 2
    })
    .await;
    // The webhook comes back after a minute down.
    let left = Duration::from_secs(60).saturating_sub(down_since.elapsed());
    tokio::time::sleep(left).await;
    assert!(got.lock().unwrap().is_empty());
    let (_, server) = receiver(port, Arc::clone(&got)).await;
    // Retries back off to 30 s apart: the next one may be that far.
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        let both = {
            let got = got.lock().unwrap();
            [0.5, 0.8]
                .iter()
                .all(|t| got.iter().any(|(_, th)| (th - t).abs() < 1e-9))
        };
        if both {
            break;
        }
        if std::time::Instant::now() >= deadline {
            let received = got.lock().unwrap().clone();
            let states = alert_states(&c).await;
            panic!(
                "not delivered: received {received:?}, states {states:?}\n{}",
                c.stderr()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.abort();
    let got = got.lock().unwrap().clone();
    for (key, threshold) in &got {
        assert!(!key.is_empty(), "an alert without an Idempotency-Key");
        // Every delivery of one alert carries one key; two alerts, two keys.
        let same_alert: HashSet<&str> = got
            .iter()
            .filter(|(_, t)| t == threshold)
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(same_alert.len(), 1, "{got:?}");
    }
    let keys: HashSet<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), 2, "{got:?}");
    let states = alert_states(&c).await;
    wait_for("deliveries recorded", async || {
        alert_states(&c)
            .await
            .iter()
            .all(|a| a[0]["state"] == "delivered")
    })
    .await;
    eprintln!("received {got:?}; states {states:?}");
}
