//! The infrastructure behind the ClickHouse and Kafka targets, started per
//! run on 127.0.0.1 like the end-to-end tests start it (tests/support):
//!
//! - [`ClickhouseServer`]: the real ClickHouse engine (PyPI `chdb-core`)
//!   behind `tests/clickhouse-server/server.py`, a single-threaded Python
//!   HTTP front-end that runs one statement at a time.
//! - [`KafkaBroker`]: `tansu` with memory storage.
//!
//! [`Tools`] finds the python with `chdb-core` and the `tansu` binary, or
//! says in one line why a target cannot run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::child::{self, Child, Spawn};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// The repository root (the bench crate lives in `bench/`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `tests/clickhouse-server/server.py`.
pub fn clickhouse_server_script() -> PathBuf {
    repo_root().join("tests/clickhouse-server/server.py")
}

/// Where `tests/kafka-broker/launch.sh` caches the `tansu` binary.
pub fn cached_tansu(tools_dir: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    match tools_dir.filter(|d| !d.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("bin/tansu")),
        None => home
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".cache/tollgate/tools/bin/tansu")),
    }
}

/// The external programs the ClickHouse and Kafka targets need; `Err`
/// holds the one-line reason one is missing.
#[derive(Debug, Clone)]
pub struct Tools {
    pub chdb_python: Result<PathBuf, String>,
    pub tansu: Result<PathBuf, String>,
}

impl Tools {
    /// `chdb_python`: given, or `tests/clickhouse-server/launch.sh python`
    /// (which installs `chdb-core` into a cached venv, ~30 s once).
    /// `tansu`: given, or the binary `tests/kafka-broker/launch.sh` caches
    /// (never built here: that takes ~30 minutes).
    pub fn find(
        chdb_python: Option<&Path>,
        tansu: Option<&Path>,
        need_chdb: bool,
        need_tansu: bool,
    ) -> Self {
        let not_looked = || Err("not needed".to_owned());
        let chdb_python = if !need_chdb {
            not_looked()
        } else if let Some(p) = chdb_python {
            if p.is_file() {
                Ok(p.to_owned())
            } else {
                Err(format!("--chdb-python {} does not exist", p.display()))
            }
        } else {
            chdb_python_from_launcher()
        };
        let tansu = if !need_tansu {
            not_looked()
        } else {
            let found = tansu.map(Path::to_owned).or_else(|| {
                cached_tansu(
                    std::env::var("TOLLGATE_TOOLS_DIR").ok().as_deref(),
                    std::env::var("HOME").ok().as_deref(),
                )
            });
            match found {
                Some(p) if p.is_file() => Ok(p),
                Some(p) => Err(format!(
                    "no tansu broker at {} (build it once with `tests/kafka-broker/launch.sh path`, ~30 min, or pass --tansu)",
                    p.display()
                )),
                None => Err("no tansu broker (HOME is not set; pass --tansu)".to_owned()),
            }
        };
        Self { chdb_python, tansu }
    }
}

fn chdb_python_from_launcher() -> Result<PathBuf, String> {
    let launcher = repo_root().join("tests/clickhouse-server/launch.sh");
    let out = std::process::Command::new(&launcher)
        .arg("python")
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", launcher.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || stdout.is_empty() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr
            .lines()
            .last()
            .unwrap_or("no output")
            .trim()
            .to_owned();
        return Err(format!(
            "tests/clickhouse-server/launch.sh python failed ({why}); pass --chdb-python"
        ));
    }
    Ok(PathBuf::from(stdout))
}

/// A ClickHouse test server with its data in `dir`; killed when dropped.
#[derive(Debug)]
pub struct ClickhouseServer {
    pub child: Child,
    url: String,
    client: reqwest::Client,
}

/// Rows in a `calls` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRows {
    pub rows: u64,
    /// Distinct (trace id, span id): fewer than `rows` means duplicates.
    pub distinct: u64,
}

/// `count()` and `uniqExact(...)` from a `TabSeparated` answer `"N\tM\n"`.
pub fn parse_stored_rows(text: &str) -> Option<StoredRows> {
    let mut fields = text.trim().split('\t');
    let rows = fields.next()?.parse().ok()?;
    let distinct = fields.next()?.parse().ok()?;
    fields
        .next()
        .is_none()
        .then_some(StoredRows { rows, distinct })
}

impl ClickhouseServer {
    /// Starts `server.py` on a free port with its data under `dir`; returns
    /// once it listens (it writes its port to a file then).
    pub async fn start(python: &Path, dir: &Path, cpus: Option<&str>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port_file = dir.join("port");
        let script = clickhouse_server_script();
        let mut spec = Spawn::new(python, dir.join("clickhouse.log"));
        spec.args = vec![
            script.into(),
            "--port".into(),
            "0".into(),
            "--port-file".into(),
            port_file.clone().into(),
            "--data-dir".into(),
            dir.join("data").into(),
        ];
        spec.cpus = cpus;
        spec.cwd = Some(dir);
        spec.env = vec![("PYTHONDONTWRITEBYTECODE", "1".to_owned())];
        let mut child = child::spawn("the ClickHouse test server", &spec)?;
        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse::<u16>().ok())
            {
                break port;
            }
            child.check_running()?;
            if Instant::now() >= deadline {
                bail!(
                    "the ClickHouse test server did not listen within {START_TIMEOUT:?}:\n{}",
                    child.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        };
        Ok(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder().no_proxy().build()?,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `sql`; the answer as `TabSeparated` text.
    pub async fn query(&self, sql: &str) -> anyhow::Result<String> {
        let response = self
            .client
            .post(format!("{}/?default_format=TabSeparated", self.url))
            .body(sql.to_owned())
            .send()
            .await
            .context("ClickHouse test server unreachable")?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("ClickHouse answered {status} to `{sql}`: {}", text.trim());
        }
        Ok(text)
    }

    /// Rows in `database.calls`, and how many are distinct.
    pub async fn stored_rows(&self, database: &str) -> anyhow::Result<StoredRows> {
        let text = self
            .query(&format!(
                "SELECT count(), uniqExact(trace_id, span_id) FROM {database}.calls"
            ))
            .await?;
        parse_stored_rows(&text).with_context(|| format!("unexpected answer `{}`", text.trim()))
    }
}

/// A `tansu` broker in memory on a free loopback port; killed when dropped.
#[derive(Debug)]
pub struct KafkaBroker {
    pub child: Child,
    port: u16,
}

/// The `tansu broker` arguments for a loopback listener on `port`.
pub fn tansu_args(port: u16) -> Vec<String> {
    let url = format!("tcp://127.0.0.1:{port}");
    vec![
        "broker".to_owned(),
        "--listener-url".to_owned(),
        url.clone(),
        "--advertised-listener-url".to_owned(),
        url,
        "--storage-engine".to_owned(),
        "memory://tansu/".to_owned(),
    ]
}

impl KafkaBroker {
    /// Starts the broker; returns once it accepts connections.
    pub async fn start(tansu: &Path, log: PathBuf, cpus: Option<&str>) -> anyhow::Result<Self> {
        // Bind-and-release picks a free port; the broker binds it at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut spec = Spawn::new(tansu, log);
        spec.args = tansu_args(port).into_iter().map(Into::into).collect();
        spec.cpus = cpus;
        spec.env = vec![("RUST_LOG", "warn".to_owned())];
        let mut child = child::spawn("the tansu broker", &spec)?;
        let deadline = Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            child.check_running()?;
            if Instant::now() >= deadline {
                bail!(
                    "the tansu broker did not listen within {START_TIMEOUT:?}:\n{}",
                    child.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(Self { child, port })
    }

    /// `bootstrap.servers` for clients.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tansu_cache_follows_launch_sh() {
        assert_eq!(
            cached_tansu(Some("/opt/tools"), Some("/root")),
            Some(PathBuf::from("/opt/tools/bin/tansu"))
        );
        assert_eq!(
            cached_tansu(Some(""), Some("/root")),
            Some(PathBuf::from("/root/.cache/tollgate/tools/bin/tansu"))
        );
        assert_eq!(cached_tansu(None, None), None);
    }

    #[test]
    fn tansu_listens_on_loopback_in_memory() {
        let args = tansu_args(9092);
        assert_eq!(args[0], "broker");
        let value = |flag: &str| {
            let i = args.iter().position(|a| a == flag).unwrap();
            args[i + 1].as_str()
        };
        assert_eq!(value("--listener-url"), "tcp://127.0.0.1:9092");
        assert_eq!(value("--advertised-listener-url"), "tcp://127.0.0.1:9092");
        assert_eq!(value("--storage-engine"), "memory://tansu/");
    }

    #[test]
    fn parses_count_and_distinct() {
        assert_eq!(
            parse_stored_rows("1050000\t1049999\n"),
            Some(StoredRows {
                rows: 1_050_000,
                distinct: 1_049_999
            })
        );
        assert_eq!(parse_stored_rows("12\n"), None);
        assert_eq!(parse_stored_rows("1\t2\t3\n"), None);
        assert_eq!(parse_stored_rows("Code: 60. DB::Exception"), None);
    }

    #[test]
    fn missing_tools_say_why_in_one_line() {
        let tools = Tools::find(
            Some(Path::new("/nonexistent/python")),
            Some(Path::new("/nonexistent/tansu")),
            true,
            true,
        );
        let chdb = tools.chdb_python.unwrap_err();
        assert!(chdb.contains("--chdb-python /nonexistent/python"), "{chdb}");
        let tansu = tools.tansu.unwrap_err();
        assert!(
            tansu.contains("/nonexistent/tansu") && !tansu.contains('\n'),
            "{tansu}"
        );
        let unused = Tools::find(None, None, false, false);
        assert!(unused.chdb_python.is_err() && unused.tansu.is_err());
    }
}
