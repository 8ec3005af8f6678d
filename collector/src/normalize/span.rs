//! One OTLP export request -> priced call records.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use tollgate_rules::pricing::{CallCost, PriceTable, TokenUsage};
use tollgate_rules::{CallRecord, CallStatus, Mode};

use super::semconv::{
    FIELD_COUNT, Field, LABEL_PREFIX, NonCallKind, OperationKind, field_of, normalize_operation,
    normalize_provider,
};
use super::values::{self, BadNumber};
use crate::config::LabelPolicy;

/// What the normaliser needs from the configuration.
#[derive(Debug, Clone)]
pub struct NormalizerConfig {
    /// Token counts above this are refused as absurd.
    pub max_tokens_per_call: u64,
    /// A reported cost above this many times the table's price is not used.
    pub max_cost_ratio: f64,
    /// A reported cost above this (US dollars) is never used.
    pub max_cost_per_call_usd: f64,
    pub labels: LabelPolicy,
}

impl NormalizerConfig {
    /// The defaults of `[receivers.otlp]`, with any label allowed.
    pub fn new(max_tokens_per_call: u64, labels: LabelPolicy) -> Self {
        Self {
            max_tokens_per_call,
            max_cost_ratio: 10.0,
            max_cost_per_call_usd: 100.0,
            labels,
        }
    }
}

/// Turns export requests into priced call records. Cheap to share.
#[derive(Debug, Clone)]
pub struct Normalizer {
    config: Arc<NormalizerConfig>,
    prices: Arc<PriceTable>,
    label_values: Arc<LabelValues>,
}

/// Most distinct custom label keys tracked; a label under a key first seen
/// past it is dropped (counted).
const MAX_LABEL_KEYS: usize = 1_000;

/// The distinct values seen per custom label key, up to
/// `max_values_per_label` (as Vector's `tag_cardinality_limit` does in its
/// exact mode): a value seen before is always kept, a new value past the
/// limit is dropped from the row and counted. Memory: at most
/// `MAX_LABEL_KEYS` x `max_values_per_label` hashes.
#[derive(Debug, Default)]
struct LabelValues {
    seen: std::sync::Mutex<std::collections::HashMap<String, std::collections::HashSet<u64>>>,
    dropped: std::sync::atomic::AtomicU64,
}

impl LabelValues {
    fn admit(&self, key: &str, value: &str, max_values: usize) -> bool {
        let hash = twox_hash::XxHash3_64::oneshot(value.as_bytes());
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let keys = seen.len();
        let admitted = match seen.get_mut(key) {
            Some(values) => {
                values.contains(&hash) || (values.len() < max_values && values.insert(hash))
            }
            None if keys < MAX_LABEL_KEYS => {
                seen.insert(key.to_owned(), std::iter::once(hash).collect());
                true
            }
            None => false,
        };
        if !admitted {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        admitted
    }
}

/// The result of normalising one export request.
#[derive(Debug, Default)]
pub struct NormalizeOutcome {
    pub records: Vec<CallRecord>,
    /// Spans that are not model calls (agent, tool, HTTP spans...): accepted, not stored.
    pub skipped_spans: u64,
    /// The same, by kind ([`NonCallKind::ALL`] order).
    pub non_calls: [u64; NonCallKind::ALL.len()],
    /// Calls whose reported cost was not used (not plausible): priced from the table.
    pub costs_replaced: u64,
    /// What the sender is told when nothing was rejected but something was
    /// changed (a reported cost not used).
    pub warning: Option<String>,
    /// Model-call spans refused (negative or absurd values); reported as OTLP partial success.
    pub rejected_spans: u64,
    /// Why the first rejected span was refused.
    pub first_error: Option<String>,
}

/// Attribute slots for one span: for each field, the best-ranked attribute seen.
type Slots<'a> = [Option<(u8, &'a KeyValue)>; FIELD_COUNT];

/// Whether an attribute of `rank` takes a slot holding one of `held`'s rank.
/// `<=`: a span attribute overrides a resource attribute of the same rank,
/// and of two spellings on one span the later one wins.
fn takes<T>(rank: u8, held: Option<(u8, T)>) -> bool {
    held.is_none_or(|(r, _)| rank <= r)
}

/// One pass over a list of attributes: for each field the best-ranked
/// attribute (its rank and index), and the indices of label attributes.
struct Ranked {
    best: [Option<(u8, usize)>; FIELD_COUNT],
    labels: Vec<usize>,
}

impl Ranked {
    fn of(attrs: &[KeyValue]) -> Self {
        let mut ranked = Ranked {
            best: [None; FIELD_COUNT],
            labels: Vec::new(),
        };
        for (i, kv) in attrs.iter().enumerate() {
            if let Some((field, rank)) = field_of(&kv.key) {
                let slot = &mut ranked.best[field as usize];
                if takes(rank, *slot) {
                    *slot = Some((rank, i));
                }
            } else if kv.key.starts_with(LABEL_PREFIX) {
                ranked.labels.push(i);
            }
        }
        ranked
    }

    /// Lays these attributes (of `attrs`) over `slots` and `labels`.
    fn fill<'a>(
        &self,
        slots: &mut Slots<'a>,
        labels: &mut Vec<&'a KeyValue>,
        attrs: &'a [KeyValue],
    ) {
        for (slot, best) in slots.iter_mut().zip(&self.best) {
            if let Some((rank, i)) = *best
                && takes(rank, *slot)
            {
                *slot = Some((rank, &attrs[i]));
            }
        }
        labels.extend(self.labels.iter().map(|&i| &attrs[i]));
    }

    /// Takes out of `attrs`, for each field of [`KEPT_AS_SENT`] one of them
    /// fills (over `resource`, as [`Ranked::fill`] decides), its string when
    /// the record would store it unchanged.
    fn take_kept(&self, resource: &Slots<'_>, attrs: &mut [KeyValue]) -> Moved {
        let mut moved: Moved = Default::default();
        for field in KEPT_AS_SENT {
            let f = field as usize;
            let Some((rank, i)) = self.best[f] else {
                continue;
            };
            if !takes(rank, resource[f]) {
                continue;
            }
            if let Some(s) = attrs[i].value.as_mut().and_then(values::stored_as_is) {
                moved[f] = Some(std::mem::take(s));
            }
        }
        moved
    }
}

/// Fields the record keeps exactly as sent (no renaming or combining).
const KEPT_AS_SENT: [Field; 13] = [
    Field::ResponseId,
    Field::Org,
    Field::Project,
    Field::App,
    Field::Environment,
    Field::Route,
    Field::User,
    Field::Session,
    Field::AgentId,
    Field::AgentName,
    Field::RequestModel,
    Field::ResponseModel,
    Field::FinishReason,
];

/// Strings moved out of a span's own attributes for the fields of
/// [`KEPT_AS_SENT`] instead of copied: the span is dropped once read, so a
/// copy would be one more allocation, copy and free per field and call.
type Moved = [Option<String>; FIELD_COUNT];

struct Rejection(String);

/// What one span is.
enum Classified {
    Call(Box<CallRecord>, Option<String>),
    NotACall(NonCallKind),
}

impl Normalizer {
    /// Labels dropped because their key had `max_values_per_label` values
    /// already, since the last call.
    pub fn take_labels_dropped(&self) -> u64 {
        self.label_values
            .dropped
            .swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    pub fn new(config: NormalizerConfig, prices: Arc<PriceTable>) -> Self {
        Self {
            config: Arc::new(config),
            prices,
            label_values: Arc::default(),
        }
    }

    /// The price table rows are priced with.
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Normalises every span of `request`, consuming it (strings the
    /// records keep are moved out of the spans).
    pub fn normalize(&self, request: ExportTraceServiceRequest) -> NormalizeOutcome {
        let mut out = NormalizeOutcome::default();
        for rs in request.resource_spans {
            let mut resource_slots: Slots<'_> = [None; FIELD_COUNT];
            let mut resource_labels = Vec::new();
            if let Some(resource) = &rs.resource {
                Ranked::of(&resource.attributes).fill(
                    &mut resource_slots,
                    &mut resource_labels,
                    &resource.attributes,
                );
            }
            for ss in rs.scope_spans {
                let instrumentation = ss
                    .scope
                    .as_ref()
                    .filter(|s| !s.name.is_empty())
                    .map_or(0, |s| twox_hash::XxHash3_64::oneshot(s.name.as_bytes()));
                for mut span in ss.spans {
                    let ranked = Ranked::of(&span.attributes);
                    let mut moved = ranked.take_kept(&resource_slots, &mut span.attributes);
                    let mut slots = resource_slots;
                    // The span's own labels (no allocation when it has none);
                    // the resource's are read in place, not copied per span.
                    let mut labels = Vec::new();
                    ranked.fill(&mut slots, &mut labels, &span.attributes);
                    match self.record(&span, &slots, &mut moved, [&resource_labels, &labels]) {
                        Ok(Classified::Call(mut record, warning)) => {
                            record.instrumentation = instrumentation;
                            if let Some(w) = warning {
                                out.costs_replaced += 1;
                                out.warning.get_or_insert(w);
                            }
                            out.records.push(*record);
                        }
                        Ok(Classified::NotACall(kind)) => {
                            out.skipped_spans += 1;
                            out.non_calls[kind as usize] += 1;
                        }
                        Err(Rejection(why)) => {
                            out.rejected_spans += 1;
                            out.first_error.get_or_insert(why);
                        }
                    }
                }
            }
        }
        out
    }

    fn record(
        &self,
        span: &Span,
        slots: &Slots<'_>,
        moved: &mut Moved,
        labels: [&[&KeyValue]; 2],
    ) -> Result<Classified, Rejection> {
        let get = |f: Field| slots[f as usize].map(|(_, kv)| kv);
        let value = |f: Field| get(f).and_then(|kv| kv.value.as_ref());
        // Borrowed, for values the record does not keep as they are.
        let text = |f: Field| value(f).and_then(values::as_str);
        let string = |f: Field| value(f).and_then(values::as_string);
        // A field of `KEPT_AS_SENT`: the string moved out of the span, else a copy.
        let mut kept = |f: Field| moved[f as usize].take().or_else(|| string(f));

        // OpenInference names the requested model only inside its JSON
        // invocation parameters; read them only when needed.
        let invocation = || -> Option<serde_json::Value> {
            let kv = get(Field::InvocationParameters)?;
            match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) if s.len() <= 64 * 1024 => serde_json::from_str(s).ok(),
                _ => None,
            }
        };
        let response_model = kept(Field::ResponseModel);
        let request_model = kept(Field::RequestModel).or_else(|| {
            invocation()?
                .get("model")?
                .as_str()
                .map(|m| values::truncate(m).to_owned())
        });
        let has_model = request_model.is_some() || response_model.is_some();
        let mut streamed_operation = false;
        let operation = match text(Field::Operation) {
            Some(raw) => match normalize_operation(&raw) {
                (_, OperationKind::NotModelCall(kind)) => return Ok(Classified::NotACall(kind)),
                (_, OperationKind::Unknown) if !has_model => {
                    return Ok(Classified::NotACall(NonCallKind::Other));
                }
                (_, OperationKind::Unknown) => Some(raw.into_owned()),
                (name, OperationKind::ModelCall { streamed }) => {
                    streamed_operation = streamed;
                    Some(name.to_owned())
                }
            },
            None if has_model => None,
            None => return Ok(Classified::NotACall(NonCallKind::Other)),
        };

        let span_hex = hex::encode(&span.span_id);
        let max = self.config.max_tokens_per_call;
        let count = |f: Field| -> Result<Option<u64>, Rejection> {
            let Some(kv) = get(f) else { return Ok(None) };
            let Some(v) = kv.value.as_ref() else {
                return Ok(None);
            };
            match values::as_count(v) {
                Ok(n) if n > max => Err(Rejection(format!(
                    "span {span_hex}: `{}` = {n} is above the limit of {max} tokens per call",
                    kv.key
                ))),
                Ok(n) => Ok(Some(n)),
                Err(BadNumber::Negative) => Err(Rejection(format!(
                    "span {span_hex}: `{}` is negative",
                    kv.key
                ))),
                Err(BadNumber::NotANumber) => Err(Rejection(format!(
                    "span {span_hex}: `{}` is not a number",
                    kv.key
                ))),
            }
        };
        let input = count(Field::InputTokens)?;
        let output = count(Field::OutputTokens)?;
        let total = count(Field::TotalTokens)?;
        let cache_read = count(Field::CacheReadTokens)?.unwrap_or(0);
        let cache_write = count(Field::CacheWriteTokens)?.unwrap_or(0);
        let reasoning = count(Field::ReasoningTokens)?.unwrap_or(0);
        let has_usage = input.is_some() || output.is_some() || total.is_some();

        let mut input_tokens = input.unwrap_or(0);
        // GenAI conventions count cached tokens inside the input; Anthropic's
        // raw usage (and instrumentations copying it) does not. An input
        // smaller than its own cached parts can only mean the latter.
        let cached = cache_read.saturating_add(cache_write);
        if input_tokens < cached {
            input_tokens = input_tokens.saturating_add(cached);
        }
        let output_tokens = match (output, total) {
            (Some(o), _) => o,
            (None, Some(t)) => t.saturating_sub(input_tokens),
            (None, None) => 0,
        };
        if input_tokens > max || output_tokens > max {
            return Err(Rejection(format!(
                "span {span_hex}: {} tokens is above the limit of {max} tokens per call",
                input_tokens.max(output_tokens)
            )));
        }

        let number = |f: Field| -> Result<Option<f64>, Rejection> {
            let Some(kv) = get(f) else { return Ok(None) };
            let Some(v) = kv.value.as_ref() else {
                return Ok(None);
            };
            values::as_non_negative_f64(v).map(Some).map_err(|_| {
                Rejection(format!(
                    "span {span_hex}: `{}` must be a non-negative number",
                    kv.key
                ))
            })
        };
        // A reported cost in another currency is not a cost in US dollars;
        // a negative, infinite or unreadable one is not used (the call is
        // kept and priced from the table; see `plausible_cost`).
        let provider_cost = match text(Field::CostCurrency) {
            Some(c) if !c.eq_ignore_ascii_case("usd") => None,
            _ => get(Field::CostUsd)
                .and_then(|kv| kv.value.as_ref())
                .map(|v| values::as_non_negative_f64(v).unwrap_or(f64::NAN)),
        };
        let ttft_ms = match number(Field::TtftMs)? {
            Some(ms) => Some(ms),
            None => number(Field::TtftSeconds)?.map(|s| s * 1000.0),
        };

        let provider = text(Field::Provider).map(|p| normalize_provider(&p));
        let span_failed = span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32);
        let http_status = get(Field::HttpStatus)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| values::as_count(v).ok())
            .and_then(|n| u16::try_from(n).ok());
        let mut error_type = string(Field::ErrorType);
        if error_type.is_none() && span_failed {
            // The recorded exception's type, else the HTTP status, else
            // OpenTelemetry's fallback value for an unknown error class.
            error_type = exception_type(span)
                .or_else(|| http_status.map(|s| s.to_string()))
                .or_else(|| Some("_OTHER".to_owned()));
        }
        let status = if error_type.is_some() {
            CallStatus::Error
        } else {
            CallStatus::Ok
        };

        let call = CallCost {
            provider: provider.as_deref(),
            response_model: response_model.as_deref(),
            request_model: request_model.as_deref(),
            usage: TokenUsage {
                input: input_tokens,
                output: output_tokens,
                cache_read,
                cache_write,
            },
            has_usage,
            failed: status == CallStatus::Error,
        };
        let priced = self.prices.call_cost(&call);
        let mut warning = None;
        let provider_cost = provider_cost.filter(|&c| {
            let ok = self.plausible_cost(c, priced.filter(|_| has_usage));
            if !ok {
                warning = Some(format!(
                    "span {span_hex}: reported cost {c} USD is not plausible (above {} USD per call, \
                     or {}x the price table's {}); priced from the table instead",
                    self.config.max_cost_per_call_usd,
                    self.config.max_cost_ratio,
                    priced.map_or_else(|| "(unknown)".to_owned(), |p| format!("{p} USD")),
                ));
            }
            ok
        });
        let (cost_usd, cost_source) = PriceTable::row_cost(&call, priced, provider_cost);

        let start = i64::try_from(span.start_time_unix_nano).unwrap_or(i64::MAX);
        let end = i64::try_from(span.end_time_unix_nano).unwrap_or(i64::MAX);
        let upstream = match (text(Field::ServerAddress), text(Field::ServerPort)) {
            (Some(host), Some(port)) if !host.contains(':') => Some(format!("{host}:{port}")),
            (host, _) => host.map(Cow::into_owned),
        };

        Ok(Classified::Call(
            Box::new(CallRecord {
                start_unix_nanos: start,
                duration_nanos: end.saturating_sub(start).max(0),
                ttft_nanos: ttft_ms.map(|ms| (ms * 1_000_000.0) as i64),
                trace_id: hex::encode(&span.trace_id),
                span_id: span_hex,
                parent_span_id: hex::encode(&span.parent_span_id),
                instrumentation: 0,
                settled: false,
                request_id: kept(Field::ResponseId),
                org: kept(Field::Org),
                project: kept(Field::Project),
                app: kept(Field::App),
                environment: kept(Field::Environment),
                route: kept(Field::Route),
                user: kept(Field::User),
                session: kept(Field::Session),
                agent_id: kept(Field::AgentId),
                agent_name: kept(Field::AgentName),
                provider,
                operation,
                request_model,
                response_model,
                input_tokens,
                output_tokens,
                cache_read_tokens: cache_read,
                cache_write_tokens: cache_write,
                reasoning_tokens: reasoning,
                cost_usd,
                cost_source,
                price_version: Some(self.prices.version().to_owned()),
                status,
                error_type,
                http_status,
                stream: get(Field::Stream)
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(values::as_bool)
                    .or_else(|| invocation()?.get("stream")?.as_bool())
                    .unwrap_or(false)
                    || streamed_operation,
                finish_reason: kept(Field::FinishReason),
                mode: Mode::Observe,
                decision: None,
                rules_fired: Vec::new(),
                attempt: 0,
                upstream,
                labels: self.labels(labels),
            }),
            warning,
        ))
    }

    /// Whether a reported cost can be used: finite (checked when read), at
    /// most the per-call ceiling, and at most `max_cost_ratio` times the
    /// table's price for the call when the table knows the model (a small
    /// absolute slack lets tiny calls round up).
    fn plausible_cost(&self, cost: f64, table: Option<f64>) -> bool {
        let c = &self.config;
        cost.is_finite()
            && cost <= c.max_cost_per_call_usd
            && table.is_none_or(|t| cost <= t * c.max_cost_ratio + 0.001)
    }

    /// The custom labels of the resource, then of the span (a span's label
    /// wins over the resource's of the same key).
    fn labels(&self, attrs: [&[&KeyValue]; 2]) -> BTreeMap<String, String> {
        let policy = &self.config.labels;
        let mut labels = BTreeMap::new();
        if attrs[0].is_empty() && attrs[1].is_empty() {
            return labels;
        }
        for kv in attrs.into_iter().flatten() {
            let key = &kv.key[LABEL_PREFIX.len()..];
            if key.is_empty()
                || (!policy.allowed.is_empty() && !policy.allowed.iter().any(|a| a == key))
            {
                continue;
            }
            let Some(value) = kv.value.as_ref().and_then(values::as_string) else {
                continue;
            };
            if labels.len() >= policy.max_labels && !labels.contains_key(key) {
                continue;
            }
            let key = values::truncate(key);
            if !self
                .label_values
                .admit(key, &value, policy.max_values_per_label)
            {
                continue;
            }
            labels.insert(key.to_owned(), value);
        }
        labels
    }
}

/// `exception.type` of the span's first `exception` event (OpenTelemetry's
/// way of recording errors, used by OpenInference among others).
fn exception_type(span: &Span) -> Option<String> {
    span.events
        .iter()
        .filter(|e| e.name == "exception")
        .flat_map(|e| &e.attributes)
        .find(|kv| kv.key == "exception.type")
        .and_then(|kv| kv.value.as_ref())
        .and_then(values::as_string)
}

#[cfg(test)]
mod tests;
