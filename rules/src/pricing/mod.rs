//! Pricing: what a model call cost, from a versioned price table.
//!
//! The prices are data, not code: `rules/data/prices.toml` is embedded as the
//! built-in table ([`PriceTable::builtin`]); a deployment may load its own
//! file in the same format ([`PriceTable::from_toml_str`]) and adjust single
//! models from `tollgate.toml` ([`PriceTable::with_overrides`]). Every row
//! records [`PriceTable::version`], so a price change never silently rewrites
//! what past rows meant.
//!
//! # Cost
//!
//! `input` tokens include cached ones (the OpenTelemetry GenAI convention).
//! A call costs `(input - cache_read - cache_write) x input price
//! + cache_read x cache-read price + cache_write x cache-write price
//! + output x output price`, per million tokens; a missing cache price is the
//! input price. Models with long-context tiers are priced entirely at the
//! tier their `input` falls in. A model the table does not know has no cost
//! (`None`): callers record it as unpriced, never as $0.
//!
//! # Matching model names
//!
//! [`PriceTable::lookup`] tries, stopping at the first hit:
//!
//! 1. the name exactly as given (one hash lookup, no allocation);
//! 2. the name in lower case;
//! 3. the last `/` segment (`openai/gpt-4o`, `models/gemini-2.0-flash`,
//!    `meta-llama/…`, `accounts/fireworks/models/…`); a segment naming a
//!    provider (`openai/`, `anthropic/`, `google/`) becomes a provider hint;
//! 4. the model inside cloud ids: Vertex `claude-3-5-sonnet-v2@20241022`,
//!    Bedrock `us.anthropic.claude-3-5-sonnet-20241022-v2:0`;
//! 5. Claude versions with dots re-spelt with dashes (`claude-3.5-sonnet`);
//! 6. snapshot decorations removed one at a time from the end — dates
//!    (`-2024-08-06`, `-20241022`, `-05-06`), `-latest`, `-preview`, `-exp`,
//!    `-0613`/`-2411` stamps and `-001` revisions — trying each shorter name.
//!
//! Aliases from the table count as names at every step. Words are never
//! removed, so `gpt-4o-mini` cannot fall back to `gpt-4o` nor `o3-mini` to `o3`,
//! and a dated snapshot priced on its own (`gpt-4o-2024-05-13`) is found
//! before its model. The provider only chooses among entries of the model
//! the name found (Groq's and Together's `llama-3.3-70b`, say), in order: the
//! span's provider, the first party a reseller follows (Azure OpenAI → OpenAI,
//! Vertex AI → Gemini), the provider the name carried, the first entry.

mod call;
mod error;
mod matcher;
mod price;
mod table;

#[cfg(test)]
mod tests;

pub use call::CallCost;
pub use error::{Location, PricingError};
pub use price::{ModelPrice, PriceTier, TokenUsage};
pub use table::{PriceMatch, PriceOverride, PriceTable};
