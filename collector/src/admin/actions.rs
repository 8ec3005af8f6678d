//! Admin actions (overrides, blocks, lifts): applied at once, stored, and
//! applied again at start-up after the rule counters are rebuilt.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tollgate_gateway::VirtualKey;
use tollgate_rules::engine::{Engine, Override};

use crate::killswitch::{Block, KillSwitch, Scope};
use crate::query::QueryError;

/// One admin action, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AdminAction {
    /// Snooze a rule, or replace its limit, for a scope until a time.
    Override {
        rule_id: String,
        scope: Scope,
        /// `None` with `snooze = false`: the limit is lifted.
        limit: Option<u64>,
        snooze: bool,
        until_unix_nanos: i64,
    },
    /// Block a scope by hand.
    Block {
        scope: Scope,
        reason: String,
        until_unix_nanos: i64,
    },
    /// Lift blocks (of one rule, or all) covering a scope. It matters until
    /// the lifted blocks would have ended (0: one of them had no end).
    Lift {
        scope: Scope,
        rule_id: Option<String>,
        until_unix_nanos: i64,
    },
    /// A virtual key of the gateway was created; only its hash is kept.
    CreateKey { key: VirtualKey },
    /// A virtual key was revoked.
    RevokeKey { id: String, at_unix_nanos: i64 },
}

/// Where admin actions are kept.
pub trait AdminLog: Send + Sync {
    fn record(&self, action: &AdminAction) -> BoxFuture<'_, Result<(), QueryError>>;
    /// Actions still in force at `now`, oldest first.
    fn load(&self, now_unix_nanos: i64) -> BoxFuture<'_, Result<Vec<AdminAction>, QueryError>>;
}

impl AdminAction {
    /// Applies the action; false when it names a rule that does not exist.
    pub fn apply(&self, engine: &Engine, killswitch: &KillSwitch) -> bool {
        match self {
            AdminAction::Override {
                rule_id,
                scope,
                limit,
                snooze,
                until_unix_nanos,
            } => {
                let o = if *snooze {
                    Override::Snooze {
                        until: *until_unix_nanos,
                    }
                } else {
                    Override::Limit {
                        limit: *limit,
                        until: *until_unix_nanos,
                    }
                };
                if !engine.set_override(rule_id, scope, o) {
                    return false;
                }
                // An override that lets calls through also lifts the rule's block.
                killswitch.lift(scope, Some(rule_id));
                true
            }
            AdminAction::Block {
                scope,
                reason,
                until_unix_nanos,
            } => {
                killswitch.set(Block::by_admin(scope, reason, *until_unix_nanos));
                true
            }
            AdminAction::Lift { scope, rule_id, .. } => {
                killswitch.lift(scope, rule_id.as_deref());
                true
            }
            // Keys live in the gateway's key cache (loaded on its own).
            AdminAction::CreateKey { .. } | AdminAction::RevokeKey { .. } => true,
        }
    }

    /// When the action stops mattering; `None` = never by itself.
    pub fn until(&self) -> Option<i64> {
        let until = match self {
            AdminAction::Override {
                until_unix_nanos, ..
            }
            | AdminAction::Block {
                until_unix_nanos, ..
            }
            | AdminAction::Lift {
                until_unix_nanos, ..
            } => *until_unix_nanos,
            AdminAction::CreateKey { .. } | AdminAction::RevokeKey { .. } => 0,
        };
        (until > 0).then_some(until)
    }
}
