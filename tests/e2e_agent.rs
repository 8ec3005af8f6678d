//! End to end: the example agent (Rust SDK shim) calls the mock provider
//! until spans sent over OTLP take its project over a 10,000-token daily
//! budget; it then refuses its next call within a second, without
//! contacting the provider.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
