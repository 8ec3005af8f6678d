//! The embedded store: SQLite in WAL mode, one file under the data directory.
//! Schema created and migrated on open; batched inserts in one transaction.

mod admin;
mod query;
mod schema;
mod sink;

pub use sink::SqliteStore;
