//! The kill-switch's block table: which scopes are blocked, by which rule,
//! until when. Pure and synchronous (set, lift, match, expiry); the
//! collector keeps it behind a lock, announces its changes and serves it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::engine::config::{Action, Metric};
use crate::engine::{CallFacts, Scope, ScopeDim, Violation, ViolationKind};

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

impl Block {
    /// A block of `dims` (as (dimension, value) pairs) by `rule_id`, for
    /// `reason`, until `until_unix_nanos` (0: until lifted).
    pub fn new<D: Into<String>, V: Into<String>>(
        rule_id: &str,
        dims: impl IntoIterator<Item = (D, V)>,
        reason: &str,
        until_unix_nanos: i64,
    ) -> Self {
        let dims: Vec<(String, String)> = dims
            .into_iter()
            .map(|(d, v)| (d.into(), v.into()))
            .collect();
        Self {
            rule_id: rule_id.to_owned(),
            scope: dims
                .iter()
                .map(|(d, v)| format!("{d}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            reason: reason.to_owned(),
            until_unix_nanos,
            limit: 0.0,
            used: 0.0,
            metric: String::new(),
            dims,
        }
    }

    /// A block an admin sets on `scope`.
    pub fn by_admin(scope: &Scope, reason: &str, until_unix_nanos: i64) -> Self {
        Self::new("admin", scope.dims(), reason, until_unix_nanos)
    }

    /// Whether the block applies to `who`: every dimension it names has
    /// `who`'s value (a scan; [`BlockTable`] indexes).
    pub fn covers(&self, who: &(impl CallFacts + ?Sized)) -> bool {
        self.dims
            .iter()
            .all(|(d, v)| value_of(who, d).is_some_and(|mine| mine == v))
    }
}

/// `who`'s value of the dimension a block names `name`.
fn value_of<'a>(who: &'a (impl CallFacts + ?Sized), name: &str) -> Option<&'a str> {
    who.dim(&ScopeDim::parse(name)?)
}

/// A block's identity: (rule, scope).
pub type BlockKey = (String, String);

/// The live blocks (no I/O, no clock of its own), indexed so that finding those that cover an asker
/// costs one lookup per *shape* of scope in use (the sets of dimensions
/// rules and admins block on, a handful), not a scan of every block; and
/// the ones that lift by themselves, by when, so they are pruned as they
/// expire instead of piling up.
#[derive(Debug, Default)]
pub struct BlockTable {
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

impl BlockTable {
    /// Sets `b`, replacing a block of the same rule and scope.
    pub fn insert(&mut self, b: Block) {
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

    /// Lifts the block `key`; returns it.
    pub fn remove(&mut self, key: &BlockKey) -> Option<Block> {
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
    pub fn prune(&mut self, now: i64) -> usize {
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

    /// The keys of the blocks that cover `who`.
    pub fn covering(&self, who: &(impl CallFacts + ?Sized)) -> Vec<BlockKey> {
        let mut found = Vec::new();
        for (shape, by_values) in &self.by_shape {
            let mut values = String::new();
            let mut complete = true;
            for (i, dim) in shape.iter().enumerate() {
                let Some(v) = value_of(who, dim) else {
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

    /// The block `key`, if set.
    pub fn get(&self, key: &BlockKey) -> Option<&Block> {
        self.by_key.get(key)
    }

    /// Every block, in no order.
    pub fn iter(&self) -> impl Iterator<Item = &Block> {
        self.by_key.values()
    }

    /// The blocks that apply to `who` at `now`, in key order.
    pub fn applying(&self, who: &(impl CallFacts + ?Sized), now: i64) -> Vec<Block> {
        self.covering(who)
            .iter()
            .filter_map(|k| self.by_key.get(k))
            .filter(|b| b.until_unix_nanos == 0 || b.until_unix_nanos > now)
            .cloned()
            .collect()
    }
}

impl Block {
    /// The blocks `violations` call for: the scopes of `block` rules whose
    /// limit was exceeded, until their window ends.
    pub fn from_violations(violations: &[Violation]) -> Vec<Block> {
        violations
            .iter()
            .filter(|v| v.action == Action::Block && v.kind == ViolationKind::LimitExceeded)
            .map(|v| Block {
                rule_id: v.rule_id.to_string(),
                scope: v.scope.clone(),
                reason: if v.metric.is_some_and(|m| m == Metric::Requests) {
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
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(rule: &str, dims: &[(&str, &str)], until: i64) -> Block {
        Block::new(rule, dims.iter().copied(), "budget_exceeded", until)
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
        let mut blocks = BlockTable::default();
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
            let q = Scope {
                org: pick(&mut next),
                project: pick(&mut next),
                user: pick(&mut next),
                route: pick(&mut next),
                ..Default::default()
            };
            let mut scanned: Vec<BlockKey> = all
                .iter()
                .filter(|b| b.covers(&q))
                .map(|b| (b.rule_id.clone(), b.scope.clone()))
                .collect();
            scanned.sort();
            assert_eq!(blocks.covering(&q), scanned, "{q:?}");
        }
    }

    #[test]
    fn expired_blocks_are_pruned() {
        let mut blocks = BlockTable::default();
        for i in 0..1_000 {
            blocks.insert(block("hourly", &[("user", &format!("u{i}"))], 100 + i));
        }
        blocks.insert(block("manual", &[("user", "u1")], 0));
        assert_eq!(blocks.prune(599), 500);
        assert_eq!(blocks.by_key.len(), 501);
        let q = |u: &str| Scope {
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
}
