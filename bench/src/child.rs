//! Child processes of the benchmark: every server, Tollgate instance and
//! piece of infrastructure is started through [`spawn`], so each one is
//! pinned the same way (`taskset -c`), dies with the benchmark (killed when
//! its [`Child`] is dropped, and through `setpriv --pdeathsig` even when the
//! benchmark itself is SIGKILLed) and logs to a file whose tail explains a
//! failed start.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::Command;

const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start one child.
#[derive(Debug, Clone)]
pub struct Spawn<'a> {
    /// The program.
    pub exe: &'a Path,
    pub args: Vec<OsString>,
    /// `taskset -c` CPU list, if pinned.
    pub cpus: Option<&'a str>,
    /// Extra environment.
    pub env: Vec<(&'static str, String)>,
    /// Where stderr goes.
    pub log: PathBuf,
    /// Working directory (default: the benchmark's).
    pub cwd: Option<&'a Path>,
    /// Pipe stdout (to read a ready line) instead of discarding it.
    pub stdout: bool,
}

impl<'a> Spawn<'a> {
    pub fn new(exe: &'a Path, log: PathBuf) -> Self {
        Self {
            exe,
            args: Vec::new(),
            cpus: None,
            env: Vec::new(),
            log,
            cwd: None,
            stdout: false,
        }
    }

    /// The full command line: `[taskset -c CPUS] [setpriv --pdeathsig KILL] exe args`.
    /// `taskset` and `setpriv` exec the program, so the child's pid is the program's.
    pub fn argv(&self, with_setpriv: bool) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(cpus) = self.cpus {
            argv.extend(["taskset".into(), "-c".into(), cpus.into()]);
        }
        if with_setpriv {
            argv.extend(["setpriv".into(), "--pdeathsig".into(), "KILL".into()]);
        }
        argv.push(self.exe.into());
        argv.extend(self.args.iter().cloned());
        argv
    }
}

/// A running child process; killed when dropped.
#[derive(Debug)]
pub struct Child {
    pub process: tokio::process::Child,
    /// What it is, for messages.
    pub name: String,
    pub log: PathBuf,
}

/// Starts `spec` as `name`. Its stdin is a pipe that stays open until the
/// child is stopped (the baseline sink exits when it closes).
pub fn spawn(name: &str, spec: &Spawn<'_>) -> anyhow::Result<Child> {
    let log = std::fs::File::create(&spec.log)
        .with_context(|| format!("cannot create {}", spec.log.display()))?;
    let argv = spec.argv(has_setpriv());
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        // The children's own logging is set by their config or below, never
        // inherited; nor is an OTLP endpoint (tansu would export to it).
        .env_remove("RUST_LOG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .envs(spec.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(if spec.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    if let Some(dir) = spec.cwd {
        command.current_dir(dir);
    }
    let process = command
        .spawn()
        .with_context(|| format!("cannot start {name} ({})", spec.exe.display()))?;
    Ok(Child {
        process,
        name: name.to_owned(),
        log: spec.log.clone(),
    })
}

impl Child {
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.process
            .id()
            .with_context(|| format!("{} has exited", self.name))
    }

    /// CPU seconds the child has used so far (all its threads).
    pub fn cpu_secs(&self) -> anyhow::Result<f64> {
        process_cpu_secs(self.pid()?)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// `Err` with the log tail when the child has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.process.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!("{} exited ({status}):\n{}", self.name, self.log_tail()),
        }
    }

    /// Asks the child to stop (stdin EOF, SIGTERM), kills it if it lingers.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        drop(self.process.stdin.take());
        if let Some(pid) = self.process.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        if tokio::time::timeout(STOP_TIMEOUT, self.process.wait())
            .await
            .is_err()
        {
            self.process.kill().await?;
        }
        Ok(())
    }
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

/// Pins this process to `cpus` (call it before any thread exists, so all
/// inherit it).
pub fn pin_self(cpus: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("cannot run taskset (util-linux); use --no-pin")?;
    if !status.success() {
        anyhow::bail!("taskset -c {cpus} failed; check --client-cpus or use --no-pin");
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn interrupted() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// The last 20 lines of `path`.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn argv_pins_then_execs_the_program() {
        let mut spec = Spawn::new(Path::new("/bin/tansu"), PathBuf::from("/tmp/log"));
        spec.args = vec!["broker".into()];
        assert_eq!(
            spec.argv(false),
            vec![OsString::from("/bin/tansu"), "broker".into()]
        );
        spec.cpus = Some("0");
        let argv: Vec<String> = spec
            .argv(true)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            argv,
            [
                "taskset",
                "-c",
                "0",
                "setpriv",
                "--pdeathsig",
                "KILL",
                "/bin/tansu",
                "broker"
            ]
        );
    }
}
