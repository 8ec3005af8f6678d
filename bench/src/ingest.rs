//! The ingest benchmark: the baseline and every Tollgate target,
//! interleaved, per transport.
//!
//! One run = a fresh deployment of the target (its server processes and,
//! for ClickHouse and Kafka, a fresh ClickHouse test server and broker; see
//! [`crate::deployment`]), a short warm-up (connections, page cache, file
//! growth, consumer group) that must be fully stored before the clock
//! starts, then a fixed number of spans. Throughput is measured spans
//! divided by the time from the first measured send until the last span was
//! stored: for the baseline, the last answer (it counts before answering);
//! for Tollgate, the first `/metrics` poll of the instance that writes the
//! store (every 5 ms, only after the load has ended, so polling does not
//! perturb it) that shows every row written. The rows are then counted in
//! the store itself (SQLite, or `SELECT count()` in ClickHouse), and must
//! all be there, once each.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::child::process_cpu_secs;
use crate::deployment::Deployment;
use crate::infra::Tools;
use crate::load::{Exporter, LoadPlan, Transport, drive};
use crate::spans::RequestPool;
use crate::target::{Launch, Target};

const POLL_EVERY: Duration = Duration::from_millis(5);
/// Extra time allowed for Tollgate to drain its queue (or the Kafka topic)
/// after the load ended or timed out.
const DRAIN_ALLOWANCE: Duration = Duration::from_secs(30);

/// Command-line options of `ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestOptions {
    /// Rounds; each round runs every target once per transport.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Spans measured per run (after the warm-up).
    #[arg(long, default_value_t = 1_000_000)]
    pub spans: u64,
    /// Spans sent (and stored) before the clock starts.
    #[arg(long, default_value_t = 50_000)]
    pub warmup_spans: u64,
    /// Model-call spans per export request.
    #[arg(long, default_value_t = 100)]
    pub spans_per_request: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Transports to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Transport::Grpc, Transport::Http])]
    pub transports: Vec<Transport>,
    /// Servers to measure: baseline (decode + count), tollgate (into SQLite),
    /// clickhouse (into the ClickHouse test server), kafka (ingest instance ->
    /// tansu -> process instance -> ClickHouse); also tollgate-memory,
    /// tollgate-power (other durability levels) and tollgate-secure (keys
    /// and TLS on). ClickHouse and Kafka are skipped, with a notice, when
    /// chdb or tansu is missing.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Target::ALL)]
    pub targets: Vec<Target>,
    /// gRPC connections (HTTP/2) the in-flight requests are spread over.
    #[arg(long, default_value_t = 1)]
    pub grpc_connections: usize,
    /// First wait after a refused request (queue full, or Kafka slow to
    /// acknowledge), in milliseconds;
    /// doubled on each refusal of the same request.
    #[arg(long, default_value_t = 2)]
    pub backoff_min_ms: u64,
    /// Longest wait after a refusal, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub backoff_max_ms: u64,
    /// Tokio worker threads of each server process (TOKIO_WORKER_THREADS), the
    /// same for all; the Kafka ingest and process instances get this many each.
    #[arg(long, default_value_t = 1)]
    pub server_workers: usize,
    /// CPUs of the servers (`taskset -c` list); the Kafka ingest and process
    /// instances share them. Default: 1 on machines with 2+ CPUs.
    #[arg(long)]
    pub server_cpus: Option<String>,
    /// CPUs of the load generator. Default: 0 on machines with 2+ CPUs.
    #[arg(long)]
    pub client_cpus: Option<String>,
    /// CPUs of the infrastructure (ClickHouse test server, Kafka broker); its
    /// CPU use is reported apart from the servers'. Default: the load
    /// generator's CPUs.
    #[arg(long)]
    pub infra_cpus: Option<String>,
    /// Do not pin anything; the load generator then uses every CPU.
    #[arg(long, conflicts_with_all = ["server_cpus", "client_cpus", "infra_cpus"])]
    pub no_pin: bool,
    /// The `tollgate` binary. Default: next to this binary (target/release).
    #[arg(long)]
    pub tollgate: Option<PathBuf>,
    /// Python with `chdb-core` for the ClickHouse test server. Default: the
    /// one `tests/clickhouse-server/launch.sh python` prints (it installs
    /// chdb-core into a cached venv if needed).
    #[arg(long)]
    pub chdb_python: Option<PathBuf>,
    /// The `tansu` broker binary. Default: where `tests/kafka-broker/launch.sh`
    /// caches it (~/.cache/tollgate/tools/bin/tansu); never built by the bench.
    #[arg(long)]
    pub tansu: Option<PathBuf>,
    /// `queue_capacity_rows` given to Tollgate (its default).
    #[arg(long, default_value_t = 100_000)]
    pub queue_capacity_rows: usize,
    /// `batch_max_rows` given to Tollgate (its default).
    #[arg(long, default_value_t = 25_000)]
    pub batch_max_rows: usize,
    /// Upper bound on one run (warm-up + load), in seconds.
    #[arg(long, default_value_t = 120)]
    pub max_run_secs: u64,
    /// Markdown file to refresh. Default: bench/RESULTS.md.
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Print the table only; leave the results file alone.
    #[arg(long)]
    pub no_write: bool,
}

/// Where the servers and the load generator run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub server_cpus: Option<String>,
    pub client_cpus: Option<String>,
    /// The ClickHouse test server and the broker.
    pub infra_cpus: Option<String>,
    pub server_workers: usize,
    pub client_workers: usize,
}

/// CPUs in a `taskset -c` list such as `0`, `0,2` or `0-3,6`.
pub fn cpu_list_len(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if b < a {
                    return None;
                }
                n += b - a + 1;
            }
            None => {
                part.parse::<usize>().ok()?;
                n += 1;
            }
        }
    }
    Some(n)
}

impl Layout {
    /// Pins servers to CPU 1 and the load generator (and the infrastructure)
    /// to CPU 0 by default when there are two or more CPUs.
    pub fn choose(options: &IngestOptions, cpus: usize) -> anyhow::Result<Self> {
        let pin = !options.no_pin && cpus >= 2;
        let server_cpus = options
            .server_cpus
            .clone()
            .or_else(|| pin.then(|| "1".to_owned()));
        let client_cpus = options
            .client_cpus
            .clone()
            .or_else(|| pin.then(|| "0".to_owned()));
        let client_workers = match &client_cpus {
            Some(list) => match cpu_list_len(list) {
                Some(n) if n > 0 => n,
                _ => bail!("--client-cpus `{list}` is not a CPU list like `0` or `0,2`"),
            },
            None => cpus.max(1),
        };
        if let Some(list) = &server_cpus
            && cpu_list_len(list).is_none_or(|n| n == 0)
        {
            bail!("--server-cpus `{list}` is not a CPU list like `1` or `1-3`");
        }
        let infra_cpus = options.infra_cpus.clone().or_else(|| client_cpus.clone());
        if let Some(list) = &infra_cpus
            && cpu_list_len(list).is_none_or(|n| n == 0)
        {
            bail!("--infra-cpus `{list}` is not a CPU list like `0` or `0,2`");
        }
        if options.server_workers == 0 {
            bail!("--server-workers must be at least 1");
        }
        Ok(Self {
            server_cpus,
            client_cpus,
            infra_cpus,
            server_workers: options.server_workers,
            client_workers,
        })
    }
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub round: usize,
    pub transport: Transport,
    pub target: Target,
    /// Spans acknowledged in the measured phase.
    pub spans: u64,
    /// Seconds until the last measured span was stored.
    pub secs: f64,
    /// Seconds until the last measured span was acknowledged.
    pub ack_secs: f64,
    pub refused_requests: u64,
    /// The sink, or every Tollgate instance (Kafka: ingest + process).
    pub server_cpu_secs: f64,
    /// Kafka: the process instance's share of `server_cpu_secs`.
    pub process_cpu_secs: f64,
    /// The ClickHouse test server (not in `server_cpu_secs`).
    pub clickhouse_cpu_secs: f64,
    /// The Kafka broker (not in `server_cpu_secs`).
    pub broker_cpu_secs: f64,
    pub client_cpu_secs: f64,
    /// Tollgate only: seconds the writer spent in batch writes to the store, and batches.
    pub write_secs: f64,
    pub batches: u64,
    /// Tollgate only: the call identity's bytes per remembered call at the end.
    pub identity_bytes_per_call: f64,
    pub timed_out: bool,
}

impl RunResult {
    /// Spans per second until stored.
    pub fn spans_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.spans as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct Bench {
    pub options: IngestOptions,
    pub layout: Layout,
    pub launch: Launch,
    pub pool: Arc<RequestPool>,
}

/// The targets of `wanted` (once each, in order) whose tools were found,
/// and one line per missing tool naming the targets it rules out.
pub fn available_targets(wanted: &[Target], tools: &Tools) -> (Vec<Target>, Vec<String>) {
    let mut targets: Vec<Target> = Vec::new();
    for &t in wanted {
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    let mut notices = Vec::new();
    let mut skip = |targets: &mut Vec<Target>, needs: fn(Target) -> bool, what: &str, why: &str| {
        let skipped: Vec<&str> = targets
            .iter()
            .filter(|&&t| needs(t))
            .map(|t| t.name())
            .collect();
        if !skipped.is_empty() {
            notices.push(format!(
                "ingest: skipping target(s) {}: no {what}: {why}",
                skipped.join(", ")
            ));
            targets.retain(|&t| !needs(t));
        }
    };
    if let Err(why) = &tools.chdb_python {
        skip(
            &mut targets,
            Target::uses_clickhouse,
            "ClickHouse engine",
            why,
        );
    }
    if let Err(why) = &tools.tansu {
        skip(&mut targets, Target::uses_kafka, "Kafka broker", why);
    }
    (targets, notices)
}

impl Bench {
    /// Checks the options, finds chdb and tansu for the targets that need
    /// them and prints a one-line notice for each target skipped.
    pub fn new(
        mut options: IngestOptions,
        layout: Layout,
        sink_exe: PathBuf,
    ) -> anyhow::Result<Self> {
        let tollgate_exe = match &options.tollgate {
            Some(p) => p.clone(),
            None => sink_exe.with_file_name("tollgate"),
        };
        let tools = Tools::find(
            options.chdb_python.as_deref(),
            options.tansu.as_deref(),
            options.targets.iter().any(|t| t.uses_clickhouse()),
            options.targets.iter().any(|t| t.uses_kafka()),
        );
        let (targets, notices) = available_targets(&options.targets, &tools);
        for notice in &notices {
            eprintln!("{notice}");
        }
        if targets.is_empty() && !options.targets.is_empty() {
            bail!("no target left to measure");
        }
        options.targets = targets;
        let launch = Launch {
            workers: layout.server_workers,
            cpus: layout.server_cpus.clone(),
            infra_cpus: layout.infra_cpus.clone(),
            tollgate_exe,
            sink_exe,
            queue_capacity_rows: options.queue_capacity_rows,
            batch_max_rows: options.batch_max_rows,
            chdb_python: tools.chdb_python.ok(),
            tansu: tools.tansu.ok(),
        };
        if options.spans == 0
            || options.runs == 0
            || options.concurrency == 0
            || options.grpc_connections == 0
        {
            bail!("--spans, --runs, --concurrency and --grpc-connections must be at least 1");
        }
        if options.targets.is_empty() || options.transports.is_empty() {
            bail!("--targets and --transports must name at least one");
        }
        let pool = Arc::new(RequestPool::new(options.spans_per_request)?);
        Ok(Self {
            options,
            layout,
            launch,
            pool,
        })
    }

    fn requests_for(&self, spans: u64) -> u64 {
        spans.div_ceil(self.pool.spans_per_request() as u64)
    }

    /// Every round, every transport, every target; the order reversed every
    /// other round so slow drift of the machine favours none.
    pub async fn run(&self) -> anyhow::Result<Vec<RunResult>> {
        let mut results = Vec::new();
        for round in 0..self.options.runs {
            let mut order = self.options.targets.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for &transport in &self.options.transports {
                for &target in &order {
                    let r = self.run_once(round, transport, target).await?;
                    let mut infra = String::new();
                    if target.uses_clickhouse() {
                        infra += &format!(", ClickHouse CPU {:.2} s", r.clickhouse_cpu_secs);
                    }
                    if target.uses_kafka() {
                        infra += &format!(", broker CPU {:.2} s", r.broker_cpu_secs);
                    }
                    println!(
                        "round {}/{} {:<13} {:<29} {:>9.0} spans/s  ({} spans in {:.2} s, acked in {:.2} s, {} refused, server CPU {:.2} s{infra}){}",
                        round + 1,
                        self.options.runs,
                        transport.label(),
                        target.label(),
                        r.spans_per_sec(),
                        r.spans,
                        r.secs,
                        r.ack_secs,
                        r.refused_requests,
                        r.server_cpu_secs,
                        if r.timed_out { "  TIMED OUT" } else { "" },
                    );
                    results.push(r);
                }
            }
        }
        Ok(results)
    }

    async fn run_once(
        &self,
        round: usize,
        transport: Transport,
        target: Target,
    ) -> anyhow::Result<RunResult> {
        let server = Deployment::start(target, &self.launch, round, transport).await?;
        let measured = self.measure(&server, round, transport).await;
        let stopped = server.stop().await;
        let result = measured?;
        stopped?;
        Ok(result)
    }

    async fn measure(
        &self,
        server: &Deployment,
        round: usize,
        transport: Transport,
    ) -> anyhow::Result<RunResult> {
        let addr = server.otlp(transport)?;
        let concurrency = self.options.concurrency;
        let exporter = Exporter::connect(
            transport,
            addr,
            concurrency,
            self.options.grpc_connections,
            server.ingest_auth().as_ref(),
        )
        .await?;
        let deadline = Instant::now() + Duration::from_secs(self.options.max_run_secs);

        let warm_requests = self.requests_for(self.options.warmup_spans);
        let warm = drive(
            &exporter,
            &self.pool,
            LoadPlan {
                first_seq: 0,
                requests: warm_requests,
                concurrency,
                first_backoff: Duration::from_millis(self.options.backoff_min_ms),
                max_backoff: Duration::from_millis(self.options.backoff_max_ms),
                deadline,
            },
        )
        .await?;
        if warm.timed_out {
            bail!("the warm-up did not finish within --max-run-secs");
        }
        let (_, before) = server
            .wait_stored(warm.accepted_spans, deadline, POLL_EVERY)
            .await?;
        let server_cpu_before = server.cpu_secs()?;
        let client_cpu_before = process_cpu_secs(std::process::id())?;

        let started = Instant::now();
        let load = drive(
            &exporter,
            &self.pool,
            LoadPlan {
                first_seq: warm_requests,
                requests: self.requests_for(self.options.spans),
                concurrency,
                first_backoff: Duration::from_millis(self.options.backoff_min_ms),
                max_backoff: Duration::from_millis(self.options.backoff_max_ms),
                deadline,
            },
        )
        .await?;
        let acked = started + load.elapsed;
        let expected = warm.accepted_spans + load.accepted_spans;
        let (landed, after) = server
            .wait_stored(expected, deadline.max(acked) + DRAIN_ALLOWANCE, POLL_EVERY)
            .await?;
        let cpu = server.cpu_secs()? - server_cpu_before;
        let client_cpu = process_cpu_secs(std::process::id())? - client_cpu_before;
        let done = match server.target {
            // The sink counts before it answers: the last answer is the end.
            Target::Baseline => acked,
            _ => landed,
        };

        let stored = server.stored_rows().await?;
        if stored.rows != expected || stored.distinct != expected {
            bail!(
                "{} holds {} rows ({} distinct), expected {expected}: spans were lost or duplicated",
                server.target.label(),
                stored.rows,
                stored.distinct
            );
        }
        if warm.rejected_spans + load.rejected_spans > 0 {
            bail!(
                "{} rejected {} spans as invalid; the generated spans must all be model calls",
                server.target.label(),
                warm.rejected_spans + load.rejected_spans
            );
        }
        Ok(RunResult {
            round,
            transport,
            target: server.target,
            spans: load.accepted_spans,
            secs: done.duration_since(started).as_secs_f64(),
            ack_secs: load.elapsed.as_secs_f64(),
            refused_requests: load.refused_requests,
            server_cpu_secs: cpu.server,
            process_cpu_secs: cpu.process,
            clickhouse_cpu_secs: cpu.clickhouse,
            broker_cpu_secs: cpu.broker,
            client_cpu_secs: client_cpu,
            write_secs: after.write_secs - before.write_secs,
            batches: after.batches - before.batches,
            identity_bytes_per_call: after.identity_bytes as f64
                / after.identity_calls.max(1) as f64,
            timed_out: load.timed_out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: IngestOptions,
    }

    fn options(args: &[&str]) -> IngestOptions {
        Cli::try_parse_from(std::iter::once("ingest").chain(args.iter().copied()))
            .unwrap()
            .options
    }

    #[test]
    fn cpu_lists_count_ranges_and_reject_garbage() {
        assert_eq!(cpu_list_len("0"), Some(1));
        assert_eq!(cpu_list_len("0,2"), Some(2));
        assert_eq!(cpu_list_len("0-3,6"), Some(5));
        assert_eq!(cpu_list_len("3-1"), None);
        assert_eq!(cpu_list_len("a"), None);
    }

    #[test]
    fn pins_by_default_on_two_cpus_only() {
        let l = Layout::choose(&options(&[]), 2).unwrap();
        assert_eq!(l.server_cpus.as_deref(), Some("1"));
        assert_eq!(l.client_cpus.as_deref(), Some("0"));
        assert_eq!((l.server_workers, l.client_workers), (1, 1));
        let l = Layout::choose(&options(&[]), 1).unwrap();
        assert_eq!(
            (l.server_cpus, l.client_cpus, l.client_workers),
            (None, None, 1)
        );
        let l = Layout::choose(&options(&["--no-pin", "--server-workers", "2"]), 2).unwrap();
        assert_eq!(
            (l.server_cpus, l.client_workers, l.server_workers),
            (None, 2, 2)
        );
        let l = Layout::choose(&options(&["--client-cpus", "0,2-3"]), 4).unwrap();
        assert_eq!(l.client_workers, 3);
        assert!(Layout::choose(&options(&["--client-cpus", "x"]), 4).is_err());
        assert_eq!(
            options(&["--transports", "http"]).transports,
            vec![Transport::Http]
        );
    }

    #[test]
    fn infrastructure_shares_the_load_generators_cpus_by_default() {
        let l = Layout::choose(&options(&[]), 2).unwrap();
        assert_eq!(l.infra_cpus.as_deref(), Some("0"));
        let l = Layout::choose(&options(&["--client-cpus", "0,2"]), 4).unwrap();
        assert_eq!(l.infra_cpus.as_deref(), Some("0,2"));
        let l = Layout::choose(&options(&["--infra-cpus", "3"]), 4).unwrap();
        assert_eq!(
            (l.server_cpus.as_deref(), l.infra_cpus.as_deref()),
            (Some("1"), Some("3"))
        );
        let l = Layout::choose(&options(&["--no-pin"]), 2).unwrap();
        assert_eq!(l.infra_cpus, None);
        assert!(Layout::choose(&options(&["--infra-cpus", "2-1"]), 4).is_err());
        let cli = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("ingest").chain(args.iter().copied())).is_ok()
        };
        assert!(!cli(&["--no-pin", "--infra-cpus", "0"]));
    }

    #[test]
    fn every_target_by_default_and_by_name() {
        assert_eq!(options(&[]).targets, Target::ALL.to_vec());
        assert_eq!(
            options(&["--targets", "kafka,baseline"]).targets,
            vec![Target::Kafka, Target::Baseline]
        );
        let cli = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("ingest").chain(args.iter().copied())).is_ok()
        };
        assert!(!cli(&["--targets", "redpanda"]));
    }

    fn tools(chdb: bool, tansu: bool) -> Tools {
        let found = |ok: bool, path: &str, why: &str| {
            if ok {
                Ok(PathBuf::from(path))
            } else {
                Err(why.to_owned())
            }
        };
        Tools {
            chdb_python: found(chdb, "/venv/bin/python", "launch.sh python failed"),
            tansu: found(
                tansu,
                "/tools/bin/tansu",
                "no tansu broker at /tools/bin/tansu",
            ),
        }
    }

    #[test]
    fn missing_tools_skip_only_the_targets_that_need_them() {
        let all = Target::ALL.to_vec();
        let (targets, notices) = available_targets(&all, &tools(true, true));
        assert_eq!((targets, notices.len()), (all.clone(), 0));

        let (targets, notices) = available_targets(&all, &tools(true, false));
        assert_eq!(
            targets,
            vec![Target::Baseline, Target::Tollgate, Target::Clickhouse]
        );
        assert_eq!(
            notices,
            vec![
                "ingest: skipping target(s) kafka: no Kafka broker: no tansu broker at /tools/bin/tansu"
            ]
        );

        // Kafka writes ClickHouse too: without chdb both go, in one line.
        let (targets, notices) = available_targets(&all, &tools(false, false));
        assert_eq!(targets, vec![Target::Baseline, Target::Tollgate]);
        assert_eq!(
            notices,
            vec![
                "ingest: skipping target(s) clickhouse, kafka: no ClickHouse engine: launch.sh python failed"
            ]
        );

        // Nothing to say about targets not asked for; repeats collapse.
        let asked = [Target::Tollgate, Target::Baseline, Target::Tollgate];
        let (targets, notices) = available_targets(&asked, &tools(false, false));
        assert_eq!(targets, vec![Target::Tollgate, Target::Baseline]);
        assert!(notices.is_empty());
    }
}
