//! Shared helpers of the end-to-end tests: start the real `tollgate`
//! binary on free ports with a private data directory, query its API,
//! export spans to it with the Rust OpenTelemetry SDK.

#![allow(dead_code)]

pub mod certs;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Polls `check` every 50 ms until it holds; fails the test after 20 s,
/// naming `what` it waited for.
pub async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a `tollgate serve` that stopped at start-up ended.
#[derive(Debug)]
pub struct FailedStart {
    /// `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// A running `tollgate serve` child process.
pub struct Collector {
    child: Child,
    config_path: std::path::PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub api: SocketAddr,
    /// The inline gateway, when the config enables it.
    pub gateway: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    stderr_path: std::path::PathBuf,
}

/// A ClickHouse test server of this test's own (the real ClickHouse engine
/// from PyPI `chdb-core` behind `tests/clickhouse-server/server.py`), on a
/// free loopback port; it can be stopped and started again on the same data
/// and port to play an outage. Stopped when dropped.
pub struct ClickhouseServer {
    python: String,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl ClickhouseServer {
    /// Starts one, or `None` (with a notice) when the test environment has
    /// no ClickHouse engine; under `scripts/test` that is a failure.
    pub fn start(test: &str) -> Option<ClickhouseServer> {
        let python = match std::env::var("TOLLGATE_TEST_CHDB_PYTHON") {
            Ok(p) if !p.is_empty() => p,
            _ if std::env::var_os("TOLLGATE_TEST_STRICT").is_some() => panic!(
                "{test}: TOLLGATE_TEST_CHDB_PYTHON is not set: scripts/test installs the ClickHouse engine"
            ),
            _ => {
                eprintln!(
                    "{test}: skipped, no ClickHouse engine (run scripts/test, or set TOLLGATE_TEST_CHDB_PYTHON to a python with chdb-core)"
                );
                return None;
            }
        };
        let mut server = ClickhouseServer {
            python,
            dir: tempfile::tempdir().unwrap(),
            port: 0,
            child: None,
        };
        server.start_again();
        Some(server)
    }

    fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/clickhouse-server/server.py")
    }

    /// (Re)starts the server on its data directory (and port, once chosen).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let port_file = self.dir.path().join("port");
        let _ = std::fs::remove_file(&port_file);
        let child = Command::new(&self.python)
            .arg(Self::script())
            .args(["--port", &self.port.to_string()])
            .arg("--port-file")
            .arg(&port_file)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("server.log")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse::<u16>().ok())
            {
                self.port = port;
                break;
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "ClickHouse test server did not start: {}",
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (an outage); the data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `[storage]` table for a collector writing to `database` here.
    pub fn storage(&self, database: &str) -> String {
        format!(
            "type = \"clickhouse\"\nurl = \"{}\"\ndatabase = \"{database}\"\ncompression = \"none\"\ntimeout = \"5s\"",
            self.url()
        )
    }

    /// Runs `sql` and returns the answer as text (`TabSeparated`).
    pub async fn query(&self, sql: &str) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/?default_format=TabSeparated", self.url()))
            .body(sql.to_owned())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "{sql}: {status} {text}");
        text
    }
}

impl Drop for ClickhouseServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

fn parse_optional_addr(line: &str, key: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find(|w| w.starts_with(&format!("{key}=")))
        .map(|_| parse_addr(line, key))
}

fn parse_addr(line: &str, key: &str) -> SocketAddr {
    let part = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"));
    if part == "off" {
        // A listener this role does not run (the Kafka process role has no OTLP/HTTP).
        return SocketAddr::from(([0, 0, 0, 0], 0));
    }
    part.trim_start_matches("https://")
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

impl Collector {
    /// Starts the collector with `extra` appended to a config that listens
    /// on free loopback ports and stores rows in a fresh directory.
    pub fn start(extra: &str) -> Collector {
        Self::start_full(extra, &[], &[])
    }

    /// Starts with extra arguments and environment; `extra` must not repeat
    /// the `[receivers.otlp]`, `[api]` or `[storage]` tables (use `TOLLGATE_`
    /// env overrides for their fields, which also exercises them).
    pub fn start_full(extra: &str, args: &[&str], envs: &[(&str, &str)]) -> Collector {
        Self::start_with_storage(None, extra, args, envs)
    }

    /// Starts with `storage` as the body of the `[storage]` table (default:
    /// SQLite in the private directory).
    pub fn start_with_storage(
        storage: Option<&str>,
        extra: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let path = Self::write_config(dir.path(), storage, extra);
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (child, line, stderr_path) = Self::spawn(dir.path(), &path, &args, &envs);
        Collector {
            grpc: parse_addr(&line, "otlp_grpc"),
            http: parse_addr(&line, "otlp_http"),
            api: parse_addr(&line, "api"),
            gateway: parse_optional_addr(&line, "gateway"),
            child,
            config_path: path,
            args,
            envs,
            dir,
            stderr_path,
        }
    }

    /// Runs `serve` on the config [`Collector::start`] would write, for a
    /// start-up that must fail: waits up to 60 s for the process to exit on
    /// its own (it is killed, and the test fails, if it does not).
    pub fn start_expecting_exit(extra: &str, envs: &[(&str, &str)]) -> FailedStart {
        let dir = tempfile::tempdir().unwrap();
        let path = Self::write_config(dir.path(), None, extra);
        // Files, not pipes: a full pipe would stop the process from exiting.
        let (stdout, stderr) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));
        let mut child = Command::new(bin())
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the collector was still running after 60 s: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        FailedStart {
            code: status.code(),
            stdout: std::fs::read_to_string(&stdout).unwrap(),
            stderr: std::fs::read_to_string(&stderr).unwrap(),
        }
    }

    /// Writes the config file into `dir`: free loopback ports, `storage` (or
    /// SQLite in `dir`), then `extra`.
    fn write_config(
        dir: &std::path::Path,
        storage: Option<&str>,
        extra: &str,
    ) -> std::path::PathBuf {
        let data = dir.join("data");
        // With another store the write-ahead log would default to ./data.
        let wal = match storage {
            Some(_) if !extra.contains("[durability]") => {
                format!("[durability]\ndir = \"{}\"\n", dir.join("wal").display())
            }
            _ => String::new(),
        };
        let extra = format!("{extra}\n{wal}");
        let storage = storage.map_or_else(
            || format!("type = \"sqlite\"\npath = \"{}\"", data.display()),
            str::to_owned,
        );
        let config = format!(
            "[receivers.otlp]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\n\
             [storage]\n{storage}\n{extra}\n"
        );
        let path = dir.join("tollgate.toml");
        std::fs::write(&path, config).unwrap();
        path
    }

    /// Stops the collector (SIGTERM) and starts it again on the same data
    /// and config; the ports change.
    pub fn restart(&mut self) {
        let exit = self.terminate();
        assert!(exit.success(), "{}", self.stderr());
        self.start_again();
    }

    /// Kills the collector (SIGKILL: no shutdown at all) and starts it again
    /// on the same data and config; the ports change.
    pub fn crash_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.start_again();
    }

    /// Starts the (stopped) collector on its data and config again.
    fn start_again(&mut self) {
        let (child, line, stderr_path) =
            Self::spawn(self.dir.path(), &self.config_path, &self.args, &self.envs);
        self.child = child;
        self.stderr_path = stderr_path;
        self.grpc = parse_addr(&line, "otlp_grpc");
        self.http = parse_addr(&line, "otlp_http");
        self.api = parse_addr(&line, "api");
        self.gateway = parse_optional_addr(&line, "gateway");
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    fn spawn(
        dir: &std::path::Path,
        path: &std::path::Path,
        args: &[String],
        envs: &[(String, String)],
    ) -> (Child, String, std::path::PathBuf) {
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let stderr_path = dir.join(format!("stderr-{n}.log"));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = Command::new(bin())
            .arg("serve")
            .arg("--config")
            .arg(path)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = loop {
            // Generous: a restart reads the last minutes of calls back first.
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) if l.starts_with("tollgate listening:") => break l,
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "collector did not start: {}",
                        std::fs::read_to_string(&stderr_path).unwrap_or_default()
                    );
                }
            }
        };
        (child, line, stderr_path)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// The SQLite file of a collector whose `[storage] path` is `dir`.
    pub fn db_path_in(&self, dir: &std::path::Path) -> std::path::PathBuf {
        dir.join("tollgate.sqlite")
    }

    pub fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("data").join("tollgate.sqlite")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Peak resident memory of the collector, in KiB (Linux).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "collector did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let r = reqwest::get(format!("{}{path_and_query}", self.api_url()))
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The latest calls, newest first.
    pub async fn calls(&self, limit: usize) -> Vec<Value> {
        let (status, body) = self.get(&format!("/v1/calls?limit={limit}")).await;
        assert_eq!(status, 200, "{body}");
        body["rows"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until at least `n` calls are stored, then returns them all.
    /// POSTs an OTLP/HTTP protobuf body to `/v1/traces`; returns the status.
    pub async fn post_traces(&self, body: Vec<u8>) -> u16 {
        reqwest::Client::new()
            .post(format!("{}/v1/traces", self.http_url()))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// One model call of `tokens` input tokens for `project`, ending now,
    /// sent over OTLP/HTTP; asserts it was accepted.
    pub async fn send_tokens(&self, id: u64, project: &str, tokens: i64) {
        use prost::Message;
        let mut span = otlp::span(
            id.to_be_bytes().to_vec(),
            vec![
                otlp::string("gen_ai.request.model", "gpt-4o-mini"),
                otlp::int("gen_ai.usage.input_tokens", tokens),
                otlp::string("tollgate.project", project),
            ],
        );
        // Now, so the call falls in today's window.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        span.start_time_unix_nano = now - 1_000_000;
        span.end_time_unix_nano = now;
        let status = self
            .post_traces(otlp::request(vec![span]).encode_to_vec())
            .await;
        assert_eq!(status, 200);
    }

    pub async fn wait_calls(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let calls = self.calls(10_000).await;
            if calls.len() >= n {
                return calls;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} calls stored; stderr:\n{}",
                calls.len(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until at least `n` gateway calls (mode `gateway`) are stored, then returns them.
    pub async fn wait_gateway_rows(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rows: Vec<Value> = self
                .calls(1000)
                .await
                .into_iter()
                .filter(|r| r["mode"] == "gateway")
                .collect();
            if rows.len() >= n {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} gateway rows",
                rows.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `tollgate usage ARGS --api <this collector>`; asserts success, returns stdout.
    pub fn usage_cli(&self, args: &[&str]) -> String {
        let api = self.api_url();
        let mut all = vec!["usage"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--api", &api]);
        let (ok, stdout, stderr) = cli(&all);
        assert!(ok, "tollgate {all:?} failed: {stderr}");
        stdout
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.api_url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds the stored call whose `field` equals `value`.
pub fn find<'a>(calls: &'a [Value], field: &str, value: &str) -> &'a Value {
    calls
        .iter()
        .find(|c| c[field] == value)
        .unwrap_or_else(|| panic!("no call with {field} = {value} in {calls:#?}"))
}

/// Runs the `tollgate` CLI with `args`; returns (success, stdout, stderr).
pub fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Hand-built OTLP payloads for tests that need exact bytes on the wire.
pub mod otlp {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    pub fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    pub fn string(key: &str, value: &str) -> KeyValue {
        kv(key, Value::StringValue(value.into()))
    }

    pub fn int(key: &str, value: i64) -> KeyValue {
        kv(key, Value::IntValue(value))
    }

    /// A 100 ms span with the given span id and attributes.
    pub fn span(span_id: Vec<u8>, attrs: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![7; 16],
            span_id,
            name: "chat".into(),
            start_time_unix_nano: 1_800_000_000_000_000_000,
            end_time_unix_nano: 1_800_000_000_100_000_000,
            attributes: attrs,
            ..Default::default()
        }
    }

    /// Model calls `ids` (span ids `i + 1`, big-endian), each of `tokens`
    /// input tokens of `gpt-4o-mini` at openai, ended just now, with the
    /// attributes `attrs(i)` (its project, org...), as one encoded request.
    pub fn calls_now(
        ids: std::ops::Range<usize>,
        tokens: u64,
        attrs: impl Fn(usize) -> Vec<KeyValue>,
    ) -> Vec<u8> {
        use prost::Message;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let spans = ids
            .map(|i| {
                let mut all = vec![
                    string("gen_ai.provider.name", "openai"),
                    string("gen_ai.request.model", "gpt-4o-mini"),
                    int("gen_ai.usage.input_tokens", tokens as i64),
                ];
                all.extend(attrs(i));
                let mut span = span((i as u64 + 1).to_be_bytes().to_vec(), all);
                span.start_time_unix_nano = now - 1_000_000;
                span.end_time_unix_nano = now;
                span
            })
            .collect();
        request(spans).encode_to_vec()
    }

    /// One resource, one scope, these spans.
    pub fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }
}

/// A Kafka-compatible broker of this test's own (`tansu`, in memory, built
/// by `tests/kafka-broker/launch.sh`) on a free loopback port. Stopped when
/// dropped.
pub struct KafkaBroker {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl KafkaBroker {
    /// Starts one, or `None` (with a notice) when the test environment has
    /// no broker binary; under `scripts/test` that is a failure.
    pub fn start(test: &str) -> Option<KafkaBroker> {
        Self::start_advertising(test, None)
    }

    /// Like [`KafkaBroker::start`], but tells clients (in metadata) to
    /// connect to `advertised` on loopback instead: a front such as a TLS
    /// terminator listens there and forwards to [`KafkaBroker::port`].
    pub fn start_advertising(test: &str, advertised: Option<u16>) -> Option<KafkaBroker> {
        let bin = match std::env::var("TOLLGATE_TEST_TANSU") {
            Ok(p) if !p.is_empty() => p,
            _ if std::env::var_os("TOLLGATE_TEST_STRICT").is_some() => panic!(
                "{test}: TOLLGATE_TEST_TANSU is not set: scripts/test builds the Kafka broker"
            ),
            _ => {
                eprintln!(
                    "{test}: skipped, no Kafka broker (run scripts/test, or set TOLLGATE_TEST_TANSU to `tests/kafka-broker/launch.sh path`)"
                );
                return None;
            }
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{}", advertised.unwrap_or(port));
        let child = Command::new(&bin)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{test}: cannot start {bin}: {e}"));
        let mut broker = KafkaBroker { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("{test}: broker exited ({status}): {}", broker.log());
            }
            assert!(
                Instant::now() < deadline,
                "{test}: broker did not listen: {}",
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(broker)
    }

    /// The (plaintext) port the broker listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `bootstrap.servers` for clients.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A `[kafka]` table for a collector of `role` on this broker.
    pub fn kafka_toml(&self, role: &str, topic: &str, partitions: u32) -> String {
        format!(
            "[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\nrole = \"{role}\"\n\
             group_id = \"{topic}-process\"\npartitions = {partitions}\n\
             [kafka.options]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
            self.brokers()
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Collector {
    /// Kills the collector (SIGKILL): no drain, no offset commit, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ClickhouseServer {
    /// Runs `sql` read-only (`readonly=1`, as a dashboard's user) in
    /// `database`; the answer as `TabSeparatedWithNamesAndTypes`, or the
    /// server's error text.
    pub async fn select_in(&self, database: &str, sql: &str) -> Result<String, String> {
        let r = reqwest::Client::new()
            .post(format!("{}/", self.url()))
            .query(&[
                ("database", database),
                ("readonly", "1"),
                ("default_format", "TabSeparatedWithNamesAndTypes"),
            ])
            .body(sql.to_owned())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let text = r.text().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(format!("{status}: {text}"))
        }
    }
}
