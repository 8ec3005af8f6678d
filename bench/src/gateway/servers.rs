//! The processes of the gateway benchmark: the mock provider, the proxies
//! in front of it (the bare pass-through, Tollgate with its local ledger or
//! a Redis one, LiteLLM, Portkey) and, for the Redis ledger, a
//! `redis-server`; each started fresh, on loopback, pinned like the others.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;

use super::load::Endpoint;
use super::rules::GATEWAY_RULES;
use crate::child::{self, Child, Spawn};

/// How long a proxy may take to start (LiteLLM takes 10-25 s here).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The model every request asks for.
pub const MODEL: &str = "gpt-4o-mini";
/// The upstream key every proxy sends the mock (it only checks one is there).
const PROVIDER_KEY: &str = "sk-bench-provider";
const ADMIN_TOKEN: &str = "bench-admin-token";
const LITELLM_MASTER_KEY: &str = "sk-bench-litellm-master";

/// What is measured, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// The load generator straight to the mock provider.
    Direct,
    /// This benchmark's bare axum -> reqwest pass-through.
    Passthrough,
    /// `tollgate serve` with `gateway.enabled = true` and 20 rules.
    Tollgate,
    /// The same, with budgets in a shared ledger (`[ledger] type = "redis"`).
    TollgateRedis,
    /// LiteLLM proxy (PyPI `litellm[proxy]`).
    Litellm,
    /// Portkey AI gateway (npm `@portkey-ai/gateway`).
    Portkey,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Direct,
        Target::Passthrough,
        Target::Tollgate,
        Target::TollgateRedis,
        Target::Litellm,
        Target::Portkey,
    ];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Passthrough => "passthrough",
            Target::Tollgate => "tollgate",
            Target::TollgateRedis => "tollgate-redis",
            Target::Litellm => "litellm",
            Target::Portkey => "portkey",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Report label.
    pub fn label(self) -> &'static str {
        match self {
            Target::Direct => "direct to the mock provider",
            Target::Passthrough => "bare axum → reqwest pass-through",
            Target::Tollgate => "Tollgate gateway, 20 rules",
            Target::TollgateRedis => "Tollgate gateway, 20 rules, Redis ledger",
            Target::Litellm => "LiteLLM proxy",
            Target::Portkey => "Portkey gateway",
        }
    }

    /// Whether a proxy process sits between the load and the mock.
    pub fn is_proxy(self) -> bool {
        self != Target::Direct
    }

    /// Whether this is Tollgate (it stores rows and exports `/metrics`).
    pub fn is_tollgate(self) -> bool {
        matches!(self, Target::Tollgate | Target::TollgateRedis)
    }

    /// Whether the target needs a `redis-server` of its own.
    pub fn needs_redis(self) -> bool {
        self == Target::TollgateRedis
    }
}

/// Programs and pinning shared by every start.
#[derive(Debug, Clone)]
pub struct Launch {
    /// This benchmark's own binary (it serves the pass-through).
    pub bench_exe: PathBuf,
    pub tollgate_exe: PathBuf,
    pub mock_exe: PathBuf,
    /// `litellm` in its venv, when installed.
    pub litellm_exe: Option<PathBuf>,
    /// Portkey's `build/start-server.js`, when installed.
    pub portkey_js: Option<PathBuf>,
    /// `redis-server`, when on `PATH` (the Redis ledger's server).
    pub redis_exe: Option<PathBuf>,
    /// CPUs of the proxy under test.
    pub proxy_cpus: Option<String>,
    /// CPUs of the mock provider (shared with the load generator).
    pub mock_cpus: Option<String>,
}

/// A started process and what it printed when ready.
#[derive(Debug)]
pub struct Process {
    child: Child,
    drain: Option<JoinHandle<()>>,
}

impl Process {
    pub fn cpu_secs(&self) -> anyhow::Result<f64> {
        self.child.cpu_secs()
    }

    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.child.check_running()
    }

    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.child.stop().await?;
        if let Some(drain) = self.drain.take() {
            drain.abort();
        }
        Ok(())
    }
}

/// Starts `spec` and, when `ready_marker` is set, waits for the first
/// stdout line containing it and returns that line; stdout keeps being
/// drained so the child never blocks on a full pipe.
async fn start(
    name: &str,
    spec: &mut Spawn<'_>,
    ready_marker: Option<&str>,
) -> anyhow::Result<(Process, Option<String>)> {
    if !spec.exe.is_file() {
        bail!(
            "{} not found; `scripts/bench gateway` builds it",
            spec.exe.display()
        );
    }
    spec.stdout = true;
    let mut child = child::spawn(name, spec)?;
    let mut stdout = BufReader::new(child.process.stdout.take().context("no stdout")?);
    let mut line = None;
    if let Some(marker) = ready_marker {
        let wait = async {
            let mut buf = String::new();
            loop {
                buf.clear();
                if stdout.read_line(&mut buf).await? == 0 {
                    bail!("{name} exited before it was ready");
                }
                if buf.contains(marker) {
                    return Ok(buf.trim().to_owned());
                }
            }
        };
        line = Some(match tokio::time::timeout(START_TIMEOUT, wait).await {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => bail!("{e}\n{}", child.log_tail()),
            Err(_) => bail!(
                "{name} was not ready within {START_TIMEOUT:?}\n{}",
                child.log_tail()
            ),
        });
    }
    let drain = tokio::spawn(async move {
        let mut buf = String::new();
        while matches!(stdout.read_line(&mut buf).await, Ok(n) if n > 0) {
            buf.clear();
        }
    });
    Ok((
        Process {
            child,
            drain: Some(drain),
        },
        line,
    ))
}

/// The value of `key=` in a `listening` line, without its `http://`.
fn field(line: &str, key: &str) -> Option<SocketAddr> {
    line.split_whitespace().find_map(|f| {
        let value = f.strip_prefix(key)?.strip_prefix('=')?;
        value.strip_prefix("http://").unwrap_or(value).parse().ok()
    })
}

/// A free loopback port, for programs that cannot listen on port 0 and
/// say which port they got.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `url` until it answers 2xx, the process exits, or the start timeout.
async fn wait_http(process: &mut Process, name: &str, url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        process.check_running()?;
        if let Ok(r) = client.get(url).timeout(Duration::from_secs(2)).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not answer {url} within {START_TIMEOUT:?}\n{}",
                process.child.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn bearer(token: &str) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    Ok(headers)
}

/// The mock provider, pinned with the load generator; returns its base URL.
pub async fn mock(launch: &Launch, dir: &Path) -> anyhow::Result<(Process, String)> {
    let mut spec = Spawn::new(&launch.mock_exe, dir.join("mock.log"));
    spec.args = vec!["--listen".into(), "127.0.0.1:0".into()];
    spec.cpus = launch.mock_cpus.as_deref();
    spec.env = vec![("TOKIO_WORKER_THREADS", "1".to_owned())];
    let (process, line) = start("the mock provider", &mut spec, Some("listening on")).await?;
    let base = line
        .as_deref()
        .and_then(|l| l.split_whitespace().last())
        .context("the mock provider printed no address")?
        .to_owned();
    Ok((process, base))
}

/// A `redis-server` of the run's own on a free loopback port, pinned with
/// the mock provider (it stands for a server on another machine), without
/// persistence; returns its `redis://` URL.
pub async fn redis(launch: &Launch, dir: &Path) -> anyhow::Result<(Process, String)> {
    let exe = launch.redis_exe.as_deref().context(
        "redis-server is not on PATH; the tollgate-redis target needs it (apt-get install redis-server)",
    )?;
    let port = free_port()?;
    let mut spec = Spawn::new(exe, dir.join("redis.log"));
    spec.args = vec![
        "--port".into(),
        port.to_string().into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        "".into(),
        "--appendonly".into(),
        "no".into(),
        "--dir".into(),
        dir.into(),
        "--logfile".into(),
        "".into(),
    ];
    spec.cpus = launch.mock_cpus.as_deref();
    let (process, _) = start(
        "redis-server",
        &mut spec,
        Some("Ready to accept connections"),
    )
    .await?;
    Ok((process, format!("redis://127.0.0.1:{port}")))
}

/// A started target: its process (none for `Direct`), where to send the
/// bench's request and, for Tollgate, its `/metrics`.
#[derive(Debug)]
pub struct Proxy {
    pub process: Option<Process>,
    pub endpoint: Endpoint,
    pub metrics_url: Option<String>,
}

impl Proxy {
    fn plain((process, endpoint): (Option<Process>, Endpoint)) -> Self {
        Self {
            process,
            endpoint,
            metrics_url: None,
        }
    }
}

/// Starts `target` in front of the mock at `mock_base` (no `/v1`);
/// `redis_url` is the shared ledger's server (for `TollgateRedis`).
pub async fn proxy(
    target: Target,
    launch: &Launch,
    dir: &Path,
    mock_base: &str,
    redis_url: Option<&str>,
) -> anyhow::Result<Proxy> {
    let upstream = format!("{mock_base}/v1");
    Ok(match target {
        Target::Direct => Proxy::plain((
            None,
            Endpoint {
                url: format!("{upstream}/chat/completions"),
                headers: bearer(PROVIDER_KEY)?,
            },
        )),
        Target::Passthrough => Proxy::plain(passthrough(launch, dir, &upstream).await?),
        Target::Tollgate => tollgate(launch, dir, &upstream, None).await?,
        Target::TollgateRedis => {
            let url = redis_url.context("the Redis ledger's server is not running")?;
            tollgate(launch, dir, &upstream, Some(url)).await?
        }
        Target::Litellm => Proxy::plain(litellm(launch, dir, &upstream).await?),
        Target::Portkey => Proxy::plain(portkey(launch, dir, &upstream).await?),
    })
}

async fn passthrough(
    launch: &Launch,
    dir: &Path,
    upstream: &str,
) -> anyhow::Result<(Option<Process>, Endpoint)> {
    let mut spec = Spawn::new(&launch.bench_exe, dir.join("passthrough.log"));
    spec.args = vec![
        "passthrough".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--upstream".into(),
        upstream.into(),
    ];
    spec.cpus = launch.proxy_cpus.as_deref();
    spec.env = vec![("TOKIO_WORKER_THREADS", "1".to_owned())];
    let (process, line) = start("the pass-through", &mut spec, Some("listening:")).await?;
    let addr = line
        .as_deref()
        .and_then(|l| field(l, "http"))
        .context("the pass-through printed no address")?;
    Ok((
        Some(process),
        Endpoint {
            url: format!("http://{addr}/v1/chat/completions"),
            headers: bearer(PROVIDER_KEY)?,
        },
    ))
}

/// Tollgate's config: embedded store, the gateway on, the mock as OpenAI,
/// [`GATEWAY_RULES`], the admin API for the bench's virtual key; with
/// `redis_url`, budgets in the shared ledger there (defaults otherwise:
/// the only difference between the two Tollgate targets).
fn tollgate_config(dir: &Path, upstream: &str, redis_url: Option<&str>) -> String {
    let data = toml::Value::String(dir.join("data").display().to_string());
    let ledger = redis_url.map_or_else(String::new, |url| {
        let url = toml::Value::String(url.to_owned());
        format!(
            "\n[ledger]\n\
             type = \"redis\"\n\
             \n\
             [ledger.redis]\n\
             url = {url}\n\
             key_prefix = \"tollgate-bench:\"\n"
        )
    });
    format!(
        "[receivers.otlp]\n\
         grpc_listen = \"127.0.0.1:0\"\n\
         http_listen = \"127.0.0.1:0\"\n\
         \n\
         [api]\n\
         listen = \"127.0.0.1:0\"\n\
         \n\
         [storage]\n\
         type = \"sqlite\"\n\
         path = {data}\n\
         \n\
         [admin]\n\
         token = \"{ADMIN_TOKEN}\"\n\
         \n\
         [log]\n\
         level = \"warn\"\n\
         \n\
         [gateway]\n\
         enabled = true\n\
         listen = \"127.0.0.1:0\"\n\
         \n\
         [[gateway.providers]]\n\
         name = \"openai\"\n\
         kind = \"openai\"\n\
         base_url = \"{upstream}\"\n\
         api_key_env = \"BENCH_PROVIDER_KEY\"\n\
         region = \"us-east-1\"\n\
         {ledger}\
         {GATEWAY_RULES}"
    )
}

async fn tollgate(
    launch: &Launch,
    dir: &Path,
    upstream: &str,
    redis_url: Option<&str>,
) -> anyhow::Result<Proxy> {
    let config = dir.join("tollgate.toml");
    std::fs::write(&config, tollgate_config(dir, upstream, redis_url))?;
    let mut spec = Spawn::new(&launch.tollgate_exe, dir.join("tollgate.log"));
    spec.args = vec!["serve".into(), "--config".into(), config.into()];
    spec.cpus = launch.proxy_cpus.as_deref();
    spec.env = vec![
        ("TOKIO_WORKER_THREADS", "1".to_owned()),
        ("BENCH_PROVIDER_KEY", PROVIDER_KEY.to_owned()),
    ];
    let (process, line) = start("tollgate", &mut spec, Some("listening:")).await?;
    let line = line.unwrap_or_default();
    let api = field(&line, "api").with_context(|| format!("no api= in `{line}`"))?;
    let gateway = field(&line, "gateway").with_context(|| format!("no gateway= in `{line}`"))?;
    // A virtual key bound to the project every rule applies to.
    let created: serde_json::Value = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .post(format!("http://{api}/admin/v1/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({
            "name": "bench", "org": "acme", "project": "bench", "user": "load",
        }))
        .send()
        .await?
        .error_for_status()
        .context("creating the bench's virtual key")?
        .json()
        .await?;
    let key = created["key"]
        .as_str()
        .context("no key in the admin API's answer")?;
    Ok(Proxy {
        process: Some(process),
        endpoint: Endpoint {
            url: format!("http://{gateway}/v1/chat/completions"),
            headers: bearer(key)?,
        },
        metrics_url: Some(format!("http://{api}/metrics")),
    })
}

async fn litellm(
    launch: &Launch,
    dir: &Path,
    upstream: &str,
) -> anyhow::Result<(Option<Process>, Endpoint)> {
    let exe = launch
        .litellm_exe
        .as_deref()
        .context("LiteLLM is not installed (bench/peers/launch.sh litellm)")?;
    let config = dir.join("litellm.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n\
             \x20 - model_name: {MODEL}\n\
             \x20   litellm_params:\n\
             \x20     model: openai/{MODEL}\n\
             \x20     api_base: {upstream}\n\
             \x20     api_key: {PROVIDER_KEY}\n\
             litellm_settings:\n\
             \x20 telemetry: false\n\
             general_settings:\n\
             \x20 master_key: {LITELLM_MASTER_KEY}\n"
        ),
    )?;
    let port = free_port()?;
    let mut spec = Spawn::new(exe, dir.join("litellm.log"));
    spec.args = vec![
        "--config".into(),
        config.into(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string().into(),
        "--num_workers".into(),
        "1".into(),
    ];
    spec.cpus = launch.proxy_cpus.as_deref();
    spec.env = vec![
        ("LITELLM_LOCAL_MODEL_COST_MAP", "True".to_owned()),
        ("LITELLM_LOG", "ERROR".to_owned()),
        ("NO_PROXY", "*".to_owned()),
    ];
    spec.cwd = Some(dir);
    let (mut process, _) = start("LiteLLM", &mut spec, None).await?;
    let base = format!("http://127.0.0.1:{port}");
    wait_http(
        &mut process,
        "LiteLLM",
        &format!("{base}/health/liveliness"),
    )
    .await?;
    Ok((
        Some(process),
        Endpoint {
            url: format!("{base}/v1/chat/completions"),
            headers: bearer(LITELLM_MASTER_KEY)?,
        },
    ))
}

async fn portkey(
    launch: &Launch,
    dir: &Path,
    upstream: &str,
) -> anyhow::Result<(Option<Process>, Endpoint)> {
    let js = launch
        .portkey_js
        .as_deref()
        .context("Portkey is not installed (bench/peers/launch.sh portkey)")?;
    let node = which("node").context("node is not on PATH")?;
    let port = free_port()?;
    let mut spec = Spawn::new(&node, dir.join("portkey.log"));
    // Portkey reads `--port=N` (not `--port N`); `--headless` skips its UI.
    spec.args = vec![
        js.into(),
        format!("--port={port}").into(),
        "--headless".into(),
    ];
    spec.cpus = launch.proxy_cpus.as_deref();
    spec.env = vec![("NODE_ENV", "production".to_owned())];
    spec.cwd = Some(dir);
    let (mut process, _) = start("Portkey", &mut spec, None).await?;
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&mut process, "Portkey", &format!("{base}/")).await?;
    let mut headers = bearer(PROVIDER_KEY)?;
    headers.insert(
        HeaderName::from_static("x-portkey-provider"),
        HeaderValue::from_static("openai"),
    );
    headers.insert(
        HeaderName::from_static("x-portkey-custom-host"),
        HeaderValue::from_str(upstream)?,
    );
    Ok((
        Some(process),
        Endpoint {
            url: format!("{base}/v1/chat/completions"),
            headers,
        },
    ))
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_fields_are_found_by_key() {
        let line = "tollgate listening: otlp_grpc=127.0.0.1:1 otlp_http=127.0.0.1:2 api=http://127.0.0.1:3 gateway=http://127.0.0.1:4";
        assert_eq!(field(line, "api"), Some("127.0.0.1:3".parse().unwrap()));
        assert_eq!(field(line, "gateway"), Some("127.0.0.1:4".parse().unwrap()));
        assert_eq!(field(line, "admin"), None);
    }

    #[test]
    fn the_tollgate_config_is_valid_toml_with_twenty_rules() {
        let text = tollgate_config(Path::new("/tmp/x"), "http://127.0.0.1:9/v1", None);
        let value: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(value["gateway"]["enabled"].as_bool(), Some(true));
        assert_eq!(value["rules"].as_array().map(Vec::len), Some(20));
        assert!(value.get("ledger").is_none());
    }

    #[test]
    fn the_redis_ledger_config_differs_only_in_its_ledger() {
        let local: toml::Value = toml::from_str(&tollgate_config(
            Path::new("/tmp/x"),
            "http://127.0.0.1:9/v1",
            None,
        ))
        .unwrap();
        let mut redis: toml::Value = toml::from_str(&tollgate_config(
            Path::new("/tmp/x"),
            "http://127.0.0.1:9/v1",
            Some("redis://127.0.0.1:6390"),
        ))
        .unwrap();
        let ledger = redis.as_table_mut().unwrap().remove("ledger").unwrap();
        assert_eq!(ledger["type"].as_str(), Some("redis"));
        assert_eq!(
            ledger["redis"]["url"].as_str(),
            Some("redis://127.0.0.1:6390")
        );
        assert_eq!(redis, local);
    }

    #[test]
    fn target_names_round_trip() {
        for t in Target::ALL {
            assert_eq!(Target::parse(t.name()), Some(t));
        }
        assert_eq!(Target::parse("nginx"), None);
    }
}
