//! Realistic OTLP export requests, encoded once and re-stamped per send.
//!
//! Encoding 100 spans per request in the load generator would cost as much
//! CPU as the server spends decoding them, on a machine with two cores. So
//! each request is encoded once with sentinel ids and timestamps, the byte
//! offsets of those sentinels are recorded, and every send copies the buffer
//! and overwrites the fixed-width fields in place: span ids (8 bytes), trace
//! ids (16 bytes), the hex part of `gen_ai.response.id` (32 characters) and
//! start/end times (`fixed64`). The protobuf stays valid because no length
//! changes.
//!
//! Ids are unique per `(seq, span)` by construction: they are a bijective
//! mix of a counter, so Tollgate's deduplication (one row per
//! `(trace_id, span_id)` and per `(provider, response id)`) never
//! undercounts, while the ids still look random to its indexes.

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

/// The org every request names (`tollgate.org`); a scoped ingest key must
/// name the same one, or the collector refuses the spans.
pub const ORG: &str = "acme";

/// Model calls per trace (an agent turn making several calls).
const SPANS_PER_TRACE: usize = 10;

/// Services sending spans; one request comes from one of them.
const SERVICES: [(&str, &str); 4] = [
    ("support-bot", "support"),
    ("search-api", "search"),
    ("checkout-assistant", "checkout"),
    ("ingest-agent", "data-platform"),
];

/// One model as instrumentations report it.
struct Model {
    provider: &'static str,
    request: &'static str,
    response: &'static str,
    server: &'static str,
    scope: &'static str,
    id_prefix: &'static str,
}

const MODELS: [Model; 6] = [
    Model {
        provider: "openai",
        request: "gpt-4o-mini",
        response: "gpt-4o-mini-2024-07-18",
        server: "api.openai.com",
        scope: "opentelemetry.instrumentation.openai_v2",
        id_prefix: "chatcmpl-",
    },
    Model {
        provider: "anthropic",
        request: "claude-3-5-haiku-20241022",
        response: "claude-3-5-haiku-20241022",
        server: "api.anthropic.com",
        scope: "opentelemetry.instrumentation.anthropic",
        id_prefix: "msg_",
    },
    Model {
        provider: "gcp.gemini",
        request: "gemini-2.5-flash",
        response: "gemini-2.5-flash",
        server: "generativelanguage.googleapis.com",
        scope: "opentelemetry.instrumentation.google_genai",
        id_prefix: "resp-",
    },
    Model {
        provider: "openai",
        request: "gpt-4.1-mini",
        response: "gpt-4.1-mini-2025-04-14",
        server: "api.openai.com",
        scope: "opentelemetry.instrumentation.openai_v2",
        id_prefix: "chatcmpl-",
    },
    Model {
        provider: "anthropic",
        request: "claude-sonnet-4-5",
        response: "claude-sonnet-4-5-20250929",
        server: "api.anthropic.com",
        scope: "opentelemetry.instrumentation.anthropic",
        id_prefix: "msg_",
    },
    Model {
        provider: "openai",
        request: "gpt-4o",
        response: "gpt-4o-2024-08-06",
        server: "api.openai.com",
        scope: "opentelemetry.instrumentation.openai_v2",
        id_prefix: "chatcmpl-",
    },
];

/// The splitmix64 finaliser: a bijection on `u64` with `mix64(0) == 0`, so
/// distinct non-zero counters give distinct non-zero ids.
pub fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Where one span's fixed-width fields sit in the encoded request.
#[derive(Debug, Clone)]
struct SpanSlots {
    span_id_at: usize,
    trace_id_at: usize,
    /// The 32 hex digits of `gen_ai.response.id` (failed calls have none).
    response_id_at: Option<usize>,
    start_at: usize,
    end_at: usize,
    /// Index of the span's trace within the request.
    trace_index: u64,
    /// How long before "now" the span ended, and how long it lasted.
    ends_before_nanos: u64,
    duration_nanos: u64,
}

/// One encoded request and the offsets to re-stamp.
#[derive(Debug, Clone)]
struct RequestTemplate {
    encoded: Bytes,
    slots: Vec<SpanSlots>,
}

/// A few request templates (one per service), each `spans_per_request` model-call spans.
#[derive(Debug, Clone)]
pub struct RequestPool {
    templates: Vec<RequestTemplate>,
    spans_per_request: usize,
    traces_per_request: u64,
}

impl RequestPool {
    pub fn new(spans_per_request: usize) -> anyhow::Result<Self> {
        if spans_per_request == 0 || spans_per_request > 0xFFFF {
            bail!("spans per request must be between 1 and 65535, not {spans_per_request}");
        }
        let templates = (0..SERVICES.len())
            .map(|t| RequestTemplate::build(t, spans_per_request))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            templates,
            spans_per_request,
            traces_per_request: spans_per_request.div_ceil(SPANS_PER_TRACE) as u64,
        })
    }

    pub fn spans_per_request(&self) -> usize {
        self.spans_per_request
    }

    /// Mean encoded size of one request, in bytes.
    pub fn mean_request_bytes(&self) -> usize {
        self.templates
            .iter()
            .map(|t| t.encoded.len())
            .sum::<usize>()
            / self.templates.len()
    }

    /// Request number `seq`: a copy of a template with ids unique to `seq`
    /// and spans that ended shortly before `now_unix_nanos`.
    pub fn render(&self, seq: u64, now_unix_nanos: u64) -> Bytes {
        let template = &self.templates[(seq % self.templates.len() as u64) as usize];
        let mut buf = BytesMut::from(&template.encoded[..]);
        let first_span = seq.wrapping_mul(self.spans_per_request as u64);
        let first_trace = seq.wrapping_mul(self.traces_per_request);
        for (i, s) in template.slots.iter().enumerate() {
            let span_id = mix64(first_span.wrapping_add(i as u64 + 1));
            buf[s.span_id_at..s.span_id_at + 8].copy_from_slice(&span_id.to_be_bytes());
            if let Some(at) = s.response_id_at {
                put_hex(&mut buf[at..at + 16], span_id);
                put_hex(&mut buf[at + 16..at + 32], mix64(span_id ^ 0x5eed));
            }
            let trace = first_trace.wrapping_add(s.trace_index + 1);
            buf[s.trace_id_at..s.trace_id_at + 8].copy_from_slice(&mix64(trace).to_be_bytes());
            let low = mix64(trace.rotate_left(32) ^ 0x7011_6a7e);
            buf[s.trace_id_at + 8..s.trace_id_at + 16].copy_from_slice(&low.to_be_bytes());
            let end = now_unix_nanos.saturating_sub(s.ends_before_nanos);
            let start = end.saturating_sub(s.duration_nanos);
            buf[s.start_at..s.start_at + 8].copy_from_slice(&start.to_le_bytes());
            buf[s.end_at..s.end_at + 8].copy_from_slice(&end.to_le_bytes());
        }
        buf.freeze()
    }
}

/// Writes `value` as 16 lowercase hex digits into `dst` (16 bytes).
fn put_hex(dst: &mut [u8], value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, d) in dst.iter_mut().take(16).enumerate() {
        *d = DIGITS[((value >> (60 - 4 * i)) & 0xf) as usize];
    }
}

fn response_id_sentinel(template: usize, span: usize) -> String {
    format!(
        "{:016x}{:016x}",
        sentinel(5, template, span),
        sentinel(6, template, span)
    )
}

/// Sentinels are unlikely byte patterns; [`find_unique`] proves each occurs once.
fn sentinel(kind: u64, template: usize, span: usize) -> u64 {
    0xB7E5_0000_0000_0000 | (kind << 40) | ((template as u64) << 24) | span as u64
}

fn find_unique(haystack: &[u8], needle: &[u8]) -> anyhow::Result<usize> {
    let mut hits = haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i);
    let first = hits
        .next()
        .context("a sentinel is missing from the encoded request")?;
    if hits.next().is_some() {
        bail!("a sentinel occurs twice in the encoded request");
    }
    Ok(first)
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string(key: &str, value: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(value.into()))
}

fn int(key: &str, value: i64) -> KeyValue {
    kv(key, Value::IntValue(value))
}

/// Deterministic pseudo-random numbers for template contents.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

impl RequestTemplate {
    fn build(template: usize, spans: usize) -> anyhow::Result<Self> {
        let (service, project) = SERVICES[template % SERVICES.len()];
        let mut rng = Rng(template as u64 * 1_000_003 + 17);
        let mut by_scope: Vec<ScopeSpans> = Vec::new();
        let mut order = Vec::with_capacity(spans);
        let mut timing = Vec::with_capacity(spans);
        let mut responds = Vec::with_capacity(spans);
        for i in 0..spans {
            let model = &MODELS[(i * 7 + template) % MODELS.len()];
            let failed = rng.next().is_multiple_of(50);
            let mut attributes = vec![
                string("gen_ai.operation.name", "chat"),
                string("gen_ai.provider.name", model.provider),
                string("gen_ai.request.model", model.request),
                int("gen_ai.request.max_tokens", 1024),
                kv("gen_ai.request.temperature", Value::DoubleValue(0.2)),
                string(
                    "gen_ai.conversation.id",
                    format!("conv_{:012x}", rng.next() >> 16),
                ),
                string("user.id", format!("user-{}", rng.between(1, 5000))),
                string("tollgate.project", project),
                string("server.address", model.server),
                int("server.port", 443),
            ];
            if failed {
                attributes.push(string("error.type", "rate_limit_exceeded"));
                attributes.push(int("http.response.status_code", 429));
            } else {
                let input = rng.between(200, 8000);
                let output = rng.between(20, 1200);
                attributes.extend([
                    string("gen_ai.response.model", model.response),
                    string(
                        "gen_ai.response.id",
                        format!("{}{}", model.id_prefix, response_id_sentinel(template, i)),
                    ),
                    kv(
                        "gen_ai.response.finish_reasons",
                        Value::ArrayValue(ArrayValue {
                            values: vec![AnyValue {
                                value: Some(Value::StringValue("stop".into())),
                            }],
                        }),
                    ),
                    int("gen_ai.usage.input_tokens", input as i64),
                    int("gen_ai.usage.output_tokens", output as i64),
                    int(
                        "gen_ai.usage.cache_read.input_tokens",
                        (input * rng.between(0, 80) / 100) as i64,
                    ),
                ]);
            }
            responds.push(!failed);
            let span = Span {
                trace_id: sentinel(1, template, i).to_be_bytes().repeat(2),
                span_id: sentinel(2, template, i).to_be_bytes().to_vec(),
                parent_span_id: rng.next().to_be_bytes().to_vec(),
                flags: 0x101,
                name: format!("chat {}", model.request),
                kind: SpanKind::Client as i32,
                start_time_unix_nano: sentinel(3, template, i),
                end_time_unix_nano: sentinel(4, template, i),
                attributes,
                status: Some(Status {
                    code: if failed {
                        StatusCode::Error as i32
                    } else {
                        StatusCode::Unset as i32
                    },
                    message: if failed {
                        "Error code: 429 - rate limit exceeded".into()
                    } else {
                        String::new()
                    },
                }),
                ..Default::default()
            };
            timing.push((
                (spans - i) as u64 * 50_000_000,
                rng.between(300, 6_000) * 1_000_000,
            ));
            let scope = match by_scope
                .iter()
                .position(|s| s.scope.as_ref().is_some_and(|sc| sc.name == model.scope))
            {
                Some(at) => at,
                None => {
                    by_scope.push(ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: model.scope.to_owned(),
                            version: "2.1b0".to_owned(),
                            ..Default::default()
                        }),
                        schema_url: "https://opentelemetry.io/schemas/1.37.0".to_owned(),
                        ..Default::default()
                    });
                    by_scope.len() - 1
                }
            };
            by_scope[scope].spans.push(span);
            order.push(i);
        }
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        string("service.name", service),
                        string("service.version", "1.14.2"),
                        string("deployment.environment.name", "production"),
                        string("tollgate.org", ORG),
                        string("host.name", format!("ip-10-0-{template}-17")),
                        string("telemetry.sdk.language", "python"),
                        string("telemetry.sdk.name", "opentelemetry"),
                        string("telemetry.sdk.version", "1.38.0"),
                    ],
                    ..Default::default()
                }),
                scope_spans: by_scope,
                schema_url: String::new(),
            }],
        };
        let encoded = request.encode_to_vec();
        let slots = order
            .into_iter()
            .map(|i| {
                Ok(SpanSlots {
                    span_id_at: find_unique(&encoded, &sentinel(2, template, i).to_be_bytes())?,
                    response_id_at: if responds[i] {
                        Some(find_unique(
                            &encoded,
                            response_id_sentinel(template, i).as_bytes(),
                        )?)
                    } else {
                        None
                    },
                    trace_id_at: find_unique(
                        &encoded,
                        &sentinel(1, template, i).to_be_bytes().repeat(2),
                    )?,
                    start_at: find_unique(&encoded, &sentinel(3, template, i).to_le_bytes())?,
                    end_at: find_unique(&encoded, &sentinel(4, template, i).to_le_bytes())?,
                    trace_index: (i / SPANS_PER_TRACE) as u64,
                    ends_before_nanos: timing[i].0,
                    duration_nanos: timing[i].1,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            encoded: Bytes::from(encoded),
            slots,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    const NOW: u64 = 1_760_000_000_000_000_000;

    fn spans_of(body: &Bytes) -> Vec<Span> {
        let request = ExportTraceServiceRequest::decode(body.clone()).unwrap();
        request
            .resource_spans
            .into_iter()
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .collect()
    }

    #[test]
    fn restamped_requests_stay_valid_and_ids_never_repeat() {
        let pool = RequestPool::new(100).unwrap();
        let mut span_ids = HashSet::new();
        let mut pairs = HashSet::new();
        let mut response_ids = HashSet::new();
        let mut failed = 0;
        for seq in 0..200u64 {
            let spans = spans_of(&pool.render(seq, NOW));
            assert_eq!(spans.len(), 100);
            let mut traces: HashMap<Vec<u8>, usize> = HashMap::new();
            for s in &spans {
                assert_eq!(s.span_id.len(), 8);
                assert_eq!(s.trace_id.len(), 16);
                assert_ne!(s.span_id, vec![0; 8]);
                assert!(span_ids.insert(s.span_id.clone()), "span id repeated");
                assert!(pairs.insert((s.trace_id.clone(), s.span_id.clone())));
                *traces.entry(s.trace_id.clone()).or_default() += 1;
                let response_id = s.attributes.iter().find_map(|kv| {
                    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(Value::StringValue(id)) if kv.key == "gen_ai.response.id" => {
                            Some(id.clone())
                        }
                        _ => None,
                    }
                });
                match response_id {
                    Some(id) => {
                        let hex = id.rsplit(['-', '_']).next().unwrap();
                        assert_eq!(hex.len(), 32, "{id}");
                        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
                        assert!(response_ids.insert(id), "response id repeated");
                    }
                    None => failed += 1,
                }
                assert!(s.start_time_unix_nano < s.end_time_unix_nano);
                assert!(s.end_time_unix_nano < NOW);
                assert!(NOW - s.start_time_unix_nano < 20_000_000_000);
            }
            // Ten traces of ten model calls each.
            assert_eq!(traces.len(), 10);
            assert!(traces.values().all(|&n| n == 10));
        }
        assert_eq!(span_ids.len(), 20_000);
        // About 2 % of calls fail (rate limited) and carry no response id.
        assert!((100..800).contains(&failed), "{failed} failed calls");
        assert_eq!(response_ids.len() + failed, 20_000);
    }

    #[test]
    fn only_ids_and_times_change_between_sends() {
        let pool = RequestPool::new(100).unwrap();
        // seq 1 and seq 5 use the same template (4 services).
        let a = spans_of(&pool.render(1, NOW));
        let b = spans_of(&pool.render(5, NOW + 1_000));
        let mut trace_ids = HashSet::new();
        for (x, y) in a.iter().zip(&b) {
            assert_ne!(x.span_id, y.span_id);
            assert_ne!(x.trace_id, y.trace_id);
            let ids = |s: &Span| {
                s.attributes
                    .iter()
                    .filter(|kv| kv.key == "gen_ai.response.id")
                    .cloned()
                    .collect::<Vec<_>>()
            };
            if !ids(x).is_empty() {
                assert_ne!(ids(x), ids(y));
            }
            trace_ids.insert(x.trace_id.clone());
            assert_eq!(y.start_time_unix_nano - x.start_time_unix_nano, 1_000);
            let strip = |s: &Span| Span {
                span_id: Vec::new(),
                trace_id: Vec::new(),
                start_time_unix_nano: 0,
                end_time_unix_nano: 0,
                attributes: s
                    .attributes
                    .iter()
                    .filter(|kv| kv.key != "gen_ai.response.id")
                    .cloned()
                    .collect(),
                ..s.clone()
            };
            assert_eq!(strip(x), strip(y));
        }
        assert_eq!(trace_ids.len(), 10);
        let first = &a[0];
        let attr = |k: &str| {
            first
                .attributes
                .iter()
                .find(|kv| kv.key == k)
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(
            attr("gen_ai.operation.name"),
            Some(Value::StringValue("chat".into()))
        );
        assert!(attr("gen_ai.request.model").is_some());
        assert!(pool.mean_request_bytes() > 100 * 300);
    }

    #[test]
    fn mix64_is_injective_and_non_zero_on_a_range() {
        let ids: HashSet<u64> = (1..100_000).map(mix64).collect();
        assert_eq!(ids.len(), 99_999);
        assert!(!ids.contains(&0));
        assert_eq!(mix64(0), 0);
    }

    #[test]
    fn sentinel_search_rejects_missing_and_repeated_patterns() {
        assert_eq!(find_unique(b"abcdef", b"cd").unwrap(), 2);
        assert!(find_unique(b"abcdef", b"xy").is_err());
        assert!(find_unique(b"abcabc", b"bc").is_err());
        assert!(RequestPool::new(0).is_err());
        let mut hex = [0u8; 16];
        put_hex(&mut hex, 0x0123_4567_89ab_cdef);
        assert_eq!(&hex, b"0123456789abcdef");
    }
}
