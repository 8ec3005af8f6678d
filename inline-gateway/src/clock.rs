//! Wall-clock time as rows and rules count it: Unix nanoseconds.

pub(crate) use tollgate_rules::clock::now_unix_nanos;
