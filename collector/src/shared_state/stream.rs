//! The Redis stream `{prefix}state`: appends (`XADD`, trimmed to about
//! [`MAX_ENTRIES`]) on one connection, reads (`XREAD`, blocking when
//! tailing) on another. Both are connections of their own, not the one the
//! ledger's exchanges use: a blocking read never delays a budget exchange,
//! nor an append.

use std::time::Duration;

use redis::streams::StreamReadReply;
use tollgate_redis::{Redis, RedisConfig, RedisError};

use super::wire::{Entry, Kind};

/// About how many entries the stream keeps (`MAXLEN ~`): the kill-switch,
/// keys and overrides of a deployment change far less often than that
/// between two starts of an instance.
pub const MAX_ENTRIES: usize = 10_000;

/// Most entries read in one round trip.
const READ_COUNT: usize = 500;

/// The stream id before every entry.
pub const START: &str = "0-0";

/// The state stream of one deployment.
#[derive(Debug, Clone)]
pub struct StateStream {
    key: String,
    writer: Redis,
    reader: Redis,
    /// How long a tailing read waits on the server for a new entry: below
    /// the command timeout, so that a quiet stream is not a timeout.
    block: Duration,
}

impl StateStream {
    /// Opens the two connections to the server of `config`.
    pub async fn connect(config: &RedisConfig) -> Result<Self, RedisError> {
        let writer = Redis::connect(config).await?;
        let reader = Redis::connect(config).await?;
        let block = (config.command_timeout / 2)
            .min(Duration::from_millis(500))
            .max(Duration::from_millis(10));
        Ok(Self {
            key: format!("{}state", writer.key_prefix()),
            writer,
            reader,
            block,
        })
    }

    /// The stream's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Appends `entry`; returns its id.
    pub async fn append(&self, entry: &Entry) -> Result<String, RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(&self.key)
            .arg("MAXLEN")
            .arg("~")
            .arg(MAX_ENTRIES)
            .arg("*")
            .arg("origin")
            .arg(&entry.origin)
            .arg("kind")
            .arg(entry.kind.as_str())
            .arg("payload")
            .arg(&entry.payload);
        let (id,): (String,) = self.writer.query(&pipe).await?;
        Ok(id)
    }

    /// The entries after `after` (a stream id, [`START`] for all), oldest
    /// first; when there are none and `wait`, waits up to the block time for
    /// one. Entries this version cannot read are returned with what could be
    /// read and skipped by the caller (their id still counts as read).
    pub async fn read(&self, after: &str, wait: bool) -> Result<Vec<Read>, RedisError> {
        let mut pipe = redis::pipe();
        let cmd = pipe.cmd("XREAD").arg("COUNT").arg(READ_COUNT);
        if wait {
            let ms = u64::try_from(self.block.as_millis()).unwrap_or(500);
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(&self.key).arg(after);
        let (reply,): (Option<StreamReadReply>,) = self.reader.query(&pipe).await?;
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for id in key.ids {
                let field = |name: &str| id.get::<String>(name);
                let entry = match (field("origin"), field("kind"), field("payload")) {
                    (Some(origin), Some(kind), Some(payload)) => match Kind::parse(&kind) {
                        Some(kind) => Read::Entry(Entry {
                            id: id.id.clone(),
                            origin,
                            kind,
                            payload,
                        }),
                        None => Read::Unknown(id.id.clone()),
                    },
                    _ => Read::Unknown(id.id.clone()),
                };
                out.push(entry);
            }
        }
        Ok(out)
    }
}

/// One entry read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Entry(Entry),
    /// An entry of a kind this version does not know (a newer instance's),
    /// or malformed: only its id.
    Unknown(String),
}

impl Read {
    pub fn id(&self) -> &str {
        match self {
            Read::Entry(e) => &e.id,
            Read::Unknown(id) => id,
        }
    }
}
