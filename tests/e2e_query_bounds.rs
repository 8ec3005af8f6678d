//! End to end: the query API stays within its bounds on a store large
//! enough to hurt. `since` is capped at the longest query range (answered
//! for that range, with a warning), a query past the per-query timeout is
//! stopped and answered 503 `query_timeout` (and stops using CPU), and
//! `/readyz` answers within 100 ms while several of the heaviest queries
//! (`since=100000w&by=user,session`) run. The same bounds hold on
//! ClickHouse (whose test server answers one query at a time, so readiness
//! under load is shown on the embedded store only).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{ClickhouseServer, Collector};

const DAY_NANOS: i64 = 86_400 * 1_000_000_000;

/// Rows of the heavy part of the store: each its own session, 20,000
/// users, spread over the last 300 days.
const LOAD_ROWS: i64 = 400_000;

/// Heavy queries sent at once: more than the store's readers (4), so some
/// also wait for a reader within their timeout.
const CONCURRENT_QUERIES: usize = 6;

/// Held by each test for its whole run: both load the machine's two cores,
/// and `/readyz` is timed against the collector's own queries only.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Writes `rows` calls straight into the running collector's store (the
/// OTLP path would take minutes to carry this many in a debug build): call
/// `x` of `project` starts `x * step` nanoseconds before `end`, with its
/// own session and one of `users` users.
fn fill(db: &std::path::Path, project: &str, rows: i64, end: i64, step: i64, users: i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1)
         INSERT INTO calls (start_unix_nanos, duration_nanos, trace_id, span_id, project,
             user_id, session_id, provider, operation, request_model, response_model, model,
             input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
             reasoning_tokens, cost_usd, cost_source, status, stream, mode, rules_fired,
             attempt, labels)
         SELECT ?2 - x * ?3, 1000000, printf('%032x', x), printf('%s%012x', ?4, x), ?4,
             'user-' || (x % ?5), ?4 || '-session-' || x, 'openai', 'chat', 'gpt-4o-mini',
             'gpt-4o-mini', 'gpt-4o-mini', 100, 10, 0, 0, 0, 0.0001, 'price_table', 'ok', 0,
             'observe', '[]', 0, '{}'
         FROM c",
        rusqlite::params![rows, end, step, project, users],
    )
    .unwrap();
}

/// CPU seconds the collector process has used so far (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_stays_fast_while_heavy_queries_run_and_overlong_ones_are_bounded() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut c = Collector::start_full(
        "",
        &[],
        &[
            ("TOLLGATE_API__QUERY_TIMEOUT", "1s"),
            ("TOLLGATE_STORAGE__READERS", "4"),
        ],
    );
    let now = now_nanos();

    // `since` past the longest range (400 days by default) is answered for
    // 400 days and says so: calls 500 days old are not counted.
    fill(&c.db_path(), "old", 3, now - 490 * DAY_NANOS, DAY_NANOS, 3);
    fill(&c.db_path(), "recent", 2, now, DAY_NANOS, 2);
    let (status, body) = c.get("/v1/usage?since=100000w&by=project").await;
    assert_eq!(status, 200, "{body}");
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{body}");
    assert_eq!(rows[0]["project"], "recent");
    assert_eq!(rows[0]["requests"], 2);
    let warning = body["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("since=100000w")
            && warning.contains("400d")
            && warning.contains("api.max_query_range"),
        "{warning}"
    );
    let (status, body) = c.get("/v1/events?since=100000w").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["warnings"][0].as_str().unwrap().contains("400d"),
        "{body}"
    );
    // Within the range: no warning, all of it counted.
    let (status, body) = c.get("/v1/usage?since=1000h").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("warnings").is_none(), "{body}");
    assert_eq!(body["rows"][0]["requests"], 2);
    // Other bounds of a query.
    let (status, body) = c.get("/v1/usage?by=user,session,model,project,route").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "bad_request");
    assert!(
        body["message"].as_str().unwrap().contains("at most 4"),
        "{body}"
    );
    let (status, body) = c.get("/v1/calls?limit=10001").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("10000"),
        "{body}"
    );

    // The heavy part: many users, each call its own session.
    let filled = Instant::now();
    fill(
        &c.db_path(),
        "load",
        LOAD_ROWS,
        now - 1_000_000_000,
        300 * DAY_NANOS / LOAD_ROWS,
        20_000,
    );
    eprintln!("{LOAD_ROWS} rows written in {:?}", filled.elapsed());

    let mut probes = Vec::new();
    let mut answered = Vec::new();
    for round in 0..3 {
        let (a, p) = heavy_queries_while_probing(&c, CONCURRENT_QUERIES, || {
            c.send_tokens(round, "live", 10)
        })
        .await;
        answered.extend(a);
        probes.extend(p);
    }

    // Every heavy query ran until the 1 s timeout stopped it (a reader
    // busy the whole time is waited for within the same timeout).
    assert_eq!(answered.len(), 3 * CONCURRENT_QUERIES);
    for (status, body, took) in &answered {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["error"], "query_timeout", "{body}");
        assert_eq!(body["timeout_seconds"], 1.0, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("1s query timeout") && message.contains("shorter `since`"),
            "{message}"
        );
        assert!(
            *took >= Duration::from_millis(950),
            "answered after {took:?}"
        );
        assert!(*took < Duration::from_secs(5), "answered after {took:?}");
    }
    let slowest = probes.iter().max().unwrap();
    eprintln!(
        "/readyz: {} probes while queries ran, slowest {slowest:?}",
        probes.len()
    );
    assert!(probes.len() >= 10, "only {} probes", probes.len());
    assert!(
        *slowest < Duration::from_millis(100),
        "/readyz took {slowest:?} while queries ran"
    );

    // Stopped queries stop using CPU: the collector is idle again.
    let before = cpu_seconds(c.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_seconds(c.pid()) - before;
    assert!(
        used < 0.3,
        "the collector used {used} CPU seconds in the second after its queries timed out"
    );

    let metrics = c.metrics().await;
    assert!(
        metrics.contains(&format!(
            "tollgate_api_query_timeouts_total{{endpoint=\"usage\"}} {}",
            3 * CONCURRENT_QUERIES
        )),
        "{metrics}"
    );
    // The store still answers narrower queries, and the calls that came in
    // meanwhile were stored.
    let (status, body) = c.get("/v1/usage?since=1h&project=live").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0]["requests"], 3, "{body}");

    // With the default 10 s timeout the same queries run to their end,
    // seconds each, and `/readyz` still answers within 100 ms meanwhile.
    assert!(c.terminate().success(), "{}", c.stderr());
    let data = c.dir.path().join("data");
    let patient = Collector::start_with_storage(
        Some(&format!("type = \"sqlite\"\npath = \"{}\"", data.display())),
        "",
        &[],
        &[],
    );
    let (answered, probes) =
        heavy_queries_while_probing(&patient, 4, || patient.send_tokens(9, "live", 10)).await;
    for (status, body, took) in &answered {
        assert_eq!(*status, 200, "{body}");
        // Every call of the store is its own (user, session) group; the
        // 1,000 most expensive come back.
        assert_eq!(body["rows"].as_array().unwrap().len(), 1000);
        assert!(body["warnings"][0].as_str().unwrap().contains("400d"));
        assert!(*took >= Duration::from_secs(1), "answered after {took:?}");
    }
    let slowest = probes.iter().max().unwrap();
    eprintln!(
        "/readyz: {} probes while 4 queries ran to their end ({:?} the longest), slowest {slowest:?}",
        probes.len(),
        answered.iter().map(|a| a.2).max().unwrap()
    );
    assert!(probes.len() >= 10, "only {} probes", probes.len());
    assert!(
        *slowest < Duration::from_millis(100),
        "/readyz took {slowest:?} while queries ran"
    );
}

/// Sends `n` of the heaviest usage queries at once, calls `meanwhile`, and
/// probes `/readyz` every 20 ms until they are answered (asserting each
/// probe is 200). Returns each query's status, body and time, and each
/// probe's time.
async fn heavy_queries_while_probing<F: Future<Output = ()>>(
    c: &Collector,
    n: usize,
    meanwhile: impl FnOnce() -> F,
) -> (Vec<(u16, serde_json::Value, Duration)>, Vec<Duration>) {
    let api = c.api_url();
    let heavy = format!("{api}/v1/usage?since=100000w&by=user,session");
    let client = reqwest::Client::new();
    let queries: Vec<_> = (0..n)
        .map(|_| {
            let (client, heavy) = (client.clone(), heavy.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let r = client.get(&heavy).send().await.unwrap();
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap();
                (status, body, started.elapsed())
            })
        })
        .collect();
    // A client of its own, as a kubelet's probe is.
    let probe = reqwest::Client::new();
    let mut probes = Vec::new();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Rows keep coming in meanwhile.
    meanwhile().await;
    while !queries.iter().all(tokio::task::JoinHandle::is_finished) {
        let started = Instant::now();
        let r = probe.get(format!("{api}/readyz")).send().await.unwrap();
        let took = started.elapsed();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        probes.push(took);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answered = Vec::new();
    for q in queries {
        answered.push(q.await.unwrap());
    }
    (answered, probes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_caps_since_at_its_retention_and_stops_queries_at_the_timeout() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(server) = ClickhouseServer::start(
        "clickhouse_caps_since_at_its_retention_and_stops_queries_at_the_timeout",
    ) else {
        return;
    };
    let storage = format!("{}\nretention_days = 30", server.storage("tg_bounds"));
    let c = Collector::start_with_storage(
        Some(&storage),
        "",
        &[],
        &[("TOLLGATE_API__QUERY_TIMEOUT", "1s")],
    );
    // 10 million calls of the last hour, each its own session: grouping
    // them by user and session takes ClickHouse seconds here (4 million
    // took just under a second on a quiet machine).
    let rows = 10_000_000;
    server
        .query(&format!(
            "INSERT INTO tg_bounds.calls (time, start_unix_nanos, duration_nanos, trace_id,
                 span_id, project, user_id, session_id, provider, model, input_tokens,
                 output_tokens, cost_usd, cost_source, status, mode)
             SELECT t, toUnixTimestamp64Nano(t), 1000000, hex(number), hex(number), 'load',
                 concat('user-', toString(number % 20000)), concat('session-', toString(number)),
                 'openai', 'gpt-4o-mini', 100, 10, 0.0001, 'price_table', 'ok', 'observe'
             FROM (SELECT number, now64(9) - toIntervalMillisecond(number % 3600000) AS t
                   FROM numbers({rows}))"
        ))
        .await;

    // Totals read every row quickly; `since` is capped at the retention.
    let (status, body) = c.get("/v1/usage?since=100000w&project=load").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0]["requests"], rows, "{body}");
    let warning = body["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("since=100000w") && warning.contains("(30d, api.max_query_range)"),
        "{warning}"
    );

    // Grouped by user and session, the query runs into the 1 s timeout
    // (`max_execution_time` on the server, the client's own deadline).
    let started = Instant::now();
    let (status, body) = c.get("/v1/usage?since=100000w&by=user,session").await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "query_timeout", "{body}");
    assert_eq!(body["timeout_seconds"], 1.0, "{body}");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("tollgate_api_query_timeouts_total{endpoint=\"usage\"} 1"),
        "{metrics}"
    );
}
