//! Everything one run of one target needs, started fresh in a fresh temp dir
//! and stopped at the end:
//!
//! | target            | receives the load         | writes the store          | infrastructure            |
//! |-------------------|---------------------------|---------------------------|---------------------------|
//! | `baseline`        | the decode-and-count sink | (counts)                  | —                         |
//! | `tollgate`        | `tollgate serve`          | same process, SQLite      | —                         |
//! | `tollgate-secure` | the same, keys + TLS      | same process, SQLite      | —                         |
//! | `clickhouse`      | `tollgate serve`          | same process, ClickHouse  | ClickHouse test server    |
//! | `kafka`           | `tollgate` ingest role    | `tollgate` process role   | ClickHouse server, tansu  |
//!
//! The servers (sink, Tollgate instances) are pinned to the server CPUs;
//! the infrastructure to `Launch::infra_cpus`. Each run gets its own
//! ClickHouse server, broker, database and topic, so no run sees another's
//! data, background merges or broker memory.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::infra::{ClickhouseServer, KafkaBroker, StoredRows};
use crate::load::Transport;
use crate::secure::{ClientAuth, Credentials};
use crate::target::{
    KafkaLink, KafkaRole, Launch, ServerCounters, ServerProcess, Storage, Target, TollgateConfig,
    metric_value, tollgate_counters,
};

/// How long the process instance may take to get its partitions.
const ASSIGN_TIMEOUT: Duration = Duration::from_secs(60);
const ASSIGNED: &str = "tollgate_kafka_rebalances_total{kind=\"assign\"}";

/// The database and topic of one run: unique per round, transport and target.
pub fn run_names(round: usize, transport: Transport, target: Target) -> (String, String) {
    let t = match transport {
        Transport::Grpc => "grpc",
        Transport::Http => "http",
    };
    (
        format!("bench_r{}_{t}_{}", round + 1, target.name()),
        format!("bench.calls.r{}.{t}", round + 1),
    )
}

/// CPU seconds used so far, per part of a deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSecs {
    /// The sink or the Tollgate instance(s): what "server CPU" means.
    pub server: f64,
    /// The Kafka process instance (included in `server`).
    pub process: f64,
    pub clickhouse: f64,
    pub broker: f64,
}

impl std::ops::Sub for CpuSecs {
    type Output = CpuSecs;

    fn sub(self, before: CpuSecs) -> CpuSecs {
        CpuSecs {
            server: self.server - before.server,
            process: self.process - before.process,
            clickhouse: self.clickhouse - before.clickhouse,
            broker: self.broker - before.broker,
        }
    }
}

/// The running processes of one target.
#[derive(Debug)]
pub struct Deployment {
    pub target: Target,
    // Field order is drop order: servers die before the infrastructure,
    // everything before its directory goes.
    /// Receives the load.
    front: ServerProcess,
    /// Kafka: the process instance, which writes the store.
    back: Option<ServerProcess>,
    clickhouse: Option<ClickhouseServer>,
    broker: Option<KafkaBroker>,
    database: String,
    /// Keys and TLS (`tollgate-secure`): the run's certificates.
    secure: Option<Credentials>,
    dir: TempDir,
}

impl Deployment {
    pub async fn start(
        target: Target,
        launch: &Launch,
        round: usize,
        transport: Transport,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tollgate-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let (database, topic) = run_names(round, transport, target);
        let infra_cpus = launch.infra_cpus.as_deref();
        let clickhouse = if target.uses_clickhouse() {
            let python = launch
                .chdb_python
                .as_deref()
                .context("no python with chdb-core for the ClickHouse test server")?;
            Some(ClickhouseServer::start(python, &dir.path().join("clickhouse"), infra_cpus).await?)
        } else {
            None
        };
        let broker = if target.uses_kafka() {
            let tansu = launch.tansu.as_deref().context("no tansu broker")?;
            Some(KafkaBroker::start(tansu, dir.path().join("broker.log"), infra_cpus).await?)
        } else {
            None
        };
        let secure = if target.is_secure() {
            Some(Credentials::issue(&dir.path().join("tls"))?)
        } else {
            None
        };
        let config = |kafka: Option<KafkaLink>| TollgateConfig {
            storage: match &clickhouse {
                Some(ch) => Storage::Clickhouse {
                    url: ch.url().to_owned(),
                    database: database.clone(),
                },
                None => Storage::Sqlite {
                    dir: dir.path().join("data"),
                },
            },
            kafka,
            queue_capacity_rows: launch.queue_capacity_rows,
            batch_max_rows: launch.batch_max_rows,
            durability: target.durability(),
            wal_dir: dir.path().join("wal"),
            secure: secure.clone(),
        };
        let link = |role| {
            broker.as_ref().map(|b| KafkaLink {
                brokers: b.brokers(),
                topic: topic.clone(),
                group_id: "tollgate-bench-process".to_owned(),
                role,
            })
        };
        let (front, back) = match target {
            Target::Baseline => (ServerProcess::sink(launch, dir.path()).await?, None),
            Target::Tollgate
            | Target::TollgateMemory
            | Target::TollgatePower
            | Target::TollgateSecure
            | Target::Clickhouse => (
                ServerProcess::tollgate(launch, dir.path(), "tollgate", &config(None)).await?,
                None,
            ),
            Target::Kafka => {
                // The consumer first, so the group is formed before traffic.
                let process = ServerProcess::tollgate(
                    launch,
                    dir.path(),
                    "process",
                    &config(link(KafkaRole::Process)),
                )
                .await?;
                wait_assigned(&process).await?;
                let ingest = ServerProcess::tollgate(
                    launch,
                    dir.path(),
                    "ingest",
                    &config(link(KafkaRole::Ingest)),
                )
                .await?;
                (ingest, Some(process))
            }
        };
        Ok(Self {
            target,
            front,
            back,
            clickhouse,
            broker,
            database,
            secure,
            dir,
        })
    }

    /// Where the load goes.
    pub fn otlp(&self, transport: Transport) -> anyhow::Result<SocketAddr> {
        match transport {
            Transport::Grpc => Ok(self.front.otlp_grpc),
            Transport::Http => self.front.otlp_http.context("no OTLP/HTTP listener"),
        }
    }

    /// The CA and key the load must use, when keys and TLS are on.
    pub fn ingest_auth(&self) -> Option<ClientAuth> {
        self.secure.as_ref().map(Credentials::ingest)
    }

    pub fn cpu_secs(&self) -> anyhow::Result<CpuSecs> {
        let process = match &self.back {
            Some(b) => b.cpu_secs()?,
            None => 0.0,
        };
        Ok(CpuSecs {
            server: self.front.cpu_secs()? + process,
            process,
            clickhouse: match &self.clickhouse {
                Some(c) => c.child.cpu_secs()?,
                None => 0.0,
            },
            broker: match &self.broker {
                Some(b) => b.child.cpu_secs()?,
                None => 0.0,
            },
        })
    }

    /// The writer's counters (the process instance's, behind Kafka).
    pub async fn counters(&self) -> anyhow::Result<ServerCounters> {
        if self.target == Target::Baseline {
            return Ok(ServerCounters {
                stored: self.front.sink_count().await?,
                ..Default::default()
            });
        }
        let writer = self.back.as_ref().unwrap_or(&self.front);
        tollgate_counters(&writer.metrics().await?)
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

    /// Rows really in the store (SQLite or ClickHouse), or spans counted (baseline).
    pub async fn stored_rows(&self) -> anyhow::Result<StoredRows> {
        if let Some(ch) = &self.clickhouse {
            return ch.stored_rows(&self.database).await;
        }
        if self.target == Target::Baseline {
            let rows = self.counters().await?.stored;
            return Ok(StoredRows {
                rows,
                distinct: rows,
            });
        }
        let db = self.dir.path().join("data").join("tollgate.sqlite");
        tokio::task::spawn_blocking(move || -> anyhow::Result<StoredRows> {
            let conn = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            // Repeats are the dedup window's to drop: count them, as for ClickHouse.
            let (n, distinct): (i64, i64) = conn.query_row(
                "SELECT count(*), count(DISTINCT trace_id || '/' || span_id) FROM calls",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(StoredRows {
                rows: u64::try_from(n).unwrap_or(0),
                distinct: u64::try_from(distinct).unwrap_or(0),
            })
        })
        .await?
    }

    /// Stops the servers (the receiving one first, so the Kafka ingest
    /// instance flushes before the process instance drains), then the
    /// infrastructure; the directory goes when `self` is dropped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let mut result = self.front.stop().await;
        if let Some(back) = &mut self.back {
            result = result.and(back.stop().await);
        }
        if let Some(ch) = &mut self.clickhouse {
            result = result.and(ch.child.stop().await);
        }
        if let Some(broker) = &mut self.broker {
            result = result.and(broker.child.stop().await);
        }
        result
    }
}

/// Waits until the process instance owns partitions of the topic.
async fn wait_assigned(process: &ServerProcess) -> anyhow::Result<()> {
    let deadline = Instant::now() + ASSIGN_TIMEOUT;
    loop {
        let metrics = process.metrics().await?;
        if metric_value(&metrics, ASSIGNED).is_some_and(|n| n >= 1.0) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the Kafka process instance got no partitions within {ASSIGN_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_run_and_valid() {
        let (db, topic) = run_names(0, Transport::Grpc, Target::Clickhouse);
        assert_eq!(db, "bench_r1_grpc_clickhouse");
        assert_eq!(topic, "bench.calls.r1.grpc");
        let mut seen = std::collections::HashSet::new();
        for round in 0..3 {
            for transport in [Transport::Grpc, Transport::Http] {
                for target in Target::ALL {
                    let (db, topic) = run_names(round, transport, target);
                    // What tollgate accepts for storage.database and kafka.topic.
                    assert!(db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    assert!(
                        topic
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                    );
                    assert!(seen.insert(db));
                }
            }
        }
    }

    #[test]
    fn cpu_deltas_subtract_each_part() {
        let before = CpuSecs {
            server: 1.0,
            process: 0.5,
            clickhouse: 2.0,
            broker: 0.25,
        };
        let after = CpuSecs {
            server: 4.0,
            process: 2.0,
            clickhouse: 2.5,
            broker: 1.25,
        };
        assert_eq!(
            after - before,
            CpuSecs {
                server: 3.0,
                process: 1.5,
                clickhouse: 0.5,
                broker: 1.0
            }
        );
    }
}
