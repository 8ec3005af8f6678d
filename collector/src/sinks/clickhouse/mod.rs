//! The production store: ClickHouse (23.8 LTS and newer) over its HTTP
//! interface with the `clickhouse` crate. Schema created and migrated by
//! the collector (versioned, also exported as `deploy/clickhouse/schema.sql`),
//! batched RowBinary inserts with a deduplication token per batch so that a
//! retried batch is stored once, per-minute rollups for the dashboards.

mod admin;
mod config;
mod query;
mod row;
mod schema;
mod sink;

pub use config::{ClickhouseCompression, ClickhouseConfig};
pub use schema::schema_sql;
pub use sink::ClickhouseStore;
