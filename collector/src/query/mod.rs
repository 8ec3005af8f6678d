//! The query surface shared by every store: usage grouped by dimensions and
//! the latest calls. The HTTP API and the CLI speak these types.

mod model;

pub use model::{
    CallKey, CallsQuery, Dimension, EventsQuery, MAX_GROUP_BY, QueryError, QueryStore,
    REPLAY_LONGEST_CALL_NANOS, REPLAY_SCOPES_MAX, ReplayFn, Tenant, UsageQuery, UsageRow,
    format_since, parse_since, scope_column, scopes_condition,
};
