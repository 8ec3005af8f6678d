//! One entry of the state stream: the instance that made the change, what
//! kind of change it is, and the change as JSON.
//!
//! - `killswitch`: a block set or lifted ([`Change`]), with the block's
//!   dimensions (not part of [`Block`]'s own wire format);
//! - `admin`: an [`AdminAction`] as the admin log stores it: overrides,
//!   snoozes, keys created (id, hash, roles, scope, expiry: never the
//!   secret, which is not kept anywhere) and revoked.

use serde::{Deserialize, Serialize};

use crate::admin::AdminAction;
use crate::killswitch::{Block, Change};

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    KillSwitch,
    Admin,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::KillSwitch => "killswitch",
            Kind::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "killswitch" => Some(Kind::KillSwitch),
            "admin" => Some(Kind::Admin),
            _ => None,
        }
    }
}

/// One entry, as appended and as read back (with its stream id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream's id of the entry (empty before it is appended).
    pub id: String,
    /// The instance that made the change (`SharedLedgerConfig::instance`).
    pub origin: String,
    pub kind: Kind,
    pub payload: String,
}

/// What an entry asks of the instances that read it.
#[derive(Debug, Clone, PartialEq)]
pub enum Remote {
    KillSwitch(Change),
    Admin(AdminAction),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    Set,
    Lift,
}

#[derive(Debug, Serialize, Deserialize)]
struct BlockChange {
    op: Op,
    block: Block,
    dims: Vec<(String, String)>,
}

/// Which admin actions travel on the stream. Blocks and lifts do not: their
/// effect on the kill-switch travels as `killswitch` entries (or over
/// Kafka), made once by the instance the admin asked.
pub fn is_shared(action: &AdminAction) -> bool {
    matches!(
        action,
        AdminAction::Override { .. }
            | AdminAction::CreateKey { .. }
            | AdminAction::RevokeKey { .. }
    )
}

impl Entry {
    fn new(origin: &str, kind: Kind, payload: String) -> Self {
        Self {
            id: String::new(),
            origin: origin.to_owned(),
            kind,
            payload,
        }
    }

    pub fn change(origin: &str, change: Change) -> Result<Self, serde_json::Error> {
        let (op, block) = match change {
            Change::Set(b) => (Op::Set, b),
            Change::Lift(b) => (Op::Lift, b),
        };
        let wire = BlockChange {
            op,
            dims: block.dims.clone(),
            block,
        };
        Ok(Self::new(
            origin,
            Kind::KillSwitch,
            serde_json::to_string(&wire)?,
        ))
    }

    pub fn admin(origin: &str, action: &AdminAction) -> Result<Self, serde_json::Error> {
        Ok(Self::new(
            origin,
            Kind::Admin,
            serde_json::to_string(action)?,
        ))
    }

    /// The change the entry carries.
    pub fn decode(&self) -> Result<Remote, serde_json::Error> {
        match self.kind {
            Kind::KillSwitch => {
                let wire: BlockChange = serde_json::from_str(&self.payload)?;
                let mut block = wire.block;
                block.dims = wire.dims;
                Ok(Remote::KillSwitch(match wire.op {
                    Op::Set => Change::Set(block),
                    Op::Lift => Change::Lift(block),
                }))
            }
            Kind::Admin => Ok(Remote::Admin(serde_json::from_str(&self.payload)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::killswitch::Scope;
    use tollgate_gateway::VirtualKey;

    fn block() -> Block {
        Block {
            rule_id: "daily".into(),
            scope: "project=search".into(),
            reason: "budget_exceeded".into(),
            until_unix_nanos: 42,
            limit: 10.0,
            used: 12.0,
            metric: "tokens".into(),
            dims: vec![("project".into(), "search".into())],
        }
    }

    #[test]
    fn a_block_change_round_trips_with_its_dimensions() {
        for change in [Change::Set(block()), Change::Lift(block())] {
            let entry = Entry::change("a", change.clone()).unwrap();
            assert_eq!(entry.kind, Kind::KillSwitch);
            assert_eq!(entry.decode().unwrap(), Remote::KillSwitch(change));
        }
    }

    #[test]
    fn a_key_travels_as_its_hash_never_its_secret() {
        let secret = tollgate_gateway::generate_key();
        let key = VirtualKey::new("key_1", &secret);
        let action = AdminAction::CreateKey { key: key.clone() };
        let entry = Entry::admin("a", &action).unwrap();
        assert!(!entry.payload.contains(&secret), "{}", entry.payload);
        assert!(entry.payload.contains(&key.hash));
        assert_eq!(entry.decode().unwrap(), Remote::Admin(action));
    }

    #[test]
    fn only_keys_and_overrides_travel_as_admin_actions() {
        let scope = Scope {
            project: Some("p".into()),
            ..Default::default()
        };
        assert!(is_shared(&AdminAction::Override {
            rule_id: "r".into(),
            scope: scope.clone(),
            limit: None,
            snooze: true,
            until_unix_nanos: 1,
        }));
        assert!(is_shared(&AdminAction::RevokeKey {
            id: "key_1".into(),
            at_unix_nanos: 1,
        }));
        assert!(!is_shared(&AdminAction::Block {
            scope: scope.clone(),
            reason: "admin".into(),
            until_unix_nanos: 0,
        }));
        assert!(!is_shared(&AdminAction::Lift {
            scope,
            rule_id: None,
            until_unix_nanos: 0,
        }));
    }

    #[test]
    fn kinds_round_trip() {
        for k in [Kind::KillSwitch, Kind::Admin] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("other"), None);
    }
}
