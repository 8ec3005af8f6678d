//! The servers under test, each started as a child process on 127.0.0.1.
//!
//! The baseline sink is this binary re-run as `ingest sink`; Tollgate is the
//! release `tollgate serve` with a fresh temporary data directory. Both get
//! the same tokio worker count (`TOKIO_WORKER_THREADS`) and, when pinning,
//! the same CPUs (`taskset -c`). A child is killed when its
//! [`ServerProcess`] is dropped, before its temporary directory is removed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Which server a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Target {
    /// The decode-and-count sink.
    Baseline,
    /// Tollgate end to end, counted once rows are in SQLite.
    Tollgate,
}

impl Target {
    pub fn label(self) -> &'static str {
        match self {
            Target::Baseline => "baseline (decode + count)",
            Target::Tollgate => "tollgate (into SQLite)",
        }
    }
}

/// How a server process is started.
#[derive(Debug, Clone)]
pub struct Launch {
    /// `TOKIO_WORKER_THREADS` for the server.
    pub workers: usize,
    /// `taskset -c` CPU list, if pinned.
    pub cpus: Option<String>,
    pub tollgate_exe: PathBuf,
    pub sink_exe: PathBuf,
    pub queue_capacity_rows: usize,
    pub batch_max_rows: usize,
}

/// Counters read from a running server.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServerCounters {
    /// Spans decoded (baseline) or rows written to SQLite (Tollgate).
    pub stored: u64,
    /// Seconds the Tollgate writer spent in SQLite batch writes.
    pub write_secs: f64,
    /// Batches written by the Tollgate writer.
    pub batches: u64,
}

/// A running server.
#[derive(Debug)]
pub struct ServerProcess {
    // Field order is drop order: the child dies before its directory goes.
    child: Child,
    stdout_drain: Option<JoinHandle<()>>,
    pub target: Target,
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    /// Tollgate's API, or the sink's HTTP port (for `GET /count`).
    api: SocketAddr,
    client: reqwest::Client,
    dir: TempDir,
}

/// Addresses in a `... listening: otlp_grpc=A otlp_http=B [api=http://C]` line.
pub fn parse_ready_line(line: &str) -> Option<(SocketAddr, SocketAddr, Option<SocketAddr>)> {
    let (_, fields) = line.split_once("listening:")?;
    let mut grpc = None;
    let mut http = None;
    let mut api = None;
    for field in fields.split_whitespace() {
        let (key, value) = field.split_once('=')?;
        let value = value.strip_prefix("http://").unwrap_or(value);
        let addr: SocketAddr = value.parse().ok()?;
        match key {
            "otlp_grpc" => grpc = Some(addr),
            "otlp_http" => http = Some(addr),
            "api" => api = Some(addr),
            _ => {}
        }
    }
    Some((grpc?, http?, api))
}

/// The value of the first sample named exactly `name` (labels included) in
/// a Prometheus/OpenMetrics text exposition.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest.strip_prefix(' ')?.split_whitespace().next()?;
        value.parse().ok()
    })
}

/// The Tollgate config for one run: loopback only, free ports.
pub fn tollgate_config(
    data_dir: &Path,
    queue_capacity_rows: usize,
    batch_max_rows: usize,
) -> String {
    let path = toml::Value::String(data_dir.display().to_string());
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
         path = {path}\n\
         \n\
         [pipeline]\n\
         queue_capacity_rows = {queue_capacity_rows}\n\
         batch_max_rows = {batch_max_rows}\n\
         \n\
         [log]\n\
         level = \"warn\"\n"
    )
}

/// CPU seconds (user + system) used so far by process `pid`, all threads.
pub fn process_cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    cpu_secs_from_stat(&stat).context("unexpected /proc/PID/stat format")
}

/// Fields 14 and 15 (utime, stime) of `/proc/PID/stat`, in seconds.
fn cpu_secs_from_stat(stat: &str) -> Option<f64> {
    // The command name may contain spaces; fields restart after its ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_sec())
}

fn clock_ticks_per_sec() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn has_setpriv() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::process::Command::new("setpriv")
            .arg("--help")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--pdeathsig"))
    })
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn read_ready_line(stdout: &mut BufReader<ChildStdout>) -> anyhow::Result<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if stdout.read_line(&mut line).await? == 0 {
            bail!("the server exited before it was ready");
        }
        if line.contains("listening:") {
            return Ok(line.trim().to_owned());
        }
    }
}

impl ServerProcess {
    pub async fn start(target: Target, launch: &Launch) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tollgate-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path)?;
        let (exe, args): (&Path, Vec<String>) = match target {
            Target::Baseline => (&launch.sink_exe, vec!["sink".into()]),
            Target::Tollgate => {
                let config = dir.path().join("tollgate.toml");
                std::fs::write(
                    &config,
                    tollgate_config(
                        &dir.path().join("data"),
                        launch.queue_capacity_rows,
                        launch.batch_max_rows,
                    ),
                )?;
                (
                    &launch.tollgate_exe,
                    vec![
                        "serve".into(),
                        "--config".into(),
                        config.display().to_string(),
                    ],
                )
            }
        };
        if !exe.is_file() {
            bail!(
                "{} not found; build it with `cargo build --release -p tollgate-collector -p tollgate-bench`",
                exe.display()
            );
        }
        // `taskset` and `setpriv` exec the server: the child pid stays the server's.
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(cpus) = &launch.cpus {
            argv.extend(["taskset".into(), "-c".into(), cpus.into()]);
        }
        if has_setpriv() {
            // Killed with the bench even if the bench itself is SIGKILLed.
            argv.extend(["setpriv".into(), "--pdeathsig".into(), "KILL".into()]);
        }
        argv.push(exe.into());
        argv.extend(args.iter().map(Into::into));
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .env("TOKIO_WORKER_THREADS", launch.workers.to_string())
            .env_remove("RUST_LOG")
            // The sink exits when its stdin closes, i.e. when the bench dies.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let line = match tokio::time::timeout(READY_TIMEOUT, read_ready_line(&mut stdout)).await {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => bail!(
                "{} did not start: {e}\n{}",
                exe.display(),
                log_tail(&log_path)
            ),
            Err(_) => bail!(
                "{} was not ready within {READY_TIMEOUT:?}\n{}",
                exe.display(),
                log_tail(&log_path)
            ),
        };
        let (otlp_grpc, otlp_http, api) =
            parse_ready_line(&line).with_context(|| format!("unexpected ready line `{line}`"))?;
        // Keep reading stdout so the child never blocks on a full pipe.
        let stdout_drain = tokio::spawn(async move {
            let mut line = String::new();
            while matches!(stdout.read_line(&mut line).await, Ok(n) if n > 0) {
                line.clear();
            }
        });
        Ok(Self {
            child,
            stdout_drain: Some(stdout_drain),
            target,
            otlp_grpc,
            otlp_http,
            api: api.unwrap_or(otlp_http),
            client: reqwest::Client::builder().no_proxy().build()?,
            dir,
        })
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the server has exited")
    }

    pub fn cpu_secs(&self) -> anyhow::Result<f64> {
        process_cpu_secs(self.pid()?)
    }

    pub async fn counters(&self) -> anyhow::Result<ServerCounters> {
        match self.target {
            Target::Baseline => {
                let text = self
                    .client
                    .get(format!("http://{}/count", self.api))
                    .send()
                    .await?
                    .error_for_status()?
                    .text()
                    .await?;
                Ok(ServerCounters {
                    stored: text.trim().parse().context("bad /count answer")?,
                    ..Default::default()
                })
            }
            Target::Tollgate => {
                let text = self
                    .client
                    .get(format!("http://{}/metrics", self.api))
                    .send()
                    .await?
                    .error_for_status()?
                    .text()
                    .await?;
                let stored = metric_value(&text, "tollgate_store_rows_written_total")
                    .context("tollgate_store_rows_written_total missing from /metrics")?;
                Ok(ServerCounters {
                    stored: stored as u64,
                    write_secs: metric_value(&text, "tollgate_store_write_seconds_sum")
                        .unwrap_or(0.0),
                    batches: metric_value(&text, "tollgate_store_write_seconds_count")
                        .unwrap_or(0.0) as u64,
                })
            }
        }
    }

    /// Polls until `expected` spans are stored; returns when that was first seen.
    pub async fn wait_stored(
        &self,
        expected: u64,
        deadline: Instant,
        every: Duration,
    ) -> anyhow::Result<(Instant, ServerCounters)> {
        loop {
            let counters = self.counters().await?;
            let now = Instant::now();
            if counters.stored >= expected {
                return Ok((now, counters));
            }
            if now >= deadline {
                bail!(
                    "{} stored {} of {expected} spans before the deadline",
                    self.target.label(),
                    counters.stored
                );
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Distinct rows really in the store (Tollgate), or spans counted (baseline).
    pub async fn distinct_rows(&self) -> anyhow::Result<u64> {
        match self.target {
            Target::Baseline => Ok(self.counters().await?.stored),
            Target::Tollgate => {
                let db = self.dir.path().join("data").join("tollgate.sqlite");
                tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
                    let conn = rusqlite::Connection::open_with_flags(
                        &db,
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                    )?;
                    let n: i64 = conn.query_row("SELECT count(*) FROM calls", [], |r| r.get(0))?;
                    Ok(u64::try_from(n).unwrap_or(0))
                })
                .await?
            }
        }
    }

    /// Asks the server to stop (SIGTERM; stdin EOF for the sink), kills it
    /// if it lingers, then removes its directory.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.child.stdin.take());
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        if let Some(drain) = self.stdout_drain.take() {
            let _ = drain.await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_ready_lines() {
        let (g, h, a) = parse_ready_line(
            "tollgate listening: otlp_grpc=127.0.0.1:4317 otlp_http=127.0.0.1:4318 api=http://127.0.0.1:8080",
        )
        .unwrap();
        assert_eq!(g.port(), 4317);
        assert_eq!(h.port(), 4318);
        assert_eq!(a.unwrap().port(), 8080);
        let (g, h, a) =
            parse_ready_line("sink listening: otlp_grpc=127.0.0.1:1 otlp_http=127.0.0.1:2")
                .unwrap();
        assert_eq!((g.port(), h.port(), a), (1, 2, None));
        assert!(parse_ready_line("tollgate listening: otlp_grpc=nope").is_none());
        assert!(parse_ready_line("starting").is_none());
    }

    #[test]
    fn reads_exact_metric_names_only() {
        let text = "# TYPE tollgate_store_rows_written counter\n\
                    tollgate_store_rows_written_total 1200\n\
                    tollgate_store_write_seconds_sum 0.75\n\
                    tollgate_store_write_seconds_count 3\n\
                    tollgate_ingest_spans_total{outcome=\"accepted\"} 1300\n";
        assert_eq!(
            metric_value(text, "tollgate_store_rows_written_total"),
            Some(1200.0)
        );
        assert_eq!(
            metric_value(text, "tollgate_store_write_seconds_sum"),
            Some(0.75)
        );
        assert_eq!(
            metric_value(text, "tollgate_ingest_spans_total{outcome=\"accepted\"}"),
            Some(1300.0)
        );
        assert_eq!(metric_value(text, "tollgate_store_rows_written"), None);
    }

    #[test]
    fn stat_parsing_skips_names_with_spaces() {
        let stat = "1234 (tokio runtime) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0";
        assert_eq!(
            cpu_secs_from_stat(stat),
            Some(300.0 / clock_ticks_per_sec())
        );
        assert_eq!(cpu_secs_from_stat("garbage"), None);
    }

    #[test]
    fn config_is_loopback_and_valid_toml() {
        let text = tollgate_config(Path::new("/tmp/a \"b\""), 100_000, 10_000);
        let value: toml::Table = text.parse().unwrap();
        assert_eq!(value["storage"]["path"].as_str(), Some("/tmp/a \"b\""));
        assert_eq!(
            value["pipeline"]["queue_capacity_rows"].as_integer(),
            Some(100_000)
        );
        assert_eq!(
            value["receivers"]["otlp"]["grpc_listen"].as_str(),
            Some("127.0.0.1:0")
        );
    }
}
