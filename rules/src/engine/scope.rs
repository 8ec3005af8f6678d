//! Scopes: who is calling, in one vocabulary for every part of Tollgate.
//!
//! - [`ScopeDim`]: a dimension (`org`, `project`, `user`, `key`, ...);
//! - [`CallFacts`]: anything that answers "what is your value of this
//!   dimension": a call about to be made ([`CallIntent`]), a call made
//!   ([`CallRecord`]), or an asker ([`Scope`]);
//! - rules key counters on a list of dimensions ([`scope_hash`],
//!   [`scope_label`], [`scope_pairs`]), and kill-switch blocks name
//!   dimensions a caller must match (`crate::blocks`), both read through
//!   `CallFacts`.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::CallRecord;

/// A dimension of a call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScopeDim {
    Org,
    Project,
    App,
    Environment,
    User,
    Session,
    /// The virtual key (gateway) the call was made with.
    Key,
    Provider,
    Model,
    Route,
    /// A custom label, `label:<name>`.
    Label(String),
}

impl ScopeDim {
    /// Parses `project`, `user`, `label:team`...
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "org" => ScopeDim::Org,
            "project" => ScopeDim::Project,
            "app" => ScopeDim::App,
            "environment" => ScopeDim::Environment,
            "user" => ScopeDim::User,
            "session" => ScopeDim::Session,
            "key" => ScopeDim::Key,
            "provider" => ScopeDim::Provider,
            "model" => ScopeDim::Model,
            "route" => ScopeDim::Route,
            other => {
                let name = other.strip_prefix("label:")?;
                if name.is_empty() {
                    return None;
                }
                ScopeDim::Label(name.to_owned())
            }
        })
    }

    pub fn name(&self) -> &str {
        match self {
            ScopeDim::Org => "org",
            ScopeDim::Project => "project",
            ScopeDim::App => "app",
            ScopeDim::Environment => "environment",
            ScopeDim::User => "user",
            ScopeDim::Session => "session",
            ScopeDim::Key => "key",
            ScopeDim::Provider => "provider",
            ScopeDim::Model => "model",
            ScopeDim::Route => "route",
            ScopeDim::Label(n) => n,
        }
    }
}

/// What rules read of a call: [`CallIntent`] before it runs, [`CallRecord`] after.
pub trait CallFacts {
    fn dim(&self, dim: &ScopeDim) -> Option<&str>;
    /// Region or address of the upstream that serves the call.
    fn upstream(&self) -> Option<&str>;
}

/// A call about to be made (inline gateway): what `admit` decides on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallIntent {
    pub at_unix_nanos: i64,
    /// Who is calling.
    pub scope: Scope,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub upstream: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Input tokens of the request: at least what the provider bills.
    pub input_tokens: u64,
    /// The most output the call may produce (`max_tokens`, or a default).
    pub max_output_tokens: u64,
    /// Worst-case cost at list price; `None` when the model is unpriced.
    pub worst_case_cost_usd: Option<f64>,
}

impl CallFacts for CallIntent {
    fn dim(&self, dim: &ScopeDim) -> Option<&str> {
        match dim {
            ScopeDim::Provider => self.provider.as_deref(),
            ScopeDim::Model => self.model.as_deref(),
            ScopeDim::Label(n) => self.labels.get(n).map(String::as_str),
            _ => self.scope.dim(dim),
        }
    }

    fn upstream(&self) -> Option<&str> {
        self.upstream.as_deref()
    }
}

impl CallRecord {
    /// Who made the call: its org, project, user... and the virtual key it
    /// was made with (the `key` label).
    pub fn scope(&self) -> Scope {
        Scope {
            org: self.org.clone(),
            project: self.project.clone(),
            app: self.app.clone(),
            environment: self.environment.clone(),
            user: self.user.clone(),
            session: self.session.clone(),
            key: self.labels.get("key").cloned(),
            route: self.route.clone(),
        }
    }
}

impl CallFacts for CallRecord {
    fn dim(&self, dim: &ScopeDim) -> Option<&str> {
        match dim {
            ScopeDim::Org => self.org.as_deref(),
            ScopeDim::Project => self.project.as_deref(),
            ScopeDim::App => self.app.as_deref(),
            ScopeDim::Environment => self.environment.as_deref(),
            ScopeDim::User => self.user.as_deref(),
            ScopeDim::Session => self.session.as_deref(),
            ScopeDim::Key => self.labels.get("key").map(String::as_str),
            ScopeDim::Provider => self.provider.as_deref(),
            ScopeDim::Model => self.model(),
            ScopeDim::Route => self.route.as_deref(),
            ScopeDim::Label(n) => self.labels.get(n).map(String::as_str),
        }
    }

    fn upstream(&self) -> Option<&str> {
        self.upstream.as_deref()
    }
}

/// Who asks, by the dimensions a caller identifies itself with: the query
/// of `GET /v1/enforcement?project=..&user=..`, the scope of an admin's
/// block, lift or override.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    pub org: Option<String>,
    pub project: Option<String>,
    pub app: Option<String>,
    pub environment: Option<String>,
    pub user: Option<String>,
    pub session: Option<String>,
    /// A virtual key's id.
    pub key: Option<String>,
    pub route: Option<String>,
}

impl Scope {
    /// The dimensions a scope names, in this order.
    pub const DIMS: [ScopeDim; 8] = [
        ScopeDim::Org,
        ScopeDim::Project,
        ScopeDim::App,
        ScopeDim::Environment,
        ScopeDim::User,
        ScopeDim::Session,
        ScopeDim::Key,
        ScopeDim::Route,
    ];

    /// The (dimension, value) pairs given, as a block names them.
    pub fn dims(&self) -> Vec<(String, String)> {
        Self::DIMS
            .iter()
            .filter_map(|d| self.dim(d).map(|v| (d.name().to_owned(), v.to_owned())))
            .collect()
    }
}

impl CallFacts for Scope {
    fn dim(&self, dim: &ScopeDim) -> Option<&str> {
        match dim {
            ScopeDim::Org => self.org.as_deref(),
            ScopeDim::Project => self.project.as_deref(),
            ScopeDim::App => self.app.as_deref(),
            ScopeDim::Environment => self.environment.as_deref(),
            ScopeDim::User => self.user.as_deref(),
            ScopeDim::Session => self.session.as_deref(),
            ScopeDim::Key => self.key.as_deref(),
            ScopeDim::Route => self.route.as_deref(),
            ScopeDim::Provider | ScopeDim::Model | ScopeDim::Label(_) => None,
        }
    }

    fn upstream(&self) -> Option<&str> {
        None
    }
}

/// The scope key of `facts` for a rule keyed on `dims`: a hash of the
/// values, computed without allocating. Counters and overrides pair it
/// with the rule's own hash.
pub(crate) fn scope_hash(dims: &[ScopeDim], facts: &impl CallFacts) -> u64 {
    let mut h = DefaultHasher::new();
    for d in dims {
        facts.dim(d).unwrap_or("").hash(&mut h);
    }
    h.finish()
}

/// Scope keys of one call, each distinct scope list of a rule set hashed
/// once however many rules share it (most rules key on a few lists, such
/// as `project` or `project, user`).
pub(crate) struct ScopeHashes<'a, F> {
    lists: &'a [Vec<ScopeDim>],
    facts: &'a F,
    /// Bit i: `hashes[i]` is computed.
    known: u64,
    hashes: [u64; 64],
}

impl<'a, F: CallFacts> ScopeHashes<'a, F> {
    pub(crate) fn new(lists: &'a [Vec<ScopeDim>], facts: &'a F) -> Self {
        Self {
            lists,
            facts,
            known: 0,
            hashes: [0; 64],
        }
    }

    /// The key of scope list `slot` (see `RuleSet::scope_lists`).
    pub(crate) fn get(&mut self, slot: usize) -> u64 {
        let dims = self.lists.get(slot).map_or(&[][..], Vec::as_slice);
        let Some(cached) = self.hashes.get(slot) else {
            // Past the first 64 lists: not remembered.
            return scope_hash(dims, self.facts);
        };
        if self.known & (1 << slot) != 0 {
            return *cached;
        }
        let h = scope_hash(dims, self.facts);
        self.hashes[slot] = h;
        self.known |= 1 << slot;
        h
    }
}

/// `project=search,user=alice` for events and 429 bodies (allocates; not per call).
pub fn scope_label(dims: &[ScopeDim], facts: &impl CallFacts) -> String {
    if dims.is_empty() {
        return "global".to_owned();
    }
    let mut out = String::new();
    for (i, d) in dims.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(d.name());
        out.push('=');
        out.push_str(facts.dim(d).unwrap_or("-"));
    }
    out
}

/// The scope as (dimension, value) pairs, for matching blocks to callers.
pub fn scope_pairs(dims: &[ScopeDim], facts: &impl CallFacts) -> Vec<(String, String)> {
    dims.iter()
        .map(|d| (d.name().to_owned(), facts.dim(d).unwrap_or("").to_owned()))
        .collect()
}

/// Hash of a rule id: counters survive a reload that keeps the id.
pub(crate) fn rule_hash(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dimensions_and_labels() {
        assert_eq!(ScopeDim::parse("project"), Some(ScopeDim::Project));
        assert_eq!(
            ScopeDim::parse("label:team"),
            Some(ScopeDim::Label("team".into()))
        );
        assert_eq!(ScopeDim::parse("label:"), None);
        assert_eq!(ScopeDim::parse("colour"), None);
    }

    #[test]
    fn scope_keys_separate_values_and_rules() {
        let dims = [ScopeDim::Project, ScopeDim::User];
        let who = |p: &str, u: &str| CallIntent {
            scope: Scope {
                project: Some(p.into()),
                user: Some(u.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let (a, b) = (who("p", "u1"), who("p", "u2"));
        assert_ne!(scope_hash(&dims, &a), scope_hash(&dims, &b));
        assert_eq!(scope_hash(&dims, &a), scope_hash(&dims, &a.clone()));
        // Values do not run into each other: ("ab", "") is not ("a", "b").
        assert_ne!(
            scope_hash(&dims, &who("ab", "")),
            scope_hash(&dims, &who("a", "b"))
        );
        // Memoised keys are the keys, past the 64 remembered lists too.
        let lists: Vec<Vec<ScopeDim>> = (0..70)
            .map(|i| match i % 3 {
                0 => vec![ScopeDim::Project],
                1 => vec![ScopeDim::User],
                _ => vec![ScopeDim::Project, ScopeDim::User],
            })
            .collect();
        let mut memo = ScopeHashes::new(&lists, &a);
        for _ in 0..2 {
            for (slot, dims) in lists.iter().enumerate() {
                assert_eq!(memo.get(slot), scope_hash(dims, &a));
            }
        }
        assert_eq!(scope_label(&dims, &a), "project=p,user=u1");
        assert_eq!(scope_label(&[], &a), "global");
    }
}
