//! The embedded store: SQLite in WAL mode, one file under the data directory.
//! Schema created and migrated on open; batched inserts in one transaction;
//! queries on a few read-only connections, each within a timeout.

mod admin;
mod query;
mod readers;
mod schema;
mod sink;

pub use readers::ReadConfig;
pub use sink::SqliteStore;
