//! Budget windows: calendar (aligned to the start of the minute, hour, day,
//! ISO week or month in a time zone) or rolling (the last minute, hour, ...
//! up to now, kept as 60 sub-buckets).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Length of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowUnit {
    Minute,
    Hour,
    Day,
    Week,
    Month,
}

impl WindowUnit {
    /// Nominal length in nanoseconds (a month counts 30 days for rolling windows).
    pub fn nominal_nanos(self) -> i64 {
        let secs = match self {
            WindowUnit::Minute => 60,
            WindowUnit::Hour => 3_600,
            WindowUnit::Day => 86_400,
            WindowUnit::Week => 7 * 86_400,
            WindowUnit::Month => 30 * 86_400,
        };
        secs * NANOS_PER_SEC
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WindowUnit::Minute => "minute",
            WindowUnit::Hour => "hour",
            WindowUnit::Day => "day",
            WindowUnit::Week => "week",
            WindowUnit::Month => "month",
        }
    }
}

/// How a window moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Resets at calendar boundaries of the time zone.
    Calendar(Tz),
    /// Always the last `unit` of time; usage leaves it bucket by bucket.
    Rolling,
}

/// A compiled window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub unit: WindowUnit,
    pub kind: WindowKind,
}

/// Sub-buckets of a rolling window.
pub const ROLLING_BUCKETS: i64 = 60;

impl Window {
    /// The calendar window `[start, end)` containing `t` (Unix nanoseconds).
    /// For rolling windows: the bucket containing `t` and the end of the
    /// window that starts with it.
    pub fn bounds(&self, t: i64) -> (i64, i64) {
        match self.kind {
            WindowKind::Rolling => {
                let width = self.bucket_nanos();
                // Saturating: a span may claim any time, the ends of time too.
                let start = t.div_euclid(width).saturating_mul(width);
                (start, start.saturating_add(self.unit.nominal_nanos()))
            }
            WindowKind::Calendar(tz) => calendar_bounds(self.unit, tz, t),
        }
    }

    /// Width of one rolling sub-bucket.
    pub fn bucket_nanos(&self) -> i64 {
        self.unit.nominal_nanos() / ROLLING_BUCKETS
    }
}

/// The last calendar window a rule computed, so that the time-zone
/// arithmetic runs once per window instead of once per call. Shared by the
/// threads evaluating the rule without a lock: a sequence number, odd while
/// a writer updates the pair, tells a reader whether its two reads belong
/// together. Windows partition time, so a consistent pair containing `t` is
/// the window of `t`.
#[derive(Debug, Default)]
pub struct BoundsCache {
    seq: AtomicU64,
    start: AtomicI64,
    end: AtomicI64,
}

impl Clone for BoundsCache {
    /// A clone starts empty: it is a cache.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl BoundsCache {
    /// `window.bounds(t)`, from the cache when `t` falls in the last window.
    pub fn bounds(&self, window: &Window, t: i64) -> (i64, i64) {
        if matches!(window.kind, WindowKind::Rolling) {
            return window.bounds(t);
        }
        let seq = self.seq.load(Ordering::SeqCst);
        if seq != 0 && seq.is_multiple_of(2) {
            let (start, end) = (
                self.start.load(Ordering::SeqCst),
                self.end.load(Ordering::SeqCst),
            );
            if self.seq.load(Ordering::SeqCst) == seq && start <= t && t < end {
                return (start, end);
            }
        }
        let (start, end) = window.bounds(t);
        // One writer at a time; a writer that loses the race just does not cache.
        if seq.is_multiple_of(2)
            && self
                .seq
                .compare_exchange(seq, seq + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.start.store(start, Ordering::SeqCst);
            self.end.store(end, Ordering::SeqCst);
            self.seq.store(seq + 2, Ordering::SeqCst);
        }
        (start, end)
    }
}

/// Unix nanoseconds, saturating outside 1677-2262 (what i64 holds).
fn to_nanos(dt: DateTime<Utc>) -> i64 {
    dt.timestamp_nanos_opt().unwrap_or(if dt.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// The local start of a calendar day, falling forward over a DST gap.
fn local_midnight(tz: Tz, date: NaiveDate) -> Option<DateTime<Utc>> {
    let naive = date.and_hms_opt(0, 0, 0)?;
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(naive + ChronoDuration::hours(1)))
                .earliest()
        })
        .map(|d| d.with_timezone(&Utc))
}

fn calendar_bounds(unit: WindowUnit, tz: Tz, t: i64) -> (i64, i64) {
    let utc = DateTime::<Utc>::from_timestamp_nanos(t);
    let local = utc.with_timezone(&tz);
    let fallback = || {
        let n = unit.nominal_nanos();
        let start = t.div_euclid(n).saturating_mul(n);
        (start, start.saturating_add(n))
    };
    match unit {
        // Minutes and hours are aligned the same way in every zone with
        // whole-hour offsets; use the local clock to honour the others.
        WindowUnit::Minute | WindowUnit::Hour => {
            let secs_into = if unit == WindowUnit::Minute {
                i64::from(local.second())
            } else {
                i64::from(local.minute()) * 60 + i64::from(local.second())
            };
            let start = (t.div_euclid(NANOS_PER_SEC) - secs_into).saturating_mul(NANOS_PER_SEC);
            (start, start.saturating_add(unit.nominal_nanos()))
        }
        WindowUnit::Day | WindowUnit::Week | WindowUnit::Month => {
            let date = local.date_naive();
            let (first, next) = match unit {
                WindowUnit::Day => (Some(date), date.succ_opt()),
                WindowUnit::Week => {
                    let monday = date
                        - ChronoDuration::days(i64::from(date.weekday().num_days_from_monday()));
                    (
                        Some(monday),
                        monday.checked_add_signed(ChronoDuration::days(7)),
                    )
                }
                _ => {
                    let first = NaiveDate::from_ymd_opt(date.year(), date.month(), 1);
                    let next = if date.month() == 12 {
                        NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)
                    } else {
                        NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
                    };
                    (first, next)
                }
            };
            match (
                first.and_then(|d| local_midnight(tz, d)),
                next.and_then(|d| local_midnight(tz, d)),
            ) {
                (Some(s), Some(e)) => (to_nanos(s), to_nanos(e)),
                _ => fallback(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        to_nanos(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
    }

    fn cal(unit: WindowUnit, tz: Tz) -> Window {
        Window {
            unit,
            kind: WindowKind::Calendar(tz),
        }
    }

    /// A span's start time is whatever its sender wrote: windows at the
    /// ends of the i64 range once overflowed `start + length` (and, rounding
    /// down from `i64::MIN`, the start itself).
    #[test]
    fn windows_at_the_ends_of_time_saturate() {
        let units = [
            WindowUnit::Minute,
            WindowUnit::Hour,
            WindowUnit::Day,
            WindowUnit::Week,
            WindowUnit::Month,
        ];
        let zones = [Tz::UTC, Tz::Pacific__Chatham, Tz::Asia__Kolkata];
        for unit in units {
            let mut windows = vec![Window {
                unit,
                kind: WindowKind::Rolling,
            }];
            windows.extend(zones.map(|tz| cal(unit, tz)));
            for w in windows {
                for t in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
                    let (start, end) = w.bounds(t);
                    assert!(start <= t, "{w:?} at {t}: starts at {start}");
                    assert!(t < end || end == i64::MAX, "{w:?} at {t}: ends at {end}");
                }
            }
        }
        let hour = Window {
            unit: WindowUnit::Hour,
            kind: WindowKind::Rolling,
        };
        assert_eq!(hour.bounds(i64::MAX).1, i64::MAX);
        assert_eq!(
            cal(WindowUnit::Minute, Tz::UTC).bounds(i64::MAX).1,
            i64::MAX
        );
    }

    #[test]
    fn utc_calendar_windows() {
        let t = at("2026-11-21T14:37:42Z");
        assert_eq!(
            cal(WindowUnit::Minute, Tz::UTC).bounds(t),
            (at("2026-11-21T14:37:00Z"), at("2026-11-21T14:38:00Z"))
        );
        assert_eq!(
            cal(WindowUnit::Hour, Tz::UTC).bounds(t),
            (at("2026-11-21T14:00:00Z"), at("2026-11-21T15:00:00Z"))
        );
        assert_eq!(
            cal(WindowUnit::Day, Tz::UTC).bounds(t),
            (at("2026-11-21T00:00:00Z"), at("2026-11-22T00:00:00Z"))
        );
        // 2026-11-21 is a Saturday; ISO weeks start on Monday.
        assert_eq!(
            cal(WindowUnit::Week, Tz::UTC).bounds(t),
            (at("2026-11-16T00:00:00Z"), at("2026-11-23T00:00:00Z"))
        );
        assert_eq!(
            cal(WindowUnit::Month, Tz::UTC).bounds(t),
            (at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:00Z"))
        );
        let dec = at("2026-12-31T23:59:59Z");
        assert_eq!(
            cal(WindowUnit::Month, Tz::UTC).bounds(dec),
            (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn days_follow_the_configured_time_zone_and_dst() {
        let ny = chrono_tz::America::New_York;
        // 03:00 UTC on Nov 21 is still Nov 20 in New York (UTC-5).
        let t = at("2026-11-21T03:00:00Z");
        assert_eq!(
            cal(WindowUnit::Day, ny).bounds(t),
            (at("2026-11-20T05:00:00Z"), at("2026-11-21T05:00:00Z"))
        );
        // The day DST ends (2026-11-01) lasts 25 hours there.
        let (s, e) = cal(WindowUnit::Day, ny).bounds(at("2026-11-01T12:00:00Z"));
        assert_eq!(e - s, 25 * 3_600 * NANOS_PER_SEC);
        // India is UTC+5:30: hours start at :30 UTC.
        let (s, _) =
            cal(WindowUnit::Hour, chrono_tz::Asia::Kolkata).bounds(at("2026-11-21T14:37:42Z"));
        assert_eq!(s, at("2026-11-21T14:30:00Z"));
    }

    #[test]
    fn the_cache_answers_what_the_window_answers() {
        let ny = chrono_tz::America::New_York;
        let cache = BoundsCache::default();
        let w = cal(WindowUnit::Day, ny);
        // Across the DST change and back in time (late data).
        let mut t = at("2026-10-31T20:00:00Z");
        for step in 0..400i64 {
            t += if step % 7 == 6 { -5 } else { 1 } * 997 * NANOS_PER_SEC;
            assert_eq!(cache.bounds(&w, t), w.bounds(t), "at {t}");
        }
        // Threads sharing one cache each get their own window right.
        let cache = std::sync::Arc::new(BoundsCache::default());
        let threads: Vec<_> = (0..4i64)
            .map(|i| {
                let cache = std::sync::Arc::clone(&cache);
                std::thread::spawn(move || {
                    let w = cal(WindowUnit::Hour, Tz::UTC);
                    let mut t = at("2026-11-21T00:00:00Z") + i * 3_600 * NANOS_PER_SEC;
                    for _ in 0..20_000 {
                        assert_eq!(cache.bounds(&w, t), w.bounds(t));
                        // Threads walk different hours: the cache keeps changing.
                        t += 4 * 3_600 * NANOS_PER_SEC + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn rolling_buckets_are_a_sixtieth_of_the_window() {
        let w = Window {
            unit: WindowUnit::Hour,
            kind: WindowKind::Rolling,
        };
        assert_eq!(w.bucket_nanos(), 60 * NANOS_PER_SEC);
        let (s, e) = w.bounds(at("2026-11-21T14:37:42Z"));
        assert_eq!(s, at("2026-11-21T14:37:00Z"));
        assert_eq!(e - s, 3_600 * NANOS_PER_SEC);
    }
}
