//! Normalisation: OTLP spans in any GenAI dialect -> priced [`CallRecord`]s.
//!
//! [`semconv`] maps each attribute name of every dialect seen in the wild
//! (current and older OpenTelemetry GenAI conventions, OpenLLMetry,
//! OpenInference, `tollgate.*`) to one field and a preference rank;
//! [`span`] makes one pass over a span's attributes and builds the row.
//!
//! [`CallRecord`]: tollgate_rules::CallRecord

mod semconv;
mod span;
mod values;

pub use semconv::{NonCallKind, normalize_provider};
pub use span::{NormalizeOutcome, Normalizer, NormalizerConfig};
