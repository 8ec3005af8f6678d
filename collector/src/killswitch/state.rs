//! Which scopes are blocked (the rules crate's [`BlockTable`] behind a
//! lock), and a revision that moves on every change so watchers (SSE, gRPC)
//! learn of it at once.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
pub use tollgate_rules::blocks::{Block, BlockKey, BlockTable};
use tollgate_rules::engine::CallFacts;
pub use tollgate_rules::engine::Scope;
use tollgate_rules::engine::Violation;

/// `scope` narrowed to `tenant`: its org, project and user set to the
/// tenant's; `Err` names one asked of another tenant.
pub fn within(mut scope: Scope, tenant: &crate::query::Tenant) -> Result<Scope, String> {
    for (name, own, asked) in [
        ("org", &tenant.org, &mut scope.org),
        ("project", &tenant.project, &mut scope.project),
        ("user", &tenant.user, &mut scope.user),
    ] {
        let Some(own) = own else { continue };
        match asked {
            Some(a) if a != own => {
                return Err(format!("this key reads {name} `{own}` only, not `{a}`"));
            }
            _ => *asked = Some(own.clone()),
        }
    }
    Ok(scope)
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

#[derive(Debug, Default)]
struct State {
    blocks: BlockTable,
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
                if blocks.get(&key) == Some(&b) {
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
        scope: Scope,
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

    fn change(&self, f: impl FnOnce(&mut BlockTable) -> bool) {
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
        let new = Block::from_violations(violations);
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
    pub fn lift(&self, query: &Scope, rule_id: Option<&str>) -> Vec<Block> {
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

    /// The blocks that apply to `who` now (expired ones are dropped): an
    /// asker's [`Scope`], or a call about to be made.
    pub fn state_for(&self, who: &(impl CallFacts + ?Sized)) -> EnforcementState {
        let now = now_nanos();
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let blocks = state.blocks.applying(who, now);
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
        let mut all: Vec<Block> = state.blocks.iter().cloned().collect();
        all.sort_by(|a, b| (&a.rule_id, &a.scope).cmp(&(&b.rule_id, &b.scope)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(rule: &str, dims: &[(&str, &str)], until: i64) -> Block {
        Block::new(rule, dims.iter().copied(), "budget_exceeded", until)
    }

    #[test]
    fn blocks_apply_to_every_asker_inside_their_scope() {
        let ks = KillSwitch::new();
        let rx = ks.subscribe();
        ks.set(block("daily", &[("project", "search")], 0));
        assert!(rx.has_changed().unwrap());
        let asker = Scope {
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
            !ks.state_for(&Scope {
                project: Some("ops".into()),
                ..Default::default()
            })
            .blocked
        );
        assert!(!ks.state_for(&Scope::default()).blocked);
        // A per-user block does not cover other users.
        ks.set(block("per-user", &[("project", "ops"), ("user", "bob")], 0));
        assert!(
            !ks.state_for(&Scope {
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
    fn expired_blocks_do_not_apply() {
        let ks = KillSwitch::new();
        ks.set(block("daily", &[("project", "p")], 1));
        assert!(
            !ks.state_for(&Scope {
                project: Some("p".into()),
                ..Default::default()
            })
            .blocked
        );
    }
}
