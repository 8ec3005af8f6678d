//! The cost a row records for one model call: the one place where spans
//! (observe mode) and gateway calls are priced.

use super::{ModelPrice, PriceTable, TokenUsage};
use crate::CostSource;

/// What pricing needs to know of a call.
#[derive(Debug, Clone, Copy)]
pub struct CallCost<'a> {
    /// The provider that served the call, when known.
    pub provider: Option<&'a str>,
    /// The model that served the call (the response's), when known.
    pub response_model: Option<&'a str>,
    /// The model asked for.
    pub request_model: Option<&'a str>,
    pub usage: TokenUsage,
    /// Whether the call reported its usage at all (a span may not).
    pub has_usage: bool,
    /// Whether the call failed.
    pub failed: bool,
}

impl PriceTable {
    /// The table's price of `call`: at the model that served it, else at
    /// the one asked for; `None` when the table knows neither.
    pub fn call_cost(&self, call: &CallCost<'_>) -> Option<f64> {
        [call.response_model, call.request_model]
            .into_iter()
            .flatten()
            .find_map(|m| self.cost(call.provider, m, &call.usage))
    }

    /// [`PriceTable::call_cost`], or the call at `fallback` when the table
    /// knows neither model: a deployment's price for models it has not
    /// priced (the gateway's `unpriced_cost_per_mtok`), so that a budget on
    /// cost still counts them, at admission and at settlement alike.
    pub fn call_cost_or(&self, call: &CallCost<'_>, fallback: Option<&ModelPrice>) -> Option<f64> {
        self.call_cost(call)
            .or_else(|| fallback.map(|p| p.cost(&call.usage)))
    }

    /// The cost a row records, and where it came from: a cost the call
    /// `reported` itself (already found plausible) wins; else the table's
    /// price `table` (from [`PriceTable::call_cost`]). A failed call that
    /// reports no usage was not billed ($0); a successful one without usage
    /// cannot be priced (unpriced, never $0); a model the table does not
    /// know is unpriced.
    pub fn row_cost(
        call: &CallCost<'_>,
        table: Option<f64>,
        reported: Option<f64>,
    ) -> (Option<f64>, CostSource) {
        if let Some(c) = reported {
            return (Some(c), CostSource::Provider);
        }
        match table {
            Some(_) if !call.has_usage && call.failed => (Some(0.0), CostSource::PriceTable),
            Some(_) if !call.has_usage => (None, CostSource::Unpriced),
            Some(c) => (Some(c), CostSource::PriceTable),
            None => (None, CostSource::Unpriced),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(response: Option<&'a str>, request: Option<&'a str>) -> CallCost<'a> {
        CallCost {
            provider: Some("openai"),
            response_model: response,
            request_model: request,
            usage: TokenUsage {
                input: 1_000_000,
                output: 0,
                cache_read: 0,
                cache_write: 0,
            },
            has_usage: true,
            failed: false,
        }
    }

    #[test]
    fn the_model_that_served_the_call_is_priced_first() {
        let t = PriceTable::builtin().unwrap();
        let served = t
            .call_cost(&call(Some("gpt-4o-mini"), Some("gpt-4o")))
            .unwrap();
        let asked = t.call_cost(&call(None, Some("gpt-4o"))).unwrap();
        assert!(served < asked, "{served} {asked}");
        let fallback = t
            .call_cost(&call(Some("no-such-model"), Some("gpt-4o")))
            .unwrap();
        assert_eq!(fallback, asked);
        assert_eq!(t.call_cost(&call(Some("no-such-model"), None)), None);
    }

    #[test]
    fn a_fallback_prices_only_what_the_table_does_not() {
        let t = PriceTable::builtin().unwrap();
        let flat = ModelPrice::new(10.0, 10.0);
        let known = call(None, Some("gpt-4o"));
        assert_eq!(t.call_cost_or(&known, Some(&flat)), t.call_cost(&known));
        let unknown = call(Some("no-such-model"), None);
        assert_eq!(t.call_cost_or(&unknown, None), None);
        // 1M input tokens at $10 per million.
        assert_eq!(t.call_cost_or(&unknown, Some(&flat)), Some(10.0));
    }

    #[test]
    fn a_row_is_never_priced_at_zero_without_a_reason() {
        let ok = call(None, Some("gpt-4o"));
        assert_eq!(
            PriceTable::row_cost(&ok, Some(2.5), Some(1.0)),
            (Some(1.0), CostSource::Provider)
        );
        assert_eq!(
            PriceTable::row_cost(&ok, Some(2.5), None),
            (Some(2.5), CostSource::PriceTable)
        );
        assert_eq!(
            PriceTable::row_cost(&ok, None, None),
            (None, CostSource::Unpriced)
        );
        let silent = CallCost {
            has_usage: false,
            ..ok
        };
        assert_eq!(
            PriceTable::row_cost(&silent, Some(0.0), None),
            (None, CostSource::Unpriced)
        );
        let failed = CallCost {
            failed: true,
            ..silent
        };
        assert_eq!(
            PriceTable::row_cost(&failed, Some(0.0), None),
            (Some(0.0), CostSource::PriceTable)
        );
    }
}
