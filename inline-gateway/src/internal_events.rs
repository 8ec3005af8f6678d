//! Operational events of the gateway, named in one place: each logs (never
//! a key, a header or a body) and counts. [`crate::Gateway::stats`] reads
//! the counts.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{debug, warn};

/// Counters since start-up.
#[derive(Debug, Default)]
pub(crate) struct InternalEvents {
    requests: AtomicU64,
    refused: AtomicU64,
    attempts_failed: AtomicU64,
    fallbacks: AtomicU64,
    breakers_opened: AtomicU64,
    streams_cut: AtomicU64,
    rows: AtomicU64,
    auth_failures: AtomicU64,
    refused_store_behind: AtomicU64,
}

/// A snapshot of [`InternalEvents`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// Authenticated model calls received.
    pub requests: u64,
    /// Calls refused by a rule, a key limit, a key's model list or the kill-switch.
    pub refused: u64,
    /// Upstream attempts that failed (timeout, connection, 429, 5xx).
    pub attempts_failed: u64,
    /// Calls served by another attempt than their first.
    pub fallbacks: u64,
    /// Times a provider's circuit breaker opened.
    pub breakers_opened: u64,
    /// Streams cut by the caller or the upstream (settled on an estimate).
    pub streams_cut: u64,
    /// Rows handed to the row sink.
    pub rows: u64,
    /// Requests without a valid virtual key.
    pub auth_failures: u64,
    /// Calls answered 503 because the collector's row queue had no room.
    pub refused_store_behind: u64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl InternalEvents {
    pub(crate) fn snapshot(&self) -> GatewayStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GatewayStats {
            requests: r(&self.requests),
            refused: r(&self.refused),
            attempts_failed: r(&self.attempts_failed),
            fallbacks: r(&self.fallbacks),
            breakers_opened: r(&self.breakers_opened),
            streams_cut: r(&self.streams_cut),
            rows: r(&self.rows),
            auth_failures: r(&self.auth_failures),
            refused_store_behind: r(&self.refused_store_behind),
        }
    }

    pub(crate) fn refused_store_behind(&self) {
        bump(&self.refused_store_behind);
        debug!("call refused with 503: the row queue has no room");
    }

    pub(crate) fn request(&self) {
        bump(&self.requests);
    }

    pub(crate) fn auth_failed(&self, request_id: &str, why: &'static str) {
        bump(&self.auth_failures);
        debug!(
            request_id,
            why, "gateway: request without a valid virtual key"
        );
    }

    pub(crate) fn refused(&self, request_id: &str, rule_id: &str, reason: &str) {
        bump(&self.refused);
        debug!(request_id, rule_id, reason, "gateway: call refused");
    }

    pub(crate) fn attempt_failed(
        &self,
        request_id: &str,
        provider: &str,
        model: &str,
        attempt: u32,
        failure: &str,
    ) {
        bump(&self.attempts_failed);
        debug!(
            request_id,
            provider, model, attempt, failure, "gateway: upstream attempt failed"
        );
    }

    pub(crate) fn served_by_fallback(&self, request_id: &str, provider: &str, attempt: u32) {
        bump(&self.fallbacks);
        debug!(
            request_id,
            provider, attempt, "gateway: call served after fallback"
        );
    }

    pub(crate) fn breaker_opened(&self, provider: &str) {
        bump(&self.breakers_opened);
        warn!(
            provider,
            "gateway: circuit breaker opened; provider skipped for its cooldown"
        );
    }

    pub(crate) fn stream_cut(&self, request_id: &str, reason: &str) {
        bump(&self.streams_cut);
        debug!(
            request_id,
            reason, "gateway: stream cut; settled on estimated usage"
        );
    }

    pub(crate) fn row(&self) {
        bump(&self.rows);
    }
}
