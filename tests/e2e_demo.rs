//! End to end: the README's run command (`tollgate serve --demo`) shows
//! non-zero requests, tokens and cost through `tollgate usage` within 30 s.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use support::Collector;

/// The sum of column `k` over a usage answer's rows.
fn sum(usage: &serde_json::Value, k: &str) -> f64 {
    usage["rows"].as_array().map_or(0.0, |rows| {
        rows.iter().map(|r| r[k].as_f64().unwrap_or(0.0)).sum()
    })
}

/// The projects a usage answer names.
fn projects(usage: &serde_json::Value) -> std::collections::BTreeSet<&str> {
    usage["rows"]
        .as_array()
        .map_or_else(Default::default, |rows| {
            rows.iter().filter_map(|r| r["project"].as_str()).collect()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_demo_shows_usage_within_30_seconds() {
    let started = Instant::now();
    let mut c = Collector::start_full("", &["--demo"], &[]);
    let usage = loop {
        let out = c.usage_cli(&["--by", "project,model", "--since", "1h", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        // Until the demo's traffic reached several projects: the first
        // groups can all come from its first few apps.
        if v["rows"].as_array().is_some_and(|r| r.len() >= 10)
            && projects(&v).len() >= 5
            && sum(&v, "requests") >= 100.0
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
    assert!(sum(&usage, "requests") >= 100.0, "{usage}");
    assert!(
        sum(&usage, "input_tokens") > 0.0 && sum(&usage, "output_tokens") > 0.0,
        "{usage}"
    );
    assert!(sum(&usage, "cost_usd") > 0.0, "{usage}");
    // Several orgs' projects and models, one self-hosted model left unpriced.
    let projects = projects(&usage);
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
