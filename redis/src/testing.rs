//! Test support: a Redis server for a test. The one of the test run
//! (`TOLLGATE_TEST_REDIS`, started by `scripts/test`) with a key prefix of
//! the test's own, or a `redis-server` of the test's own on a free loopback
//! port, stopped when dropped; with persistence, it can be restarted on the
//! same port and data (an outage).
//!
//! Without either, a test is skipped with a notice, or fails under
//! `scripts/test` (`TOLLGATE_TEST_STRICT`).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::RedisConfig;

/// How a server of the test's own runs.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// `--requirepass`.
    pub password: Option<String>,
    /// An append-only file synced at every write, so that a restart loses
    /// nothing acknowledged.
    pub persistent: bool,
    /// TLS only (`rediss://`), with this certificate and key (PEM files).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// A Redis server for one test.
pub struct RedisServer {
    url: String,
    key_prefix: String,
    password: Option<String>,
    own: Option<OwnServer>,
}

struct OwnServer {
    bin: String,
    dir: tempfile::TempDir,
    port: u16,
    options: ServerOptions,
    child: Option<Child>,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn unique_prefix(test: &str) -> String {
    format!(
        "tollgate-test:{test}:{}:{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn strict() -> bool {
    std::env::var_os("TOLLGATE_TEST_STRICT").is_some()
}

impl RedisServer {
    /// The test run's server, else one of the test's own; `None` (with a
    /// notice) when there is neither; under `scripts/test` that is a
    /// failure.
    pub fn start(test: &str) -> Option<RedisServer> {
        match std::env::var("TOLLGATE_TEST_REDIS") {
            Ok(url) if !url.is_empty() => Some(RedisServer {
                url,
                key_prefix: unique_prefix(test),
                password: None,
                own: None,
            }),
            _ => Self::start_own(test, ServerOptions::default()),
        }
    }

    /// A `redis-server` of the test's own (needed to set a password or to
    /// restart it); `None` (with a notice) when there is no binary; under
    /// `scripts/test` that is a failure.
    pub fn start_own(test: &str, options: ServerOptions) -> Option<RedisServer> {
        let bin = std::env::var("TOLLGATE_TEST_REDIS_SERVER")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "redis-server".to_owned());
        let found = Command::new(&bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            if strict() {
                panic!(
                    "{test}: TOLLGATE_TEST_REDIS is not set and there is no {bin}: scripts/test installs and starts one (apt-get install redis-server)"
                );
            }
            eprintln!(
                "{test}: skipped, no Redis (run scripts/test, set TOLLGATE_TEST_REDIS to redis://127.0.0.1:PORT, or install redis-server)"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut own = OwnServer {
            bin,
            dir: tempfile::tempdir().unwrap(),
            port,
            options: options.clone(),
            child: None,
        };
        own.start(test);
        let scheme = if options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        Some(RedisServer {
            url: format!("{scheme}://127.0.0.1:{port}"),
            key_prefix: unique_prefix(test),
            password: options.password,
            own: Some(own),
        })
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` with TLS; no credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Settings for this server: its URL and password, a key prefix of the
    /// test's own, short timeouts.
    pub fn config(&self) -> RedisConfig {
        let mut c = RedisConfig::new(self.url.clone());
        c.password = self.password.clone();
        c.key_prefix = self.key_prefix.clone();
        c.connect_timeout = Duration::from_secs(2);
        c.command_timeout = Duration::from_secs(2);
        c
    }

    /// Kills the server (an outage); with persistence, the data stays.
    pub fn stop(&mut self) {
        self.own_mut("stop").stop();
    }

    /// Starts it again on the same port (and data, with persistence).
    pub fn start_again(&mut self) {
        self.own_mut("start_again").start("start_again");
    }

    /// Kills the server and starts it again on the same port.
    pub fn restart(&mut self) {
        let own = self.own_mut("restart");
        own.stop();
        own.start("restart");
    }

    fn own_mut(&mut self, what: &str) -> &mut OwnServer {
        self.own
            .as_mut()
            .unwrap_or_else(|| panic!("{what}: only a server started by start_own can be stopped"))
    }
}

impl OwnServer {
    fn start(&mut self, test: &str) {
        assert!(self.child.is_none(), "already running");
        let dir = self.dir.path();
        let mut cmd = Command::new(&self.bin);
        match &self.options.tls {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some((cert, key)) => cmd
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .args(["--tls-auth-clients", "no"]),
        };
        cmd.args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(dir)
            .args(["--logfile", ""]);
        if self.options.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if let Some(p) = &self.options.password {
            cmd.args(["--requirepass", p]);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let child = cmd
            .current_dir(dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{test}: cannot start {}: {e}", self.bin));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.ready() {
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                panic!("{test}: redis-server exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{test}: redis-server did not answer: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Answers PING (or asks for a password), and is not loading its data.
    fn ready(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.options.tls.is_some() {
            // Listening is all a plain probe can tell of a TLS port.
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut line = String::new();
        if BufReader::new(s).read_line(&mut line).is_err() {
            return false;
        }
        line.starts_with("+PONG") || line.starts_with("-NOAUTH")
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
    }
}
