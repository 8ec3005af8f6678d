//! End to end: rules in observe mode on the real binary. A block budget
//! trips on spans sent over OTLP; events, webhook alerts and the kill-switch
//! follow; a restart keeps usage; rules reload (and a broken file does not).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use serde_json::Value;
use support::{Collector, wait_for};
use tollgate_proto::enforcement::v1 as pb;
use tollgate_proto::enforcement::v1::enforcement_client::EnforcementClient;

const ADMIN: &str = "admin-token-for-tests-0123456789";

/// A local webhook receiver: every JSON body POSTed to it.
struct Hook {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

async fn hook() -> Hook {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&bodies);
    let app = axum::Router::new().route(
        "/hook",
        post(move |Json(v): Json<Value>| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Hook { url, bodies }
}

async fn events(c: &Collector, rule: &str) -> Vec<Value> {
    let (status, body) = c.get(&format!("/v1/events?since=1h&rule={rule}")).await;
    assert_eq!(status, 200, "{body}");
    let mut rows = body["rows"].as_array().cloned().unwrap_or_default();
    rows.reverse();
    rows
}

fn admin_url(c: &Collector, path: &str) -> String {
    format!("{}/admin/v1/{path}", c.api_url())
}

fn config(hook: &str, limit: u64) -> String {
    format!(
        r#"
[admin]
token = "{ADMIN}"

[[alerts.webhooks]]
name = "ops"
url = "{hook}"

[[rules]]
id = "daily-tokens"
type = "budget"
metric = "tokens"
limit = {limit}
scope = ["project"]
window = "day"
action = "block"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_budget_trips_alerts_blocks_and_survives_a_restart() {
    let hook = hook().await;
    let mut c = Collector::start(&config(&hook.url, 10_000));

    // An agent watches its scope over gRPC before anything happens.
    let mut client = EnforcementClient::connect(c.grpc_url()).await.unwrap();
    let scope = pb::Scope {
        project: "search".into(),
        user: "alice".into(),
        ..Default::default()
    };
    let mut watch = client
        .watch(pb::WatchRequest { scope: Some(scope) })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert!(!first.blocked);
    // And another over SSE.
    let mut sse = reqwest::get(format!(
        "{}/v1/enforcement/stream?project=search",
        c.api_url()
    ))
    .await
    .unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let chunk = String::from_utf8(sse.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(chunk.starts_with("data: {\"blocked\":false"), "{chunk}");

    // 12 calls of 1,000 tokens against a 10,000-token daily budget.
    for i in 0..11 {
        c.send_tokens(i + 1, "search", 1_000).await;
    }
    // The 11th call went over: the watcher hears of the block within a second.
    let crossed = Instant::now();
    let blocked = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        crossed.elapsed() < Duration::from_secs(1),
        "block took {:?}",
        crossed.elapsed()
    );
    assert!(blocked.blocked);
    assert_eq!(blocked.blocks[0].rule_id, "daily-tokens");
    assert_eq!(blocked.blocks[0].scope, "project=search");
    let chunk = String::from_utf8(sse.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(chunk.contains("\"blocked\":true"), "{chunk}");
    c.send_tokens(12, "search", 1_000).await;
    c.send_tokens(100, "other", 500).await;
    c.wait_calls(13).await;

    let ev = events(&c, "daily-tokens").await;
    let summary: Vec<(String, Option<f64>, f64)> = ev
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["threshold"].as_f64(),
                e["used"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("threshold".into(), Some(0.8), 8_000.0),
            ("threshold".into(), Some(0.9), 9_000.0),
            ("threshold".into(), Some(1.0), 10_000.0),
            ("limit_exceeded".into(), None, 11_000.0),
        ]
    );
    assert!(
        ev.iter()
            .all(|e| e["scope"] == "project=search" && e["limit"] == 10_000.0)
    );

    // The rows that tripped the rule say so.
    let calls = c.calls(100).await;
    let tripped = calls
        .iter()
        .filter(|r| r["rules_fired"] == serde_json::json!(["daily-tokens"]))
        .count();
    assert_eq!(tripped, 4);

    // The webhook receives exactly the three threshold alerts.
    wait_for("three alerts", async || {
        hook.bodies.lock().unwrap().len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alerts = hook.bodies.lock().unwrap().clone();
    let thresholds: Vec<f64> = alerts
        .iter()
        .map(|a| a["event"]["threshold"].as_f64().unwrap())
        .collect();
    assert_eq!(thresholds, vec![0.8, 0.9, 1.0], "{alerts:#?}");
    assert!(alerts[0]["summary"].as_str().unwrap().contains("80%"));

    // The kill-switch blocks the project, not the others.
    let (status, state) = c.get("/v1/enforcement?project=search&user=alice").await;
    assert_eq!(status, 200);
    assert_eq!(state["blocked"], true, "{state}");
    assert_eq!(state["blocks"][0]["rule_id"], "daily-tokens");
    assert_eq!(state["blocks"][0]["reason"], "budget_exceeded");
    assert_eq!(state["blocks"][0]["used"], 11_000.0);
    let (_, other) = c.get("/v1/enforcement?project=other").await;
    assert_eq!(other["blocked"], false);

    // A restart keeps the day's usage and the block, and does not re-alert
    // (the open gRPC and SSE watches do not hold the shutdown up).
    c.restart();
    drop((watch, sse));
    let (_, state) = c.get("/v1/enforcement?project=search").await;
    assert_eq!(
        state["blocked"],
        true,
        "block lost in restart: {state}\n{}",
        c.stderr()
    );
    c.send_tokens(200, "search", 10).await;
    c.send_tokens(201, "other", 8_000).await;
    c.wait_calls(15).await;
    // `other` crosses 80 % only now (500 before the restart + 8,000).
    wait_for("other's threshold", async || {
        events(&c, "daily-tokens").await.len() >= 5
    })
    .await;
    let ev = events(&c, "daily-tokens").await;
    assert_eq!(ev.len(), 5, "{ev:#?}");
    assert_eq!(
        (ev[4]["scope"].as_str(), ev[4]["used"].as_f64()),
        (Some("project=other"), Some(8_500.0))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.bodies.lock().unwrap().len(), 4);

    // An admin lifts the block; without the token the admin API refuses.
    let client = reqwest::Client::new();
    let r = client
        .delete(format!(
            "{}/admin/v1/enforcement?project=search",
            c.api_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .delete(format!(
            "{}/admin/v1/enforcement?project=search",
            c.api_url()
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["lifted"], 1);
    let (_, state) = c.get("/v1/enforcement?project=search").await;
    assert_eq!(state["blocked"], false);
    // The admin token never shows in the logs.
    assert!(!c.stderr().contains(ADMIN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_hot_reload_and_a_broken_file_keeps_the_old_rules() {
    let hook = hook().await;
    let c = Collector::start(&config(&hook.url, 1_000_000));
    let base = std::fs::read_to_string(c.config_path()).unwrap();
    c.send_tokens(1, "search", 500).await;
    c.wait_calls(1).await;
    assert!(events(&c, "daily-tokens").await.is_empty());

    // Lower the limit and reload through the admin API.
    std::fs::write(
        c.config_path(),
        base.replace("limit = 1000000", "limit = 520"),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/admin/v1/reload", c.api_url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rules"], 1);
    c.send_tokens(2, "search", 10).await;
    wait_for("events after reload", async || {
        events(&c, "daily-tokens").await.len() >= 2
    })
    .await;
    let kinds: Vec<_> = events(&c, "daily-tokens")
        .await
        .iter()
        .map(|e| e["threshold"].as_f64())
        .collect();
    assert_eq!(kinds, vec![Some(0.8), Some(0.9)], "510 of 520");

    // A broken file is refused with the reason; the old rules stay.
    std::fs::write(
        c.config_path(),
        base.replace("limit = 1000000", "limit = -5"),
    )
    .unwrap();
    let r = client
        .post(format!("{}/admin/v1/reload", c.api_url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("daily-tokens") && message.contains("limit"),
        "{message}"
    );
    c.send_tokens(3, "search", 20).await;
    wait_for("old rule still counting", async || {
        events(&c, "daily-tokens").await.len() >= 4
    })
    .await;
    let ev = events(&c, "daily-tokens").await;
    assert_eq!(
        (ev[2]["threshold"].as_f64(), ev[3]["kind"].as_str()),
        (Some(1.0), Some("limit_exceeded"))
    );

    // Editing the file is enough: the collector notices within seconds.
    let reloads = c.stderr().matches("rules reloaded").count();
    std::fs::write(
        c.config_path(),
        base.replace("limit = 1000000", "limit = 100000")
            .replace("\"project\"", "\"user\""),
    )
    .unwrap();
    wait_for("file-change reload", async || {
        c.stderr().matches("rules reloaded").count() > reloads
    })
    .await;
}

#[test]
fn bad_rules_stop_start_up_with_one_line_naming_rule_and_field() {
    let cases = [
        (
            "[[rules]]\nid = \"r1\"\ntype = \"budget\"\nmetric = \"tokens\"\nlimit = 5\nlimt = 6\n",
            ["r1", "limt"],
        ),
        (
            "[[rules]]\nid = \"r2\"\ntype = \"custom\"\nexpression = \"call.output_tokens >\"\n",
            ["r2", "expression"],
        ),
        (
            "[[rules]]\nid = \"r3\"\ntype = \"budget\"\nmetric = \"tokens\"\nlimit = -1\n",
            ["r3", "limit"],
        ),
        (
            "[[rules]]\nid = \"r4\"\ntype = \"budget\"\nmetric = \"tokens\"\nlimit = 5\nscope = [\"galaxy\"]\n",
            ["r4", "scope"],
        ),
    ];
    for (rule, words) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, rule).unwrap();
        let out = std::process::Command::new(support::bin())
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        for w in words {
            assert!(stderr.contains(w), "{w} not in {stderr}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_blocks_lifts_and_overrides_survive_a_restart() {
    let hook = hook().await;
    let mut c = Collector::start(&config(&hook.url, 1_000));
    let client = reqwest::Client::new();

    // Project `search` trips its budget; `audit` is blocked by hand.
    c.send_tokens(1, "search", 2_000).await;
    c.wait_calls(1).await;
    wait_for("rule block", async || {
        c.get("/v1/enforcement?project=search").await.1["blocked"] == true
    })
    .await;
    let r = client
        .post(admin_url(&c, "enforcement"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({ "scope": { "project": "audit" }, "reason": "security review" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // `search` gets more budget for an hour, which lifts its block.
    let r = client
        .post(admin_url(&c, "overrides"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({ "rule_id": "daily-tokens", "scope": { "project": "search" }, "kind": "limit", "limit": 50000, "for_s": 3600 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        c.get("/v1/enforcement?project=search").await.1["blocked"],
        false
    );
    let r = client
        .post(admin_url(&c, "overrides"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({ "rule_id": "no-such-rule", "scope": { "project": "x" }, "kind": "snooze", "for_s": 60 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    c.restart();
    // The replay re-creates `search`'s rule block; the stored override lifts it again.
    let (_, search) = c.get("/v1/enforcement?project=search").await;
    assert_eq!(search["blocked"], false, "{search}\n{}", c.stderr());
    let (_, audit) = c.get("/v1/enforcement?project=audit").await;
    assert_eq!(audit["blocked"], true, "{audit}");
    assert_eq!(audit["blocks"][0]["reason"], "security review");
    // Under the raised limit `search` can keep going without a new block.
    c.send_tokens(2, "search", 10_000).await;
    c.wait_calls(2).await;
    assert_eq!(
        c.get("/v1/enforcement?project=search").await.1["blocked"],
        false
    );

    // Lifting the manual block is stored too.
    let r = client
        .delete(admin_url(&c, "enforcement?project=audit"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["lifted"], 1);
    c.restart();
    assert_eq!(
        c.get("/v1/enforcement?project=audit").await.1["blocked"],
        false
    );
}
