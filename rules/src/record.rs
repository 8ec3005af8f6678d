//! The call record: one row per model call, whatever produced it.
//!
//! Everything downstream (sinks, rules, the query API, dashboards) speaks this
//! type. It carries metadata only; no prompt or response content exists here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where the `cost_usd` of a row came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CostSource {
    /// The span (or the provider's response) carried the cost itself.
    Provider,
    /// Computed from token counts and the price table.
    PriceTable,
    /// The model is not in the price table: the cost is unknown, not zero.
    #[default]
    Unpriced,
}

impl CostSource {
    /// The stable name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            CostSource::Provider => "provider",
            CostSource::PriceTable => "price_table",
            CostSource::Unpriced => "unpriced",
        }
    }

    /// Parses the stable name written by [`CostSource::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "provider" => Some(CostSource::Provider),
            "price_table" => Some(CostSource::PriceTable),
            "unpriced" => Some(CostSource::Unpriced),
            _ => None,
        }
    }
}

/// Whether a call was observed after the fact or passed through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Reported by the agent over OTLP; rules ran asynchronously.
    #[default]
    Observe,
    /// Proxied by the inline gateway; rules ran before the provider saw it.
    Gateway,
}

impl Mode {
    /// The stable name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Observe => "observe",
            Mode::Gateway => "gateway",
        }
    }

    /// Parses the stable name written by [`Mode::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "observe" => Some(Mode::Observe),
            "gateway" => Some(Mode::Gateway),
            _ => None,
        }
    }
}

/// Outcome of the call as the provider (or the span) reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    #[default]
    Ok,
    Error,
}

impl CallStatus {
    /// The stable name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Ok => "ok",
            CallStatus::Error => "error",
        }
    }

    /// Parses the stable name written by [`CallStatus::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ok" => Some(CallStatus::Ok),
            "error" => Some(CallStatus::Error),
            _ => None,
        }
    }
}

/// One model call. Optional fields are `None` when the source did not say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CallRecord {
    /// Start of the call, Unix time in nanoseconds.
    pub start_unix_nanos: i64,
    /// Wall-clock duration in nanoseconds.
    pub duration_nanos: i64,
    /// Time to first token (streamed calls), nanoseconds after the start.
    pub ttft_nanos: Option<i64>,
    /// W3C trace id, lowercase hex; empty when unknown.
    pub trace_id: String,
    /// Span id, lowercase hex; empty when unknown.
    pub span_id: String,
    /// The span's parent, lowercase hex; empty for a root span or when
    /// unknown. With the trace id it ties a call to the run it was part of,
    /// and to other spans describing the same call.
    #[serde(default)]
    pub parent_span_id: String,
    /// Which instrumentation described the call: a stable hash (XXH3-64)
    /// of the OpenTelemetry instrumentation scope's name; 0 when unknown.
    /// Two spans of one library are never two layers of one call. Not stored.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub instrumentation: u64,
    /// Counted by the rules engine already: a gateway call, settled when it
    /// ended. The rules stage counts every other call. Not stored nor
    /// serialized: a gateway call read back from the write-ahead log after
    /// a crash is counted again, as the counters rebuilt from the store at
    /// start-up do not hold it.
    #[serde(skip)]
    pub settled: bool,
    /// Provider request / response id (`gen_ai.response.id`).
    pub request_id: Option<String>,

    pub org: Option<String>,
    pub project: Option<String>,
    /// The calling application (`service.name`).
    pub app: Option<String>,
    pub environment: Option<String>,
    pub route: Option<String>,
    pub user: Option<String>,
    /// Conversation / session id (`gen_ai.conversation.id`).
    pub session: Option<String>,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,

    /// Normalised provider name (`openai`, `anthropic`, `gcp.gemini`, ...).
    pub provider: Option<String>,
    /// GenAI operation (`chat`, `text_completion`, `embeddings`, ...).
    pub operation: Option<String>,
    pub request_model: Option<String>,
    pub response_model: Option<String>,

    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,

    /// Cost in US dollars; `None` when unpriced (never a silent zero).
    pub cost_usd: Option<f64>,
    pub cost_source: CostSource,
    /// Version of the price table that priced this row.
    pub price_version: Option<String>,

    pub status: CallStatus,
    pub error_type: Option<String>,
    pub http_status: Option<u16>,
    pub stream: bool,
    pub finish_reason: Option<String>,

    pub mode: Mode,
    /// Decision taken by the rules engine (`allow`, `block`, ...), if any.
    pub decision: Option<String>,
    /// Ids of the rules that fired on this call.
    pub rules_fired: Vec<String>,
    /// Fallback attempt index (0 = first target).
    pub attempt: u32,
    /// Upstream address or region that served the call.
    pub upstream: Option<String>,
    /// Allowed custom labels (`tollgate.label.*`).
    pub labels: BTreeMap<String, String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl CallRecord {
    /// The call's model as usage, rules and both stores name it: the one
    /// asked for (`gpt-4o`, a route's model), falling back to the one that
    /// answered (`gpt-4o-2024-08-06`) when the request did not say.
    pub fn model(&self) -> Option<&str> {
        self.request_model
            .as_deref()
            .or(self.response_model.as_deref())
    }

    /// Input plus output tokens (cache and reasoning tokens are part of those).
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_round_trip() {
        for s in [
            CostSource::Provider,
            CostSource::PriceTable,
            CostSource::Unpriced,
        ] {
            assert_eq!(CostSource::parse(s.as_str()), Some(s));
        }
        for m in [Mode::Observe, Mode::Gateway] {
            assert_eq!(Mode::parse(m.as_str()), Some(m));
        }
        for st in [CallStatus::Ok, CallStatus::Error] {
            assert_eq!(CallStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(CostSource::parse("free"), None);
    }

    #[test]
    fn model_is_the_requested_one_else_the_answering_one() {
        let mut r = CallRecord {
            response_model: Some("gpt-4o-2024-08-06".into()),
            ..Default::default()
        };
        assert_eq!(r.model(), Some("gpt-4o-2024-08-06"));
        r.request_model = Some("gpt-4o".into());
        assert_eq!(r.model(), Some("gpt-4o"));
    }

    #[test]
    fn serde_uses_snake_case_names() {
        let r = CallRecord {
            cost_source: CostSource::PriceTable,
            ..Default::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["cost_source"], "price_table");
        assert_eq!(v["mode"], "observe");
        assert_eq!(v["status"], "ok");
    }
}
