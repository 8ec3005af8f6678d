//! The rules-engine benchmark: its workload (rule sets, calls) and the
//! report built from criterion's estimates.

pub mod report;
pub mod workload;
