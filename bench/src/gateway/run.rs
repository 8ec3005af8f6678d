//! One benchmark run: rounds of every target, each in fresh processes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;

use super::load::{self, Endpoint, Samples};
use super::servers::{self, Launch, MODEL, Process, Target};

/// The shared ledger's counters in Tollgate's `/metrics`.
const LEDGER_METRICS: [&str; 4] = [
    "tollgate_ledger_exchanges_total",
    "tollgate_ledger_exchange_failures_total",
    "tollgate_ledger_requests_total",
    "tollgate_ledger_short_exchanges_total",
];

/// `scripts/bench gateway` options.
#[derive(Debug, Clone, Args)]
pub struct GatewayOptions {
    /// Targets, comma-separated: direct, passthrough, tollgate, tollgate-redis, litellm, portkey.
    #[arg(long, value_delimiter = ',', default_value = "direct,passthrough,tollgate,tollgate-redis,litellm,portkey", value_parser = parse_target)]
    pub targets: Vec<Target>,
    /// Rounds; the target order is reversed every other round.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Latency phase: requests per second (open loop).
    #[arg(long, default_value_t = 25.0)]
    pub rate: f64,
    /// Latency phase: seconds.
    #[arg(long, default_value_t = 12)]
    pub latency_secs: u64,
    /// Throughput phase: concurrent callers (closed loop).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Throughput phase: seconds.
    #[arg(long, default_value_t = 8)]
    pub throughput_secs: u64,
    /// Warm-up before the phases (4 callers), seconds.
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// `max_tokens` of each request (the mock answers that many tokens).
    #[arg(long, default_value_t = 16)]
    pub max_tokens: u32,
    /// CPU(s) of the proxy under test (`taskset -c`).
    #[arg(long, default_value = "1")]
    pub proxy_cpus: String,
    /// CPU(s) of the load generator and the mock provider.
    #[arg(long, default_value = "0")]
    pub client_cpus: String,
    /// Do not pin anything.
    #[arg(long)]
    pub no_pin: bool,
    /// Results file (default: bench/RESULTS.md).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Print the section without writing the results file.
    #[arg(long)]
    pub no_write: bool,
    /// Keep going when a peer (LiteLLM, Portkey) or `redis-server` (for
    /// tollgate-redis) is not installed.
    #[arg(long)]
    pub skip_missing: bool,
}

fn parse_target(s: &str) -> Result<Target, String> {
    Target::parse(s).ok_or_else(|| {
        format!(
            "unknown target `{s}` (expected one of: {})",
            Target::ALL.map(Target::name).join(", ")
        )
    })
}

/// What one target did in one round.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub round: usize,
    pub target: Target,
    pub latency: Samples,
    pub throughput: Samples,
    /// CPU seconds of the proxy during the throughput phase (0 for direct).
    pub proxy_cpu_secs: f64,
    /// CPU seconds of the mock provider during the throughput phase.
    pub mock_cpu_secs: f64,
    /// Tollgate: rows stored for the run's answered requests, checked after it.
    pub rows_checked: Option<RowsCheck>,
    /// Tollgate with the Redis ledger: its exchanges during the two phases.
    pub ledger: Option<LedgerExchanges>,
}

/// Round trips to the shared ledger during the latency and throughput
/// phases (from `/metrics` before and after), and what else they cost.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LedgerExchanges {
    /// Requests answered in the two phases.
    pub answered: u64,
    /// Successful round trips.
    pub exchanges: u64,
    pub failures: u64,
    /// Counters carried by the round trips.
    pub counters: u64,
    /// Calls short of lease that waited for a round trip.
    pub short: u64,
    /// Round trips in the throughput phase alone, and its answered requests.
    pub throughput_exchanges: u64,
    pub throughput_answered: u64,
    /// CPU seconds of `redis-server` during the throughput phase.
    pub redis_cpu_secs: f64,
}

impl LedgerExchanges {
    /// Round trips per 1,000 answered requests.
    pub fn per_thousand(&self) -> f64 {
        self.exchanges as f64 * 1000.0 / self.answered.max(1) as f64
    }
}

/// Tollgate's rows against the requests it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowsCheck {
    pub answered: u64,
    pub rows: u64,
}

/// The benchmark: options and the programs it starts.
#[derive(Debug)]
pub struct Bench {
    pub options: GatewayOptions,
    pub launch: Launch,
    body: Bytes,
}

impl Bench {
    pub fn new(options: GatewayOptions, launch: Launch) -> anyhow::Result<Self> {
        if options.rounds == 0 || options.concurrency == 0 || options.rate <= 0.0 {
            bail!("--rounds, --concurrency and --rate must be positive");
        }
        for (target, missing) in [
            (Target::Litellm, launch.litellm_exe.is_none()),
            (Target::Portkey, launch.portkey_js.is_none()),
        ] {
            if missing && options.targets.contains(&target) && !options.skip_missing {
                bail!(
                    "{} is not installed: run bench/peers/launch.sh {}, or pass --skip-missing",
                    target.label(),
                    target.name()
                );
            }
        }
        if launch.redis_exe.is_none()
            && options.targets.contains(&Target::TollgateRedis)
            && !options.skip_missing
        {
            bail!(
                "redis-server is not on PATH: the tollgate-redis target starts one of its own \
                 (apt-get install redis-server); or leave tollgate-redis out of --targets, or \
                 pass --skip-missing"
            );
        }
        let body = load::chat_body(MODEL, options.max_tokens);
        Ok(Self {
            options,
            launch,
            body,
        })
    }

    /// Targets that will run (peers that are not installed are left out
    /// with `--skip-missing`).
    pub fn targets(&self) -> Vec<Target> {
        self.options
            .targets
            .iter()
            .copied()
            .filter(|t| match t {
                Target::Litellm => self.launch.litellm_exe.is_some(),
                Target::Portkey => self.launch.portkey_js.is_some(),
                Target::TollgateRedis => self.launch.redis_exe.is_some(),
                _ => true,
            })
            .collect()
    }

    pub async fn run(&self) -> anyhow::Result<Vec<RunResult>> {
        let client = load::client()?;
        let mut results = Vec::new();
        for round in 1..=self.options.rounds {
            let mut order = self.targets();
            if round % 2 == 0 {
                order.reverse();
            }
            for target in order {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("tollgate-bench-gw-{}-", target.name()))
                    .tempdir()?;
                let result = self
                    .run_one(&client, round, target, dir.path())
                    .await
                    .with_context(|| format!("round {round}, {}", target.label()))?;
                println!(
                    "round {round} {:<14} p50 {:>7.3} ms  p99 {:>7.3} ms  {:>8.0} req/s  errors {}/{}{}",
                    target.name(),
                    load::quantile_ms(&result.latency.latencies_us, 0.5).unwrap_or(f64::NAN),
                    load::quantile_ms(&result.latency.latencies_us, 0.99).unwrap_or(f64::NAN),
                    result.throughput.throughput(),
                    result.latency.errors,
                    result.throughput.errors,
                    result.ledger.map_or_else(String::new, |l| format!(
                        "  ledger: {} round trips ({:.1}/1,000 requests), {} short, {} failed",
                        l.exchanges,
                        l.per_thousand(),
                        l.short,
                        l.failures
                    )),
                );
                results.push(result);
            }
        }
        Ok(results)
    }

    async fn run_one(
        &self,
        client: &reqwest::Client,
        round: usize,
        target: Target,
        dir: &Path,
    ) -> anyhow::Result<RunResult> {
        let (mut mock, mock_base) = servers::mock(&self.launch, dir).await?;
        let mut redis = if target.needs_redis() {
            Some(servers::redis(&self.launch, dir).await?)
        } else {
            None
        };
        let redis_url = redis.as_ref().map(|(_, url)| url.as_str());
        let mut proxy = servers::proxy(target, &self.launch, dir, &mock_base, redis_url).await?;
        let ledger = Ledger {
            metrics_url: proxy
                .metrics_url
                .as_deref()
                .filter(|_| target.needs_redis()),
            redis: redis.as_ref().map(|(p, _)| p),
        };
        let mut outcome = self
            .phases(
                client,
                &proxy.endpoint,
                proxy.process.as_ref(),
                &mock,
                ledger,
            )
            .await;
        if let Ok(phases) = &mut outcome
            && target.is_tollgate()
        {
            phases.rows = Some(tollgate_rows(dir, phases.answered_total).await);
        }
        if let Some(p) = proxy.process.as_mut() {
            p.stop().await?;
        }
        if let Some((r, _)) = redis.as_mut() {
            r.stop().await?;
        }
        mock.stop().await?;
        let phases = outcome?;
        if phases.latency.errors + phases.throughput.errors > 0 {
            bail!(
                "{} of {} requests failed; first: {}",
                phases.latency.errors + phases.throughput.errors,
                phases.latency.errors
                    + phases.throughput.errors
                    + phases.latency.answered()
                    + phases.throughput.answered(),
                phases
                    .latency
                    .first_error
                    .or(phases.throughput.first_error)
                    .unwrap_or_default()
            );
        }
        Ok(RunResult {
            round,
            target,
            latency: phases.latency,
            throughput: phases.throughput,
            proxy_cpu_secs: phases.proxy_cpu,
            mock_cpu_secs: phases.mock_cpu,
            rows_checked: phases.rows,
            ledger: phases.ledger,
        })
    }

    async fn phases(
        &self,
        client: &reqwest::Client,
        endpoint: &Endpoint,
        proxy: Option<&Process>,
        mock: &Process,
        ledger: Ledger<'_>,
    ) -> anyhow::Result<Phases> {
        let o = &self.options;
        let warm = load::closed_loop(
            client,
            endpoint,
            &self.body,
            4,
            Duration::from_secs(o.warmup_secs),
        )
        .await?;
        if warm.answered() == 0 || warm.errors > 0 {
            bail!(
                "warm-up: {} answered, {} failed; first failure: {}",
                warm.answered(),
                warm.errors,
                warm.first_error.unwrap_or_default()
            );
        }
        let before = ledger.scrape(client).await?;
        let latency = load::fixed_rate(
            client,
            endpoint,
            &self.body,
            o.rate,
            Duration::from_secs(o.latency_secs),
        )
        .await?;
        let cpu = |p: Option<&Process>| p.map_or(Ok(0.0), Process::cpu_secs);
        let (proxy0, mock0, redis0) = (cpu(proxy)?, mock.cpu_secs()?, cpu(ledger.redis)?);
        let middle = ledger.scrape(client).await?;
        let throughput = load::closed_loop(
            client,
            endpoint,
            &self.body,
            o.concurrency,
            Duration::from_secs(o.throughput_secs),
        )
        .await?;
        let (proxy1, mock1, redis1) = (cpu(proxy)?, mock.cpu_secs()?, cpu(ledger.redis)?);
        let after = ledger.scrape(client).await?;
        let exchanges = match (before, middle, after) {
            (Some(b), Some(m), Some(a)) => Some(LedgerExchanges {
                answered: latency.answered() + throughput.answered(),
                exchanges: a[0] - b[0],
                failures: a[1] - b[1],
                counters: a[2] - b[2],
                short: a[3] - b[3],
                throughput_exchanges: a[0] - m[0],
                throughput_answered: throughput.answered(),
                redis_cpu_secs: redis1 - redis0,
            }),
            _ => None,
        };
        Ok(Phases {
            ledger: exchanges,
            answered_total: warm.answered() + latency.answered() + throughput.answered(),
            latency,
            throughput,
            proxy_cpu: proxy1 - proxy0,
            mock_cpu: mock1 - mock0,
            rows: None,
        })
    }
}

struct Phases {
    latency: Samples,
    throughput: Samples,
    proxy_cpu: f64,
    mock_cpu: f64,
    answered_total: u64,
    rows: Option<RowsCheck>,
    ledger: Option<LedgerExchanges>,
}

/// Where the shared ledger's exchanges are read, when the target has one.
#[derive(Clone, Copy)]
struct Ledger<'a> {
    /// Tollgate's `/metrics`.
    metrics_url: Option<&'a str>,
    /// The `redis-server` process.
    redis: Option<&'a Process>,
}

impl Ledger<'_> {
    /// [`LEDGER_METRICS`] now, when there is a shared ledger.
    async fn scrape(&self, client: &reqwest::Client) -> anyhow::Result<Option<[u64; 4]>> {
        let Some(url) = self.metrics_url else {
            return Ok(None);
        };
        let text = client
            .get(url)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("reading {url}"))?
            .text()
            .await?;
        let mut values = [0; 4];
        for (value, name) in values.iter_mut().zip(LEDGER_METRICS) {
            *value = metric(&text, name)
                .with_context(|| format!("no `{name}` in Tollgate's /metrics"))?;
        }
        Ok(Some(values))
    }
}

/// The value of the unlabelled metric `name` in a Prometheus exposition.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits (up to 30 s) until Tollgate's store holds one gateway row per
/// answered request, reading the SQLite file directly.
async fn tollgate_rows(dir: &Path, answered: u64) -> RowsCheck {
    let db = dir.join("data").join("tollgate.sqlite");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = count_gateway_rows(&db).unwrap_or(0);
        if rows >= answered || Instant::now() > deadline {
            return RowsCheck { answered, rows };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn count_gateway_rows(db: &Path) -> anyhow::Result<u64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM calls WHERE mode = 'gateway'",
        [],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_exact_name() {
        let text = "# HELP tollgate_ledger_exchanges Round trips\n\
                    # TYPE tollgate_ledger_exchanges counter\n\
                    tollgate_ledger_exchanges_total 42\n\
                    tollgate_ledger_exchange_failures_total 0\n";
        assert_eq!(metric(text, "tollgate_ledger_exchanges_total"), Some(42));
        assert_eq!(
            metric(text, "tollgate_ledger_exchange_failures_total"),
            Some(0)
        );
        assert_eq!(metric(text, "tollgate_ledger_requests_total"), None);
    }
}
