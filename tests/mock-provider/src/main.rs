//! `mock-provider`: runs the mock LLM provider as a process, for benchmarks
//! and for test suites outside Rust (Python SDKs, LiteLLM, Portkey). Prints
//! `listening on http://IP:PORT` as its first stdout line, then serves until
//! SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tollgate_mock_provider::{DEFAULT_OUTPUT_TOKENS, MockConfig, MockProvider};

/// Mock OpenAI / Anthropic provider. Per-request `x-mock-*` headers override
/// these defaults.
#[derive(Debug, Parser)]
#[command(name = "mock-provider", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Delay before response headers, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Streaming: delay before the first event, in milliseconds.
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    /// Streaming: delay between content chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    inter_chunk_ms: u64,
    /// Output tokens when the request sets no smaller max_tokens.
    #[arg(long, default_value_t = DEFAULT_OUTPUT_TOKENS)]
    default_output_tokens: u32,
    /// Fraction (0..1) of model calls answered with 500.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Fraction (0..1) of model calls answered with 429.
    #[arg(long, default_value_t = 0.0)]
    rate_limit_rate: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let config = MockConfig {
        latency: Duration::from_millis(args.latency_ms),
        ttft: Duration::from_millis(args.ttft_ms),
        inter_chunk: Duration::from_millis(args.inter_chunk_ms),
        default_output_tokens: args.default_output_tokens,
        error_rate: args.error_rate,
        rate_limit_rate: args.rate_limit_rate,
        ..MockConfig::default()
    };
    config.validate().context("invalid flags")?;
    let provider = MockProvider::start_on(args.listen, config)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // Scripts read this line to learn the port; flush so they never wait.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", provider.base_url())?;
    stdout.flush()?;
    drop(stdout);

    wait_for_signal().await?;
    provider.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot wait for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
