//! Budgets exact across replicas: three gateway instances (each with its
//! own store) behind round-robin share one token budget through one Redis
//! server (`[ledger] type = "redis"`). Whatever the interleaving, what the
//! provider bills stays within the limit; refusals are 429 with the
//! budget's body; an instance killed mid-run costs the budget at most the
//! lease it held, and its lease leaves the server within the TTL; a Redis
//! restart mid-run lets nothing through unaccounted. The provider is the
//! shared mock (the only mocked component); Redis is the real server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::Collector;
use tollgate_mock_provider::{MockConfig, MockProvider};
use tollgate_redis::testing::{RedisServer, ServerOptions};

const KEY: &str = "tg-shared-ledger-test-key-0123456789abcdef";
const LIMIT: u64 = 3_000;

fn config(mock: &MockProvider, redis: &RedisServer, limit: u64) -> String {
    let r = redis.config();
    format!(
        r#"
[gateway]
enabled = true
listen = "127.0.0.1:0"

[[gateway.providers]]
name = "openai"
kind = "openai"
base_url = "{}/v1"
api_key_env = "TEST_GATEWAY_OPENAI_KEY"

[[auth.keys]]
name = "agents"
roles = ["gateway"]
org = "acme"
project = "gw"
secret = "{KEY}"

[ledger]
type = "redis"
lease_ttl = "3s"

[ledger.redis]
url = "{}"
key_prefix = "{}"
command_timeout = "500ms"

[[rules]]
id = "gw-daily"
type = "budget"
metric = "tokens"
limit = {limit}
scope = ["project"]
match = {{ project = "gw" }}
window = "day"
action = "block"
"#,
        mock.base_url(),
        r.url,
        r.key_prefix,
    )
}

/// Prompts of the length agents send: a task and some context.
fn prompt(n: usize) -> String {
    let topics = [
        "Summarise the customer's last three tickets about billing and suggest a reply.",
        "Find the clause in the attached contract that limits liability and explain it.",
        "Given the stack trace below, name the most likely cause and a fix.",
        "Translate the product announcement into plain language for a newsletter.",
    ];
    format!(
        "Request {n}. {} Context: the account was opened in 2021, has two admins, \
         uses the team plan and asked about invoices in March and April.",
        topics[n % topics.len()]
    )
}

/// One call; `None` when the instance could not be reached.
async fn chat(http: &reqwest::Client, gateway: &str, n: usize) -> Option<(u16, Value)> {
    let r = http
        .post(format!("{gateway}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({
            "model": "gpt-4o-mini",
            "max_tokens": 40,
            "messages": [{"role": "user", "content": prompt(n)}],
        }))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    Some((status, body))
}

struct Run {
    served: usize,
    refused: usize,
    unreachable: usize,
}

/// `total` concurrent calls, round-robin over `gateways`; `midway` runs
/// once half of them were sent.
async fn run(gateways: &[String], total: usize, midway: impl FnOnce() + Send + 'static) -> Run {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let unreachable = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut midway = Some(midway);
    for n in 0..total {
        if n == total / 2 {
            // Let the first half get going, then break something.
            tokio::time::sleep(Duration::from_millis(300)).await;
            if let Some(f) = midway.take() {
                tokio::task::spawn_blocking(f).await.unwrap();
            }
        }
        let gateway = gateways[n % gateways.len()].clone();
        let (http, served, refused, unreachable) = (
            http.clone(),
            Arc::clone(&served),
            Arc::clone(&refused),
            Arc::clone(&unreachable),
        );
        tasks.spawn(async move {
            match chat(&http, &gateway, n).await {
                Some((200, _)) => served.fetch_add(1, Ordering::Relaxed),
                Some((429, body)) => {
                    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
                    assert_eq!(body["error"]["rule_id"], "gw-daily", "{body}");
                    assert_eq!(body["error"]["limit"], LIMIT as f64, "{body}");
                    refused.fetch_add(1, Ordering::Relaxed)
                }
                Some((503, body)) => {
                    // The shared ledger was unreachable and the rule denies
                    // then: a clear answer, nothing forwarded.
                    assert_eq!(body["error"]["code"], "ledger_unavailable", "{body}");
                    refused.fetch_add(1, Ordering::Relaxed)
                }
                Some((status, body)) => panic!("call {n}: {status} {body}"),
                None => unreachable.fetch_add(1, Ordering::Relaxed),
            };
        });
        // Calls arrive over a short while, not all in the same instant.
        if n % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    Run {
        served: served.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        unreachable: unreachable.load(Ordering::Relaxed),
    }
}

fn start_three(mock: &MockProvider, redis: &RedisServer) -> (Vec<Collector>, Vec<String>) {
    start_three_with(mock, redis, LIMIT)
}

fn start_three_with(
    mock: &MockProvider,
    redis: &RedisServer,
    limit: u64,
) -> (Vec<Collector>, Vec<String>) {
    let envs = [("TEST_GATEWAY_OPENAI_KEY", "sk-test-provider")];
    let cfg = config(mock, redis, limit);
    let instances: Vec<Collector> = (0..3)
        .map(|_| Collector::start_full(&cfg, &[], &envs))
        .collect();
    let gateways = instances
        .iter()
        .map(|c| format!("http://{}", c.gateway.expect("the gateway is listening")))
        .collect();
    (instances, gateways)
}

/// Live lease holds on the server for the budget's counters: a hold whose
/// expiry passed is booked as spent by the next exchange, whoever makes it.
async fn holds(redis: &RedisServer) -> usize {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let pattern = format!("{}ledger:*", redis.config().key_prefix);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut con)
        .await
        .unwrap();
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut con).await.unwrap();
    let now_ms = secs * 1000 + micros / 1000;
    let mut n = 0;
    for k in keys {
        let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&k)
            .query_async(&mut con)
            .await
            .unwrap();
        n += fields
            .keys()
            .filter_map(|f| f.strip_prefix("h:"))
            .filter(|instance| {
                fields
                    .get(&format!("x:{instance}"))
                    .and_then(|x| x.parse::<i64>().ok())
                    .is_some_and(|x| x > now_ms)
            })
            .count();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_gateways_share_one_budget_and_a_killed_one_costs_no_overrun() {
    let Some(redis) = RedisServer::start("three_gateways_share_one_budget") else {
        return;
    };
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let (mut instances, gateways) = start_three(&mock, &redis);

    // A first burst: 150 concurrent calls against a budget that covers
    // about a fifth of them.
    let first = run(&gateways, 150, || {}).await;
    let billed = mock.stats().billed_tokens;
    eprintln!(
        "three gateways: {} served, {} refused, {billed} of {LIMIT} tokens billed",
        first.served, first.refused
    );
    assert!(billed <= LIMIT, "the provider billed {billed} > {LIMIT}");
    assert_eq!(first.unreachable, 0);
    assert_eq!(first.served + first.refused, 150);
    assert!(first.refused > 0, "the budget refused nothing");
    // Exact, not merely safe: most of the budget went to calls (each
    // instance alone would have let the whole budget through).
    assert!(
        billed >= LIMIT / 2,
        "only {billed} of {LIMIT} billed: leases were kept from callers"
    );
    assert_eq!(
        mock.stats().total_requests as usize,
        first.served,
        "a refused call reached the provider"
    );

    // Idle leases go back to the server within a few seconds.
    support::wait_for("idle leases given back", async || holds(&redis).await == 0).await;
    for c in &mut instances {
        assert!(c.is_running());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_instance_lease_expires_and_the_budget_stays_exact() {
    let Some(redis) = RedisServer::start("a_killed_instance_lease_expires") else {
        return;
    };
    let mock = MockProvider::start(MockConfig {
        latency: Duration::from_millis(150),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (instances, gateways) = start_three(&mock, &redis);
    let instances = Arc::new(std::sync::Mutex::new(instances));
    let killer = Arc::clone(&instances);
    // SIGKILL the third instance halfway, calls of its own in flight.
    let outcome = run(&gateways, 150, move || killer.lock().unwrap()[2].kill()).await;
    let billed = mock.stats().billed_tokens;
    eprintln!(
        "one of three killed mid-run: {} served, {} refused, {} unreachable, {billed} of {LIMIT} tokens billed",
        outcome.served, outcome.refused, outcome.unreachable
    );
    assert!(billed <= LIMIT, "the provider billed {billed} > {LIMIT}");
    assert!(
        outcome.unreachable > 0,
        "the killed instance was still called"
    );
    assert!(outcome.refused > 0);
    // Within the TTL (3 s) the dead instance's hold leaves the server, and
    // the living give theirs back when idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    support::wait_for("every hold gone", async || holds(&redis).await == 0).await;
    // The budget is still exact after it: what the dead instance held is
    // booked as spent (it may have been billed), never handed out again;
    // the survivors get what is left, and no more.
    let again = run(&gateways[..2], 60, || {}).await;
    assert!(again.refused > 0);
    let billed = mock.stats().billed_tokens;
    assert!(billed <= LIMIT, "the provider billed {billed} > {LIMIT}");
    drop(instances);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_mid_run_lets_nothing_through_unaccounted() {
    let Some(redis) = RedisServer::start_own(
        "a_redis_restart_mid_run",
        ServerOptions {
            persistent: true,
            ..ServerOptions::default()
        },
    ) else {
        return;
    };
    let mock = MockProvider::start(MockConfig {
        latency: Duration::from_millis(100),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (_instances, gateways) = start_three(&mock, &redis);
    let redis = Arc::new(std::sync::Mutex::new(redis));
    let restarter = Arc::clone(&redis);
    let outcome = run(&gateways, 150, move || restarter.lock().unwrap().restart()).await;
    let billed = mock.stats().billed_tokens;
    eprintln!(
        "redis restarted mid-run: {} served, {} refused, {billed} of {LIMIT} tokens billed",
        outcome.served, outcome.refused
    );
    assert!(billed <= LIMIT, "the provider billed {billed} > {LIMIT}");
    assert_eq!(outcome.unreachable, 0);
    assert!(outcome.refused > 0);
    assert!(outcome.served > 0);
}

/// Far from the limit, a burst of concurrent calls on instances holding no
/// lease yet is all served: calls short of lease wait for one exchange and
/// add their need to the next, instead of being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_far_from_the_limit_is_all_served() {
    let Some(redis) = RedisServer::start("a_burst_far_from_the_limit") else {
        return;
    };
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let (_instances, gateways) = start_three_with(&mock, &redis, 1_000_000);
    let outcome = run(&gateways, 150, || {}).await;
    assert_eq!(outcome.refused, 0);
    assert_eq!(outcome.served, 150);
}

/// `tollgate_<name> VALUE` from a Prometheus exposition.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_exchanges_with_the_shared_ledger_are_in_metrics() {
    let Some(redis) = RedisServer::start("exchanges_in_metrics") else {
        return;
    };
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let envs = [("TEST_GATEWAY_OPENAI_KEY", "sk-test-provider")];
    let c = Collector::start_full(&config(&mock, &redis, LIMIT), &[], &envs);
    let gateway = format!("http://{}", c.gateway.expect("the gateway is listening"));
    let http = reqwest::Client::new();
    for n in 0..5 {
        let (status, body) = chat(&http, &gateway, n).await.expect("reachable");
        assert_eq!(status, 200, "{body}");
    }
    let text = c.metrics().await;
    // The first call had no lease: it waited for one exchange at least.
    assert!(
        metric(&text, "tollgate_ledger_exchanges_total") >= 1,
        "{text}"
    );
    assert!(
        metric(&text, "tollgate_ledger_short_exchanges_total") >= 1,
        "{text}"
    );
    assert!(
        metric(&text, "tollgate_ledger_requests_total")
            >= metric(&text, "tollgate_ledger_exchanges_total"),
        "{text}"
    );
    assert_eq!(
        metric(&text, "tollgate_ledger_exchange_failures_total"),
        0,
        "{text}"
    );
    assert_eq!(metric(&text, "tollgate_ledger_shared_down"), 0, "{text}");
}
