//! End to end: the example agent (Rust SDK shim) calls the mock provider
//! until spans sent over OTLP take its project over a 10,000-token daily
//! budget; it then refuses its next call within a second, without
//! contacting the provider. And the flip: the same agent, unchanged, runs
//! against the collector with `gateway.enabled = false`, then `true`; both
//! runs give the same rows apart from `mode`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Collector;
use tollgate_mock_provider::{MockConfig, MockProvider};

/// The example is built with the workspace's tests (`cargo test --workspace`).
fn example_agent() -> PathBuf {
    let bin = PathBuf::from(support::bin());
    let path = bin
        .parent()
        .unwrap()
        .join("examples")
        .join("budgeted_agent");
    assert!(
        path.exists(),
        "{} is missing: run the workspace's tests (`scripts/test` or `cargo test --workspace`), which build the SDK's examples",
        path.display()
    );
    path
}

const RULES: &str = r#"
[[rules]]
id = "agent-daily"
type = "budget"
metric = "tokens"
limit = 10000
scope = ["project"]
window = "day"
action = "block"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_agent_stops_within_a_second_of_the_budget_crossing() {
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let c = Collector::start(RULES);
    let mut agent = Command::new(example_agent())
        .args(["--collector-grpc", &c.grpc_url()])
        .args(["--collector-api", &c.api_url()])
        .args(["--provider", &mock.base_url()])
        .args(["--project", "agents", "--user", "alice"])
        .args([
            "--max-calls",
            "1000",
            "--interval-ms",
            "100",
            "--max-tokens",
            "16",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = agent.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), line));
        }
    });

    // The agent works normally first.
    let (_, first) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(first.starts_with("call n=1 "), "{first}");

    // Other calls of the project bring it to 12,000 tokens: 11 x 1,000 crosses
    // the 10,000 limit (with the agent's own few tokens) on the 10th or 11th.
    for i in 0..11 {
        c.send_tokens(1_000 + i, "agents", 1_000).await;
    }
    let sent_at = Instant::now();
    // The agent's own calls are counted too: wait until the block is there.
    let blocked_at = loop {
        let (_, state) = c.get("/v1/enforcement?project=agents").await;
        if state["blocked"] == true {
            break Instant::now();
        }
        assert!(
            sent_at.elapsed() < Duration::from_secs(10),
            "never blocked: {state}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    c.send_tokens(2_000, "agents", 1_000).await;

    let mut calls = 1;
    let (refused_at, line) = loop {
        let (at, line) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        if line.starts_with("call n=") {
            calls += 1;
            continue;
        }
        break (at, line);
    };
    assert_eq!(
        line,
        "blocked rule=agent-daily reason=budget_exceeded scope=project=agents"
    );
    // Within a second of the crossing (the block exists from `blocked_at`).
    let delay = refused_at.saturating_duration_since(blocked_at);
    assert!(
        delay < Duration::from_secs(1),
        "refused {delay:?} after the block"
    );
    eprintln!("agent refused {delay:?} after the block, after {calls} provider calls");
    let status = agent.wait().unwrap();
    assert_eq!(status.code(), Some(3));

    // The provider saw exactly the calls the agent made, none after the block.
    let stats = mock.stats();
    assert_eq!(
        stats.total_requests, calls,
        "provider contacted while blocked"
    );
    // Its calls were recorded as spans through the SDK.
    let rows = c.calls(1_000).await;
    let agent_rows = rows.iter().filter(|r| r["app"] == "budgeted-agent").count() as u64;
    assert_eq!(agent_rows, calls);
    // The dummy key never reached a row, and the agent never printed it.
    assert!(!serde_json::to_string(&rows).unwrap().contains("sk-example"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const FLIP_ADMIN: &str = "admin-token-for-the-flip-test";
const FLIP_PROVIDER_KEY: &str = "sk-flip-provider-key";

/// Runs the example agent with `args` and `envs`, waits for it; returns its stderr.
fn run_agent(args: &[String], envs: &[(&str, &str)]) -> String {
    let out = Command::new(example_agent())
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "agent failed: {stdout}\n{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("call n=")).count(),
        3,
        "{stdout}"
    );
    stderr
}

/// The fields a call's row must have alike whichever way the call went.
const SAME_FIELDS: [&str; 15] = [
    "org",
    "project",
    "app",
    "environment",
    "user",
    "session",
    "provider",
    "operation",
    "request_model",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "cost_source",
    "error_type",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_agent_runs_unchanged_with_the_gateway_off_and_on() {
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    // Fixed ports, so the agent's command line is the same across the restart.
    let (grpc, http, api, gw) = (free_port(), free_port(), free_port(), free_port());
    let config = format!(
        "[admin]\ntoken = \"{FLIP_ADMIN}\"\n\n\
         [gateway]\nenabled = false\nlisten = \"127.0.0.1:{gw}\"\n\n\
         [[gateway.providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         api_key_env = \"FLIP_OPENAI_KEY\"\n",
        mock.base_url()
    );
    let listen = |p: u16| format!("127.0.0.1:{p}");
    let (grpc_l, http_l, api_l) = (listen(grpc), listen(http), listen(api));
    let envs = [
        ("TOLLGATE_RECEIVERS__OTLP__GRPC_LISTEN", grpc_l.as_str()),
        ("TOLLGATE_RECEIVERS__OTLP__HTTP_LISTEN", http_l.as_str()),
        ("TOLLGATE_API__LISTEN", api_l.as_str()),
        ("FLIP_OPENAI_KEY", FLIP_PROVIDER_KEY),
    ];
    let mut c = Collector::start_full(&config, &[], &envs);
    assert_eq!(c.api.port(), api);
    let (_, discovery) = c.get("/v1/gateway").await;
    assert_eq!(discovery, json!({"enabled": false}));

    // The agent's virtual key (used only once calls go through the gateway).
    let created: Value = reqwest::Client::new()
        .post(format!("{}/admin/v1/keys", c.api_url()))
        .bearer_auth(FLIP_ADMIN)
        .json(&json!({"name": "flip agent", "project": "flip"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();

    // One command line and one environment for both runs.
    let args: Vec<String> = [
        "--collector-grpc",
        &c.grpc_url(),
        "--collector-api",
        &c.api_url(),
        "--provider",
        &mock.base_url(),
        "--project",
        "flip",
        "--user",
        "alice",
        "--max-calls",
        "3",
        "--interval-ms",
        "50",
        "--max-tokens",
        "16",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let agent_env = [("AGENT_GATEWAY_KEY", key.as_str())];

    // gateway.enabled = false: straight to the provider, one span per call.
    let stderr = run_agent(&args, &agent_env);
    assert!(stderr.contains("straight to the provider"), "{stderr}");
    let observed = c.wait_calls(3).await;
    assert!(
        observed.iter().all(|r| r["mode"] != "gateway"),
        "{observed:?}"
    );
    assert_eq!(mock.stats().total_requests, 3);

    // Flip the flag with the CLI and restart on the same file and ports.
    let out = Command::new(support::bin())
        .args(["gateway", "enable", "--config"])
        .arg(c.config_path())
        .env("FLIP_OPENAI_KEY", FLIP_PROVIDER_KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    c.restart();
    assert_eq!(c.gateway.map(|g| g.port()), Some(gw));
    let (_, discovery) = c.get("/v1/gateway").await;
    assert_eq!(discovery["enabled"], true, "{discovery}");
    assert_eq!(discovery["url"], format!("http://127.0.0.1:{gw}"));

    // gateway.enabled = true: the same agent goes through the gateway.
    let stderr = run_agent(&args, &agent_env);
    assert!(stderr.contains("through the gateway"), "{stderr}");
    let gateway_rows = c.wait_gateway_rows(3).await;
    assert_eq!(mock.stats().total_requests, 6);
    // The agent recorded no spans of its own this time: no double count.
    let all = c.wait_calls(6).await;
    assert_eq!(all.len(), 6, "{all:#?}");

    let observed: Vec<&Value> = all.iter().filter(|r| r["mode"] != "gateway").collect();
    assert_eq!(observed.len(), 3);
    for (o, g) in observed.iter().zip(&gateway_rows) {
        for field in SAME_FIELDS {
            assert_eq!(o[field], g[field], "`{field}` differs:\n{o:#}\n{g:#}");
        }
        assert_eq!(g["mode"], "gateway");
        assert_ne!(o["mode"], g["mode"]);
    }
    assert_eq!(observed[0]["project"], "flip");
    assert_eq!(observed[0]["user"], "alice");
    assert_eq!(observed[0]["app"], "budgeted-agent");
    assert!(observed[0]["cost_usd"].as_f64().unwrap() > 0.0);
}
