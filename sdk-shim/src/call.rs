//! Recording one model call as a GenAI-convention span.

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{Span, SpanKind, Status, Tracer};
use opentelemetry::{KeyValue, Value};

use crate::attributes::names;

/// Who a call is charged to: Tollgate's scope attributes.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub org: Option<String>,
    pub project: Option<String>,
    pub user: Option<String>,
    pub session: Option<String>,
    pub route: Option<String>,
    pub environment: Option<String>,
    /// Custom labels, written as `tollgate.label.<key>`.
    pub labels: Vec<(String, String)>,
}

/// Metadata of one finished model call. No content fields exist on purpose.
#[derive(Debug, Clone)]
pub struct ModelCall {
    /// GenAI provider name, e.g. `openai`, `anthropic`, `gcp.gemini`.
    pub provider: String,
    /// GenAI operation, e.g. `chat`, `embeddings`.
    pub operation: String,
    pub request_model: String,
    pub response_model: Option<String>,
    pub response_id: Option<String>,
    pub max_tokens: Option<u64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_tokens: Option<u64>,
    pub cache_write_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    pub finish_reason: Option<String>,
    /// `error.type` when the call failed (e.g. `rate_limit_exceeded`, `500`).
    pub error_type: Option<String>,
    pub http_status: Option<u16>,
    pub stream: bool,
    pub time_to_first_token: Option<Duration>,
    pub conversation_id: Option<String>,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub server_address: Option<String>,
    pub start: SystemTime,
    pub end: SystemTime,
}

impl ModelCall {
    /// A call with the required fields; everything else empty.
    pub fn new(
        provider: impl Into<String>,
        operation: impl Into<String>,
        model: impl Into<String>,
    ) -> Self {
        let now = SystemTime::now();
        Self {
            provider: provider.into(),
            operation: operation.into(),
            request_model: model.into(),
            response_model: None,
            response_id: None,
            max_tokens: None,
            input_tokens: None,
            output_tokens: None,
            cache_read_tokens: None,
            cache_write_tokens: None,
            reasoning_tokens: None,
            finish_reason: None,
            error_type: None,
            http_status: None,
            stream: false,
            time_to_first_token: None,
            conversation_id: None,
            agent_id: None,
            agent_name: None,
            server_address: None,
            start: now,
            end: now,
        }
    }
}

fn push_u64(attrs: &mut Vec<KeyValue>, key: &'static str, v: Option<u64>) {
    if let Some(v) = v {
        attrs.push(KeyValue::new(key, i64::try_from(v).unwrap_or(i64::MAX)));
    }
}

fn push_str(attrs: &mut Vec<KeyValue>, key: &'static str, v: &Option<String>) {
    if let Some(v) = v {
        attrs.push(KeyValue::new(key, v.clone()));
    }
}

/// The span attributes for `call` within `scope`, in GenAI-convention names.
pub fn call_attributes(call: &ModelCall, scope: &Scope) -> Vec<KeyValue> {
    let mut a = Vec::with_capacity(24);
    a.push(KeyValue::new(
        names::GEN_AI_PROVIDER_NAME,
        call.provider.clone(),
    ));
    a.push(KeyValue::new(
        names::GEN_AI_OPERATION_NAME,
        call.operation.clone(),
    ));
    a.push(KeyValue::new(
        names::GEN_AI_REQUEST_MODEL,
        call.request_model.clone(),
    ));
    push_str(&mut a, names::GEN_AI_RESPONSE_MODEL, &call.response_model);
    push_str(&mut a, names::GEN_AI_RESPONSE_ID, &call.response_id);
    push_u64(&mut a, names::GEN_AI_REQUEST_MAX_TOKENS, call.max_tokens);
    push_u64(&mut a, names::GEN_AI_USAGE_INPUT_TOKENS, call.input_tokens);
    push_u64(
        &mut a,
        names::GEN_AI_USAGE_OUTPUT_TOKENS,
        call.output_tokens,
    );
    push_u64(
        &mut a,
        names::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
        call.cache_read_tokens,
    );
    push_u64(
        &mut a,
        names::GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
        call.cache_write_tokens,
    );
    push_u64(
        &mut a,
        names::GEN_AI_USAGE_REASONING_TOKENS,
        call.reasoning_tokens,
    );
    if let Some(reason) = &call.finish_reason {
        a.push(KeyValue::new(
            names::GEN_AI_RESPONSE_FINISH_REASONS,
            Value::Array(vec![opentelemetry::StringValue::from(reason.clone())].into()),
        ));
    }
    push_str(&mut a, names::ERROR_TYPE, &call.error_type);
    if let Some(s) = call.http_status {
        a.push(KeyValue::new(
            names::HTTP_RESPONSE_STATUS_CODE,
            i64::from(s),
        ));
    }
    if call.stream {
        a.push(KeyValue::new(names::TOLLGATE_STREAM, true));
    }
    if let Some(t) = call.time_to_first_token {
        a.push(KeyValue::new(
            names::TOLLGATE_TTFT_MS,
            t.as_secs_f64() * 1000.0,
        ));
    }
    push_str(&mut a, names::GEN_AI_CONVERSATION_ID, &call.conversation_id);
    push_str(&mut a, names::GEN_AI_AGENT_ID, &call.agent_id);
    push_str(&mut a, names::GEN_AI_AGENT_NAME, &call.agent_name);
    push_str(&mut a, names::SERVER_ADDRESS, &call.server_address);

    push_str(&mut a, names::TOLLGATE_ORG, &scope.org);
    push_str(&mut a, names::TOLLGATE_PROJECT, &scope.project);
    if let Some(user) = &scope.user {
        a.push(KeyValue::new(names::USER_ID, user.clone()));
    }
    push_str(&mut a, names::TOLLGATE_SESSION, &scope.session);
    push_str(&mut a, names::TOLLGATE_ROUTE, &scope.route);
    push_str(&mut a, names::TOLLGATE_ENVIRONMENT, &scope.environment);
    for (k, v) in &scope.labels {
        a.push(KeyValue::new(
            format!("{}{k}", names::TOLLGATE_LABEL_PREFIX),
            v.clone(),
        ));
    }
    a
}

/// Records `call` as a finished client span named `"{operation} {model}"`.
pub fn record_model_call<T: Tracer>(tracer: &T, call: &ModelCall, scope: &Scope) {
    let mut span = tracer
        .span_builder(format!("{} {}", call.operation, call.request_model))
        .with_kind(SpanKind::Client)
        .with_start_time(call.start)
        .with_attributes(call_attributes(call, scope))
        .start(tracer);
    if let Some(e) = &call.error_type {
        span.set_status(Status::error(e.clone()));
    }
    span.end_with_timestamp(call.end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    #[test]
    fn records_genai_attributes_and_scope() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = provider.tracer("test");
        let mut call = ModelCall::new("openai", "chat", "gpt-4o-mini");
        call.input_tokens = Some(120);
        call.output_tokens = Some(40);
        call.cache_read_tokens = Some(100);
        call.error_type = Some("rate_limit_exceeded".into());
        let scope = Scope {
            project: Some("search".into()),
            user: Some("u-1".into()),
            labels: vec![("team".into(), "core".into())],
            ..Default::default()
        };
        record_model_call(&tracer, &call, &scope);
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert_eq!(span.name, "chat gpt-4o-mini");
        let get = |k: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(get("gen_ai.provider.name").as_deref(), Some("openai"));
        assert_eq!(get("gen_ai.usage.input_tokens").as_deref(), Some("120"));
        assert_eq!(
            get("gen_ai.usage.cache_read.input_tokens").as_deref(),
            Some("100")
        );
        assert_eq!(get("tollgate.project").as_deref(), Some("search"));
        assert_eq!(get("user.id").as_deref(), Some("u-1"));
        assert_eq!(get("tollgate.label.team").as_deref(), Some("core"));
        assert_eq!(get("error.type").as_deref(), Some("rate_limit_exceeded"));
        assert!(matches!(
            span.status,
            opentelemetry::trace::Status::Error { .. }
        ));
    }
}
