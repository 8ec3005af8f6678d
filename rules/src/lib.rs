//! Tollgate's rules engine and the data it reasons about.
//!
//! This crate knows nothing about HTTP, Kafka or storage: it is pure,
//! synchronous code that both the collector (observe mode) and the inline
//! gateway (synchronous enforcement) link. It holds:
//!
//! - [`CallRecord`], the one row per model call that every component speaks;
//! - [`pricing`], the versioned price table and the model-name matcher;
//! - [`blocks`], the kill-switch's table of blocked scopes;
//! - [`engine`], the rules engine (budgets, rate limits, model access,
//!   region locks, custom CEL rules) with `admit` / `settle` / `observe`.

pub mod blocks;
pub mod clock;
pub mod engine;
mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod pricing;
mod record;

pub use event::RuleEvent;
pub use record::{CallRecord, CallStatus, CostSource, Mode};
