//! End to end: custom CEL rules whose text holds non-ASCII letters (in a
//! comment, in a string) on the real binary. Such a rule once panicked at
//! start-up; it must load at start-up and on `POST /admin/v1/reload`, and a
//! reload with a broken rule must be refused with one line naming the rule
//! while the rules in force keep applying.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use support::{Collector, wait_for};

const ADMIN: &str = "admin-token-for-cel-tests-0123456789";

fn config(rules: &str) -> String {
    format!("[admin]\ntoken = \"{ADMIN}\"\n{rules}")
}

/// `call.cost_usd > 1.0 // coût`: the comment holds a two-byte letter.
const COST_RULE: &str = r#"
[[rules]]
id = "costly-call"
type = "custom"
expression = 'call.cost_usd > 1.0 // coût'
action = "alert"
"#;

async fn events(c: &Collector, rule: &str) -> Vec<Value> {
    let (status, body) = c.get(&format!("/v1/events?since=1h&rule={rule}")).await;
    assert_eq!(status, 200, "{body}");
    body["rows"].as_array().cloned().unwrap_or_default()
}

async fn reload(c: &Collector) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/admin/v1/reload", c.api_url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_cel_rules_load_at_start_up_and_on_reload() {
    let mut c = Collector::start(&config(COST_RULE));
    assert!(!c.stderr().contains("panicked"), "{}", c.stderr());

    // gpt-4o-mini input is priced at $0.15 per million tokens: 10M tokens
    // cost $1.50 and trip the rule, 1,000 tokens cost a fraction of a cent.
    c.send_tokens(1, "search", 10_000_000).await;
    c.send_tokens(2, "search", 1_000).await;
    c.wait_calls(2).await;
    wait_for("the costly call's event", async || {
        !events(&c, "costly-call").await.is_empty()
    })
    .await;
    let fired = events(&c, "costly-call").await;
    assert_eq!(fired.len(), 1, "only the $1.50 call matches: {fired:?}");
    assert_eq!(fired[0]["kind"], "custom", "{fired:?}");

    // A broken expression (with non-ASCII text too) is refused with one line
    // that names the rule and the field; the rule in force stays.
    let base = std::fs::read_to_string(c.config_path()).unwrap();
    let broken = base.replace(
        "'call.cost_usd > 1.0 // coût'",
        "'call.cost_usd > // seuil dépassé'",
    );
    assert_ne!(broken, base);
    std::fs::write(c.config_path(), &broken).unwrap();
    let (status, body) = reload(&c).await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("costly-call") && message.contains("expression"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    c.send_tokens(3, "search", 9_000_000).await;
    wait_for("the old rule still applies", async || {
        events(&c, "costly-call").await.len() >= 2
    })
    .await;

    // A reload with another non-ASCII rule (comment and string) is taken.
    let renamed = base.replace(
        "'call.cost_usd > 1.0 // coût'",
        "'call.input_tokens > 5000 && call.project != \"café\" // ≥ 5k tokens'",
    );
    assert_ne!(renamed, base);
    std::fs::write(c.config_path(), renamed).unwrap();
    let (status, body) = reload(&c).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rules"], 1, "{body}");
    c.send_tokens(4, "café", 9_000).await;
    c.send_tokens(5, "search", 9_000).await;
    c.send_tokens(6, "search", 10).await;
    wait_for("the reloaded rule fires", async || {
        events(&c, "costly-call").await.len() >= 3
    })
    .await;
    // Give a wrong match time to show before counting.
    c.wait_calls(6).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        events(&c, "costly-call").await.len(),
        3,
        "only call 5 matches the new rule"
    );
    assert!(c.is_running(), "{}", c.stderr());
}
