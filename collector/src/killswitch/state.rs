//! Which scopes are blocked, and a revision that moves on every change so
//! watchers (SSE, gRPC) learn of it at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tollgate_rules::engine::config::Action;
use tollgate_rules::engine::{Violation, ViolationKind};

/// One blocked scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// The rule that tripped, or `admin`.
    pub rule_id: String,
    /// `project=search,user=alice`.
    pub scope: String,
    pub reason: String,
    /// When it lifts by itself, Unix nanoseconds; 0 = until lifted.
    pub until_unix_nanos: i64,
    pub limit: f64,
    pub used: f64,
    pub metric: String,
    /// The scope as (dimension, value) pairs; not part of the wire format.
    #[serde(skip)]
    pub dims: Vec<(String, String)>,
}

/// Who asks (`GET /v1/enforcement?project=..&user=..`): a block applies when
/// every dimension it names has the asker's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeQuery {
    pub org: Option<String>,
    pub project: Option<String>,
    pub app: Option<String>,
    pub environment: Option<String>,
    pub user: Option<String>,
    pub session: Option<String>,
    pub key: Option<String>,
    pub route: Option<String>,
}

impl ScopeQuery {
    fn value(&self, dim: &str) -> Option<&str> {
        match dim {
            "org" => self.org.as_deref(),
            "project" => self.project.as_deref(),
            "app" => self.app.as_deref(),
            "environment" => self.environment.as_deref(),
            "user" => self.user.as_deref(),
            "session" => self.session.as_deref(),
            "key" => self.key.as_deref(),
            "route" => self.route.as_deref(),
            _ => None,
        }
    }

    /// This scope narrowed to `tenant`: its org, project and user set to
    /// the tenant's; `Err` names one asked of another tenant.
    pub fn within(mut self, tenant: &crate::query::Tenant) -> Result<Self, String> {
        for (name, own, asked) in [
            ("org", &tenant.org, &mut self.org),
            ("project", &tenant.project, &mut self.project),
            ("user", &tenant.user, &mut self.user),
        ] {
            let Some(own) = own else { continue };
            match asked {
                Some(a) if a != own => {
                    return Err(format!("this key reads {name} `{own}` only, not `{a}`"));
                }
                _ => *asked = Some(own.clone()),
            }
        }
        Ok(self)
    }

    /// The (dimension, value) pairs given, for a block set by an admin.
    pub fn dims(&self) -> Vec<(String, String)> {
        [
            "org",
            "project",
            "app",
            "environment",
            "user",
            "session",
            "key",
            "route",
        ]
        .into_iter()
        .filter_map(|d| self.value(d).map(|v| (d.to_owned(), v.to_owned())))
        .collect()
    }

    #[cfg(test)]
    fn covers(&self, block: &Block) -> bool {
        block
            .dims
            .iter()
            .all(|(d, v)| self.value(d).is_some_and(|mine| mine == v))
    }
}

/// The answer for one scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnforcementState {
    pub blocked: bool,
    pub blocks: Vec<Block>,
    pub revision: i64,
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A block's identity: (rule, scope).
type BlockKey = (String, String);

/// The live blocks, indexed so that finding those that cover an asker
/// costs one lookup per *shape* of scope in use (the sets of dimensions
/// rules and admins block on, a handful), not a scan of every block; and
/// the ones that lift by themselves, by when, so they are pruned as they
/// expire instead of piling up.
#[derive(Debug, Default)]
struct Blocks {
    by_key: HashMap<BlockKey, Block>,
    /// Sorted dimension names -> their values (joined) -> blocks.
    by_shape: HashMap<Vec<String>, HashMap<String, Vec<BlockKey>>>,
    expiring: BTreeMap<i64, Vec<BlockKey>>,
}

const SEPARATOR: char = '\u{1f}';

/// A block's shape (its dimension names, sorted) and values in that order.
fn shape_of(dims: &[(String, String)]) -> (Vec<String>, String) {
    let mut sorted: Vec<&(String, String)> = dims.iter().collect();
    sorted.sort();
    let shape = sorted.iter().map(|(d, _)| d.clone()).collect();
    let values = sorted
        .iter()
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join(&SEPARATOR.to_string());
    (shape, values)
}

impl Blocks {
    fn insert(&mut self, b: Block) {
        let key = (b.rule_id.clone(), b.scope.clone());
        self.remove(&key);
        let (shape, values) = shape_of(&b.dims);
        self.by_shape
            .entry(shape)
            .or_default()
            .entry(values)
            .or_default()
            .push(key.clone());
        if b.until_unix_nanos != 0 {
            self.expiring
                .entry(b.until_unix_nanos)
                .or_default()
                .push(key.clone());
        }
        self.by_key.insert(key, b);
    }

    fn remove(&mut self, key: &BlockKey) -> Option<Block> {
        let b = self.by_key.remove(key)?;
        let (shape, values) = shape_of(&b.dims);
        if let Some(by_values) = self.by_shape.get_mut(&shape) {
            if let Some(keys) = by_values.get_mut(&values) {
                keys.retain(|k| k != key);
                if keys.is_empty() {
                    by_values.remove(&values);
                }
            }
            if by_values.is_empty() {
                self.by_shape.remove(&shape);
            }
        }
        if b.until_unix_nanos != 0
            && let Some(keys) = self.expiring.get_mut(&b.until_unix_nanos)
        {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.expiring.remove(&b.until_unix_nanos);
            }
        }
        Some(b)
    }

    /// Drops the blocks expired at `now`; returns how many.
    fn prune(&mut self, now: i64) -> usize {
        let mut pruned = 0;
        while let Some(entry) = self.expiring.first_entry() {
            if *entry.key() > now {
                break;
            }
            for key in entry.remove() {
                pruned += usize::from(self.remove(&key).is_some());
            }
        }
        pruned
    }

    /// The keys of the blocks that cover `query`.
    fn covering(&self, query: &ScopeQuery) -> Vec<BlockKey> {
        let mut found = Vec::new();
        for (shape, by_values) in &self.by_shape {
            let mut values = String::new();
            let mut complete = true;
            for (i, dim) in shape.iter().enumerate() {
                let Some(v) = query.value(dim) else {
                    complete = false;
                    break;
                };
                if i > 0 {
                    values.push(SEPARATOR);
                }
                values.push_str(v);
            }
            if complete && let Some(keys) = by_values.get(&values) {
                found.extend(keys.iter().cloned());
            }
        }
        found.sort();
        found
    }
}

#[derive(Debug, Default)]
struct State {
    blocks: Blocks,
    revision: i64,
}

/// A change made on this instance, for the others (Kafka scale-out).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Set(Block),
    Lift(Block),
}

/// The kill-switch. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct KillSwitch {
    state: Arc<Mutex<State>>,
    changes: watch::Sender<i64>,
    /// Where this instance's own changes are sent, if anywhere.
    outbox: Arc<Mutex<Option<mpsc::UnboundedSender<Change>>>>,
    /// Cancelled at shutdown: watch streams end so servers can stop.
    closing: CancellationToken,
}

impl Default for KillSwitch {
    fn default() -> Self {
        Self::new()
    }
}

impl KillSwitch {
    pub fn new() -> Self {
        let (changes, _) = watch::channel(0);
        Self {
            state: Arc::new(Mutex::new(State::default())),
            changes,
            outbox: Arc::new(Mutex::new(None)),
            closing: CancellationToken::new(),
        }
    }

    /// Sends every change made here from now on to `tx` (not the ones
    /// applied with [`KillSwitch::apply_remote`]).
    pub fn publish_changes(&self, tx: mpsc::UnboundedSender<Change>) {
        *self.outbox.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
    }

    fn emit(&self, changes: impl IntoIterator<Item = Change>) {
        let outbox = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = outbox.as_ref() {
            for c in changes {
                let _ = tx.send(c);
            }
        }
    }

    /// Applies a change another instance made.
    pub fn apply_remote(&self, change: Change) {
        match change {
            Change::Set(b) => self.change(|blocks| {
                let key = (b.rule_id.clone(), b.scope.clone());
                if blocks.by_key.get(&key) == Some(&b) {
                    return false;
                }
                blocks.insert(b);
                true
            }),
            Change::Lift(b) => self.change(|blocks| {
                blocks
                    .remove(&(b.rule_id.clone(), b.scope.clone()))
                    .is_some()
            }),
        }
    }

    /// Ends every watch stream (shutdown).
    pub fn close(&self) {
        self.closing.cancel();
        // Publishing ends: what was sent is still delivered.
        self.outbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Cancelled once [`KillSwitch::close`] was called.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// The states for `scope`: the current one at once, then each change
    /// that concerns it, until shutdown. Also re-checked every second so an
    /// expiring block is noticed.
    pub fn watch(
        &self,
        scope: ScopeQuery,
    ) -> impl futures::Stream<Item = EnforcementState> + Send + use<> {
        let start = (
            self.clone(),
            scope,
            self.subscribe(),
            None::<(bool, Vec<Block>)>,
        );
        futures::stream::unfold(start, |(ks, scope, mut changes, last)| async move {
            loop {
                let state = ks.state_for(&scope);
                let key = (state.blocked, state.blocks.clone());
                if last.as_ref() != Some(&key) {
                    return Some((state, (ks, scope, changes, Some(key))));
                }
                tokio::select! {
                    _ = ks.closing.cancelled() => return None,
                    changed = changes.changed() => if changed.is_err() { return None },
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        })
    }

    /// Receives the revision after every change.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.changes.subscribe()
    }

    fn change(&self, f: impl FnOnce(&mut Blocks) -> bool) {
        let revision = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.blocks.prune(now_nanos());
            if !f(&mut state.blocks) {
                return;
            }
            state.revision += 1;
            state.revision
        };
        self.changes.send_replace(revision);
    }

    /// Blocks the scopes of `block` rules whose limit was exceeded, until their window ends.
    pub fn apply(&self, violations: &[Violation]) {
        let new: Vec<Block> = violations
            .iter()
            .filter(|v| v.action == Action::Block && v.kind == ViolationKind::LimitExceeded)
            .map(|v| Block {
                rule_id: v.rule_id.to_string(),
                scope: v.scope.clone(),
                reason: if v
                    .metric
                    .is_some_and(|m| m == tollgate_rules::engine::config::Metric::Requests)
                {
                    "rate_limited".to_owned()
                } else {
                    "budget_exceeded".to_owned()
                },
                until_unix_nanos: v.window_end.unwrap_or(0),
                limit: v.limit.unwrap_or(0.0),
                used: v.used.unwrap_or(0.0),
                metric: v.metric.map(|m| m.as_str().to_owned()).unwrap_or_default(),
                dims: v.scope_dims.clone(),
            })
            .collect();
        if new.is_empty() {
            return;
        }
        for b in &new {
            tracing::warn!(rule = %b.rule_id, scope = %b.scope, reason = %b.reason, "scope blocked");
        }
        self.emit(new.iter().cloned().map(Change::Set));
        self.change(|blocks| {
            for b in new {
                blocks.insert(b);
            }
            true
        });
    }

    /// Sets a block by hand (admin API).
    pub fn set(&self, block: Block) {
        tracing::warn!(rule = %block.rule_id, scope = %block.scope, "scope blocked by an admin");
        self.emit([Change::Set(block.clone())]);
        self.change(|blocks| {
            blocks.insert(block);
            true
        });
    }

    /// Lifts the blocks `query` covers (optionally of one rule); returns them.
    pub fn lift(&self, query: &ScopeQuery, rule_id: Option<&str>) -> Vec<Block> {
        let mut lifted = Vec::new();
        self.change(|blocks| {
            let keys: Vec<BlockKey> = blocks
                .covering(query)
                .into_iter()
                .filter(|(rule, _)| rule_id.is_none_or(|r| r == rule))
                .collect();
            for k in keys {
                if let Some(b) = blocks.remove(&k) {
                    lifted.push(b);
                }
            }
            !lifted.is_empty()
        });
        self.emit(lifted.iter().cloned().map(Change::Lift));
        lifted
    }

    /// The blocks that apply to `query` now (expired ones are dropped).
    pub fn state_for(&self, query: &ScopeQuery) -> EnforcementState {
        let now = now_nanos();
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let blocks: Vec<Block> = state
            .blocks
            .covering(query)
            .iter()
            .filter_map(|k| state.blocks.by_key.get(k))
            .filter(|b| b.until_unix_nanos == 0 || b.until_unix_nanos > now)
            .cloned()
            .collect();
        EnforcementState {
            blocked: !blocks.is_empty(),
            blocks,
            revision: state.revision,
        }
    }

    /// Every live block.
    pub fn all(&self) -> Vec<Block> {
        let now = now_nanos();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.blocks.prune(now);
        let mut all: Vec<Block> = state.blocks.by_key.values().cloned().collect();
        all.sort_by(|a, b| (&a.rule_id, &a.scope).cmp(&(&b.rule_id, &b.scope)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(rule: &str, dims: &[(&str, &str)], until: i64) -> Block {
        Block {
            rule_id: rule.into(),
            scope: dims
                .iter()
                .map(|(d, v)| format!("{d}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            reason: "budget_exceeded".into(),
            until_unix_nanos: until,
            limit: 1.0,
            used: 2.0,
            metric: "tokens".into(),
            dims: dims
                .iter()
                .map(|(d, v)| ((*d).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn blocks_apply_to_every_asker_inside_their_scope() {
        let ks = KillSwitch::new();
        let rx = ks.subscribe();
        ks.set(block("daily", &[("project", "search")], 0));
        assert!(rx.has_changed().unwrap());
        let asker = ScopeQuery {
            project: Some("search".into()),
            user: Some("alice".into()),
            ..Default::default()
        };
        let state = ks.state_for(&asker);
        assert!(state.blocked);
        assert_eq!(state.blocks[0].rule_id, "daily");
        assert_eq!(state.revision, 1);
        // Another project, or no project, is not covered.
        assert!(
            !ks.state_for(&ScopeQuery {
                project: Some("ops".into()),
                ..Default::default()
            })
            .blocked
        );
        assert!(!ks.state_for(&ScopeQuery::default()).blocked);
        // A per-user block does not cover other users.
        ks.set(block("per-user", &[("project", "ops"), ("user", "bob")], 0));
        assert!(
            !ks.state_for(&ScopeQuery {
                project: Some("ops".into()),
                user: Some("eve".into()),
                ..Default::default()
            })
            .blocked
        );
        assert_eq!(ks.lift(&asker, None).len(), 1);
        assert!(!ks.state_for(&asker).blocked);
        assert_eq!(ks.all().len(), 1);
    }

    #[test]
    fn the_index_finds_exactly_the_blocks_a_scan_would() {
        let dims = ["org", "project", "user", "route"];
        let values = ["a", "b", "c"];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let mut blocks = Blocks::default();
        let mut all = Vec::new();
        for i in 0..300 {
            let mut pairs: Vec<(&str, &str)> = Vec::new();
            for d in dims {
                if next(2) == 0 {
                    pairs.push((d, values[next(values.len())]));
                }
            }
            if pairs.is_empty() {
                pairs.push(("project", "a"));
            }
            // Rules list their dimensions in any order.
            if next(2) == 0 {
                pairs.reverse();
            }
            let b = block(&format!("r{}", i % 7), &pairs, 0);
            all.retain(|x: &Block| (&x.rule_id, &x.scope) != (&b.rule_id, &b.scope));
            all.push(b.clone());
            blocks.insert(b);
        }
        for _ in 0..500 {
            let pick = |next: &mut dyn FnMut(usize) -> usize| {
                (next(3) > 0).then(|| values[next(values.len())].to_owned())
            };
            let q = ScopeQuery {
                org: pick(&mut next),
                project: pick(&mut next),
                user: pick(&mut next),
                route: pick(&mut next),
                ..Default::default()
            };
            let mut scanned: Vec<BlockKey> = all
                .iter()
                .filter(|b| q.covers(b))
                .map(|b| (b.rule_id.clone(), b.scope.clone()))
                .collect();
            scanned.sort();
            assert_eq!(blocks.covering(&q), scanned, "{q:?}");
        }
    }

    #[test]
    fn expired_blocks_are_pruned() {
        let mut blocks = Blocks::default();
        for i in 0..1_000 {
            blocks.insert(block("hourly", &[("user", &format!("u{i}"))], 100 + i));
        }
        blocks.insert(block("manual", &[("user", "u1")], 0));
        assert_eq!(blocks.prune(599), 500);
        assert_eq!(blocks.by_key.len(), 501);
        let q = |u: &str| ScopeQuery {
            user: Some(u.into()),
            ..Default::default()
        };
        assert_eq!(
            blocks.covering(&q("u1")),
            [("manual".into(), "user=u1".into())]
        );
        assert_eq!(blocks.covering(&q("u700")).len(), 1);
        assert_eq!(blocks.prune(i64::MAX), 500);
        assert_eq!(blocks.by_key.len(), 1);
        assert!(blocks.expiring.is_empty());
        assert_eq!(blocks.by_shape.len(), 1);
    }

    #[test]
    fn expired_blocks_do_not_apply() {
        let ks = KillSwitch::new();
        ks.set(block("daily", &[("project", "p")], 1));
        assert!(
            !ks.state_for(&ScopeQuery {
                project: Some("p".into()),
                ..Default::default()
            })
            .blocked
        );
    }
}
