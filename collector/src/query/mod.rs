//! The query surface shared by every store: usage grouped by dimensions and
//! the latest calls. The HTTP API and the CLI speak these types.

mod model;

pub use model::{
    Dimension, EventsQuery, MAX_GROUP_BY, QueryError, QueryStore, REPLAY_LONGEST_CALL_NANOS,
    ReplayFn, UsageQuery, UsageRow, format_since, parse_since,
};
