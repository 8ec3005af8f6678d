//! The ledger under a million scopes: a span from a new `user.id` each,
//! with a per-user monthly block rule. Counters stay within
//! `ledger.max_counters` by eviction, the process within its memory
//! ceiling, and the budgets of users that keep sending stay exact — also
//! for users whose counters were evicted between their calls (read back
//! from the store on their next call).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use support::{Collector, otlp, wait_for};

const LIMIT_MIB: u64 = 384;
const MAX_COUNTERS: usize = 20_000;
const REQUESTS: usize = 1_000;
const SPANS_PER_REQUEST: usize = 1_000;
/// Users in every request, 7 tokens a call: over 1,000 at their 143rd call.
const STEADY: usize = 10;
/// Users in requests 100, 500 and 900 only, 400 tokens a call: over 1,000
/// at their third call, after about 400,000 new users each time.
const RETURNING: usize = 40;
const RETURN_AT: [usize; 3] = [100, 500, 900];

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Request `r`: random users, then the steady ones, then the returning ones
/// in their requests.
fn request(r: usize) -> Vec<u8> {
    let mut users: Vec<(String, i64)> = Vec::with_capacity(SPANS_PER_REQUEST);
    for s in 0..STEADY {
        users.push((format!("steady-{s}"), 7));
    }
    if RETURN_AT.contains(&r) {
        for u in 0..RETURNING {
            users.push((format!("returning-{u}"), 400));
        }
    }
    let mut x = (r as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    while users.len() < SPANS_PER_REQUEST {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        users.push((format!("random-{x:016x}"), 1));
    }
    let end = now_nanos();
    let spans = users
        .into_iter()
        .enumerate()
        .map(|(i, (user, tokens))| {
            let mut span = otlp::span(
                ((r * SPANS_PER_REQUEST + i) as u64 + 1)
                    .to_be_bytes()
                    .to_vec(),
                vec![
                    otlp::string("gen_ai.request.model", "gpt-4o-mini"),
                    otlp::string("gen_ai.system", "openai"),
                    otlp::int("gen_ai.usage.input_tokens", tokens),
                    otlp::string("tollgate.project", "crowd"),
                    otlp::string("user.id", &user),
                ],
            );
            // A trace of its own per call.
            let mut trace = [0u8; 16];
            trace[..8].copy_from_slice(&(r as u64 + 1).to_be_bytes());
            trace[8..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            span.trace_id = trace.to_vec();
            span.start_time_unix_nano = end - 1_000_000;
            span.end_time_unix_nano = end;
            span
        })
        .collect();
    otlp::request(spans).encode_to_vec()
}

/// Posts until accepted, as exporters retry 503 and 429.
async fn send(client: &reqwest::Client, url: &str, body: Vec<u8>) {
    for _ in 0..600 {
        let status = client
            .post(url)
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .send()
            .await
            .map(|r| r.status().as_u16());
        match status {
            Ok(200) => return,
            Ok(503 | 429) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(other) => panic!("export answered {other}"),
        }
    }
    panic!("export not accepted within a minute of retries");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_million_users_stay_under_the_ceiling_and_budgets_stay_exact() {
    let c = Collector::start(&format!(
        r#"
[memory]
limit_mib = {LIMIT_MIB}

[ledger]
max_counters = {MAX_COUNTERS}

[[rules]]
id = "per-user-monthly"
type = "budget"
metric = "tokens"
limit = 1000
scope = ["user"]
window = "month"
action = "block"
"#
    ));
    let url = format!("{}/v1/traces", c.http_url());
    let client = reqwest::Client::new();
    // Four senders at a time; the returning users' requests are sent alone,
    // after everything before them was accepted.
    let mut r = 0;
    while r < REQUESTS {
        let wave: Vec<usize> = (r..(r + 4).min(REQUESTS))
            .take_while(|i| *i == r || !RETURN_AT.contains(i))
            .collect();
        r += wave.len();
        let sends = wave.into_iter().map(|i| {
            let (client, url) = (client.clone(), url.clone());
            async move { send(&client, &url, request(i)).await }
        });
        futures::future::join_all(sends).await;
        if RETURN_AT.contains(&r) {
            // Stored before the returning users come back.
            let want = (r * SPANS_PER_REQUEST) as f64;
            wait_for("the calls so far stored", async || {
                metric(&c.metrics().await, "tollgate_store_rows_written_total") >= want
            })
            .await;
        }
    }
    let total = (REQUESTS * SPANS_PER_REQUEST) as f64;
    wait_for("a million calls stored", async || {
        metric(&c.metrics().await, "tollgate_store_rows_written_total") >= total
    })
    .await;

    let m = c.metrics().await;
    let counters = metric(&m, "tollgate_ledger_counters");
    let evictions = metric(&m, "tollgate_ledger_evictions_total");
    let rebuilds = metric(&m, "tollgate_ledger_rebuilds_total");
    let peak_mib = c.peak_rss_kib() / 1024;
    eprintln!(
        "counters {counters}, evictions {evictions}, rebuilds {rebuilds}, peak {peak_mib} MiB, \
         rebuild time {} s over {} rebuilds, refused over the memory ceiling {}",
        metric(&m, "tollgate_ledger_rebuild_seconds_sum"),
        metric(&m, "tollgate_ledger_rebuild_seconds_count"),
        metric(&m, "tollgate_memory_refused_over_limit_total"),
    );
    assert!(counters <= MAX_COUNTERS as f64, "{counters} counters");
    assert!(evictions >= 950_000.0, "{evictions} evictions");
    // Each returning user's counter, evicted twice, was read back twice.
    assert!(rebuilds >= (RETURNING * 2) as f64, "{rebuilds} rebuilds");
    assert!(
        peak_mib <= LIMIT_MIB,
        "peak resident memory {peak_mib} MiB against a {LIMIT_MIB} MiB ceiling"
    );

    // Exact budgets: the limit is passed once per user, at the exact usage.
    let (status, events) = c
        .get("/v1/events?rule=per-user-monthly&kind=limit_exceeded&limit=1000&since=1d")
        .await;
    assert_eq!(status, 200, "{events}");
    let events = events["rows"].as_array().cloned().unwrap_or_default();
    let used_by = |scope: &str| -> Vec<f64> {
        events
            .iter()
            .filter(|e| e["scope"] == scope)
            .map(|e| e["used"].as_f64().unwrap())
            .collect()
    };
    for s in 0..STEADY {
        assert_eq!(
            used_by(&format!("user=steady-{s}")),
            vec![1001.0],
            "{events:?}"
        );
    }
    for u in 0..RETURNING {
        assert_eq!(
            used_by(&format!("user=returning-{u}")),
            vec![1200.0],
            "{events:?}"
        );
    }
    assert_eq!(events.len(), STEADY + RETURNING, "{events:?}");
}
