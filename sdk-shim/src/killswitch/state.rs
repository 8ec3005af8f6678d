//! What the kill-switch knows: the blocks that apply to the watched scope.
//!
//! Both wire formats (the gRPC `EnforcementState` and the HTTP JSON body)
//! are converted once, on arrival, into an [`EnforcementSnapshot`], so the
//! hot path only compares a timestamp. A collector that refuses the key
//! sends no state; [`KeyRefused`] says why.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tollgate_proto::enforcement::v1 as proto;

/// Which path delivered a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateSource {
    /// The `Enforcement/Watch` gRPC stream.
    Grpc,
    /// A poll of `GET /v1/enforcement` (the fallback).
    Http,
}

impl fmt::Display for StateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Grpc => "gRPC",
            Self::Http => "HTTP",
        })
    }
}

/// The collector refused the kill-switch's key, so no state comes from it
/// until the key is fixed. Meanwhile the kill-switch behaves as with an
/// unreachable collector: calls go through until a first state arrives,
/// and a state already received is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRefused {
    /// HTTP 401 or gRPC UNAUTHENTICATED: no key was sent (set
    /// [`KillSwitchConfig::key`](super::KillSwitchConfig::key) or
    /// `TOLLGATE_KEY`), or the collector does not know it (mistyped,
    /// revoked or expired).
    #[error("the collector did not accept the kill-switch key over {via}: {message}")]
    Unauthenticated {
        /// The collector's explanation.
        message: String,
        /// The path that was refused last.
        via: StateSource,
    },
    /// HTTP 403 or gRPC PERMISSION_DENIED: the key is known but may not
    /// read this scope (no `read` role, or scoped to another tenant).
    #[error("the kill-switch key may not read this scope over {via}: {message}")]
    Forbidden { message: String, via: StateSource },
}

impl KeyRefused {
    /// The collector's explanation, e.g. ``no key: send a `read` key as
    /// `Authorization: Bearer <key>` ``.
    pub fn message(&self) -> &str {
        match self {
            Self::Unauthenticated { message, .. } | Self::Forbidden { message, .. } => message,
        }
    }

    /// The path that was refused last.
    pub fn via(&self) -> StateSource {
        match self {
            Self::Unauthenticated { via, .. } | Self::Forbidden { via, .. } => *via,
        }
    }

    /// The same refusal, apart from the wording and the path.
    pub(crate) fn same_kind(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// The JSON body of a refusal on the HTTP API: `{"error": .., "message": ..}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct JsonRefusal {
    pub(crate) message: String,
}

/// The enforcement state last received for the watched scope.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EnforcementSnapshot {
    /// The blocks that applied when the state was sent. Some may have
    /// lifted by themselves since: see [`active_block`](Self::active_block).
    pub blocks: Vec<Blocked>,
    /// The collector's revision; it increases with every change there.
    pub revision: i64,
    pub source: StateSource,
    pub received_at: SystemTime,
}

impl EnforcementSnapshot {
    /// The first block still in force at `now`, if any.
    pub fn active_block(&self, now: SystemTime) -> Option<&Blocked> {
        self.blocks.iter().find(|b| b.is_active_at(now))
    }

    /// Converts a state from either path.
    pub(crate) fn from_proto(state: proto::EnforcementState, source: StateSource) -> Self {
        let mut blocks: Vec<Blocked> = if state.blocked {
            state.blocks.into_iter().map(Blocked::from_proto).collect()
        } else {
            // `blocked` is the collector's verdict for this scope; a block
            // listed beside `false` does not apply to us.
            Vec::new()
        };
        if state.blocked && blocks.is_empty() {
            // A verdict without detail is still a verdict: refuse, and say
            // that the detail is missing rather than inventing one.
            blocks.push(Blocked {
                rule: "unknown".to_owned(),
                reason: "blocked".to_owned(),
                scope: String::new(),
                until: None,
                usage: None,
            });
        }
        Self {
            blocks,
            revision: state.revision,
            source,
            received_at: SystemTime::now(),
        }
    }
}

/// The typed refusal: this scope is blocked, by which rule, until when.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("blocked by rule `{rule}` ({reason}) for scope `{scope}`")]
#[non_exhaustive]
pub struct Blocked {
    /// The rule that tripped, or `admin` for a block set by hand.
    pub rule: String,
    /// Machine-readable: `budget_exceeded`, `rate_limited`, `admin`, ...
    pub reason: String,
    /// The blocked scope, e.g. `project=search,user=alice`.
    pub scope: String,
    /// When the block lifts by itself (the rule's window end); `None` =
    /// until lifted.
    pub until: Option<SystemTime>,
    /// For budget rules: the metric, its limit and what was used.
    pub usage: Option<BlockUsage>,
}

impl Blocked {
    /// Whether the block is still in force at `now`.
    pub fn is_active_at(&self, now: SystemTime) -> bool {
        self.until.is_none_or(|until| until > now)
    }

    /// How long until the block lifts by itself, if it does.
    pub fn retry_after(&self, now: SystemTime) -> Option<Duration> {
        self.until
            .map(|until| until.duration_since(now).unwrap_or(Duration::ZERO))
    }

    fn from_proto(block: proto::Block) -> Self {
        let until = u64::try_from(block.until_unix_nanos)
            .ok()
            .filter(|&nanos| nanos > 0)
            .and_then(|nanos| UNIX_EPOCH.checked_add(Duration::from_nanos(nanos)));
        let usage = (!block.metric.is_empty()).then_some(BlockUsage {
            metric: block.metric,
            limit: block.limit,
            used: block.used,
        });
        Self {
            rule: block.rule_id,
            reason: block.reason,
            scope: block.scope,
            until,
            usage,
        }
    }
}

/// A budget block's numbers, in the rule's metric.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BlockUsage {
    /// `tokens`, `cost_usd` or `requests`.
    pub metric: String,
    pub limit: f64,
    pub used: f64,
}

/// The JSON body of `GET /v1/enforcement`: the proto's fields by name.
/// Missing fields take the proto's defaults and unknown ones are ignored,
/// so a newer collector stays readable.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct JsonState {
    blocked: bool,
    blocks: Vec<JsonBlock>,
    revision: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct JsonBlock {
    rule_id: String,
    scope: String,
    reason: String,
    until_unix_nanos: i64,
    limit: f64,
    used: f64,
    metric: String,
}

impl From<JsonState> for proto::EnforcementState {
    fn from(json: JsonState) -> Self {
        Self {
            blocked: json.blocked,
            revision: json.revision,
            blocks: json
                .blocks
                .into_iter()
                .map(|b| proto::Block {
                    rule_id: b.rule_id,
                    scope: b.scope,
                    reason: b.reason,
                    until_unix_nanos: b.until_unix_nanos,
                    limit: b.limit,
                    used: b.used,
                    metric: b.metric,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_json(body: &str) -> EnforcementSnapshot {
        let json: JsonState = serde_json::from_str(body).unwrap();
        EnforcementSnapshot::from_proto(json.into(), StateSource::Http)
    }

    #[test]
    fn reads_the_documented_json_body() {
        let snap = from_json(
            r#"{"blocked": true, "blocks": [{"rule_id": "daily-tokens", "scope": "project=search",
                "reason": "budget_exceeded", "until_unix_nanos": 1795300000000000000,
                "limit": 10000.0, "used": 12000.0, "metric": "tokens", "extra": 1}], "revision": 7}"#,
        );
        assert_eq!(snap.revision, 7);
        assert_eq!(snap.source, StateSource::Http);
        assert_eq!(
            snap.blocks,
            vec![Blocked {
                rule: "daily-tokens".into(),
                reason: "budget_exceeded".into(),
                scope: "project=search".into(),
                until: Some(UNIX_EPOCH + Duration::from_nanos(1_795_300_000_000_000_000)),
                usage: Some(BlockUsage {
                    metric: "tokens".into(),
                    limit: 10_000.0,
                    used: 12_000.0,
                }),
            }]
        );
        // 2026-11-21: in force before, lifted after.
        let until = UNIX_EPOCH + Duration::from_nanos(1_795_300_000_000_000_000);
        assert!(snap.active_block(until - Duration::from_secs(1)).is_some());
        assert_eq!(snap.active_block(until), None);
    }

    #[test]
    fn not_blocked_ignores_listed_blocks_and_blocked_without_detail_still_blocks() {
        let open = from_json(
            r#"{"blocked": false, "blocks": [{"rule_id": "r", "reason": "admin"}], "revision": 3}"#,
        );
        assert_eq!(open.blocks, vec![]);
        let bare = from_json(r#"{"blocked": true}"#);
        let block = bare.active_block(SystemTime::now()).unwrap();
        assert_eq!(
            (block.rule.as_str(), block.reason.as_str()),
            ("unknown", "blocked")
        );
        assert_eq!(block.until, None);
        assert_eq!(bare.revision, 0);
    }

    #[test]
    fn zero_until_means_until_lifted_and_no_metric_means_no_usage() {
        let snap = from_json(
            r#"{"blocked": true, "blocks": [{"rule_id": "admin", "scope": "user=bob", "reason": "admin", "until_unix_nanos": 0}]}"#,
        );
        let block = &snap.blocks[0];
        assert_eq!(block.until, None);
        assert_eq!(block.usage, None);
        assert_eq!(block.retry_after(SystemTime::now()), None);
        assert!(block.is_active_at(SystemTime::now() + Duration::from_secs(86_400 * 365)));
        assert_eq!(
            block.to_string(),
            "blocked by rule `admin` (admin) for scope `user=bob`"
        );
    }
}
