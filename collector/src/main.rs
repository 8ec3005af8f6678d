//! The `tollgate` binary: parse the command line, load config, run.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tollgate_collector::cli::{Cli, Command, ConfigCommand, DemoArgs};
use tollgate_collector::config::{self, LogFormat};
use tollgate_collector::{demo, server};
use tracing_subscriber::EnvFilter;

// A batch is thousands of small strings allocated on receiver threads and
// freed on the writer's; glibc's allocator spent a fifth of ingest CPU on
// that pattern, mimalloc a small fraction.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logs(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        token.cancel();
    });
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(ConfigCommand::Check(args)) => match config::load(args.config.as_deref()) {
            Ok(c) => {
                println!(
                    "config ok: storage {}, kafka {}, {} rules, gateway {}",
                    match c.storage {
                        config::StorageConfig::Sqlite { .. } => "sqlite",
                        config::StorageConfig::Clickhouse(_) => "clickhouse",
                    },
                    c.kafka
                        .as_ref()
                        .map_or("off".to_owned(), |k| format!("{:?}", k.role).to_lowercase()),
                    c.rules.rules.len(),
                    if c.gateway.enabled { "on" } else { "off" },
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tollgate: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve(args) => {
            let config = match config::load(args.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tollgate: {e}");
                    return ExitCode::from(2);
                }
            };
            if args.demo && (config.tls.server.is_some() || config.auth.keys_required) {
                eprintln!(
                    "tollgate: --demo sends plaintext spans without a key: run it with neither [tls] \
                     nor auth.mode = \"keys\" (the demo config listens on loopback)"
                );
                return ExitCode::from(2);
            }
            init_logs(&config.log.level, config.log.format);
            // A signal stops the demo first (it flushes its last spans into
            // the still-open receivers), then the collector.
            let signal = CancellationToken::new();
            cancel_on_signal(signal.clone());
            let shutdown = CancellationToken::new();
            let (demo_tx, demo_rx) = tokio::sync::oneshot::channel();
            let with_demo = args.demo;
            let demo_stop = signal.clone();
            tokio::spawn({
                let shutdown = shutdown.clone();
                async move {
                    signal.cancelled().await;
                    if let Ok(demo) = demo_rx.await {
                        let _ = tokio::time::timeout(Duration::from_secs(5), demo).await;
                    }
                    shutdown.cancel();
                }
            });
            let result = server::run(config, shutdown, move |addrs| {
                let scheme = if addrs.tls { "https" } else { "http" };
                println!(
                    "tollgate listening: otlp_grpc={} otlp_http={} api={scheme}://{}{}",
                    addrs.otlp_grpc,
                    addrs.otlp_http.map_or_else(|| "off".to_owned(), |a| a.to_string()),
                    addrs.api,
                    addrs
                        .gateway
                        .map_or_else(String::new, |g| format!(" gateway={scheme}://{g}")),
                );
                if with_demo {
                    let endpoint = format!("http://{}", addrs.otlp_grpc);
                    println!(
                        "demo: sending spans to {endpoint}; try `tollgate usage --by project,model --since 1h --api http://{}`",
                        addrs.api
                    );
                    let demo = tokio::spawn(demo::run_until(
                        DemoArgs { endpoint, calls: 300, rate: 5.0, seed: 7 },
                        demo_stop,
                    ));
                    let _ = demo_tx.send(demo);
                }
            })
            .await;
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tollgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Gateway(command) => match tollgate_collector::cli::run_gateway(&command).await {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tollgate: {e}");
                ExitCode::from(2)
            }
        },
        Command::Keys(command) => match tollgate_collector::cli::run_keys(&command).await {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tollgate: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Usage(args) => match tollgate_collector::cli::run_usage(&args).await {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tollgate: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Demo(args) => {
            init_logs("warn", LogFormat::Text);
            let stop = CancellationToken::new();
            cancel_on_signal(stop.clone());
            match demo::run_until(args, stop).await {
                Ok(sent) => {
                    println!("demo: sent {sent} model-call spans");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tollgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
