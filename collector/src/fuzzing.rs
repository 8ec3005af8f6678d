//! Entry points for the fuzz targets in `fuzz/` (hidden from the docs, not
//! a stable API). Each runs one of the collector's parsers on untrusted
//! input the way the server does and returns what it made of it, so that a
//! target can check the answer as well as the absence of a panic.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use figment::providers::Env;
use tollgate_rules::CallRecord;
use tollgate_rules::engine::{Engine, RuleSet, Violation, compile, parse_rules};
use tollgate_rules::pricing::PriceTable;

use crate::config::{Config, ConfigError, LabelPolicy, from_text};
use crate::killswitch::Change;
use crate::normalize::{NormalizeOutcome, Normalizer, NormalizerConfig};
use crate::receivers::{OtlpEncoding, decode_export};

/// The normaliser as the server builds it by default: built-in prices,
/// any label key, 16 labels at most.
fn normalizer() -> Option<&'static Normalizer> {
    static NORMALIZER: OnceLock<Option<Normalizer>> = OnceLock::new();
    NORMALIZER
        .get_or_init(|| {
            let prices = PriceTable::builtin().ok()?;
            let labels = LabelPolicy {
                allowed: Vec::new(),
                max_labels: 16,
                max_values_per_label: 1_000,
            };
            Some(Normalizer::new(
                NormalizerConfig::new(10_000_000, labels),
                Arc::new(prices),
            ))
        })
        .as_ref()
}

/// A `/v1/traces` body (after decompression) decoded and normalised; the
/// error is the decoder's, as the receiver reports it.
pub fn otlp(encoding: OtlpEncoding, body: &[u8]) -> Result<NormalizeOutcome, String> {
    let request = decode_export(encoding, Bytes::copy_from_slice(body))?;
    let normalizer = normalizer().ok_or("the built-in price table does not load")?;
    Ok(normalizer.normalize(request))
}

/// Rules that read every part of a call: calendar and rolling windows in
/// and out of UTC, scopes by user, label and model, model globs and a CEL
/// rule with guards and the interpreter.
const RULES: &str = r#"
[[rules]]
id = "daily-cost"
type = "budget"
metric = "cost_usd"
limit = 5.0
scope = ["project", "user"]
window = "day"
time_zone = "Pacific/Chatham"
action = "block"

[[rules]]
id = "rolling-tokens"
type = "budget"
metric = "tokens"
limit = 100000
scope = ["label:team", "model"]
window = "hour"
rolling = true
action = "block"

[[rules]]
id = "monthly-calls"
type = "budget"
metric = "requests"
limit = 3
scope = ["session"]
window = "month"
action = "alert"

[[rules]]
id = "per-user-rate"
type = "rate_limit"
scope = ["user"]
requests_per_minute = 5
tokens_per_minute = 10000

[[rules]]
id = "no-preview"
type = "model_access"
deny = ["*-preview*", "gpt-4?-[0-9]*"]
action = "block"

[[rules]]
id = "long-answers"
type = "custom"
expression = 'call.output_tokens > 1000 && call.model.startsWith("gpt") && size(call.labels) >= 0 // ≥ 1k'
action = "alert"
"#;

fn rule_set() -> Option<&'static RuleSet> {
    static RULE_SET: OnceLock<Option<RuleSet>> = OnceLock::new();
    RULE_SET
        .get_or_init(|| {
            let value: toml::Value = toml::from_str(RULES).ok()?;
            let tables = value.get("rules")?.as_array()?.clone();
            compile(&parse_rules(tables).ok()?).ok()
        })
        .as_ref()
}

/// Runs `records` through a fresh engine holding [`RULES`], as the
/// collector does with every call it stores (from OTLP or from Kafka).
pub fn observe(records: &[CallRecord]) -> Vec<Violation> {
    let Some(rules) = rule_set() else {
        return Vec::new();
    };
    let engine = Engine::new(rules.clone());
    records.iter().flat_map(|r| engine.observe(r)).collect()
}

/// A message of the Kafka calls topic, decoded as the consumer does.
pub fn kafka_call(payload: &[u8]) -> Result<CallRecord, serde_json::Error> {
    crate::kafka::decode_call(payload)
}

/// A message of the Kafka kill-switch topic: origin and change.
pub fn kafka_enforcement(payload: &[u8]) -> Result<(String, Change), serde_json::Error> {
    crate::kafka::decode_change(payload)
}

/// A config file's text through `${VAR}` expansion (variables from
/// `lookup`), TOML and validation; no `TOLLGATE_` environment overrides.
pub fn config(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    from_text(Some(text), None, Env::raw().only(&[]), lookup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fuzzing_rules_compile_and_fire() {
        let mut ids: Vec<_> = rule_set()
            .map(|r| r.rules.iter().map(|r| r.id.to_string()).collect())
            .unwrap_or_default();
        ids.dedup();
        assert_eq!(
            ids,
            [
                "daily-cost",
                "rolling-tokens",
                "monthly-calls",
                "per-user-rate",
                "no-preview",
                "long-answers"
            ]
        );
        let now = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
        let call = CallRecord {
            request_model: Some("gpt-4o-preview".into()),
            output_tokens: 2_000,
            start_unix_nanos: now,
            ..Default::default()
        };
        let fired: Vec<_> = observe(&[call])
            .iter()
            .map(|v| v.rule_id.to_string())
            .collect();
        assert!(fired.contains(&"long-answers".to_owned()), "{fired:?}");
    }

    #[test]
    fn every_entry_point_answers() {
        let out = otlp(OtlpEncoding::Json, br#"{"resourceSpans":[]}"#).unwrap();
        assert!(out.records.is_empty());
        assert!(otlp(OtlpEncoding::Protobuf, b"\xff\xff").is_err());
        assert!(kafka_call(b"{").is_err());
        assert!(kafka_enforcement(b"[]").is_err());
        let err = config("[api]\nlisten = \"${NOPE}\"\n", |_| None).unwrap_err();
        assert!(err.to_string().contains("NOPE"), "{err}");
        let ok = config("[api]\nlisten = \"${ADDR}\"\n", |_| {
            Some("127.0.0.1:7071".into())
        });
        assert_eq!(ok.unwrap().api_listen.port(), 7071);
    }
}
