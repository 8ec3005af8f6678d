//! Validated settings of the ClickHouse store.

use std::time::Duration;

use crate::tls::OutboundRoots;
use tollgate_gateway::Secret;

/// How batches travel to ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClickhouseCompression {
    None,
    Lz4,
}

/// `[storage] type = "clickhouse"`, validated.
#[derive(Debug, Clone)]
pub struct ClickhouseConfig {
    /// `http://host:8123` or `https://host:8443`.
    pub url: String,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub compression: ClickhouseCompression,
    /// Rows older than this are dropped by ClickHouse (TTL); `None` keeps them.
    pub retention_days: Option<u32>,
    /// Longest one insert or query may take before it is retried.
    pub timeout: Duration,
    /// Longest one query of the API may run (`max_execution_time` on the
    /// server, and the client stops waiting then too).
    pub query_timeout: Duration,
    /// Roots trusted over `https://` besides the Mozilla ones (`tls.ca_file`).
    pub extra_roots: OutboundRoots,
}
