//! `rules_report`: turns the `rules` criterion estimates into the
//! `bench rules` section of `bench/RESULTS.md`. Run by `scripts/bench rules`
//! after `cargo bench -p tollgate-bench --bench rules`.
//!
//! Usage: `rules_report [--no-write] [RESULTS.md]`.

use std::path::PathBuf;
use std::process::ExitCode;

use tollgate_bench::report::{Machine, write_section};
use tollgate_bench::rules::report::{BEGIN, END, criterion_dir, load_rows, render};

fn run() -> anyhow::Result<()> {
    let mut no_write = false;
    let mut results = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("RESULTS.md");
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--no-write" => no_write = true,
            _ => results = PathBuf::from(arg),
        }
    }
    let mut machine = Machine::detect();
    // What `nproc` says: the CPUs this process may run on.
    if let Ok(n) = std::thread::available_parallelism() {
        machine.cpus = n.get();
    }
    let section = render(&machine, &load_rows(&criterion_dir())?);
    println!("{section}");
    if !no_write {
        write_section(&results, BEGIN, END, &section)?;
        println!("wrote {}", results.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rules_report: {e:#}");
            ExitCode::FAILURE
        }
    }
}
