//! The embedded store's write cost per row, without the network or decoding.
//!
//! Writes rows shaped like `bench/ingest`'s load (4 projects, 6 models of
//! 3 providers, 5,000 users, unique ids, calls that ended up to 3 s before
//! "now" with "now" moving at `--rate` rows per second, so the time
//! index sees the same out-of-order start times) into a fresh store in
//! batches, as the writer does, and prints CPU and wall time per row.
//!
//! ```text
//! cargo run --release -p tollgate-collector --example store_insert -- --rows 1000000
//! ```

use std::time::Instant;

use tollgate_collector::sinks::sqlite::SqliteStore;
use tollgate_collector::sinks::{Batch, Sink};
use tollgate_rules::{CallRecord, CallStatus, CostSource};

const PROJECTS: [(&str, &str); 4] = [
    ("support-bot", "support"),
    ("search-api", "search"),
    ("checkout-assistant", "checkout"),
    ("ingest-agent", "data-platform"),
];

/// (provider, request model, response model, response id prefix, server).
const MODELS: [(&str, &str, &str, &str, &str); 6] = [
    (
        "openai",
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
        "chatcmpl-",
        "api.openai.com",
    ),
    (
        "anthropic",
        "claude-3-5-haiku-20241022",
        "claude-3-5-haiku-20241022",
        "msg_",
        "api.anthropic.com",
    ),
    (
        "gcp.gemini",
        "gemini-2.5-flash",
        "gemini-2.5-flash",
        "resp-",
        "generativelanguage.googleapis.com",
    ),
    (
        "openai",
        "gpt-4.1-mini",
        "gpt-4.1-mini-2025-04-14",
        "chatcmpl-",
        "api.openai.com",
    ),
    (
        "anthropic",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "msg_",
        "api.anthropic.com",
    ),
    (
        "openai",
        "gpt-4o",
        "gpt-4o-2024-08-06",
        "chatcmpl-",
        "api.openai.com",
    ),
];

fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn record(i: u64, now_nanos: i64) -> CallRecord {
    let r = mix64(i + 1);
    let (app, project) = PROJECTS[(i / 100 % 4) as usize];
    let (provider, request, response, prefix, server) = MODELS[(r % 6) as usize];
    let failed = r % 50 == 7;
    let duration = 200_000_000 + (r >> 8) % 3_000_000_000;
    let ends_before = (r >> 20) % 3_000_000_000;
    let input = 200 + (r >> 12) % 7800;
    let output = 20 + (r >> 24) % 1180;
    CallRecord {
        start_unix_nanos: now_nanos - (ends_before + duration) as i64,
        duration_nanos: duration as i64,
        trace_id: format!("{:016x}{:016x}", mix64(i / 10 + 7), mix64(i / 10 + 9)),
        span_id: format!("{r:016x}"),
        request_id: (!failed).then(|| format!("{prefix}{:016x}{:016x}", r, mix64(r))),
        project: Some(project.into()),
        app: Some(app.into()),
        user: Some(format!("user-{}", 1 + (r >> 32) % 5000)),
        session: Some(format!("conv_{:012x}", mix64(i / 10) >> 16)),
        provider: Some(provider.into()),
        operation: Some("chat".into()),
        request_model: Some(request.into()),
        response_model: (!failed).then(|| response.into()),
        input_tokens: if failed { 0 } else { input },
        output_tokens: if failed { 0 } else { output },
        cache_read_tokens: if failed {
            0
        } else {
            input * ((r >> 40) % 80) / 100
        },
        cost_usd: Some(if failed { 0.0 } else { input as f64 * 1.5e-7 }),
        cost_source: CostSource::PriceTable,
        price_version: Some("2026-11-15".into()),
        status: if failed {
            CallStatus::Error
        } else {
            CallStatus::Ok
        },
        error_type: failed.then(|| "rate_limit_exceeded".into()),
        http_status: failed.then_some(429),
        finish_reason: (!failed).then(|| "stop".into()),
        upstream: Some(server.into()),
        ..Default::default()
    }
}

/// CPU time of this process's threads so far (the store writes on a thread
/// of its own), in nanoseconds (Linux; 0 elsewhere).
fn cpu_nanos() -> u64 {
    let Ok(threads) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    threads
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let rows = arg("--rows", 1_000_000);
    let batch_rows = arg("--batch", 25_000).max(1);
    let rate = arg("--rate", 130_000).max(1);
    let warmup = arg("--warmup", 100_000);
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path())?;
    let t0 = 1_764_000_000_000_000_000_i64;
    let mut written = 0_u64;
    let mut measured = (0_u64, 0_u64);
    let mut i = 0_u64;
    while written < warmup + rows {
        let n = batch_rows.min(warmup + rows - written);
        let calls: Vec<CallRecord> = (i..i + n)
            .map(|k| record(k, t0 + (k as i128 * 1_000_000_000 / rate as i128) as i64))
            .collect();
        i += n;
        let (cpu, wall) = (cpu_nanos(), Instant::now());
        store.write(Batch::new(calls, vec![])).await?;
        if written >= warmup {
            measured.0 += cpu_nanos() - cpu;
            measured.1 += wall.elapsed().as_nanos() as u64;
        }
        written += n;
    }
    let bytes = std::fs::metadata(store.path())?.len();
    println!(
        "rows {rows} (after {warmup} warm-up), batches of {batch_rows}: {:.3} us CPU / row, {:.3} us wall / row, file {:.1} MiB",
        measured.0 as f64 / rows as f64 / 1e3,
        measured.1 as f64 / rows as f64 / 1e3,
        bytes as f64 / (1 << 20) as f64,
    );
    Ok(())
}
