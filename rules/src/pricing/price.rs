//! What one model charges, and the arithmetic that turns token counts into dollars.

use serde::Deserialize;

/// Tokens are priced per million; dividing once at the end keeps the
/// per-component products exact for any realistic token count.
const TOKENS_PER_PRICE_UNIT: f64 = 1_000_000.0;

/// List prices of one model in US dollars per million tokens.
///
/// A cache price that is `None` means the provider has no separate price for
/// it, so those tokens cost the input price.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPrice {
    /// Price of an input (prompt) token that was neither read from nor written to a cache.
    pub input_per_mtok: f64,
    /// Price of an output token, reasoning tokens included.
    pub output_per_mtok: f64,
    /// Price of an input token served from the provider's prompt cache.
    pub cache_read_per_mtok: Option<f64>,
    /// Price of an input token written to the provider's prompt cache.
    pub cache_write_per_mtok: Option<f64>,
    /// Higher prices for long prompts, in any order; see [`PriceTier`].
    pub tiers: Vec<PriceTier>,
}

/// Prices that replace a model's base prices for a whole call once its input
/// exceeds a threshold, as Anthropic and Google bill long-context requests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTier {
    /// The tier applies when the call's input tokens (cached ones included)
    /// are strictly more than this, e.g. `200_000`.
    pub above_input_tokens: u64,
    /// USD per million uncached input tokens in this tier.
    pub input_per_mtok: f64,
    /// USD per million output tokens in this tier.
    pub output_per_mtok: f64,
    /// USD per million cache-read tokens in this tier; the tier's input price when absent.
    pub cache_read_per_mtok: Option<f64>,
    /// USD per million cache-write tokens in this tier; the tier's input price when absent.
    pub cache_write_per_mtok: Option<f64>,
}

/// Token counts of one call, as the OpenTelemetry GenAI conventions report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenUsage {
    /// All input tokens, including `cache_read` and `cache_write`.
    pub input: u64,
    /// All output tokens, including reasoning tokens.
    pub output: u64,
    /// Input tokens served from a prompt cache (a subset of `input`).
    pub cache_read: u64,
    /// Input tokens written to a prompt cache (a subset of `input`).
    pub cache_write: u64,
}

/// The four per-million prices in force for one call, after choosing a tier.
#[derive(Debug, Clone, Copy)]
struct Rates {
    input: f64,
    output: f64,
    cache_read: f64,
    cache_write: f64,
}

impl ModelPrice {
    /// A price without cache prices or tiers.
    pub fn new(input_per_mtok: f64, output_per_mtok: f64) -> Self {
        Self {
            input_per_mtok,
            output_per_mtok,
            cache_read_per_mtok: None,
            cache_write_per_mtok: None,
            tiers: Vec::new(),
        }
    }

    /// Cost of one call in US dollars.
    ///
    /// Uncached input (`input - cache_read - cache_write`, floored at zero)
    /// pays the input price, cached tokens their cache prices, output the
    /// output price. The tier is chosen by `input`, and the chosen tier prices
    /// every token of the call.
    pub fn cost(&self, usage: &TokenUsage) -> f64 {
        let rates = self.rates_for(usage.input);
        let cached = usage.cache_read.saturating_add(usage.cache_write);
        let uncached = usage.input.saturating_sub(cached);
        (uncached as f64 * rates.input
            + usage.cache_read as f64 * rates.cache_read
            + usage.cache_write as f64 * rates.cache_write
            + usage.output as f64 * rates.output)
            / TOKENS_PER_PRICE_UNIT
    }

    /// The highest tier whose threshold the input exceeds, else the base
    /// prices. Tiers are searched rather than assumed sorted because this
    /// type can be built by hand.
    fn rates_for(&self, input_tokens: u64) -> Rates {
        let tier = self
            .tiers
            .iter()
            .filter(|t| input_tokens > t.above_input_tokens)
            .max_by_key(|t| t.above_input_tokens);
        match tier {
            Some(t) => Rates {
                input: t.input_per_mtok,
                output: t.output_per_mtok,
                cache_read: t.cache_read_per_mtok.unwrap_or(t.input_per_mtok),
                cache_write: t.cache_write_per_mtok.unwrap_or(t.input_per_mtok),
            },
            None => Rates {
                input: self.input_per_mtok,
                output: self.output_per_mtok,
                cache_read: self.cache_read_per_mtok.unwrap_or(self.input_per_mtok),
                cache_write: self.cache_write_per_mtok.unwrap_or(self.input_per_mtok),
            },
        }
    }
}
