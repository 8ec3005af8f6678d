//! Bytes the pipeline's call identity holds per remembered call: fills a
//! `CallIdentity` with calls (one trace each, as most agents export, and
//! ten calls a trace) and reports the growth of the process's resident
//! memory per call and the time `sort` takes per call.
//!
//! `cargo run --release -p tollgate-collector --example identity_memory -- [CALLS_PER_TRACE]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Duration;

use tollgate_collector::pipeline::CallIdentity;
use tollgate_rules::CallRecord;

/// The allocator the `tollgate` binary runs on.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    const CALLS: u64 = 200_000;
    // One process per figure: freed memory is not given back to the system.
    let calls_per_trace: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    {
        let mut identity = CallIdentity::new(CALLS as usize, Duration::from_secs(600));
        let before = rss_bytes();
        let mut sorting = std::time::Duration::ZERO;
        let mut batch = Vec::with_capacity(1_000);
        for i in 0..CALLS {
            batch.push(CallRecord {
                trace_id: format!("{:032x}", i / calls_per_trace),
                span_id: format!("{:016x}", i + 1),
                parent_span_id: format!("{:016x}", u64::MAX - i),
                provider: Some("openai".into()),
                operation: Some("chat".into()),
                request_model: Some("gpt-4o-mini".into()),
                request_id: Some(format!("chatcmpl-B9MBs8Cjcv{i:016x}")),
                input_tokens: 100 + i % 7,
                output_tokens: 10,
                app: Some("agent".into()),
                instrumentation: 42,
                ..CallRecord::default()
            });
            if batch.len() == 1_000 {
                let started = std::time::Instant::now();
                identity.sort(&mut batch);
                sorting += started.elapsed();
                batch.clear();
            }
        }
        let remembered = identity.remembered_calls();
        let grown = rss_bytes().saturating_sub(before);
        println!(
            "{calls_per_trace} call(s) a trace: {remembered} calls remembered, {} bytes each resident \
             ({} held by the maps), {} ns to sort a call",
            grown / remembered.max(1),
            identity.heap_bytes() as u64 / remembered.max(1),
            sorting.as_nanos() / u128::from(CALLS)
        );
    }
}
