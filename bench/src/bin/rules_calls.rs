//! `rules_calls`: runs the `bench rules` workload for a fixed number of
//! calls, for an instruction count that does not depend on the machine's
//! load (criterion's times do):
//!
//! ```text
//! valgrind --tool=callgrind rules_calls admit_settle 100 20000 0
//! valgrind --tool=callgrind rules_calls admit_settle 100 20000 2000
//! ```
//!
//! The difference of the two totals over 2,000 is the instructions per
//! call after a warm-up of 20,000 calls.
//!
//! Usage: `rules_calls admit_settle|observe RULES WARM_UP CALLS`.

use std::hint::black_box;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use tollgate_bench::rules::workload::{Calls, rule_set};
use tollgate_rules::engine::{Decision, Engine};

fn one(engine: &Engine, calls: &mut Calls, admit: bool) -> anyhow::Result<()> {
    let (intent, record) = calls.next_call();
    let violations = if admit {
        match engine.admit(intent) {
            Decision::Allow(r) => engine.settle(r, record),
            Decision::Deny(refusal) => bail!("refused on the allow path: {refusal:?}"),
        }
    } else {
        engine.observe(record)
    };
    black_box(violations);
    Ok(())
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, rules, warm_up, measured] = args.as_slice() else {
        bail!("usage: rules_calls admit_settle|observe RULES WARM_UP CALLS");
    };
    let admit = match path.as_str() {
        "admit_settle" => true,
        "observe" => false,
        other => bail!("unknown path `{other}`: admit_settle or observe"),
    };
    let n: usize = rules.parse().context("RULES")?;
    let warm_up: usize = warm_up.parse().context("WARM_UP")?;
    let measured: usize = measured.parse().context("CALLS")?;
    let engine = Engine::new(rule_set(n)?);
    let mut calls = Calls::new();
    for _ in 0..warm_up + measured {
        one(&engine, &mut calls, admit)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rules_calls: {e:#}");
            ExitCode::FAILURE
        }
    }
}
