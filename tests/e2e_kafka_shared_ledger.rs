//! End to end: a budget wider than one project (an org across twelve
//! projects) on the Kafka path. Three process instances each own a share
//! of the topic's partitions, so each counts a share of the org's calls;
//! with `[ledger] type = "redis"` they report that spend into one shared
//! counter, and each threshold is crossed once, by whichever instance's
//! exchange moved the org's spend past it: one event per threshold, at the
//! org's spend, and the org blocked once it is over its limit.
//!
//! Real components: the tansu broker, the ClickHouse engine (chdb) behind
//! the test server, Redis, the `tollgate` binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use support::{ClickhouseServer, Collector, KafkaBroker, otlp};
use tollgate_redis::testing::RedisServer;

const PROJECTS: usize = 12;
const CALLS: usize = 1_200;
const PER_REQUEST: usize = 40;
const TOKENS_PER_CALL: u64 = 10;
/// The org spends 12,000 tokens: over this limit once.
const LIMIT: u64 = 10_000;

fn rules() -> String {
    format!(
        r#"
[[rules]]
id = "org-daily"
type = "budget"
metric = "tokens"
limit = {LIMIT}
scope = ["org"]
window = "day"
alert_at = [0.3, 0.6, 0.9]
action = "block"
"#
    )
}

fn ledger(redis: &RedisServer) -> String {
    let r = redis.config();
    format!(
        "[ledger]\ntype = \"redis\"\n[ledger.redis]\nurl = \"{}\"\nkey_prefix = \"{}\"\n",
        r.url, r.key_prefix
    )
}

/// Request `r`: calls `r*PER_REQUEST ..`, round-robin over the projects of
/// one org.
fn request(r: usize) -> Vec<u8> {
    otlp::calls_now(
        r * PER_REQUEST..(r + 1) * PER_REQUEST,
        TOKENS_PER_CALL,
        |i| {
            vec![
                otlp::string("tollgate.org", "acme"),
                otlp::string("tollgate.project", &format!("p{:02}", i % PROJECTS)),
            ]
        },
    )
}

async fn count(server: &ClickhouseServer, sql: &str) -> u64 {
    server.query(sql).await.trim().parse().unwrap()
}

async fn assigned(c: &Collector) -> bool {
    c.metrics()
        .await
        .contains("tollgate_kafka_rebalances_total{kind=\"assign\"}")
}

async fn blocked(c: &Collector, org: &str) -> bool {
    let (status, state) = c
        .get(&format!("/v1/enforcement?org={org}&project=p00"))
        .await;
    assert_eq!(status, 200, "{state}");
    state["blocked"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_budget_across_three_process_instances_is_exact() {
    let test = "an_org_budget_across_three_process_instances_is_exact";
    let Some(broker) = KafkaBroker::start(test) else {
        return;
    };
    let Some(server) = ClickhouseServer::start(test) else {
        return;
    };
    let Some(redis) = RedisServer::start(test) else {
        return;
    };
    let storage = server.storage("kafka_org");
    let topic = "calls-org";
    let process = format!(
        "{}{}{}",
        broker.kafka_toml("process", topic, 6),
        ledger(&redis),
        rules()
    );
    let processes: Vec<Collector> = (0..3)
        .map(|_| Collector::start_with_storage(Some(&storage), &process, &[], &[]))
        .collect();
    let ingest = Collector::start_with_storage(
        Some(&storage),
        &broker.kafka_toml("ingest", topic, 6),
        &[],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    for p in &processes {
        while !assigned(p).await {
            assert!(
                Instant::now() < deadline,
                "no partitions assigned:\n{}",
                p.stderr()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let client = reqwest::Client::new();
    let url = format!("{}/v1/traces", ingest.http_url());
    for r in 0..CALLS / PER_REQUEST {
        let status = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(request(r))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while count(&server, "SELECT count() FROM kafka_org.calls").await < CALLS as u64 {
        assert!(
            Instant::now() < deadline,
            "calls not all stored:\n{}",
            processes[0].stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The org's calls were counted on several instances (its projects are
    // spread over the partitions by key).
    let mut counting = 0;
    for p in &processes {
        if p.metrics()
            .await
            .lines()
            .any(|l| l.starts_with("tollgate_ledger_exchanges_total") && !l.ends_with(" 0"))
        {
            counting += 1;
        }
    }
    assert!(counting >= 2, "{counting} instance(s) reported spend");

    // One event per threshold and one for the limit, each at the org's
    // spend (not an instance's third of it): the exchange that crossed a
    // mark carried at most one batch of one instance, past the mark.
    let deadline = Instant::now() + Duration::from_secs(30);
    let query = "SELECT threshold, count(), min(used), max(used) \
                 FROM kafka_org.rule_events WHERE rule_id = 'org-daily' \
                 GROUP BY threshold ORDER BY threshold";
    let events = loop {
        let events = server.query(query).await;
        if events.lines().count() >= 4 || Instant::now() >= deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rows: Vec<(String, u64, f64, f64)> = events
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_owned(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    let marks: Vec<(&str, f64)> = vec![
        ("0.3", 0.3 * LIMIT as f64),
        ("0.6", 0.6 * LIMIT as f64),
        ("0.9", 0.9 * LIMIT as f64),
        ("\\N", LIMIT as f64 + 1.0),
    ];
    assert_eq!(rows.len(), marks.len(), "{events}");
    for ((threshold, n, min, max), (want, mark)) in rows.iter().zip(&marks) {
        assert_eq!(threshold, want, "{events}");
        assert_eq!(*n, 1, "one event for {want}:\n{events}");
        assert_eq!(min, max);
        assert!(
            *min >= *mark && *min < *mark + (PER_REQUEST as u64 * TOKENS_PER_CALL * 10) as f64,
            "{want} reported at {min} tokens, not at the org's spend:\n{events}"
        );
    }

    // The org is blocked everywhere: decided on one process instance,
    // shared through `<topic>.enforcement`.
    for c in std::iter::once(&ingest).chain(&processes) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !blocked(c, "acme").await {
            assert!(
                Instant::now() < deadline,
                "the org was never blocked:\n{}",
                c.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(!blocked(&ingest, "other").await);
}
