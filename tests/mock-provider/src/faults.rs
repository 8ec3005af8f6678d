//! Deterministic fault injection for `error_rate` / `rate_limit_rate`.
//!
//! Request `n` (counting model calls only, from 0) draws
//! `u = frac((n + 1) × φ⁻¹)`, a golden-ratio low-discrepancy sequence: it is
//! a 500 when `u < error_rate`, a 429 when
//! `error_rate ≤ u < error_rate + rate_limit_rate`. Unlike a random draw,
//! the observed fractions match the configured ones within a few requests
//! and a benchmark run is reproducible, while faults stay spread out instead
//! of arriving in bursts.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;

/// 1/φ; its multiples modulo 1 are as evenly spread as a sequence can be.
const INVERSE_GOLDEN_RATIO: f64 = 0.618_033_988_749_894_9;

/// Hands out the fault (if any) for each successive model call.
#[derive(Default)]
pub(crate) struct FaultSequence {
    next: AtomicU64,
}

impl FaultSequence {
    pub(crate) fn next_fault(&self, error_rate: f64, rate_limit_rate: f64) -> Option<StatusCode> {
        if error_rate <= 0.0 && rate_limit_rate <= 0.0 {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        fault_at(n, error_rate, rate_limit_rate)
    }
}

#[allow(clippy::cast_precision_loss)] // exact for any realistic request count
fn fault_at(n: u64, error_rate: f64, rate_limit_rate: f64) -> Option<StatusCode> {
    let u = ((n + 1) as f64 * INVERSE_GOLDEN_RATIO).fract();
    if u < error_rate {
        Some(StatusCode::INTERNAL_SERVER_ERROR)
    } else if u < error_rate + rate_limit_rate {
        Some(StatusCode::TOO_MANY_REQUESTS)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(n: u64, error_rate: f64, rate_limit_rate: f64) -> (u64, u64) {
        let seq = FaultSequence::default();
        let (mut errors, mut limited) = (0, 0);
        for _ in 0..n {
            match seq.next_fault(error_rate, rate_limit_rate) {
                Some(StatusCode::INTERNAL_SERVER_ERROR) => errors += 1,
                Some(StatusCode::TOO_MANY_REQUESTS) => limited += 1,
                _ => {}
            }
        }
        (errors, limited)
    }

    #[test]
    fn fractions_match_the_configuration_closely() {
        let (errors, limited) = count(1000, 0.1, 0.05);
        assert!((98..=102).contains(&errors), "errors = {errors}");
        assert!((48..=52).contains(&limited), "limited = {limited}");
    }

    #[test]
    fn zero_and_one_are_exact() {
        assert_eq!(count(100, 0.0, 0.0), (0, 0));
        assert_eq!(count(100, 1.0, 0.0), (100, 0));
        assert_eq!(count(100, 0.0, 1.0), (0, 100));
    }
}
