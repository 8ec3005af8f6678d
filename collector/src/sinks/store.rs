//! Building the configured store from `[storage]`.

use std::path::PathBuf;
use std::sync::Arc;

use super::clickhouse::{ClickhouseConfig, ClickhouseStore};
use super::sqlite::{ReadConfig, SqliteStore};
use super::{AlertOutbox, Sink, SinkError};
use crate::admin::AdminLog;
use crate::query::QueryStore;

/// Where rows go: `[storage]`, validated.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    Sqlite {
        dir: PathBuf,
        read: ReadConfig,
        /// Each commit flushed to the device (`synchronous = FULL`), for
        /// durability `power`: the log's checkpoint never gets ahead of
        /// what SQLite keeps through a power loss.
        flush_commits: bool,
    },
    Clickhouse(ClickhouseConfig),
}

/// An open store: the side the writer writes to and the side the API reads.
#[derive(Clone)]
pub struct Store {
    pub sink: Arc<dyn Sink>,
    pub query: Arc<dyn QueryStore>,
    pub admin: Arc<dyn AdminLog>,
    /// The alert outbox.
    pub outbox: Arc<dyn AlertOutbox>,
}

impl StorageConfig {
    /// Opens the configured store.
    pub async fn build(&self) -> Result<Store, SinkError> {
        match self {
            StorageConfig::Sqlite {
                dir,
                read,
                flush_commits,
            } => {
                let store = SqliteStore::open_with(dir, *read, *flush_commits)?;
                tracing::info!(path = %store.path().display(), "embedded store open");
                Ok(Store {
                    sink: Arc::new(store.clone()),
                    query: Arc::new(store.clone()),
                    admin: Arc::new(store.clone()),
                    outbox: Arc::new(store),
                })
            }
            StorageConfig::Clickhouse(config) => {
                let store = ClickhouseStore::open(config).await?;
                tracing::info!(url = %config.url, database = %config.database, "ClickHouse store ready");
                Ok(Store {
                    sink: Arc::new(store.clone()),
                    query: Arc::new(store.clone()),
                    admin: Arc::new(store.clone()),
                    outbox: Arc::new(store),
                })
            }
        }
    }
}
