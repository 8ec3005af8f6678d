//! The servers under test and how each is configured.
//!
//! The baseline sink is this binary re-run as `ingest sink`; every Tollgate
//! target is the release `tollgate serve` with a config rendered here
//! ([`TollgateConfig`]). Each server gets the same tokio worker count
//! (`TOKIO_WORKER_THREADS`) and, when pinning, the same CPUs (`taskset -c`).
//! A [`ServerProcess`] is one such child; [`crate::deployment`] puts a
//! target's processes together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::ChildStdout;
use tokio::task::JoinHandle;

use crate::child::{self, Child, Spawn};
use crate::secure::{self, ClientAuth, Credentials};
use crate::spans;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Which server a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Target {
    /// The decode-and-count sink.
    Baseline,
    /// Tollgate end to end, counted once rows are in SQLite (durability
    /// `process`, the default: acknowledged once in the write-ahead log).
    Tollgate,
    /// The same with `[durability] level = "memory"` (no write-ahead log).
    TollgateMemory,
    /// The same with `level = "power"` (the log flushed to the device
    /// before a request is acknowledged, group commit).
    TollgatePower,
    /// `tollgate` with keys and TLS on: `[auth] mode = "keys"` (every
    /// request carries an ingest key) and `[tls]` on every listener.
    TollgateSecure,
    /// Tollgate end to end into the ClickHouse test server (chdb engine).
    Clickhouse,
    /// A Tollgate ingest instance producing to Kafka (tansu) and a process
    /// instance consuming it into the ClickHouse test server.
    Kafka,
}

impl Target {
    pub fn label(self) -> &'static str {
        match self {
            Target::Baseline => "baseline (decode + count)",
            Target::Tollgate => "tollgate (into SQLite)",
            Target::TollgateMemory => "tollgate (into SQLite, durability memory)",
            Target::TollgatePower => "tollgate (into SQLite, durability power)",
            Target::TollgateSecure => "tollgate (into SQLite, keys + TLS)",
            Target::Clickhouse => "tollgate (into ClickHouse)",
            Target::Kafka => "tollgate (Kafka → ClickHouse)",
        }
    }

    /// The name on the command line (`--targets`).
    pub fn name(self) -> &'static str {
        match self {
            Target::Baseline => "baseline",
            Target::Tollgate => "tollgate",
            Target::TollgateMemory => "tollgate-memory",
            Target::TollgatePower => "tollgate-power",
            Target::TollgateSecure => "tollgate-secure",
            Target::Clickhouse => "clickhouse",
            Target::Kafka => "kafka",
        }
    }

    /// Every target, in the default order of `--targets`.
    pub const ALL: [Target; 4] = [
        Target::Baseline,
        Target::Tollgate,
        Target::Clickhouse,
        Target::Kafka,
    ];

    /// `[durability] level` of its Tollgate instances.
    pub fn durability(self) -> &'static str {
        match self {
            Target::TollgateMemory => "memory",
            Target::TollgatePower => "power",
            _ => "process",
        }
    }

    pub fn is_tollgate(self) -> bool {
        self != Target::Baseline
    }

    /// Requests need a key, over TLS.
    pub fn is_secure(self) -> bool {
        self == Target::TollgateSecure
    }

    /// Needs the ClickHouse test server (chdb).
    pub fn uses_clickhouse(self) -> bool {
        matches!(self, Target::Clickhouse | Target::Kafka)
    }

    /// Needs the Kafka broker (tansu).
    pub fn uses_kafka(self) -> bool {
        self == Target::Kafka
    }
}

/// How servers are started.
#[derive(Debug, Clone)]
pub struct Launch {
    /// `TOKIO_WORKER_THREADS` for each server process.
    pub workers: usize,
    /// `taskset -c` CPU list of the servers, if pinned.
    pub cpus: Option<String>,
    /// `taskset -c` CPU list of the ClickHouse test server and the broker.
    pub infra_cpus: Option<String>,
    pub tollgate_exe: PathBuf,
    pub sink_exe: PathBuf,
    pub queue_capacity_rows: usize,
    pub batch_max_rows: usize,
    /// The python with `chdb-core`, when found.
    pub chdb_python: Option<PathBuf>,
    /// The `tansu` binary, when found.
    pub tansu: Option<PathBuf>,
}

/// Where a Tollgate instance stores rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    Sqlite {
        dir: PathBuf,
    },
    /// `compression = "none"`: the test server does not take LZ4 inserts.
    Clickhouse {
        url: String,
        database: String,
    },
}

/// The Kafka half a Tollgate instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaRole {
    /// OTLP in, produce to Kafka; acknowledge once Kafka acknowledged.
    Ingest,
    /// Consume from Kafka, rules, write the store.
    Process,
}

impl KafkaRole {
    pub fn name(self) -> &'static str {
        match self {
            KafkaRole::Ingest => "ingest",
            KafkaRole::Process => "process",
        }
    }
}

/// `[kafka]` of a Tollgate instance. Everything not set here keeps the
/// collector's defaults (lz4, 12 partitions, idempotent producer, acks=all),
/// as deploy/config/{ingest,process}.toml do.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaLink {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    pub role: KafkaRole,
}

/// The config of one Tollgate instance: loopback only, free ports.
#[derive(Debug, Clone, PartialEq)]
pub struct TollgateConfig {
    pub storage: Storage,
    pub kafka: Option<KafkaLink>,
    pub queue_capacity_rows: usize,
    pub batch_max_rows: usize,
    /// `[durability] level`.
    pub durability: &'static str,
    /// Where the write-ahead log goes (inside the run's directory).
    pub wal_dir: PathBuf,
    /// Keys and TLS: `[auth] mode = "keys"` with one ingest key scoped to
    /// the org the generated spans name, a metrics token, and `[tls]`.
    pub secure: Option<Credentials>,
}

/// A TOML basic string (quoted and escaped).
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

impl TollgateConfig {
    pub fn render(&self) -> String {
        let storage = match &self.storage {
            Storage::Sqlite { dir } => format!(
                "type = \"sqlite\"\npath = {}\n",
                toml_str(&dir.display().to_string())
            ),
            Storage::Clickhouse { url, database } => format!(
                "type = \"clickhouse\"\nurl = {}\ndatabase = {}\ncompression = \"none\"\n",
                toml_str(url),
                toml_str(database)
            ),
        };
        let kafka = self.kafka.as_ref().map_or_else(String::new, |k| {
            format!(
                "\n[kafka]\nbrokers = {}\ntopic = {}\nrole = \"{}\"\ngroup_id = {}\n",
                toml_str(&k.brokers),
                toml_str(&k.topic),
                k.role.name(),
                toml_str(&k.group_id)
            )
        });
        let secure = self.secure.as_ref().map_or_else(String::new, |c| {
            format!(
                "\n[auth]\nmode = \"keys\"\nmetrics_token = {metrics}\n\
                 \n[[auth.keys]]\nname = {name}\nroles = [\"ingest\"]\norg = {org}\nsecret = {key}\n\
                 \n[tls]\ncert_file = {cert}\nkey_file = {tls_key}\n",
                metrics = toml_str(secure::METRICS_TOKEN),
                name = toml_str(secure::KEY_NAME),
                org = toml_str(spans::ORG),
                key = toml_str(secure::INGEST_KEY),
                cert = toml_str(&c.cert_file.display().to_string()),
                tls_key = toml_str(&c.key_file.display().to_string()),
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
             {storage}\
             \n\
             [pipeline]\n\
             queue_capacity_rows = {q}\n\
             batch_max_rows = {b}\n\
             \n\
             [durability]\n\
             level = \"{durability}\"\n\
             dir = {wal}\n\
             {kafka}\
             {secure}\
             \n\
             [log]\n\
             level = \"warn\"\n",
            q = self.queue_capacity_rows,
            b = self.batch_max_rows,
            durability = self.durability,
            wal = toml_str(&self.wal_dir.display().to_string()),
        )
    }
}

/// Counters read from a running server.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServerCounters {
    /// Spans decoded (baseline) or rows written to the store (Tollgate).
    pub stored: u64,
    /// Seconds the Tollgate writer spent in batch writes to the store.
    pub write_secs: f64,
    /// Batches written by the Tollgate writer.
    pub batches: u64,
    /// Tollgate: calls its call identity remembers, and the bytes its maps hold.
    pub identity_calls: u64,
    pub identity_bytes: u64,
}

/// What a server's ready line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyLine {
    pub otlp_grpc: SocketAddr,
    /// `None` for `otlp_http=off` (the Kafka process role).
    pub otlp_http: Option<SocketAddr>,
    /// Tollgate's API; the sink has none (its `/count` is on `otlp_http`).
    pub api: Option<SocketAddr>,
}

/// Addresses in a `... listening: otlp_grpc=A otlp_http=B|off [api=http(s)://C]`
/// line (`https` when Tollgate serves TLS; the OTLP addresses carry no scheme).
pub fn parse_ready_line(line: &str) -> Option<ReadyLine> {
    let (_, fields) = line.split_once("listening:")?;
    let mut grpc = None;
    let mut http = None;
    let mut api = None;
    for field in fields.split_whitespace() {
        let (key, value) = field.split_once('=')?;
        let value = value
            .strip_prefix("http://")
            .or_else(|| value.strip_prefix("https://"))
            .unwrap_or(value);
        let addr = if value == "off" {
            None
        } else {
            Some(value.parse::<SocketAddr>().ok()?)
        };
        match key {
            "otlp_grpc" => grpc = Some(addr?),
            "otlp_http" => http = Some(addr),
            "api" => api = addr,
            _ => {}
        }
    }
    Some(ReadyLine {
        otlp_grpc: grpc?,
        otlp_http: http?,
        api,
    })
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

/// The writer's counters in Tollgate's `/metrics`.
pub fn tollgate_counters(metrics: &str) -> anyhow::Result<ServerCounters> {
    let stored = metric_value(metrics, "tollgate_store_rows_written_total")
        .context("tollgate_store_rows_written_total missing from /metrics")?;
    Ok(ServerCounters {
        stored: stored as u64,
        write_secs: metric_value(metrics, "tollgate_store_write_seconds_sum").unwrap_or(0.0),
        batches: metric_value(metrics, "tollgate_store_write_seconds_count").unwrap_or(0.0) as u64,
        identity_calls: metric_value(metrics, "tollgate_pipeline_identity_calls").unwrap_or(0.0)
            as u64,
        identity_bytes: metric_value(metrics, "tollgate_pipeline_identity_bytes").unwrap_or(0.0)
            as u64,
    })
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

/// One running server: the baseline sink or one `tollgate serve`.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    stdout_drain: Option<JoinHandle<()>>,
    pub otlp_grpc: SocketAddr,
    pub otlp_http: Option<SocketAddr>,
    /// `http(s)://` and Tollgate's API, or the sink's HTTP port (for `GET /count`).
    api: String,
    /// Trusts the run's CA and sends the metrics token when TLS and keys are on.
    client: reqwest::Client,
}

impl ServerProcess {
    /// The baseline sink, logging into `dir`.
    pub async fn sink(launch: &Launch, dir: &Path) -> anyhow::Result<Self> {
        Self::start(
            "the baseline sink",
            launch,
            &launch.sink_exe,
            vec!["sink".into()],
            dir.join("sink.log"),
            None,
        )
        .await
    }

    /// `tollgate serve` with `config`, written to `dir/NAME.toml`; logs to `dir/NAME.log`.
    pub async fn tollgate(
        launch: &Launch,
        dir: &Path,
        name: &str,
        config: &TollgateConfig,
    ) -> anyhow::Result<Self> {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config.render())?;
        Self::start(
            &format!("tollgate ({name})"),
            launch,
            &launch.tollgate_exe,
            vec!["serve".into(), "--config".into(), path.into()],
            dir.join(format!("{name}.log")),
            config.secure.as_ref().map(Credentials::metrics),
        )
        .await
    }

    async fn start(
        name: &str,
        launch: &Launch,
        exe: &Path,
        args: Vec<std::ffi::OsString>,
        log: PathBuf,
        api_auth: Option<ClientAuth>,
    ) -> anyhow::Result<Self> {
        if !exe.is_file() {
            bail!(
                "{} not found; build it with `cargo build --release -p tollgate-collector -p tollgate-bench`",
                exe.display()
            );
        }
        let mut spec = Spawn::new(exe, log);
        spec.args = args;
        spec.cpus = launch.cpus.as_deref();
        spec.env = vec![("TOKIO_WORKER_THREADS", launch.workers.to_string())];
        spec.stdout = true;
        let mut child = child::spawn(name, &spec)?;
        let mut stdout = BufReader::new(child.process.stdout.take().context("no stdout")?);
        let line = match tokio::time::timeout(READY_TIMEOUT, read_ready_line(&mut stdout)).await {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => bail!("{name} did not start: {e}\n{}", child.log_tail()),
            Err(_) => bail!(
                "{name} was not ready within {READY_TIMEOUT:?}\n{}",
                child.log_tail()
            ),
        };
        let ready =
            parse_ready_line(&line).with_context(|| format!("unexpected ready line `{line}`"))?;
        // Keep reading stdout so the child never blocks on a full pipe.
        let stdout_drain = tokio::spawn(async move {
            let mut line = String::new();
            while matches!(stdout.read_line(&mut line).await, Ok(n) if n > 0) {
                line.clear();
            }
        });
        let api = match (ready.api, ready.otlp_http) {
            (Some(api), _) | (None, Some(api)) => api,
            (None, None) => bail!("`{line}` names no API address"),
        };
        let builder = reqwest::Client::builder().no_proxy();
        let (api, client) = match api_auth {
            Some(auth) => (format!("https://{api}"), auth.https_client(builder)?),
            None => (format!("http://{api}"), builder.build()?),
        };
        Ok(Self {
            child,
            stdout_drain: Some(stdout_drain),
            otlp_grpc: ready.otlp_grpc,
            otlp_http: ready.otlp_http,
            api,
            client,
        })
    }

    pub fn cpu_secs(&self) -> anyhow::Result<f64> {
        self.child.cpu_secs()
    }

    async fn get(&self, path: &str) -> anyhow::Result<String> {
        Ok(self
            .client
            .get(format!("{}{path}", self.api))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// Tollgate's `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        self.get("/metrics").await
    }

    /// The baseline sink's span count.
    pub async fn sink_count(&self) -> anyhow::Result<u64> {
        self.get("/count")
            .await?
            .trim()
            .parse()
            .context("bad /count answer")
    }

    /// Asks the server to stop (SIGTERM; stdin EOF for the sink), kills it if it lingers.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.child.stop().await?;
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
    fn parses_every_ready_line() {
        let r = parse_ready_line(
            "tollgate listening: otlp_grpc=127.0.0.1:4317 otlp_http=127.0.0.1:4318 api=http://127.0.0.1:8080",
        )
        .unwrap();
        assert_eq!(r.otlp_grpc.port(), 4317);
        assert_eq!(r.otlp_http.map(|a| a.port()), Some(4318));
        assert_eq!(r.api.map(|a| a.port()), Some(8080));
        let r = parse_ready_line("sink listening: otlp_grpc=127.0.0.1:1 otlp_http=127.0.0.1:2")
            .unwrap();
        assert_eq!(
            (r.otlp_grpc.port(), r.otlp_http.map(|a| a.port()), r.api),
            (1, Some(2), None)
        );
        // The Kafka process role receives no OTLP/HTTP.
        let r = parse_ready_line(
            "tollgate listening: otlp_grpc=127.0.0.1:5 otlp_http=off api=http://127.0.0.1:6",
        )
        .unwrap();
        assert_eq!((r.otlp_http, r.api.map(|a| a.port())), (None, Some(6)));
        // With TLS on, the API is named `https://`; the OTLP ports have no scheme.
        let r = parse_ready_line(
            "tollgate listening: otlp_grpc=127.0.0.1:7 otlp_http=127.0.0.1:8 api=https://127.0.0.1:9",
        )
        .unwrap();
        assert_eq!(
            (
                r.otlp_grpc.port(),
                r.otlp_http.map(|a| a.port()),
                r.api.map(|a| a.port())
            ),
            (7, Some(8), Some(9))
        );
        assert!(parse_ready_line("tollgate listening: otlp_grpc=off otlp_http=off").is_none());
        assert!(parse_ready_line("tollgate listening: otlp_grpc=nope").is_none());
        assert!(parse_ready_line("starting").is_none());
    }

    #[test]
    fn reads_exact_metric_names_only() {
        let text = "# TYPE tollgate_store_rows_written counter\n\
                    tollgate_store_rows_written_total 1200\n\
                    tollgate_store_write_seconds_sum 0.75\n\
                    tollgate_store_write_seconds_count 3\n\
                    tollgate_pipeline_identity_calls 1000\n\
                    tollgate_pipeline_identity_bytes 340000\n\
                    tollgate_ingest_spans_total{outcome=\"accepted\"} 1300\n";
        assert_eq!(
            metric_value(text, "tollgate_store_rows_written_total"),
            Some(1200.0)
        );
        assert_eq!(
            metric_value(text, "tollgate_ingest_spans_total{outcome=\"accepted\"}"),
            Some(1300.0)
        );
        assert_eq!(metric_value(text, "tollgate_store_rows_written"), None);
        assert_eq!(
            tollgate_counters(text).unwrap(),
            ServerCounters {
                stored: 1200,
                write_secs: 0.75,
                batches: 3,
                identity_calls: 1000,
                identity_bytes: 340_000,
            }
        );
        assert!(tollgate_counters("tollgate_up 1\n").is_err());
    }

    fn config(storage: Storage, kafka: Option<KafkaLink>) -> toml::Table {
        TollgateConfig {
            storage,
            kafka,
            queue_capacity_rows: 100_000,
            batch_max_rows: 10_000,
            durability: "power",
            wal_dir: PathBuf::from("/tmp/wal"),
            secure: None,
        }
        .render()
        .parse()
        .unwrap()
    }

    #[test]
    fn sqlite_config_is_loopback_and_valid_toml() {
        let value = config(
            Storage::Sqlite {
                dir: PathBuf::from("/tmp/a \"b\""),
            },
            None,
        );
        assert_eq!(value["storage"]["type"].as_str(), Some("sqlite"));
        assert_eq!(value["storage"]["path"].as_str(), Some("/tmp/a \"b\""));
        assert_eq!(
            value["pipeline"]["queue_capacity_rows"].as_integer(),
            Some(100_000)
        );
        assert_eq!(
            value["receivers"]["otlp"]["grpc_listen"].as_str(),
            Some("127.0.0.1:0")
        );
        assert_eq!(value["api"]["listen"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(value["durability"]["level"].as_str(), Some("power"));
        assert_eq!(value["durability"]["dir"].as_str(), Some("/tmp/wal"));
        assert!(!value.contains_key("kafka"));
    }

    #[test]
    fn secure_config_requires_keys_and_serves_tls() {
        let plain = config(
            Storage::Sqlite {
                dir: PathBuf::from("/tmp/data"),
            },
            None,
        );
        assert!(!plain.contains_key("auth") && !plain.contains_key("tls"));

        let value: toml::Table = TollgateConfig {
            storage: Storage::Sqlite {
                dir: PathBuf::from("/tmp/data"),
            },
            kafka: None,
            queue_capacity_rows: 100_000,
            batch_max_rows: 10_000,
            durability: Target::TollgateSecure.durability(),
            wal_dir: PathBuf::from("/tmp/wal"),
            secure: Some(Credentials {
                cert_file: PathBuf::from("/tmp/tls/server.crt"),
                key_file: PathBuf::from("/tmp/tls/server.key"),
                ca: rustls::pki_types::CertificateDer::from(Vec::new()),
            }),
        }
        .render()
        .parse()
        .unwrap();
        // The same durability as `tollgate`, so only keys and TLS differ.
        assert_eq!(value["durability"]["level"].as_str(), Some("process"));
        let auth = &value["auth"];
        assert_eq!(auth["mode"].as_str(), Some("keys"));
        assert_eq!(auth["metrics_token"].as_str(), Some(secure::METRICS_TOKEN));
        let keys = auth["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["secret"].as_str(), Some(secure::INGEST_KEY));
        assert_eq!(keys[0]["roles"].as_array().unwrap().len(), 1);
        assert_eq!(keys[0]["roles"][0].as_str(), Some("ingest"));
        // The spans name this org: any other and every span would be refused.
        assert_eq!(keys[0]["org"].as_str(), Some(spans::ORG));
        assert_eq!(
            value["tls"]["cert_file"].as_str(),
            Some("/tmp/tls/server.crt")
        );
        assert_eq!(
            value["tls"]["key_file"].as_str(),
            Some("/tmp/tls/server.key")
        );
        assert_eq!(value["log"]["level"].as_str(), Some("warn"));
    }

    #[test]
    fn clickhouse_config_sends_uncompressed_inserts() {
        let value = config(
            Storage::Clickhouse {
                url: "http://127.0.0.1:8123".into(),
                database: "bench_r1_grpc_clickhouse".into(),
            },
            None,
        );
        let storage = &value["storage"];
        assert_eq!(storage["type"].as_str(), Some("clickhouse"));
        assert_eq!(storage["url"].as_str(), Some("http://127.0.0.1:8123"));
        assert_eq!(
            storage["database"].as_str(),
            Some("bench_r1_grpc_clickhouse")
        );
        assert_eq!(storage["compression"].as_str(), Some("none"));
        assert_eq!(
            value["pipeline"]["batch_max_rows"].as_integer(),
            Some(10_000)
        );
    }

    #[test]
    fn kafka_config_names_role_topic_and_group() {
        for role in [KafkaRole::Ingest, KafkaRole::Process] {
            let value = config(
                Storage::Clickhouse {
                    url: "http://127.0.0.1:1".into(),
                    database: "db".into(),
                },
                Some(KafkaLink {
                    brokers: "127.0.0.1:9092".into(),
                    topic: "bench.calls".into(),
                    group_id: "bench-process".into(),
                    role,
                }),
            );
            let kafka = &value["kafka"];
            assert_eq!(kafka["brokers"].as_str(), Some("127.0.0.1:9092"));
            assert_eq!(kafka["topic"].as_str(), Some("bench.calls"));
            assert_eq!(kafka["group_id"].as_str(), Some("bench-process"));
            assert_eq!(kafka["role"].as_str(), Some(role.name()));
            // [log] still follows: the [kafka] table did not swallow it.
            assert_eq!(value["log"]["level"].as_str(), Some("warn"));
            assert!(kafka.get("level").is_none());
        }
    }

    #[test]
    fn target_names_match_the_command_line() {
        use clap::ValueEnum;
        let opt_in = [
            Target::TollgateMemory,
            Target::TollgatePower,
            Target::TollgateSecure,
        ];
        for t in Target::ALL.into_iter().chain(opt_in) {
            let parsed = Target::from_str(t.name(), false).unwrap();
            assert_eq!(parsed, t);
        }
        assert!(Target::Kafka.uses_clickhouse() && Target::Kafka.uses_kafka());
        assert!(Target::Clickhouse.uses_clickhouse() && !Target::Clickhouse.uses_kafka());
        assert!(!Target::Tollgate.uses_clickhouse() && !Target::Baseline.is_tollgate());
        assert!(Target::TollgateSecure.is_secure() && !Target::Tollgate.is_secure());
        assert_eq!(
            Target::TollgateSecure.durability(),
            Target::Tollgate.durability()
        );
    }
}
