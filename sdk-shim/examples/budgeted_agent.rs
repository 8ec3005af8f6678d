//! A Rust agent under a Tollgate budget, end to end.
//!
//! It exports one GenAI span per model call to the collector over OTLP/gRPC
//! and consults the kill-switch before every call. When the collector blocks
//! its scope, it stops without contacting the provider:
//!
//! ```text
//! cargo run -p tollgate-sdk --example budgeted_agent -- \
//!     --provider http://127.0.0.1:8080 --project search --user alice
//! ```
//!
//! With `--gateway auto` (the default) it asks the collector whether its
//! inline gateway runs: if so, calls go through the gateway with
//! `--gateway-key` (a virtual key) and the gateway writes the rows; if not,
//! they go to `--provider` and the agent exports a span per call. The agent
//! runs unchanged either way.
//!
//! A collector that requires keys (`[auth] mode = "keys"`) needs an
//! `ingest` key for the spans (`--ingest-key`) and a `read` key for the
//! kill-switch (`--read-key`, else `TOLLGATE_KEY`); one key with both
//! roles may be given twice.
//!
//! Output on stdout, one line per event:
//!
//! - `call n=<i> input=<tokens> output=<tokens>` after each answered call;
//! - `error n=<i> status=<http status>` when the provider refused a call
//!   (it is recorded as a failed call and the loop goes on);
//! - `blocked rule=<rule> reason=<reason> scope=<scope>` when the scope is
//!   blocked, after which the agent exits with code 3.
//!
//! Exit codes: 0 after `--max-calls` calls, 3 when blocked, 1 on any other
//! failure (message on stderr). Flags can also be given as `AGENT_*`
//! environment variables; not `TOLLGATE_*`, which the collector reads as
//! its own configuration.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tollgate_sdk::{
    Direct, ExporterConfig, ExporterProtocol, GatewaySetting, GuardError, KillSwitch,
    KillSwitchConfig, ModelCall, ModelRoute, RouteConfig, Scope, VirtualKey,
};

/// Exit code when the kill-switch refuses a call.
const EXIT_BLOCKED: u8 = 3;
/// A placeholder provider credential: the mock provider only checks that
/// one is present. Never printed or recorded.
const API_KEY: &str = "sk-example";
const PROMPT: &str = "Name three colours of the rainbow.";

#[derive(Debug, Parser)]
#[command(about = "A Rust agent that obeys Tollgate's kill-switch")]
struct Args {
    /// The collector's OTLP gRPC endpoint (spans and the kill-switch watch).
    #[arg(
        long,
        env = "AGENT_COLLECTOR_GRPC",
        default_value = "http://127.0.0.1:4317"
    )]
    collector_grpc: String,
    /// The collector's HTTP API (kill-switch fallback).
    #[arg(
        long,
        env = "AGENT_COLLECTOR_API",
        default_value = "http://127.0.0.1:7070"
    )]
    collector_api: String,
    /// OpenAI-compatible base URL, with or without the trailing `/v1`.
    #[arg(long, env = "AGENT_PROVIDER")]
    provider: String,
    /// `off` (straight to the provider), `auto` (through the collector's
    /// inline gateway when it runs) or the gateway's URL.
    #[arg(long, env = "AGENT_GATEWAY", default_value = "auto")]
    gateway: GatewaySetting,
    /// An `ingest` key for the spans, when the collector requires keys
    /// (`OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<key>` works too).
    #[arg(long, env = "AGENT_INGEST_KEY", hide_env_values = true)]
    ingest_key: Option<VirtualKey>,
    /// A `read` key for the kill-switch, when the collector requires keys
    /// (default: `TOLLGATE_KEY`).
    #[arg(long, env = "AGENT_READ_KEY", hide_env_values = true)]
    read_key: Option<VirtualKey>,
    /// The virtual key used through the gateway.
    #[arg(long, env = "AGENT_GATEWAY_KEY", hide_env_values = true)]
    gateway_key: Option<String>,
    /// The project calls are charged to.
    #[arg(long, env = "AGENT_PROJECT", default_value = "demo")]
    project: String,
    /// The end user calls are made for.
    #[arg(long, env = "AGENT_USER")]
    user: Option<String>,
    /// The agent's `service.name` (Tollgate's app).
    #[arg(long, env = "AGENT_APP", default_value = "budgeted-agent")]
    app: String,
    /// Calls to make before exiting 0.
    #[arg(long, env = "AGENT_MAX_CALLS", default_value_t = 10)]
    max_calls: u32,
    /// Pause between calls.
    #[arg(long, env = "AGENT_INTERVAL_MS", default_value_t = 200)]
    interval_ms: u64,
    /// `max_tokens` of each request.
    #[arg(long, env = "AGENT_MAX_TOKENS", default_value_t = 64)]
    max_tokens: u64,
    /// How long to wait for the first kill-switch state before calling
    /// anyway (the kill-switch fails open).
    #[arg(long, env = "AGENT_READY_TIMEOUT_MS", default_value_t = 2_000)]
    ready_timeout_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("budgeted_agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<ExitCode> {
    let scope = Scope {
        project: Some(args.project.clone()),
        user: args.user.clone(),
        ..Scope::default()
    };
    let mut exporter = ExporterConfig::new(&args.collector_grpc, ExporterProtocol::Grpc, &args.app);
    exporter.ingest_key = args.ingest_key.clone();
    let provider = exporter.init_tracer_provider()?;
    let tracer = provider.tracer("budgeted-agent");
    let mut watch = KillSwitchConfig::new(&args.collector_grpc, &args.collector_api, scope.clone())
        .with_app(&args.app);
    if args.read_key.is_some() {
        watch.key = args.read_key.clone();
    }
    let killswitch = KillSwitch::start(watch)?;
    // A block that already exists must stop the very first call.
    if !killswitch
        .wait_ready(Duration::from_millis(args.ready_timeout_ms))
        .await
    {
        eprintln!(
            "budgeted_agent: no kill-switch state within {} ms; calling anyway (fail-open)",
            args.ready_timeout_ms
        );
        if let Some(refused) = killswitch.key_refused() {
            eprintln!("budgeted_agent: {refused}");
        }
    }

    let route = ModelRoute::resolve(&RouteConfig {
        setting: args.gateway.clone(),
        collector_api: args.collector_api.clone(),
        direct: Direct {
            base_url: args.provider.clone(),
            api_key: API_KEY.to_owned(),
        },
        virtual_key: args.gateway_key.clone().map(VirtualKey),
        app: args.app.clone(),
        scope: scope.clone(),
    })
    .await?;
    eprintln!(
        "budgeted_agent: calls go {}",
        if route.via_gateway() {
            "through the gateway"
        } else {
            "straight to the provider"
        }
    );
    let chat = ChatClient::new(&args, route)?;
    let mut code = ExitCode::SUCCESS;
    for n in 1..=args.max_calls {
        let call = match killswitch.guarded_call(|| chat.complete()).await {
            Ok(call) => call,
            Err(GuardError::Blocked(block)) => {
                println!(
                    "blocked rule={} reason={} scope={}",
                    block.rule, block.reason, block.scope
                );
                code = ExitCode::from(EXIT_BLOCKED);
                break;
            }
            Err(GuardError::Call(e)) => return Err(e),
            Err(other) => bail!("{other}"),
        };
        chat.route.record(&tracer, &call, &scope);
        // Export now rather than at the batch timeout, so the collector
        // counts this call before the next one is checked.
        if !chat.route.via_gateway() {
            flush(&provider).await;
        }
        match &call.error_type {
            None => println!(
                "call n={n} input={} output={}",
                call.input_tokens.unwrap_or(0),
                call.output_tokens.unwrap_or(0)
            ),
            Some(_) => println!("error n={n} status={}", call.http_status.unwrap_or(0)),
        }
        if n < args.max_calls {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
    }
    shutdown(provider).await;
    Ok(code)
}

/// `force_flush` blocks until the exporter thread is done, and that thread
/// needs the runtime's workers for gRPC: run it off them.
async fn flush(provider: &SdkTracerProvider) {
    let provider = provider.clone();
    match tokio::task::spawn_blocking(move || provider.force_flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("budgeted_agent: span export failed: {e}"),
        Err(e) => eprintln!("budgeted_agent: span flush task failed: {e}"),
    }
}

async fn shutdown(provider: SdkTracerProvider) {
    match tokio::task::spawn_blocking(move || provider.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("budgeted_agent: tracer shutdown failed: {e}"),
        Err(e) => eprintln!("budgeted_agent: tracer shutdown task failed: {e}"),
    }
}

/// One OpenAI chat completion per call, reported as a [`ModelCall`].
struct ChatClient {
    http: reqwest::Client,
    route: ModelRoute,
    url: String,
    server_address: Option<String>,
    model: &'static str,
    max_tokens: u64,
}

impl ChatClient {
    fn new(args: &Args, route: ModelRoute) -> Result<Self> {
        let url = format!("{}/chat/completions", route.base_url());
        let parsed = url::Url::parse(&url).with_context(|| format!("calls to {url}"))?;
        let server_address = parsed
            .host_str()
            .map(|host| match parsed.port_or_known_default() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            route,
            url,
            server_address,
            model: "gpt-4o-mini",
            max_tokens: args.max_tokens,
        })
    }

    /// Makes the call. A provider error status is a failed call (recorded
    /// like any other); only an unreachable provider is an `Err`.
    async fn complete(&self) -> Result<ModelCall> {
        let mut call = ModelCall::new("openai", "chat", self.model);
        call.max_tokens = Some(self.max_tokens);
        call.server_address = self.server_address.clone();
        let body = serde_json::json!({
            "model": self.model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": self.max_tokens,
        });
        let response = self
            .http
            .post(&self.url)
            .headers(self.route.headers().clone())
            .json(&body)
            .send()
            .await
            .with_context(|| format!("calling the provider at {}", self.url))?;
        let status = response.status();
        call.http_status = Some(status.as_u16());
        if !status.is_success() {
            call.error_type = Some(status.as_u16().to_string());
            call.end = SystemTime::now();
            return Ok(call);
        }
        let reply: ChatResponse = response
            .json()
            .await
            .context("reading the provider's answer")?;
        call.end = SystemTime::now();
        call.response_id = reply.id;
        call.response_model = reply.model;
        call.finish_reason = reply.choices.into_iter().find_map(|c| c.finish_reason);
        if let Some(usage) = reply.usage {
            call.input_tokens = Some(usage.prompt_tokens);
            call.output_tokens = Some(usage.completion_tokens);
            call.cache_read_tokens = usage.prompt_tokens_details.map(|d| d.cached_tokens);
            call.reasoning_tokens = usage.completion_tokens_details.map(|d| d.reasoning_tokens);
        }
        Ok(call)
    }
}

/// The parts of an OpenAI chat completion that are metadata.
#[derive(Debug, Deserialize)]
struct ChatResponse {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    prompt_tokens_details: Option<PromptDetails>,
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: u64,
}

#[derive(Debug, Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: u64,
}
