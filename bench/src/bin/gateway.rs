//! `gateway`: added latency and throughput of the inline gateway (with its
//! local ledger and with a Redis one), the mock provider direct, a bare
//! pass-through, LiteLLM and Portkey, in one run.
//!
//! Run it with `scripts/bench gateway [OPTIONS]`; `--help` lists the options.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tollgate_bench::child::{interrupted, pin_self};
use tollgate_bench::gateway::run::{Bench, GatewayOptions};
use tollgate_bench::gateway::servers::{Launch, which};
use tollgate_bench::gateway::{passthrough, peers, report};
use tollgate_bench::report::{Machine, write_section};

#[derive(Parser)]
#[command(
    name = "gateway",
    about = "Gateway added latency and throughput: direct to the mock provider, a bare axum -> reqwest pass-through, Tollgate with 20 rules (local ledger, Redis ledger), LiteLLM, Portkey",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: GatewayOptions,
}

#[derive(Subcommand)]
enum Command {
    /// Internal: the bare pass-through proxy; stops on SIGTERM.
    #[command(hide = true)]
    Passthrough {
        #[arg(long)]
        listen: SocketAddr,
        /// Upstream base URL, ending in `/v1`.
        #[arg(long)]
        upstream: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Passthrough { listen, upstream }) => run_passthrough(listen, &upstream),
        None => run_bench(cli.options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_passthrough(listen: SocketAddr, upstream: &str) -> anyhow::Result<()> {
    // No explicit worker count: TOKIO_WORKER_THREADS decides, as for tollgate.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("passthrough listening: http={}", listener.local_addr()?);
        passthrough::serve(listener, upstream, interrupted()).await
    })
}

fn run_bench(options: GatewayOptions) -> anyhow::Result<()> {
    let machine = Machine::detect();
    if !options.no_pin {
        pin_self(&options.client_cpus)?;
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the bench binary has no directory")?;
    let (litellm_exe, portkey_js) = peers::installed();
    let launch = Launch {
        bench_exe: exe.clone(),
        tollgate_exe: dir.join("tollgate"),
        mock_exe: dir.join("mock-provider"),
        litellm_exe,
        portkey_js,
        redis_exe: which("redis-server"),
        proxy_cpus: (!options.no_pin).then(|| options.proxy_cpus.clone()),
        mock_cpus: (!options.no_pin).then(|| options.client_cpus.clone()),
    };
    let results_path = options
        .results
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("RESULTS.md"));
    let no_write = options.no_write;
    let bench = Bench::new(options, launch)?;
    println!(
        "gateway: {} CPUs ({}); targets: {}; {} rounds",
        machine.cpus,
        machine.cpu_model,
        bench
            .targets()
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(","),
        bench.options.rounds,
    );
    // The load generator: one worker, like the proxies (it shares its CPU
    // with the mock provider).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let results = runtime.block_on(async {
        tokio::select! {
            r = bench.run() => r,
            _ = interrupted() => bail!("interrupted"),
        }
    })?;
    let section = report::render(&bench, &machine, &results);
    println!("\n{section}");
    if !no_write {
        write_section(&results_path, report::BEGIN, report::END, &section)?;
        println!("wrote {}", results_path.display());
    }
    Ok(())
}
