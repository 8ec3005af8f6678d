//! A circuit breaker per provider: after `threshold` consecutive failed
//! attempts the provider is skipped for `cooldown`; then one trial request
//! goes through, and its outcome closes the breaker or opens it again.
//! Lock-free: two atomics, read on every attempt.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Breaker {
    /// 0 = breaker off.
    threshold: u32,
    cooldown: Duration,
    failures: AtomicU32,
    /// Nanoseconds after `epoch` until which the breaker is open; 0 = closed.
    open_until: AtomicU64,
    epoch: Instant,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn cooldown_nanos(&self) -> u64 {
        u64::try_from(self.cooldown.as_nanos()).unwrap_or(u64::MAX)
    }

    /// `Ok` when an attempt may go to the provider; `Err(wait)` while open.
    /// After the cooldown exactly one caller gets `Ok` (the trial) and the
    /// breaker stays open for the others until the trial reports back.
    pub(crate) fn try_pass(&self) -> Result<(), Duration> {
        if self.threshold == 0 {
            return Ok(());
        }
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Ok(());
        }
        let now = self.now();
        if now < until {
            return Err(Duration::from_nanos(until - now));
        }
        // Cooldown over: the first to move `open_until` on is the trial.
        let next = now.saturating_add(self.cooldown_nanos());
        match self
            .open_until
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(()),
            Err(_) => Err(self.cooldown),
        }
    }

    pub(crate) fn success(&self) {
        if self.threshold == 0 {
            return;
        }
        self.failures.store(0, Ordering::Release);
        self.open_until.store(0, Ordering::Release);
    }

    /// Returns whether this failure opened (or re-opened) the breaker.
    pub(crate) fn failure(&self) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if failures >= self.threshold {
            let until = self.now().saturating_add(self.cooldown_nanos()).max(1);
            self.open_until.store(until, Ordering::Release);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_lets_one_trial_through_after_cooldown() {
        let b = Breaker::new(2, Duration::from_millis(30));
        assert!(b.try_pass().is_ok());
        assert!(!b.failure());
        assert!(b.try_pass().is_ok());
        assert!(b.failure());
        assert!(b.try_pass().is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.try_pass().is_ok(), "the trial");
        assert!(b.try_pass().is_err(), "only one trial");
        b.success();
        assert!(b.try_pass().is_ok());
        assert!(b.try_pass().is_ok());
    }

    #[test]
    fn a_failed_trial_reopens() {
        let b = Breaker::new(1, Duration::from_millis(20));
        b.failure();
        std::thread::sleep(Duration::from_millis(25));
        assert!(b.try_pass().is_ok());
        b.failure();
        assert!(b.try_pass().is_err());
    }

    #[test]
    fn threshold_zero_never_opens() {
        let b = Breaker::new(0, Duration::from_secs(1));
        for _ in 0..10 {
            b.failure();
        }
        assert!(b.try_pass().is_ok());
    }
}
