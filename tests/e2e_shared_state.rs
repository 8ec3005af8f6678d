//! End to end with `[ledger] type = "redis"` and no Kafka: two instances of
//! the real binary, each with its own SQLite store, share through the
//! ledger's Redis server not only budgets but the kill-switch, virtual keys
//! (and their revocation) and rule overrides, each within a second. An
//! instance started later learns them all from the stream at start-up. The
//! provider is the shared mock (the only mocked component).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use support::Collector;
use tollgate_mock_provider::{MockConfig, MockProvider};
use tollgate_redis::testing::RedisServer;

const ADMIN: &str = "admin-token-for-the-shared-state-test";
const PROVIDER_KEY: &str = "sk-canary-provider-key-shared-state";
/// How soon a change made on one instance must apply on another.
const WITHIN: Duration = Duration::from_secs(1);

fn config(mock: &MockProvider, redis: &RedisServer) -> String {
    format!(
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
api_key_env = "TEST_GATEWAY_OPENAI_KEY"

[ledger]
type = "redis"

[ledger.redis]
url = "{}"
key_prefix = "{}"

# Spent by the first call: refused until snoozed.
[[rules]]
id = "tiny-daily"
type = "budget"
metric = "tokens"
limit = 1
scope = ["project"]
match = {{ project = "tiny" }}
window = "day"
action = "block"
"#,
        mock.base_url(),
        redis.url(),
        redis.config().key_prefix,
    )
}

fn start(mock: &MockProvider, redis: &RedisServer) -> (Collector, String) {
    let c = Collector::start_full(
        &config(mock, redis),
        &[],
        &[("TEST_GATEWAY_OPENAI_KEY", PROVIDER_KEY)],
    );
    let gateway = format!("http://{}", c.gateway.expect("the gateway is listening"));
    (c, gateway)
}

async fn admin(c: &Collector, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", c.api_url()))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn new_key(c: &Collector, project: &str) -> (String, String) {
    let (status, created) = admin(
        c,
        Method::POST,
        "/admin/v1/keys",
        Some(json!({ "project": project })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    (
        created["key"].as_str().unwrap().to_owned(),
        created["info"]["id"].as_str().unwrap().to_owned(),
    )
}

async fn chat(gateway: &str, key: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{gateway}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({
            "model": "gpt-4o-mini",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "Say hello to the shared state test."}],
        }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Polls `check` until it holds; fails when it does not within `WITHIN`.
async fn within_a_second<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        let outcome = check().await;
        match outcome {
            Ok(()) => return start.elapsed(),
            Err(last) if start.elapsed() > WITHIN => {
                panic!("{what}: not within {WITHIN:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn enforcement(c: &Collector, project: &str) -> Value {
    c.get(&format!("/v1/enforcement?project={project}")).await.1
}

fn expect_status(got: (u16, Value), status: u16) -> Result<(), String> {
    if got.0 == status {
        Ok(())
    } else {
        Err(format!("{} {}", got.0, got.1))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_keys_and_overrides_reach_every_instance_within_a_second() {
    let test = "blocks_keys_and_overrides_reach_every_instance_within_a_second";
    let Some(redis) = RedisServer::start(test) else {
        return;
    };
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let (a, _gateway_a) = start(&mock, &redis);
    let (b, gateway_b) = start(&mock, &redis);

    // (a) An admin block on A: seen by B's agents, and B's gateway refuses.
    let (key_blk, _) = new_key(&b, "blk").await;
    let (status, body) = chat(&gateway_b, &key_blk).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin(
        &a,
        Method::POST,
        "/admin/v1/enforcement",
        Some(json!({ "scope": { "project": "blk" }, "reason": "incident" })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    within_a_second("A's block in B's /v1/enforcement", || async {
        let state = enforcement(&b, "blk").await;
        if state["blocked"] == true && state["blocks"][0]["reason"] == "incident" {
            Ok(())
        } else {
            Err(state.to_string())
        }
    })
    .await;
    within_a_second("A's block refuses calls on B", || async {
        let (status, body) = chat(&gateway_b, &key_blk).await;
        if status == 429 && body["error"]["code"] == "blocked" {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    // Other projects are not blocked.
    assert_eq!(enforcement(&b, "other").await["blocked"], false);

    // Lifted on A: B serves again.
    let (status, body) = admin(
        &a,
        Method::DELETE,
        "/admin/v1/enforcement?project=blk",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["lifted"], 1, "{body}");
    within_a_second("A's lift on B", || async {
        expect_status(chat(&gateway_b, &key_blk).await, 200)
    })
    .await;
    assert_eq!(enforcement(&b, "blk").await["blocked"], false);

    // (b) A key created on A works on B; revoked on A, refused on B.
    let (key, id) = new_key(&a, "keys").await;
    within_a_second("A's key on B's gateway", || async {
        expect_status(chat(&gateway_b, &key).await, 200)
    })
    .await;
    // Still there after B's periodic key refresh from its own store.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    expect_status(chat(&gateway_b, &key).await, 200).unwrap();
    let (_, listed) = admin(&b, Method::GET, "/admin/v1/keys", None).await;
    assert!(listed.to_string().contains(&id), "{listed}");
    let (status, _) = admin(&a, Method::DELETE, &format!("/admin/v1/keys/{id}"), None).await;
    assert_eq!(status, 200);
    within_a_second("A's revocation on B", || async {
        expect_status(chat(&gateway_b, &key).await, 401)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    expect_status(chat(&gateway_b, &key).await, 401).unwrap();

    // (c) A snooze made on A lets B's calls through a spent budget.
    let (key_tiny, _) = new_key(&a, "tiny").await;
    within_a_second("A's second key on B", || async {
        let (status, body) = chat(&gateway_b, &key_tiny).await;
        if status == 401 {
            Err(format!("{status} {body}"))
        } else {
            Ok(())
        }
    })
    .await;
    let mut refused = None;
    for _ in 0..5 {
        let (status, body) = chat(&gateway_b, &key_tiny).await;
        if status != 200 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("the 1-token budget never refused a call");
    assert_eq!(status, 429, "{body}");
    let (status, body) = admin(
        &a,
        Method::POST,
        "/admin/v1/overrides",
        Some(json!({ "rule_id": "tiny-daily", "scope": { "project": "tiny" }, "kind": "snooze", "for_s": 3600 })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    within_a_second("A's snooze on B", || async {
        expect_status(chat(&gateway_b, &key_tiny).await, 200)
    })
    .await;

    // An instance started now learns it all from the stream: the revoked
    // key is refused, the live one and the snooze apply.
    let (c, gateway_c) = start(&mock, &redis);
    expect_status(chat(&gateway_c, &key).await, 401).unwrap();
    if let Err(e) = expect_status(chat(&gateway_c, &key_tiny).await, 200) {
        panic!("C: {e}\n{}", c.stderr());
    }
    assert_eq!(enforcement(&c, "blk").await["blocked"], false);
    // A block set on C reaches A and B.
    let (status, _) = admin(
        &c,
        Method::POST,
        "/admin/v1/enforcement",
        Some(json!({ "scope": { "project": "late" } })),
    )
    .await;
    assert_eq!(status, 200);
    for (name, other) in [("A", &a), ("B", &b)] {
        within_a_second(&format!("C's block on {name}"), || async {
            let state = enforcement(other, "late").await;
            if state["blocked"] == true {
                Ok(())
            } else {
                Err(state.to_string())
            }
        })
        .await;
    }

    // No secret in any instance's log.
    for (name, inst) in [("A", &a), ("B", &b), ("C", &c)] {
        let stderr = inst.stderr();
        for secret in [PROVIDER_KEY, key.as_str(), key_tiny.as_str()] {
            assert!(!stderr.contains(secret), "a secret in {name}'s log");
        }
    }
}
