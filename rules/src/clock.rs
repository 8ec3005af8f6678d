//! Wall-clock time as rows and rules count it: Unix nanoseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix nanoseconds (0 before 1970, saturating far in the future).
pub fn now_unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
