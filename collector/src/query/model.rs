//! Query types and the trait a store implements to answer them.

use std::collections::HashSet;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::ser::SerializeMap;
use tollgate_rules::engine::ScopeDim;
use tollgate_rules::{CallRecord, RuleEvent};

/// A column usage can be grouped or filtered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    Org,
    Project,
    App,
    Environment,
    User,
    Session,
    Provider,
    Model,
    Route,
    ErrorType,
    Operation,
    Agent,
}

impl Dimension {
    pub const ALL: [Dimension; 12] = [
        Dimension::Org,
        Dimension::Project,
        Dimension::App,
        Dimension::Environment,
        Dimension::User,
        Dimension::Session,
        Dimension::Provider,
        Dimension::Model,
        Dimension::Route,
        Dimension::ErrorType,
        Dimension::Operation,
        Dimension::Agent,
    ];

    /// The name used in `by=` and in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Org => "org",
            Dimension::Project => "project",
            Dimension::App => "app",
            Dimension::Environment => "environment",
            Dimension::User => "user",
            Dimension::Session => "session",
            Dimension::Provider => "provider",
            Dimension::Model => "model",
            Dimension::Route => "route",
            Dimension::ErrorType => "error_type",
            Dimension::Operation => "operation",
            Dimension::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Parses a comma-separated list such as `project,model`.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, QueryError> {
        let mut dims = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let d = Self::parse(part).ok_or_else(|| {
                QueryError::BadRequest(format!(
                    "unknown dimension `{part}`; use any of: {}",
                    Self::ALL.map(Self::as_str).join(", ")
                ))
            })?;
            if !dims.contains(&d) {
                dims.push(d);
            }
        }
        if dims.len() > MAX_GROUP_BY {
            return Err(QueryError::BadRequest(format!(
                "`by` names {} dimensions; group by at most {MAX_GROUP_BY} at once and filter on the others (e.g. project=search)",
                dims.len()
            )));
        }
        Ok(dims)
    }

    /// The dimension's value in a record.
    pub fn value_of(self, r: &CallRecord) -> Option<&str> {
        match self {
            Dimension::Org => r.org.as_deref(),
            Dimension::Project => r.project.as_deref(),
            Dimension::App => r.app.as_deref(),
            Dimension::Environment => r.environment.as_deref(),
            Dimension::User => r.user.as_deref(),
            Dimension::Session => r.session.as_deref(),
            Dimension::Provider => r.provider.as_deref(),
            Dimension::Model => r.model(),
            Dimension::Route => r.route.as_deref(),
            Dimension::ErrorType => r.error_type.as_deref(),
            Dimension::Operation => r.operation.as_deref(),
            Dimension::Agent => r.agent_name.as_deref(),
        }
    }
}

/// Most dimensions one usage query may group by. Every added dimension
/// multiplies the groups a store sorts; four already split calls by, e.g.,
/// project, model, user and session.
pub const MAX_GROUP_BY: usize = 4;

/// Parses `since=1h`, `30m`, `7d`, `2w` into a duration.
pub fn parse_since(s: &str) -> Result<Duration, QueryError> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| {
        QueryError::BadRequest(format!("bad duration `{s}`; write e.g. 30m, 1h, 7d"))
    })?;
    let secs = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(QueryError::BadRequest(format!(
                "bad duration unit in `{s}`; use s, m, h, d or w"
            )));
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// Writes a duration as `since` takes it, in its largest whole unit
/// (`400d`, `36h`, `90m`, `45s`).
pub fn format_since(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `GET /v1/usage`: totals grouped by `group_by` over calls since a time.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    pub group_by: Vec<Dimension>,
    /// Unix nanoseconds; calls that started at or after this.
    pub since_unix_nanos: i64,
    /// Equality filters, e.g. project = "search".
    pub filters: Vec<(Dimension, String)>,
    pub limit: usize,
}

/// One group of a usage answer.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    /// Values of the grouped dimensions, in `group_by` order.
    pub dims: Vec<(Dimension, Option<String>)>,
    pub requests: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// Sum over priced calls.
    pub cost_usd: f64,
    /// Calls whose cost is unknown (model not in the price table).
    pub unpriced_requests: u64,
}

impl Serialize for UsageRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.dims.len() + 8))?;
        for (d, v) in &self.dims {
            m.serialize_entry(d.as_str(), v)?;
        }
        m.serialize_entry("requests", &self.requests)?;
        m.serialize_entry("errors", &self.errors)?;
        m.serialize_entry("input_tokens", &self.input_tokens)?;
        m.serialize_entry("output_tokens", &self.output_tokens)?;
        m.serialize_entry("cache_read_tokens", &self.cache_read_tokens)?;
        m.serialize_entry("cache_write_tokens", &self.cache_write_tokens)?;
        m.serialize_entry("cost_usd", &self.cost_usd)?;
        m.serialize_entry("unpriced_requests", &self.unpriced_requests)?;
        m.end()
    }
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    #[error("{0}")]
    BadRequest(String),
    #[error("store error: {0}")]
    Store(String),
    /// The query (waiting for a reader included) ran past the store's
    /// per-query timeout and was stopped.
    #[error("the query ran longer than the {}s query timeout and was stopped", timeout.as_secs_f64())]
    Timeout { timeout: Duration },
    /// The query asks for data outside the reader's tenant.
    #[error("{0}")]
    Forbidden(String),
}

/// `GET /v1/events`: rule events since a time, newest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventsQuery {
    pub since_unix_nanos: i64,
    pub rule_id: Option<String>,
    pub kind: Option<String>,
    pub limit: usize,
    /// Whether the store's per-query timeout applies: true for the API,
    /// false for start-up work (reading back the events already sent).
    pub within_query_timeout: bool,
    /// Only events whose scope names each of these `dim=value` pairs.
    pub scope_has: Vec<(&'static str, String)>,
    /// Only events whose scope names no other value for these dimensions.
    pub scope_not_other: Vec<(&'static str, String)>,
}

impl EventsQuery {
    /// Restricts the events to what `tenant` may see: events of its most
    /// specific dimension (project, else org), never of another org.
    pub fn within(mut self, tenant: &Tenant) -> Self {
        if let Some(p) = &tenant.project {
            self.scope_has.push(("project", p.clone()));
            if let Some(o) = &tenant.org {
                self.scope_not_other.push(("org", o.clone()));
            }
        } else if let Some(o) = &tenant.org {
            self.scope_has.push(("org", o.clone()));
        }
        if let Some(u) = &tenant.user {
            self.scope_has.push(("user", u.clone()));
        }
        self
    }
}

/// `GET /v1/calls`: the latest calls, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct CallsQuery {
    pub limit: usize,
    /// Equality filters, e.g. project = "search".
    pub filters: Vec<(Dimension, String)>,
}

impl CallsQuery {
    /// The latest `limit` calls, of any scope.
    pub fn latest(limit: usize) -> Self {
        Self {
            limit,
            filters: Vec::new(),
        }
    }
}

/// The part of the data a reader may see: the scope of its key. Empty
/// (every field `None`) sees everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenant {
    pub org: Option<String>,
    pub project: Option<String>,
    pub user: Option<String>,
}

impl Tenant {
    /// Whether this tenant sees every org.
    pub fn is_everything(&self) -> bool {
        self.org.is_none() && self.project.is_none() && self.user.is_none()
    }

    /// The tenant's dimensions with their values.
    pub fn pairs(&self) -> impl Iterator<Item = (Dimension, &str)> {
        [
            (Dimension::Org, self.org.as_deref()),
            (Dimension::Project, self.project.as_deref()),
            (Dimension::User, self.user.as_deref()),
        ]
        .into_iter()
        .filter_map(|(d, v)| Some((d, v?)))
    }

    /// Adds the tenant's equality filters to `filters`; an asked filter on
    /// one of its dimensions with another value is an error naming it.
    pub fn restrict(&self, filters: &mut Vec<(Dimension, String)>) -> Result<(), QueryError> {
        for (dim, value) in self.pairs() {
            if let Some((_, asked)) = filters.iter().find(|(d, _)| *d == dim) {
                if asked != value {
                    return Err(QueryError::Forbidden(format!(
                        "this key reads {} `{value}` only, not `{asked}`",
                        dim.as_str()
                    )));
                }
                continue;
            }
            filters.push((dim, value.to_owned()));
        }
        Ok(())
    }

    /// Gives a call's `org`, `project` and `user` the tenant's values when
    /// it names none; `Err` names the first one it claims of another tenant.
    pub fn claim(
        &self,
        org: &mut Option<String>,
        project: &mut Option<String>,
        user: &mut Option<String>,
    ) -> Result<(), String> {
        for (name, own, claimed) in [
            ("org", &self.org, org),
            ("project", &self.project, project),
            ("user", &self.user, user),
        ] {
            let Some(own) = own else { continue };
            match claimed {
                None => *claimed = Some(own.clone()),
                Some(c) if c == own => {}
                Some(c) => {
                    return Err(format!(
                        "the span names {name} `{c}` but its key may only send for {name} `{own}`"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Called with every stored call of a replay, oldest first.
pub type ReplayFn<'a> = Box<dyn FnMut(&CallRecord) + Send + 'a>;

/// How long before a replay's `since` a call may have started and still be
/// replayed. The bound lets a store read a range of start times instead of
/// every row it holds; a single model call lasting a day is not one.
pub const REPLAY_LONGEST_CALL_NANOS: i64 = 24 * 3600 * 1_000_000_000;

/// A store that answers the query API.
///
/// `usage`, `calls` and `events` (when `within_query_timeout`) answer the
/// API: each stops within the store's per-query timeout (`api.query_timeout`),
/// its wait for a connection included, with [`QueryError::Timeout`], and
/// stops its work on the store when its future is dropped or soon after.
/// `replay` and `ping` are not bounded by it: `replay` is start-up work, and
/// `ping` must never wait behind a query.
pub trait QueryStore: Send + Sync {
    fn usage(&self, query: UsageQuery) -> BoxFuture<'_, Result<Vec<UsageRow>, QueryError>>;
    /// The latest calls matching `query`, newest first.
    fn calls(&self, query: CallsQuery) -> BoxFuture<'_, Result<Vec<CallRecord>, QueryError>>;
    fn events(&self, query: EventsQuery) -> BoxFuture<'_, Result<Vec<RuleEvent>, QueryError>>;
    /// Streams every call that ended at or after `since` (and started at
    /// most [`REPLAY_LONGEST_CALL_NANOS`] before it), oldest first
    /// (rebuilding the rules engine's counters at start-up); returns how many.
    fn replay<'a>(
        &'a self,
        since_unix_nanos: i64,
        each: ReplayFn<'a>,
    ) -> BoxFuture<'a, Result<u64, QueryError>>;
    /// [`QueryStore::replay`], of the calls of some scopes: a call is
    /// streamed when it has every (dimension, value) of one of `scopes`.
    /// Dimensions the store has no column for are not filtered on, and a
    /// store may stream more than asked (the default streams everything):
    /// callers check each call. Every call is streamed once.
    fn replay_scopes<'a>(
        &'a self,
        since_unix_nanos: i64,
        scopes: &'a [Vec<(ScopeDim, String)>],
        each: ReplayFn<'a>,
    ) -> BoxFuture<'a, Result<u64, QueryError>> {
        let _ = scopes;
        self.replay(since_unix_nanos, each)
    }
    /// Which of `calls` (start time, trace id, span id) are stored: rows
    /// read back from the write-ahead log that the store already has are
    /// not stored again.
    fn stored<'a>(
        &'a self,
        calls: &'a [CallKey],
    ) -> BoxFuture<'a, Result<HashSet<CallKey>, QueryError>>;
    /// Whether the store answers at all (readiness).
    fn ping(&self) -> BoxFuture<'_, Result<(), QueryError>>;
}

/// A call's key in the store: start time, trace id, span id.
pub type CallKey = (i64, String, String);

/// Most scopes a filtered replay names in one query; past it, stores
/// replay every call (a query with thousands of alternatives is no faster).
pub const REPLAY_SCOPES_MAX: usize = 256;

/// The column of the calls table a scope dimension is stored in, when it
/// has one (the same name in SQLite and ClickHouse).
pub fn scope_column(dim: &ScopeDim) -> Option<&'static str> {
    Some(match dim {
        ScopeDim::Org => "org",
        ScopeDim::Project => "project",
        ScopeDim::App => "app",
        ScopeDim::Environment => "environment",
        ScopeDim::User => "user_id",
        ScopeDim::Session => "session_id",
        ScopeDim::Provider => "provider",
        ScopeDim::Route => "route",
        ScopeDim::Key | ScopeDim::Model | ScopeDim::Label(_) => return None,
    })
}

/// A SQL condition matching the calls of `scopes` (`?` placeholders, values
/// in `binds` in order), or `None` when every call must be read: too many
/// scopes, or one without a column to filter on.
pub fn scopes_condition(scopes: &[Vec<(ScopeDim, String)>]) -> Option<(String, Vec<String>)> {
    if scopes.is_empty() || scopes.len() > REPLAY_SCOPES_MAX {
        return None;
    }
    let mut binds = Vec::new();
    let mut alternatives = Vec::with_capacity(scopes.len());
    for scope in scopes {
        let terms: Vec<String> = scope
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .filter_map(|(dim, value)| {
                let column = scope_column(dim)?;
                binds.push(value.clone());
                Some(format!("{column} = ?"))
            })
            .collect();
        if terms.is_empty() {
            return None;
        }
        alternatives.push(format!("({})", terms.join(" AND ")));
    }
    Some((format!("({})", alternatives.join(" OR ")), binds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_fills_what_a_call_leaves_out_and_refuses_another_tenant() {
        let tenant = Tenant {
            org: Some("acme".into()),
            project: Some("a".into()),
            user: None,
        };
        let (mut org, mut project, mut user) = (None, None, Some("u1".to_owned()));
        tenant.claim(&mut org, &mut project, &mut user).unwrap();
        assert_eq!(
            (org.as_deref(), project.as_deref()),
            (Some("acme"), Some("a"))
        );
        assert_eq!(user.as_deref(), Some("u1"));
        let (mut org, mut project, mut user) =
            (Some("acme".to_owned()), Some("b".to_owned()), None);
        let err = tenant.claim(&mut org, &mut project, &mut user).unwrap_err();
        assert!(
            err.contains("project `b`") && err.contains("project `a`"),
            "{err}"
        );
        let (mut org, mut project) = (Some("evil".to_owned()), None);
        assert!(tenant.claim(&mut org, &mut project, &mut None).is_err());
        // Everything: nothing changes.
        let (mut org, mut project) = (Some("x".to_owned()), None);
        Tenant::default()
            .claim(&mut org, &mut project, &mut None)
            .unwrap();
        assert_eq!((org.as_deref(), project), (Some("x"), None));
    }

    #[test]
    fn a_tenant_narrows_filters_and_refuses_another_tenants() {
        let tenant = Tenant {
            org: Some("acme".into()),
            project: Some("a".into()),
            user: None,
        };
        let mut filters = vec![(Dimension::Model, "gpt-4o".to_owned())];
        tenant.restrict(&mut filters).unwrap();
        assert_eq!(
            filters,
            [
                (Dimension::Model, "gpt-4o".to_owned()),
                (Dimension::Org, "acme".to_owned()),
                (Dimension::Project, "a".to_owned()),
            ]
        );
        let mut asked = vec![(Dimension::Project, "b".to_owned())];
        assert!(matches!(
            tenant.restrict(&mut asked),
            Err(QueryError::Forbidden(_))
        ));
        let mut same = vec![(Dimension::Project, "a".to_owned())];
        tenant.restrict(&mut same).unwrap();
        assert_eq!(same.len(), 2);
    }

    #[test]
    fn parses_dimensions_and_refuses_unknown_ones() {
        assert_eq!(
            Dimension::parse_list("project, model,project").unwrap(),
            vec![Dimension::Project, Dimension::Model]
        );
        let err = Dimension::parse_list("project,colour")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("colour") && err.contains("error_type"),
            "{err}"
        );
        assert_eq!(
            Dimension::parse_list("user,session,model,project,user")
                .unwrap()
                .len(),
            4
        );
        let err = Dimension::parse_list("user,session,model,project,route")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("names 5 dimensions") && err.contains("at most 4"),
            "{err}"
        );
    }

    #[test]
    fn parses_since() {
        assert_eq!(parse_since("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_since("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_since("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert!(parse_since("h").is_err());
        assert!(parse_since("5y").is_err());
        for text in ["400d", "36h", "90m", "45s"] {
            assert_eq!(format_since(parse_since(text).unwrap()), text);
        }
    }

    #[test]
    fn usage_rows_flatten_dimensions() {
        let row = UsageRow {
            dims: vec![
                (Dimension::Project, Some("search".into())),
                (Dimension::Model, None),
            ],
            requests: 2,
            errors: 0,
            input_tokens: 10,
            output_tokens: 5,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            cost_usd: 0.5,
            unpriced_requests: 0,
        };
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(v["project"], "search");
        assert!(v["model"].is_null());
        assert_eq!(v["requests"], 2);
        assert_eq!(v["cost_usd"], 0.5);
    }
}
