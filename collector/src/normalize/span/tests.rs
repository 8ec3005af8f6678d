//! Unit tests of span normalisation, one per dialect and per bad input.

use super::*;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};
use tollgate_rules::CostSource;
use tollgate_rules::pricing::PriceOverride;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}
fn s(key: &str, v: &str) -> KeyValue {
    kv(key, Value::StringValue(v.to_owned()))
}
fn i(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}

fn span(attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![0xab; 16],
        span_id: vec![0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08],
        name: "chat test-model".into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_250_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn normalizer() -> Normalizer {
    let prices = PriceTable::builtin()
        .unwrap()
        .with_overrides(&[PriceOverride {
            provider: None,
            model: "test-model".into(),
            input_per_mtok: 2.0,
            output_per_mtok: 8.0,
            cache_read_per_mtok: Some(0.5),
            cache_write_per_mtok: Some(2.5),
        }])
        .unwrap();
    Normalizer::new(
        NormalizerConfig::new(
            1_000_000,
            LabelPolicy {
                allowed: Vec::new(),
                max_labels: 2,
                max_values_per_label: 3,
            },
        ),
        Arc::new(prices),
    )
}

fn one(resource: Vec<KeyValue>, attrs: Vec<KeyValue>) -> CallRecord {
    let out = normalizer().normalize(request(resource, vec![span(attrs)]));
    assert_eq!(out.rejected_spans, 0, "{:?}", out.first_error);
    assert_eq!(out.records.len(), 1);
    out.records.into_iter().next().unwrap()
}

#[test]
fn current_genai_conventions() {
    let r = one(
        vec![
            s("service.name", "support-bot"),
            s("deployment.environment.name", "prod"),
        ],
        vec![
            s("gen_ai.provider.name", "openai"),
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.request.model", "test-model"),
            s("gen_ai.response.model", "test-model"),
            s("gen_ai.response.id", "chatcmpl-1"),
            i("gen_ai.usage.input_tokens", 1000),
            i("gen_ai.usage.output_tokens", 500),
            i("gen_ai.usage.cache_read.input_tokens", 400),
            s("gen_ai.conversation.id", "conv-9"),
            s("gen_ai.agent.id", "agent-1"),
            s("gen_ai.agent.name", "triage"),
            s("user.id", "alice"),
            s("tollgate.project", "search"),
            s("tollgate.org", "acme"),
            s("tollgate.route", "support-chat"),
            kv(
                "gen_ai.response.finish_reasons",
                Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                    values: vec![AnyValue {
                        value: Some(Value::StringValue("stop".into())),
                    }],
                }),
            ),
        ],
    );
    assert_eq!(r.provider.as_deref(), Some("openai"));
    assert_eq!(r.operation.as_deref(), Some("chat"));
    assert_eq!(r.app.as_deref(), Some("support-bot"));
    assert_eq!(r.environment.as_deref(), Some("prod"));
    assert_eq!(r.session.as_deref(), Some("conv-9"));
    assert_eq!(r.user.as_deref(), Some("alice"));
    assert_eq!(r.org.as_deref(), Some("acme"));
    assert_eq!(r.project.as_deref(), Some("search"));
    assert_eq!(r.route.as_deref(), Some("support-chat"));
    assert_eq!(r.agent_id.as_deref(), Some("agent-1"));
    assert_eq!(r.agent_name.as_deref(), Some("triage"));
    assert_eq!(r.request_id.as_deref(), Some("chatcmpl-1"));
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        (r.input_tokens, r.output_tokens, r.cache_read_tokens),
        (1000, 500, 400)
    );
    assert_eq!(r.trace_id, "ab".repeat(16));
    assert_eq!(r.span_id, "0102030405060708");
    assert_eq!(r.duration_nanos, 250_000_000);
    // 600 plain input x $2 + 400 cached x $0.5 + 500 output x $8, per million.
    assert_eq!(r.cost_source, CostSource::PriceTable);
    let cost = r.cost_usd.unwrap();
    assert!((cost - 0.0054).abs() < 1e-12, "{cost}");
    assert!(r.price_version.as_deref().is_some_and(|v| !v.is_empty()));
    assert_eq!(r.status, CallStatus::Ok);
}

#[test]
fn older_genai_conventions() {
    let r = one(
        vec![],
        vec![
            s("gen_ai.system", "az.ai.openai"),
            s("gen_ai.request.model", "test-model"),
            i("gen_ai.usage.prompt_tokens", 10),
            i("gen_ai.usage.completion_tokens", 20),
        ],
    );
    assert_eq!(r.provider.as_deref(), Some("azure.ai.openai"));
    assert_eq!((r.input_tokens, r.output_tokens), (10, 20));
    assert_eq!(r.operation, None);
}

#[test]
fn openllmetry_attributes() {
    let r = one(
        vec![],
        vec![
            s("gen_ai.system", "Anthropic"),
            s("llm.request.type", "completion"),
            s("gen_ai.request.model", "test-model"),
            i("llm.usage.prompt_tokens", 30),
            i("llm.usage.total_tokens", 75),
            i("gen_ai.usage.cache_read_input_tokens", 100),
            kv("llm.is_streaming", Value::BoolValue(true)),
        ],
    );
    assert_eq!(r.provider.as_deref(), Some("anthropic"));
    assert_eq!(r.operation.as_deref(), Some("text_completion"));
    // Raw Anthropic input excludes cache reads: 30 + 100.
    assert_eq!(r.input_tokens, 130);
    assert_eq!(r.cache_read_tokens, 100);
    // Output derived from the total.
    assert_eq!(r.output_tokens, 0);
    assert!(r.stream);
}

#[test]
fn openllmetry_total_gives_output() {
    let r = one(
        vec![],
        vec![
            s("gen_ai.system", "OpenAI"),
            s("gen_ai.request.model", "test-model"),
            i("llm.usage.prompt_tokens", 30),
            i("llm.usage.total_tokens", 75),
        ],
    );
    assert_eq!((r.input_tokens, r.output_tokens), (30, 45));
}

#[test]
fn openinference_attributes() {
    let r = one(
        vec![],
        vec![
            s("openinference.span.kind", "LLM"),
            s("llm.provider", "openai"),
            s("llm.system", "openai"),
            s("llm.model_name", "test-model"),
            i("llm.token_count.prompt", 12),
            i("llm.token_count.completion", 7),
            i("llm.token_count.prompt_details.cache_read", 4),
            s("session.id", "sess-1"),
            s("llm.input_messages.0.message.content", "secret prompt text"),
        ],
    );
    assert_eq!(r.operation.as_deref(), Some("chat"));
    assert_eq!(r.response_model.as_deref(), Some("test-model"));
    assert_eq!(
        (r.input_tokens, r.output_tokens, r.cache_read_tokens),
        (12, 7, 4)
    );
    assert_eq!(r.session.as_deref(), Some("sess-1"));
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        !json.contains("secret prompt text"),
        "content leaked into the row"
    );
}

#[test]
fn tollgate_attributes_win_and_labels_follow_policy() {
    let r = one(
        vec![
            s("tollgate.project", "from-resource"),
            s("tollgate.label.team", "core"),
        ],
        vec![
            s("gen_ai.request.model", "test-model"),
            s("tollgate.project", "from-span"),
            s("tollgate.session", "tg-session"),
            s("gen_ai.conversation.id", "conv"),
            s("tollgate.user", "bob"),
            s("user.id", "alice"),
            s("tollgate.environment", "staging"),
            s("tollgate.label.feature", "summaries"),
            s("tollgate.label.extra", "dropped: over max_labels"),
            kv("tollgate.cost_usd", Value::DoubleValue(0.125)),
            kv("tollgate.ttft_ms", Value::DoubleValue(42.5)),
        ],
    );
    assert_eq!(r.project.as_deref(), Some("from-span"));
    assert_eq!(r.session.as_deref(), Some("tg-session"));
    assert_eq!(r.user.as_deref(), Some("bob"));
    assert_eq!(r.environment.as_deref(), Some("staging"));
    assert_eq!(r.cost_usd, Some(0.125));
    assert_eq!(r.cost_source, CostSource::Provider);
    assert_eq!(r.ttft_nanos, Some(42_500_000));
    assert_eq!(r.labels.len(), 2);
    assert_eq!(r.labels.get("team").map(String::as_str), Some("core"));
    assert_eq!(
        r.labels.get("feature").map(String::as_str),
        Some("summaries")
    );
}

#[test]
fn non_model_spans_are_skipped() {
    let spans = vec![
        span(vec![s("http.request.method", "GET")]),
        span(vec![
            s("gen_ai.operation.name", "invoke_agent"),
            s("gen_ai.agent.name", "a"),
        ]),
        span(vec![
            s("gen_ai.operation.name", "execute_tool"),
            s("gen_ai.tool.name", "search"),
        ]),
        span(vec![s("openinference.span.kind", "CHAIN")]),
        span(vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.request.model", "test-model"),
        ]),
    ];
    let out = normalizer().normalize(request(vec![], spans));
    assert_eq!(out.skipped_spans, 4);
    assert_eq!(out.records.len(), 1);
}

#[test]
fn negative_and_absurd_counts_are_rejected_not_stored() {
    let spans = vec![
        span(vec![
            s("gen_ai.request.model", "test-model"),
            i("gen_ai.usage.input_tokens", -5),
        ]),
        span(vec![
            s("gen_ai.request.model", "test-model"),
            i("gen_ai.usage.output_tokens", 5_000_000),
        ]),
        span(vec![
            s("gen_ai.request.model", "test-model"),
            s("gen_ai.usage.input_tokens", "lots"),
        ]),
        span(vec![
            s("gen_ai.request.model", "test-model"),
            kv("tollgate.cost_usd", Value::DoubleValue(-1.0)),
        ]),
        span(vec![
            s("gen_ai.request.model", "test-model"),
            i("gen_ai.usage.input_tokens", 5),
        ]),
    ];
    let out = normalizer().normalize(request(vec![], spans));
    assert_eq!(out.rejected_spans, 3);
    // A bad reported cost does not lose the call: it is priced from the table.
    assert_eq!(out.records.len(), 2);
    assert_eq!(out.costs_replaced, 1);
    let why = out.first_error.unwrap();
    assert!(
        why.contains("gen_ai.usage.input_tokens") && why.contains("negative"),
        "{why}"
    );
}

#[test]
fn unknown_model_is_unpriced_never_zero() {
    let r = one(
        vec![],
        vec![
            s("gen_ai.request.model", "no-such-model-xyz"),
            i("gen_ai.usage.input_tokens", 100),
        ],
    );
    assert_eq!(r.cost_source, CostSource::Unpriced);
    assert_eq!(r.cost_usd, None);
}

#[test]
fn missing_usage_is_unpriced_unless_the_call_failed() {
    let r = one(vec![], vec![s("gen_ai.request.model", "test-model")]);
    assert_eq!((r.cost_usd, r.cost_source), (None, CostSource::Unpriced));

    let mut failed = span(vec![
        s("gen_ai.request.model", "test-model"),
        i("http.response.status_code", 429),
    ]);
    failed.status = Some(Status {
        code: StatusCode::Error as i32,
        message: "rate limited".into(),
    });
    let out = normalizer().normalize(request(vec![], vec![failed]));
    let r = &out.records[0];
    assert_eq!(r.status, CallStatus::Error);
    assert_eq!(r.error_type.as_deref(), Some("429"));
    assert_eq!(r.http_status, Some(429));
    assert_eq!(
        (r.cost_usd, r.cost_source),
        (Some(0.0), CostSource::PriceTable)
    );
}

#[test]
fn error_type_marks_the_call_failed() {
    let r = one(
        vec![],
        vec![
            s("gen_ai.request.model", "test-model"),
            s("error.type", "rate_limit_exceeded"),
        ],
    );
    assert_eq!(r.status, CallStatus::Error);
    assert_eq!(r.error_type.as_deref(), Some("rate_limit_exceeded"));
}

#[test]
fn empty_request_is_fine() {
    let out = normalizer().normalize(ExportTraceServiceRequest::default());
    assert!(out.records.is_empty());
    assert_eq!((out.skipped_spans, out.rejected_spans), (0, 0));
}

#[test]
fn strings_moved_out_of_a_span_follow_the_same_ranks_as_copies() {
    let finish = kv(
        "gen_ai.response.finish_reasons",
        Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
            values: vec![AnyValue {
                value: Some(Value::StringValue("stop".into())),
            }],
        }),
    );
    let r = one(
        vec![
            s("tollgate.session", "from-resource"),
            s("user.id", "resource-user"),
            s("service.name", "resource-app"),
        ],
        vec![
            s("gen_ai.request.model", "test-model"),
            s("gen_ai.operation.name", "chat"),
            // Outranked by the resource's `tollgate.session`: not taken.
            s("gen_ai.conversation.id", "from-span"),
            // Same rank as the resource's: the span's wins.
            s("user.id", "span-user"),
            // Two spellings on the span: the better-ranked one.
            s("enduser.id", "worse-user"),
            // Needs trimming: copied, trimmed.
            s("tollgate.project", "  padded  "),
            finish,
        ],
    );
    assert_eq!(r.session.as_deref(), Some("from-resource"));
    assert_eq!(r.user.as_deref(), Some("span-user"));
    assert_eq!(r.app.as_deref(), Some("resource-app"));
    assert_eq!(r.project.as_deref(), Some("padded"));
    assert_eq!(r.request_model.as_deref(), Some("test-model"));
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
}

#[test]
fn an_absurd_reported_cost_is_replaced_by_the_table_and_the_sender_told() {
    let usage = || {
        vec![
            s("gen_ai.request.model", "test-model"),
            i("gen_ai.usage.input_tokens", 1_000),
            i("gen_ai.usage.output_tokens", 100),
        ]
    };
    let table = (1_000.0 * 2.0 + 100.0 * 8.0) / 1e6;
    for cost in [1e300, f64::INFINITY, 150.0, table * 11.0] {
        let mut attrs = usage();
        attrs.push(kv("tollgate.cost_usd", Value::DoubleValue(cost)));
        let out = normalizer().normalize(request(vec![], vec![span(attrs)]));
        assert_eq!(out.rejected_spans, 0, "{cost}: the call is kept");
        assert_eq!(out.costs_replaced, 1, "{cost}");
        let r = &out.records[0];
        assert_eq!(r.cost_source, CostSource::PriceTable, "{cost}");
        assert!(
            (r.cost_usd.unwrap() - table).abs() < 1e-12,
            "{cost}: {:?}",
            r.cost_usd
        );
        let warning = out.warning.unwrap();
        assert!(warning.contains("not plausible"), "{warning}");
    }
    // A plausible one (a surcharge within the ratio) is used as reported.
    let mut attrs = usage();
    attrs.push(kv("tollgate.cost_usd", Value::DoubleValue(table * 3.0)));
    let out = normalizer().normalize(request(vec![], vec![span(attrs)]));
    assert_eq!(out.costs_replaced, 0);
    assert!(out.warning.is_none());
    assert_eq!(out.records[0].cost_source, CostSource::Provider);
    // A cost in another currency is not a cost in dollars.
    let mut attrs = usage();
    attrs.push(kv("gen_ai.usage.cost.amount", Value::DoubleValue(0.004)));
    attrs.push(s("gen_ai.usage.cost.currency", "EUR"));
    let r = one(vec![], attrs);
    assert_eq!(r.cost_source, CostSource::PriceTable);
    // An unpriced model: only the per-call ceiling applies.
    let r = one(
        vec![],
        vec![
            s("gen_ai.request.model", "no-such-model"),
            i("gen_ai.usage.input_tokens", 10),
            kv("gen_ai.usage.cost.amount", Value::DoubleValue(2.5)),
            s("gen_ai.usage.cost.currency", "USD"),
        ],
    );
    assert_eq!(
        (r.cost_usd, r.cost_source),
        (Some(2.5), CostSource::Provider)
    );
}

#[test]
fn the_parent_span_ties_the_call_to_its_run() {
    let mut sp = span(vec![s("gen_ai.request.model", "test-model")]);
    sp.parent_span_id = vec![0xaa, 0xbb, 0xcc, 0xdd, 0x00, 0x11, 0x22, 0x33];
    let out = normalizer().normalize(request(vec![], vec![sp]));
    assert_eq!(out.records[0].parent_span_id, "aabbccdd00112233");
    let root = one(vec![], vec![s("gen_ai.request.model", "test-model")]);
    assert_eq!(root.parent_span_id, "");
}

#[test]
fn runs_are_not_calls_and_are_counted_by_kind() {
    let run = |op: &str| {
        span(vec![
            s("gen_ai.operation.name", op),
            s("gen_ai.request.model", "test-model"),
            i("gen_ai.usage.input_tokens", 500),
        ])
    };
    let ai_run = span(vec![
        s("ai.operationId", "ai.generateText"),
        s("ai.model.id", "test-model"),
        i("ai.usage.promptTokens", 500),
    ]);
    let out = normalizer().normalize(request(
        vec![],
        vec![
            run("invoke_agent"),
            run("invoke_workflow"),
            run("execute_tool"),
            ai_run,
        ],
    ));
    assert!(out.records.is_empty(), "{:?}", out.records);
    assert_eq!(out.skipped_spans, 4);
    assert_eq!(out.non_calls[NonCallKind::Agent as usize], 1);
    assert_eq!(out.non_calls[NonCallKind::Workflow as usize], 2);
    assert_eq!(out.non_calls[NonCallKind::Tool as usize], 1);
}

#[test]
fn the_ai_sdk_stream_step_is_a_streamed_chat_call() {
    let r = one(
        vec![],
        vec![
            s("ai.operationId", "ai.streamText.doStream"),
            s("operation.name", "ai.streamText.doStream"),
            s("gen_ai.system", "openai.chat"),
            s("gen_ai.request.model", "test-model"),
            i("gen_ai.usage.input_tokens", 12),
            i("gen_ai.usage.output_tokens", 3),
            kv("ai.response.msToFirstChunk", Value::DoubleValue(7.5)),
        ],
    );
    assert_eq!(r.operation.as_deref(), Some("chat"));
    assert!(r.stream);
    assert_eq!(r.provider.as_deref(), Some("openai"));
    assert_eq!(r.ttft_nanos, Some(7_500_000));
}

#[test]
fn a_label_key_keeps_at_most_its_cardinality_limit_of_values() {
    // The test normaliser keeps 3 values a key.
    let n = normalizer();
    let tier = |v: &str| {
        let out = n.normalize(request(
            vec![],
            vec![span(vec![
                s("gen_ai.request.model", "test-model"),
                s("tollgate.label.tier", v),
            ])],
        ));
        out.records[0].labels.get("tier").cloned()
    };
    for v in ["a", "b", "c", "a"] {
        assert_eq!(tier(v).as_deref(), Some(v));
    }
    assert_eq!(n.take_labels_dropped(), 0);
    // A fourth value is dropped from the row, and counted; known ones stay.
    assert_eq!(tier("d"), None);
    assert_eq!(tier("e"), None);
    assert_eq!(tier("b").as_deref(), Some("b"));
    assert_eq!(n.take_labels_dropped(), 2);
    assert_eq!(n.take_labels_dropped(), 0);
}
