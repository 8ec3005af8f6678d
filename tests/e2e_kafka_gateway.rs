//! End to end: the inline gateway on a Kafka ingest instance. Its calls go
//! to the calls topic like OTLP calls and a process instance stores them,
//! sharing ClickHouse with it. Every gateway call is stored exactly once
//! (mode `gateway`), and counted once: by the gateway's engine, which
//! admitted and settled it and recorded the threshold it crossed, and not
//! again by the process instance, which counts only the OTLP calls.
//!
//! Real components: the tansu broker, the ClickHouse engine (chdb) behind
//! the test server, the `tollgate` binary; the provider is the shared mock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{ClickhouseServer, Collector, KafkaBroker};
use tollgate_mock_provider::{MockConfig, MockProvider};

const ADMIN: &str = "admin-token-of-the-kafka-gateway-test";
const PROVIDER_KEY: &str = "sk-kafka-gateway-provider-key";
/// Calls through the gateway.
const GATEWAY_CALLS: u64 = 10;
/// Calls of the same project reported over OTLP (counted by the process
/// instance).
const OTLP_CALLS: u64 = 6;
/// Requests in the day for the project: the gateway's 10 calls cross 50 %
/// (one event, on the gateway's instance). The process instance's 6 OTLP
/// calls cross nothing; had it counted the gateway's calls too (16 of 20),
/// it would cross 50 % and 75 % again.
const LIMIT: u64 = 2 * GATEWAY_CALLS;

fn rules() -> String {
    format!(
        r#"
[[rules]]
id = "gwk-requests"
type = "budget"
metric = "requests"
limit = {LIMIT}
scope = ["project"]
match = {{ project = "gwk" }}
window = "day"
alert_at = [0.5, 0.75]
action = "alert"
"#
    )
}

fn gateway_toml(mock: &MockProvider) -> String {
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
api_key_env = "TEST_KAFKA_GATEWAY_OPENAI_KEY"
"#,
        mock.base_url()
    )
}

async fn count(server: &ClickhouseServer, sql: &str) -> u64 {
    server.query(sql).await.trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_calls_through_kafka_are_stored_once_and_counted_once() {
    let test = "gateway_calls_through_kafka_are_stored_once_and_counted_once";
    let Some(broker) = KafkaBroker::start(test) else {
        return;
    };
    let Some(server) = ClickhouseServer::start(test) else {
        return;
    };
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let storage = server.storage("kafka_gw");
    let topic = "calls-gateway";
    let process = Collector::start_with_storage(
        Some(&storage),
        &format!(
            "[admin]\ntoken = \"{ADMIN}\"\n{}{}",
            broker.kafka_toml("process", topic, 4),
            rules()
        ),
        &[],
        &[],
    );
    let gateway = Collector::start_with_storage(
        Some(&storage),
        &format!(
            "{}{}{}",
            gateway_toml(&mock),
            broker.kafka_toml("ingest", topic, 4),
            rules()
        ),
        &[],
        &[("TEST_KAFKA_GATEWAY_OPENAI_KEY", PROVIDER_KEY)],
    );
    let gateway_url = format!(
        "http://{}",
        gateway.gateway.expect("the gateway is listening")
    );
    support::wait_for("the process instance's partitions", async || {
        process
            .metrics()
            .await
            .contains("tollgate_kafka_rebalances_total{kind=\"assign\"}")
    })
    .await;

    // A virtual key made on the gateway's instance, in the shared store.
    let created: Value = reqwest::Client::new()
        .post(format!("{}/admin/v1/keys", gateway.api_url()))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "kafka bot", "org": "acme", "project": "gwk"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().expect("a key").to_owned();

    let client = reqwest::Client::new();
    for i in 0..GATEWAY_CALLS {
        let r = client
            .post(format!("{gateway_url}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({
                "model": "gpt-4o-mini",
                "max_tokens": 20,
                "stream": i % 2 == 1,
                "messages": [{"role": "user", "content": "Hello through Kafka."}],
            }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!(status, 200, "call {i}: {body}\n{}", gateway.stderr());
    }
    for id in 1..=OTLP_CALLS {
        gateway.send_tokens(id, "gwk", 10).await;
    }

    // Every call stored, by the process instance, once.
    let all = GATEWAY_CALLS + OTLP_CALLS;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&server, "SELECT count() FROM kafka_gw.calls").await < all {
        assert!(
            Instant::now() < deadline,
            "calls not stored:\ngateway:\n{}\nprocess:\n{}\nbroker:\n{}",
            gateway.stderr(),
            process.stderr(),
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Give a late duplicate or a second event the chance to land.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stored = server
        .query(
            "SELECT mode, count(), uniqExact(span_id), sum(output_tokens > 0) \
             FROM kafka_gw.calls WHERE project = 'gwk' GROUP BY mode ORDER BY mode",
        )
        .await;
    assert_eq!(
        stored.trim(),
        format!(
            "gateway\t{GATEWAY_CALLS}\t{GATEWAY_CALLS}\t{GATEWAY_CALLS}\n\
             observe\t{OTLP_CALLS}\t{OTLP_CALLS}\t0"
        )
    );
    // The query API of either instance reads the same rows.
    let (status, calls) = process.get("/v1/calls?limit=100").await;
    assert_eq!(status, 200, "{calls}");
    let gateway_rows = calls["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["mode"] == "gateway")
        .count() as u64;
    assert_eq!(gateway_rows, GATEWAY_CALLS, "{calls}");

    // Counted once: the gateway's engine crossed 50 % at its last call
    // (one event, stored by the gateway's instance); the process instance,
    // counting only the OTLP calls, crossed nothing.
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(
        &server,
        "SELECT count() FROM kafka_gw.rule_events WHERE rule_id = 'gwk-requests'",
    )
    .await
        < 1
    {
        assert!(
            Instant::now() < deadline,
            "no rule event:\n{}",
            gateway.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = server
        .query(
            "SELECT threshold, used, count() FROM kafka_gw.rule_events \
             WHERE rule_id = 'gwk-requests' GROUP BY threshold, used ORDER BY threshold",
        )
        .await;
    assert_eq!(
        events.trim(),
        format!("0.5\t{GATEWAY_CALLS}\t1"),
        "gateway:\n{}\nprocess:\n{}",
        gateway.stderr(),
        process.stderr()
    );
    // The gateway's rows that reached the process instance carry the rule
    // the gateway saw fire.
    let fired = count(
        &server,
        "SELECT count() FROM kafka_gw.calls WHERE has(rules_fired, 'gwk-requests')",
    )
    .await;
    assert_eq!(fired, 1);
    assert_eq!(mock.stats().total_requests, GATEWAY_CALLS);
}

/// A process instance receives nothing: the gateway there is refused at
/// start-up with one line naming the fix.
#[test]
fn a_gateway_on_a_process_instance_is_refused_at_start_up() {
    let mock_url = "http://127.0.0.1:9";
    let config = format!(
        "[gateway]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\
         [[gateway.providers]]\nname = \"openai\"\nkind = \"openai_compatible\"\nbase_url = \"{mock_url}/v1\"\n\
         [kafka]\nbrokers = \"127.0.0.1:9\"\ntopic = \"t\"\nrole = \"process\"\n"
    );
    let failed = Collector::start_expecting_exit(&config, &[]);
    assert_eq!(failed.code, Some(2), "{}", failed.stderr);
    let line = failed.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("gateway.enabled"), "{line}");
    assert!(line.contains("kafka.role = \"ingest\""), "{line}");
}
