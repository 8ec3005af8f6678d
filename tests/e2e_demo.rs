//! End to end: the README's run command (`tollgate serve --demo`) shows
//! non-zero requests, tokens and cost through `tollgate usage` within 30 s.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use support::Collector;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_demo_shows_usage_within_30_seconds() {
    let started = Instant::now();
    let mut c = Collector::start_full("", &["--demo"], &[]);
    let usage = loop {
        let out = c.usage_cli(&["--by", "project,model", "--since", "1h", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        // Until the demo's traffic reached several projects: the first
        // groups can all come from its first few apps.
        let projects = v["rows"].as_array().map_or(0, |rows| {
            rows.iter()
                .filter_map(|r| r["project"].as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        });
        let requests: f64 = v["rows"].as_array().map_or(0.0, |rows| {
            rows.iter().filter_map(|r| r["requests"].as_f64()).sum()
        });
        if v["rows"].as_array().is_some_and(|r| r.len() >= 10) && projects >= 5 && requests >= 100.0
        {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no demo rows after 30 s: {v}\n{}",
            c.stderr()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let rows = usage["rows"].as_array().unwrap();
    let sum = |k: &str| {
        rows.iter()
            .map(|r| r[k].as_f64().unwrap_or(0.0))
            .sum::<f64>()
    };
    assert!(sum("requests") >= 100.0, "{usage}");
    assert!(
        sum("input_tokens") > 0.0 && sum("output_tokens") > 0.0,
        "{usage}"
    );
    assert!(sum("cost_usd") > 0.0, "{usage}");
    // Several orgs' projects and models, one self-hosted model left unpriced.
    let projects: std::collections::BTreeSet<_> =
        rows.iter().filter_map(|r| r["project"].as_str()).collect();
    assert!(projects.len() >= 5, "{projects:?}");
    assert!(
        rows.iter()
            .any(|r| r["unpriced_requests"].as_u64() > Some(0)),
        "{usage}"
    );

    // The readable table names its columns.
    let table = c.usage_cli(&["--by", "org", "--since", "1h"]);
    assert!(
        table.contains("ORG") && table.contains("acme") && table.contains("COST USD"),
        "{table}"
    );

    // Errors, streams and cache tokens are part of the demo traffic.
    let calls = c.calls(1000).await;
    assert!(calls.iter().any(|r| r["status"] == "error"));
    assert!(calls.iter().any(|r| r["stream"] == true));
    assert!(
        calls
            .iter()
            .any(|r| r["cache_read_tokens"].as_u64() > Some(0))
    );

    // SIGTERM: the demo stops first, the collector drains and exits cleanly.
    let exit = c.terminate();
    assert!(exit.success(), "{}", c.stderr());
    assert!(!c.stderr().contains("ExportError"), "{}", c.stderr());
}
