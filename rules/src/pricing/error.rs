//! Why a price table or a price override was refused.
//!
//! A bad price must stop start-up (or a reload) with one line that says which
//! entry and which field to fix; pricing calls wrongly would be worse.

use std::fmt;

/// Where a refused price came from, so the message points at what to edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// An entry of a price-table file, by the line its `[[models]]` header is on.
    TableLine(u32),
    /// The n-th (1-based) `[[pricing.models]]` override of the configuration.
    Override(u32),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::TableLine(line) => write!(f, "price table line {line}"),
            Location::Override(n) => write!(f, "[[pricing.models]] entry {n}"),
        }
    }
}

/// A price table or override that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PricingError {
    /// The file is not TOML, or its top level does not have the expected shape.
    #[error("price table is not valid: {message}")]
    Syntax { message: String },

    /// The `version` string is empty.
    #[error(
        "price table: `version` is empty; set it to the date of the last price change, e.g. \"2026-11-01\""
    )]
    EmptyVersion,

    /// An entry has a missing, unknown or mistyped field, or an empty name.
    #[error("{at}: model `{model}`: {message}")]
    InvalidEntry {
        at: Location,
        model: String,
        message: String,
    },

    /// A price is negative, infinite or NaN.
    #[error(
        "{at}: model `{model}`: `{field}` is {value}; prices are US dollars per million tokens and must be finite and not negative"
    )]
    InvalidPrice {
        at: Location,
        model: String,
        field: String,
        value: f64,
    },

    /// The same model is listed twice for the same provider.
    #[error("{at}: model `{model}` ({}) is listed twice; the first is at {first}", provider_label(.provider))]
    DuplicateModel {
        at: Location,
        first: Location,
        model: String,
        provider: Option<String>,
    },

    /// A model name or alias already names another model of the same provider.
    #[error(
        "{at}: alias `{name}` of model `{model}` ({}) already names model `{other}` at {first}",
        provider_label(.provider)
    )]
    DuplicateName {
        at: Location,
        first: Location,
        name: String,
        model: String,
        other: String,
        provider: Option<String>,
    },
}

fn provider_label(provider: &Option<String>) -> String {
    match provider {
        Some(p) => format!("provider `{p}`"),
        None => "no provider".to_owned(),
    }
}
