//! The rules engine: budgets, rate limits, model access, region locks and
//! custom CEL rules, compiled once and evaluated synchronously.
//!
//! - [`config`]: `[[rules]]` as written in `tollgate.toml`;
//! - [`compile`]: validation into a [`RuleSet`];
//! - [`ledger`]: counters per (rule, scope, window) with atomic reservations;
//! - [`Engine`]: `admit` / `settle` / `observe` / `quote`.

mod call_view;
mod cel;
pub mod compile;
pub mod config;
mod evaluate;
mod guard;
pub mod lease;
pub mod ledger;
mod scope;
pub mod window;

pub(crate) use cel::call_fields;
pub use compile::{RuleError, RuleSet, compile, parse_rules};
pub use evaluate::{
    Decision, Engine, Override, RebuildPlan, Refusal, RefusalReason, Reservation, Unstored,
    Violation, ViolationKind,
};
pub use scope::{CallFacts, CallIntent, Scope, ScopeDim, scope_label, scope_pairs};

#[cfg(test)]
mod tests;
