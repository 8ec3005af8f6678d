//! End to end through Kafka: one ingest instance produces what it receives
//! over OTLP to a topic keyed by project; two process instances in one
//! consumer group write ClickHouse. 100k calls across 50 projects arrive
//! exactly once, even when one process instance is killed mid-run, and the
//! budget counters of the projects it owned continue on the survivor from
//! what was stored (no threshold is reported twice, none is missed).
//!
//! Real components: the tansu broker and the ClickHouse engine (chdb)
//! behind the test server, started on loopback by the test.
//!
//! After the kill a replacement instance joins, as an orchestrator would
//! start one: tansu 0.6 drops a member whose session timed out but then
//! hands the survivor its previous assignment again (it keeps the group's
//! generation), so without a join the dead member's partitions would sit
//! unowned. With Kafka itself the survivor alone takes them over.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use support::{ClickhouseServer, Collector, KafkaBroker, otlp};

const PROJECTS: usize = 50;
const CALLS: usize = 100_000;
const PER_REQUEST: usize = 500;
const TOKENS_PER_CALL: u64 = 10;
/// Each project gets 2,000 calls = 20,000 tokens: over this budget once.
const BUDGET: u64 = 15_000;

fn rules() -> String {
    format!(
        r#"
[[rules]]
id = "project-daily"
type = "budget"
metric = "tokens"
limit = {BUDGET}
scope = ["project"]
window = "day"
alert_at = [0.5, 1.0]
action = "alert"
"#
    )
}

/// Request `r`: calls `r*PER_REQUEST ..`, round-robin over the projects.
fn request(r: usize) -> Vec<u8> {
    otlp::calls_now(
        r * PER_REQUEST..(r + 1) * PER_REQUEST,
        TOKENS_PER_CALL,
        |i| {
            vec![otlp::string(
                "tollgate.project",
                &format!("p{:02}", i % PROJECTS),
            )]
        },
    )
}

async fn count(server: &ClickhouseServer, sql: &str) -> u64 {
    server.query(sql).await.trim().parse().unwrap()
}

/// The calls not stored, as `index (project)`, to tell a lost Kafka
/// message from a row lost after it was consumed.
async fn missing(server: &ClickhouseServer) -> String {
    let stored: std::collections::HashSet<String> = server
        .query("SELECT span_id FROM kafka_e2e.calls")
        .await
        .lines()
        .map(str::to_owned)
        .collect();
    (0..CALLS)
        .filter(|i| !stored.contains(&hex((*i as u64 + 1).to_be_bytes())))
        .map(|i| format!("{i} (p{:02})", i % PROJECTS))
        .collect::<Vec<_>>()
        .join(", ")
}

fn hex(bytes: [u8; 8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An instance's Kafka and pipeline counters.
async fn kafka_metrics(c: &Collector) -> String {
    c.metrics()
        .await
        .lines()
        .filter(|l| {
            !l.starts_with('#') && (l.starts_with("tollgate_kafka") || l.contains("duplicates"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_arrive_exactly_once_across_a_killed_process_instance() {
    let test = "calls_arrive_exactly_once_across_a_killed_process_instance";
    let Some(broker) = KafkaBroker::start(test) else {
        return;
    };
    let Some(server) = ClickhouseServer::start(test) else {
        return;
    };
    let storage = server.storage("kafka_e2e");
    let topic = "calls-e2e";
    let process = format!("{}{}", broker.kafka_toml("process", topic, 8), rules());
    // Process instances first, so the group is formed before traffic.
    let survivor = Collector::start_with_storage(Some(&storage), &process, &[], &[]);
    let mut victim = Collector::start_with_storage(Some(&storage), &process, &[], &[]);
    let mut replacement = None;
    let ingest = Collector::start_with_storage(
        Some(&storage),
        &broker.kafka_toml("ingest", topic, 8),
        &[],
        &[],
    );
    // Wait until both members share the partitions.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(survivor
        .metrics()
        .await
        .contains("tollgate_kafka_rebalances_total{kind=\"assign\"}")
        && victim
            .metrics()
            .await
            .contains("tollgate_kafka_rebalances_total{kind=\"assign\"}"))
    {
        assert!(
            Instant::now() < deadline,
            "no partitions assigned:\n{}",
            survivor.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let requests = CALLS / PER_REQUEST;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/traces", ingest.http_url());
    for r in 0..requests {
        if r == requests * 2 / 5 {
            // Let the victim store part of its share, then kill it between
            // a write and its offset commit as likely as anywhere else.
            let deadline = Instant::now() + Duration::from_secs(60);
            while count(&server, "SELECT count() FROM kafka_e2e.calls").await < 20_000 {
                assert!(
                    Instant::now() < deadline,
                    "nothing stored:\n{}",
                    victim.stderr()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            victim.kill();
            // The broker notices the missing heartbeats (session timeout).
            let revokes = |m: &str| {
                m.lines()
                    .find(|l| l.starts_with("tollgate_kafka_rebalances_total{kind=\"revoke\"}"))
                    .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let before = revokes(&survivor.metrics().await);
            let deadline = Instant::now() + Duration::from_secs(30);
            while revokes(&survivor.metrics().await) == before {
                assert!(Instant::now() < deadline, "no rebalance after the kill");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            replacement = Some(Collector::start_with_storage(
                Some(&storage),
                &process,
                &[],
                &[],
            ));
        }
        let body = request(r);
        // The ingest instance answers only after Kafka acknowledged every call.
        let status = loop {
            let status = client
                .post(&url)
                .header("content-type", "application/x-protobuf")
                .body(body.clone())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            if status != 503 {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(status, 200, "request {r}: {}", ingest.stderr());
    }

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let stored = count(&server, "SELECT count() FROM kafka_e2e.calls").await;
        if stored >= CALLS as u64 {
            break;
        }
        if Instant::now() >= deadline {
            panic!(
                "{stored} of {CALLS} calls stored; missing: {}\nsurvivor:\n{}\n{}\nreplacement:\n{}\n{}\nbroker:\n{}",
                missing(&server).await,
                survivor.stderr(),
                kafka_metrics(&survivor).await,
                replacement
                    .as_ref()
                    .map(Collector::stderr)
                    .unwrap_or_default(),
                match &replacement {
                    Some(r) => kafka_metrics(r).await,
                    None => String::new(),
                },
                broker.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Give a late duplicate the chance to land before counting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let totals = server
        .query("SELECT count(), uniqExact(span_id), uniqExact(project) FROM kafka_e2e.calls")
        .await;
    assert_eq!(totals.trim(), format!("{CALLS}\t{CALLS}\t{PROJECTS}"));
    let per_project = server
        .query("SELECT min(c), max(c) FROM (SELECT project, count() AS c FROM kafka_e2e.calls GROUP BY project)")
        .await;
    let share = CALLS / PROJECTS;
    assert_eq!(per_project.trim(), format!("{share}\t{share}"));

    // The survivor took over the victim's partitions and rebuilt counters.
    let metrics = survivor.metrics().await;
    assert!(
        metrics.contains("tollgate_kafka_rebalances_total{kind=\"revoke\"}"),
        "{metrics}"
    );

    // Budgets stay correct: each project crossed 50 % and 100 % exactly
    // once, at the call that took it there, and went over its limit once,
    // at the next call (threshold NULL: the limit-exceeded event).
    let events = server
        .query(
            "SELECT threshold, count(), uniqExact(scope), min(used), max(used) \
             FROM kafka_e2e.rule_events WHERE rule_id = 'project-daily' \
             GROUP BY threshold ORDER BY threshold",
        )
        .await;
    let half = BUDGET / 2;
    let over = BUDGET + TOKENS_PER_CALL;
    assert_eq!(
        events.trim(),
        format!(
            "0.5\t{PROJECTS}\t{PROJECTS}\t{half}\t{half}\n\
             1\t{PROJECTS}\t{PROJECTS}\t{BUDGET}\t{BUDGET}\n\
             \\N\t{PROJECTS}\t{PROJECTS}\t{over}\t{over}"
        ),
        "survivor:\n{}",
        survivor.stderr()
    );
}

async fn blocked(c: &Collector, project: &str) -> bool {
    let (status, state) = c.get(&format!("/v1/enforcement?project={project}")).await;
    assert_eq!(status, 200, "{state}");
    state["blocked"].as_bool().unwrap()
}

async fn wait_blocked(c: &Collector, project: &str, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while blocked(c, project).await != want {
        assert!(
            Instant::now() < deadline,
            "{project} never became blocked={want}:\n{}",
            c.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A block is decided where the project's counters live (a process
/// instance) but an agent may watch any instance: blocks and lifts travel
/// through `<topic>.enforcement` to every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_decided_on_one_instance_is_seen_and_lifted_on_every_instance() {
    let test = "a_block_decided_on_one_instance_is_seen_and_lifted_on_every_instance";
    let Some(broker) = KafkaBroker::start(test) else {
        return;
    };
    let admin = "admin-token-of-the-kafka-block-test";
    let rule = r#"
[[rules]]
id = "kb-daily"
type = "budget"
metric = "tokens"
limit = 100
scope = ["project"]
window = "day"
action = "block"
"#;
    let topic = "calls-blocks";
    let process = Collector::start(&format!(
        "[admin]\ntoken = \"{admin}\"\n{}{rule}",
        broker.kafka_toml("process", topic, 2)
    ));
    let ingest = Collector::start(&format!(
        "[admin]\ntoken = \"{admin}\"\n{}",
        broker.kafka_toml("ingest", topic, 2)
    ));
    assert!(!blocked(&ingest, "kb").await);
    for id in 1..=3 {
        ingest.send_tokens(id, "kb", 60).await;
    }
    // Decided on the process instance, seen on the ingest instance.
    wait_blocked(&process, "kb", true).await;
    wait_blocked(&ingest, "kb", true).await;
    assert!(!blocked(&ingest, "other").await);

    // Lifted through the ingest instance's admin API: lifted everywhere.
    let status = reqwest::Client::new()
        .delete(format!(
            "{}/admin/v1/enforcement?project=kb",
            ingest.api_url()
        ))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    wait_blocked(&process, "kb", false).await;
    assert!(!blocked(&ingest, "kb").await);
}

/// The test broker itself: a consumer resuming from an offset committed in
/// the middle of a record batch gets the rest of that batch (Kafka returns
/// the batch holding the offset). The kill test above depends on it: the
/// survivor and the replacement resume from wherever the last commit was.
#[tokio::test]
async fn the_broker_resumes_a_consumer_in_the_middle_of_a_record_batch() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{Message, Offset, TopicPartitionList};

    let test = "the_broker_resumes_a_consumer_in_the_middle_of_a_record_batch";
    let Some(broker) = KafkaBroker::start(test) else {
        return;
    };
    let topic = "mid-batch";
    let config = |extra: &[(&str, &str)]| {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", broker.brokers());
        for (k, v) in extra {
            c.set(*k, *v);
        }
        c
    };
    let admin: AdminClient<_> = config(&[]).create().unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    // 100 messages queued at once, sent as one record batch.
    let producer: BaseProducer = config(&[("linger.ms", "500"), ("batch.num.messages", "1000")])
        .create()
        .unwrap();
    for i in 0..100 {
        let payload = i.to_string();
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(0)
                    .key("k")
                    .payload(&payload),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let consumer = |group: &str| -> BaseConsumer {
        let c: BaseConsumer = config(&[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
        ])
        .create()
        .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Stored).unwrap();
        c.assign(&tpl).unwrap();
        c
    };
    let next = |c: &BaseConsumer| -> (i64, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no message");
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                let m = m.unwrap();
                let payload = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                return (m.offset(), payload);
            }
        }
    };

    let first = consumer("resume");
    for want in 0..30 {
        assert_eq!(next(&first), (want, want.to_string()));
    }
    let mut committed = TopicPartitionList::new();
    committed
        .add_partition_offset(topic, 0, Offset::Offset(30))
        .unwrap();
    first.commit(&committed, CommitMode::Sync).unwrap();
    drop(first);

    let again = consumer("resume");
    for want in 30..100 {
        assert_eq!(next(&again), (want, want.to_string()));
    }
}
