//! `ingest`: OTLP ingest throughput, decode-only baseline vs. Tollgate end
//! to end into SQLite, into ClickHouse, and through Kafka into ClickHouse.
//!
//! Run it with `scripts/bench ingest [OPTIONS]`; `--help` lists the options.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Parser, Subcommand};
use tokio::io::AsyncReadExt;
use tollgate_bench::child::{interrupted, pin_self};
use tollgate_bench::ingest::{Bench, IngestOptions, Layout};
use tollgate_bench::report::{self, Machine};
use tollgate_bench::sink;

#[derive(Parser)]
#[command(
    name = "ingest",
    about = "OTLP ingest throughput: decode-only baseline vs. Tollgate end to end into SQLite, into ClickHouse (chdb test server) and through Kafka (tansu) into ClickHouse",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: IngestOptions,
}

#[derive(Subcommand)]
enum Command {
    /// Internal: the decode-and-count baseline sink; stops when stdin closes.
    #[command(hide = true)]
    Sink,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Sink) => run_sink(),
        None => run_bench(cli.options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_sink() -> anyhow::Result<()> {
    // No explicit worker count: TOKIO_WORKER_THREADS decides, as for tollgate.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stdin_closed = async {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        };
        sink::serve(stdin_closed, |a| {
            println!(
                "sink listening: otlp_grpc={} otlp_http={}",
                a.otlp_grpc, a.otlp_http
            );
        })
        .await
    })
}

fn run_bench(options: IngestOptions) -> anyhow::Result<()> {
    let machine = Machine::detect();
    let layout = Layout::choose(&options, machine.cpus)?;
    if let Some(cpus) = &layout.client_cpus {
        pin_self(cpus)?;
    }
    let results_path = options
        .results
        .clone()
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("RESULTS.md"));
    let no_write = options.no_write;
    let bench = Bench::new(options, layout, std::env::current_exe()?)?;
    let infra = if bench.options.targets.iter().any(|t| t.uses_clickhouse()) {
        format!(
            "; ClickHouse server / broker: {}",
            bench
                .layout
                .infra_cpus
                .as_ref()
                .map_or("unpinned".to_owned(), |c| format!("on CPU {c}"))
        )
    } else {
        String::new()
    };
    println!(
        "ingest: {} CPUs ({}); servers: {} worker(s){}; load generator: {} worker(s){}{infra}; targets: {}; {} spans/request (~{} bytes)",
        machine.cpus,
        machine.cpu_model,
        bench.layout.server_workers,
        bench
            .layout
            .server_cpus
            .as_ref()
            .map_or(String::new(), |c| format!(" on CPU {c}")),
        bench.layout.client_workers,
        bench
            .layout
            .client_cpus
            .as_ref()
            .map_or(String::new(), |c| format!(" on CPU {c}")),
        bench
            .options
            .targets
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(","),
        bench.pool.spans_per_request(),
        bench.pool.mean_request_bytes(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(bench.layout.client_workers)
        .enable_all()
        .build()?;
    // On a signal the run is dropped: children are killed, temp dirs removed.
    let results = runtime.block_on(async {
        tokio::select! {
            r = bench.run() => r,
            _ = interrupted() => bail!("interrupted"),
        }
    })?;
    let section = report::render(&bench, &machine, &results);
    println!("\n{section}");
    if !no_write {
        report::write_results(&results_path, &section)?;
        println!("wrote {}", results_path.display());
    }
    Ok(())
}
