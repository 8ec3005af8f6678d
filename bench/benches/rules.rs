//! `rules`: the rules engine on 10, 100 and 1,000 rules.
//!
//! - `admit_settle/<n>`: `admit` a call intent, then `settle` the
//!   reservation with the call's actual record (the gateway's path);
//! - `observe/<n>`: `observe` a finished call (the collector's path).
//!
//! The workload is `tollgate_bench::rules::workload`. Run it with
//! `scripts/bench rules`, which also refreshes `bench/RESULTS.md`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use tollgate_bench::rules::report::{
    GROUPS, MEASUREMENT_SECS, SAMPLE_SIZE, Tally, WARM_UP_SECS, criterion_dir,
};
use tollgate_bench::rules::workload::{Calls, SIZES, rule_set};
use tollgate_rules::engine::{Decision, Engine};

/// Which engine path one iteration takes.
#[derive(Clone, Copy)]
enum Path {
    AdmitSettle,
    Observe,
}

/// One call through `path`, counted in `tally`.
fn one_call(engine: &Engine, calls: &mut Calls, path: Path, tally: &mut Tally) {
    let (intent, record) = calls.next_call();
    tally.calls += 1;
    let violations = match path {
        Path::AdmitSettle => match engine.admit(intent) {
            Decision::Allow(reservation) => engine.settle(reservation, record),
            Decision::Deny(refusal) => {
                tally.refused += 1;
                black_box(refusal);
                return;
            }
        },
        Path::Observe => engine.observe(record),
    };
    tally.violations += violations.len() as u64;
    black_box(violations);
}

fn bench_group(c: &mut Criterion, name: &str, path: Path, save_tally: bool) -> anyhow::Result<()> {
    let mut group = c.benchmark_group(name);
    for n in SIZES {
        let engine = Engine::new(rule_set(n)?);
        let mut calls = Calls::new();
        let mut tally = Tally::default();
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| one_call(&engine, &mut calls, path, &mut tally));
        });
        // Filtered-out benchmarks make no calls: keep their last tally.
        if save_tally && tally.calls > 0 {
            tally.save(&criterion_dir(), name, n)?;
        }
        println!(
            "{name}/{n}: {} calls, {} refused, {} violations",
            tally.calls, tally.refused, tally.violations
        );
    }
    group.finish();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut c = Criterion::default()
        .sample_size(SAMPLE_SIZE)
        .warm_up_time(Duration::from_secs(WARM_UP_SECS))
        .measurement_time(Duration::from_secs(MEASUREMENT_SECS))
        .configure_from_args();
    // `cargo bench` passes `--bench`; `cargo test --benches` runs each
    // benchmark once as a test, whose tally must not replace a real one.
    let save_tally = std::env::args().any(|a| a == "--bench");
    let [admit_settle, observe] = GROUPS;
    bench_group(&mut c, admit_settle, Path::AdmitSettle, save_tally)?;
    bench_group(&mut c, observe, Path::Observe, save_tally)?;
    c.final_summary();
    Ok(())
}
