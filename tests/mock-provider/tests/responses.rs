//! The OpenAI Responses API against a running mock: the response object's
//! exact shape and usage, the cache and reasoning knobs, one function call
//! then text after its output, the named and numbered stream events, the
//! `incomplete` answer at the token cap, path aliases and error envelopes.

mod support;

use serde_json::{Value, json};
use support::{Auth, Reply, post, send, start};
use tollgate_mock_provider::{Api, Endpoint, Knobs, MockProvider, output_text, usage_for};

fn responses_body() -> Value {
    json!({
        "model": "gpt-4.1-mini",
        "instructions": "You are terse.",   // 14 chars
        "input": "Say hello to me"           // 15 chars
    })
}

fn weather_tool() -> Value {
    json!({
        "type": "function",
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": false},
        "strict": true
    })
}

fn tool_body() -> Value {
    json!({
        "model": "gpt-4.1-mini",
        "input": [{"role": "user", "content": "Weather in Paris?"}],   // 17 chars
        "tools": [{"type": "web_search"}, weather_tool()]
    })
}

/// Drops the fields that depend on the clock, checking they are timestamps.
fn without_timestamps(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        let created = object.remove("created_at");
        assert!(created.is_some_and(|c| c.as_u64().is_some_and(|t| t > 1_700_000_000)));
        let completed = object.remove("completed_at");
        assert!(completed.is_some_and(|c| c.is_null() || c.as_u64().is_some()));
    }
    value
}

/// `(event name, data)` of a stream, checking every event is named after its
/// `type` and numbered from 0 without gaps.
fn typed_events(reply: &Reply) -> Vec<(String, Value)> {
    let events: Vec<(String, Value)> = reply
        .events()
        .into_iter()
        .map(|(name, data)| {
            let parsed: Value = serde_json::from_str(&data).unwrap_or_default();
            assert!(parsed.is_object(), "not a JSON object: {data}");
            // Every Responses API event is named after its `type`.
            let name = name.unwrap_or_default();
            assert_eq!(parsed["type"], name.as_str(), "{data}");
            (name, parsed)
        })
        .collect();
    for (expected, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], expected, "{data}");
    }
    events
}

/// POSTs `body` to the mock's `/v1/responses` with an OpenAI key and `knobs`.
async fn post_responses(mock: &MockProvider, knobs: &[(&str, &str)], body: &Value) -> Reply {
    post(
        &format!("{}/v1/responses", mock.base_url()),
        Auth::OpenAi,
        knobs,
        body,
    )
    .await
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(name, _)| name.as_str()).collect()
}

#[tokio::test]
async fn response_has_the_exact_openai_shape() {
    let mock = start().await;
    let reply = post_responses(&mock, &[], &responses_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(
        reply
            .header("x-request-id")
            .is_some_and(|id| id.starts_with("req_"))
    );
    let body = reply.json();
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_"), "{id}");
    let message_id = body["output"][0]["id"].as_str().unwrap().to_owned();
    assert!(message_id.starts_with("msg_"), "{message_id}");
    assert!(body["completed_at"].as_u64().is_some());
    // ceil((14 + 15) / 4) = 8 input tokens; 20 output tokens by default.
    assert_eq!(
        without_timestamps(body),
        json!({
            "id": id,
            "object": "response",
            "status": "completed",
            "error": null,
            "incomplete_details": null,
            "model": "gpt-4.1-mini",
            "output": [{
                "id": message_id,
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": output_text(20),
                             "annotations": [], "logprobs": []}]
            }],
            "usage": {
                "input_tokens": 8,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": 20,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 28
            },
            "background": false,
            "instructions": "You are terse.",
            "max_output_tokens": null,
            "max_tool_calls": null,
            "metadata": {},
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "prompt_cache_key": null,
            "reasoning": {"effort": null, "summary": null},
            "safety_identifier": null,
            "service_tier": "default",
            "store": true,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_logprobs": 0,
            "top_p": 1.0,
            "truncation": "disabled",
            "user": null
        })
    );
    let usage = usage_for(
        Api::OpenAiResponses,
        &responses_body(),
        &Knobs::default(),
        20,
    );
    assert_eq!(usage.openai_prompt_tokens(), 8);
    let stats = mock.stats();
    assert_eq!(stats.requests_to(Endpoint::Responses), 1);
    assert_eq!(stats.requests_to(Endpoint::ChatCompletions), 0);
    assert_eq!(stats.last_path.as_deref(), Some("/v1/responses"));
    mock.shutdown().await;
}

#[tokio::test]
async fn aliases_item_lists_and_unknown_fields_are_accepted() {
    let mock = start().await;
    let body = json!({
        "model": "gpt-4.1-mini",
        "input": [
            {"role": "developer", "content": "abcd"},                                      // 4
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "efgh"}]},                        // 4
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
             "content": [{"type": "output_text", "text": "ijkl", "annotations": []}]}      // 4
        ],
        "store": false,
        "previous_response_id": "resp_earlier",
        "include": ["reasoning.encrypted_content"],
        "truncation": "auto",
        "metadata": {"team": "a"},
        "parallel_tool_calls": false,
        "reasoning": {"effort": "low"},
        "temperature": 0.2,
        "text": {"format": {"type": "text"}},
        "prompt_cache_key": "k",
        "service_tier": "auto",
        "a_field_from_the_future": {"nested": [1, 2]}
    });
    for path in ["/responses", "/openai/v1/responses"] {
        let reply = post(
            &format!("{}{path}", mock.base_url()),
            Auth::OpenAi,
            &[("x-mock-output-tokens", "1")],
            &body,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let response = reply.json();
        assert_eq!(response["output"][0]["content"][0]["text"], "w0");
        // ceil(12 / 4) = 3
        assert_eq!(response["usage"]["input_tokens"], 3);
        assert_eq!(response["usage"]["total_tokens"], 4);
        assert_eq!(response["store"], false);
        assert_eq!(response["previous_response_id"], "resp_earlier");
        assert_eq!(response["truncation"], "auto");
        assert_eq!(response["metadata"], json!({"team": "a"}));
        assert_eq!(response["parallel_tool_calls"], false);
        assert_eq!(
            response["reasoning"],
            json!({"effort": "low", "summary": null})
        );
        assert_eq!(response["temperature"], 0.2);
        assert_eq!(response["prompt_cache_key"], "k");
        assert!(response.get("a_field_from_the_future").is_none());
    }
    let stats = mock.stats();
    assert_eq!(stats.requests_to(Endpoint::Responses), 2);
    assert_eq!(stats.last_path.as_deref(), Some("/openai/v1/responses"));
    assert_eq!(stats.last_body, body);
    mock.shutdown().await;
}

#[tokio::test]
async fn cached_tokens_are_inside_input_and_reasoning_inside_output() {
    let mock = start().await;
    let reply = post_responses(
        &mock,
        &[
            ("x-mock-cache-read-tokens", "1024"),
            ("x-mock-cache-write-tokens", "16"),
            ("x-mock-reasoning-tokens", "7"),
            ("x-mock-output-tokens", "3"),
        ],
        &responses_body(),
    )
    .await
    .json();
    assert_eq!(
        reply["usage"],
        json!({
            "input_tokens": 1048,
            "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 16},
            "output_tokens": 10,
            "output_tokens_details": {"reasoning_tokens": 7},
            "total_tokens": 1058
        })
    );
    let output = reply["output"].as_array().unwrap();
    assert_eq!(output.len(), 2, "a reasoning item, then the message");
    assert_eq!(output[0]["type"], "reasoning");
    assert!(output[0]["id"].as_str().unwrap().starts_with("rs_"));
    assert_eq!(output[0]["summary"], json!([]));
    assert_eq!(output[1]["type"], "message");
    assert_eq!(output[1]["content"][0]["text"], "w0 w1 w2");
    mock.shutdown().await;
}

#[tokio::test]
async fn one_function_call_then_text_after_its_output() {
    let mock = start().await;
    let reply = post_responses(&mock, &[], &tool_body()).await.json();
    assert_eq!(reply["status"], "completed");
    let output = reply["output"].as_array().unwrap();
    assert_eq!(output.len(), 1);
    let call = &output[0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["status"], "completed");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], r#"{"city":"value"}"#);
    assert!(call["id"].as_str().unwrap().starts_with("fc_"));
    assert!(call["call_id"].as_str().unwrap().starts_with("call_"));
    // The tools come back as offered; the function with the API's defaults.
    assert_eq!(reply["tools"][0], json!({"type": "web_search"}));
    assert_eq!(reply["tools"][1], weather_tool());
    // ceil(17 / 4) = 5; output tokens are reported as for chat tool calls.
    assert_eq!(reply["usage"]["input_tokens"], 5);
    assert_eq!(reply["usage"]["output_tokens"], 20);

    // The agent loop sends the call and its output back: the model answers in text.
    let mut answered = tool_body();
    answered["input"] = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call["call_id"], "name": "get_weather",
         "arguments": call["arguments"], "id": call["id"], "status": "completed"},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}   // 5
    ]);
    let reply = post_responses(&mock, &[], &answered).await.json();
    assert_eq!(reply["status"], "completed");
    assert_eq!(reply["output"][0]["type"], "message");
    assert_eq!(reply["output"][0]["content"][0]["text"], output_text(20));
    // ceil((17 + 5) / 4) = 6
    assert_eq!(reply["usage"]["input_tokens"], 6);

    // A forced choice picks the named function; "none" answers in text.
    let mut forced = tool_body();
    forced["tools"] = json!([{"type": "function", "name": "other", "parameters": {"type": "object"}},
                             weather_tool()]);
    forced["tool_choice"] = json!({"type": "function", "name": "get_weather"});
    let reply = post_responses(&mock, &[], &forced).await.json();
    assert_eq!(reply["output"][0]["name"], "get_weather");
    assert_eq!(
        reply["tools"][0],
        json!({"type": "function", "name": "other", "parameters": {"type": "object"},
               "description": null, "strict": true})
    );
    forced["tool_choice"] = json!("none");
    let reply = post_responses(&mock, &[], &forced).await.json();
    assert_eq!(reply["output"][0]["type"], "message");
    assert_eq!(mock.stats().requests_to(Endpoint::Responses), 4);
    mock.shutdown().await;
}

#[tokio::test]
async fn stream_has_the_real_event_sequence_and_final_usage() {
    let mock = start().await;
    let mut body = responses_body();
    body["stream"] = json!(true);
    let reply = post_responses(
        &mock,
        &[
            ("x-mock-output-tokens", "3"),
            ("x-mock-cache-read-tokens", "4"),
        ],
        &body,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert!(!reply.broken);
    assert!(reply.text().starts_with("event: response.created\ndata: {"));
    let events = typed_events(&reply);
    assert_eq!(
        names(&events),
        vec![
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let created = &events[0].1["response"];
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("resp_"));
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["output"], json!([]));
    assert_eq!(created["usage"], Value::Null);
    assert_eq!(events[1].1["response"], *created);

    let added = &events[2].1;
    assert_eq!(added["output_index"], 0);
    let item_id = added["item"]["id"].as_str().unwrap();
    assert_eq!(
        added["item"],
        json!({"id": item_id, "type": "message", "status": "in_progress",
               "role": "assistant", "content": []})
    );
    assert_eq!(
        events[3].1["part"],
        json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
    );
    let deltas: Vec<&str> = events[4..7]
        .iter()
        .map(|(_, data)| {
            assert_eq!(data["item_id"], item_id);
            assert_eq!(data["output_index"], 0);
            assert_eq!(data["content_index"], 0);
            data["delta"].as_str().unwrap()
        })
        .collect();
    assert_eq!(deltas, vec!["w0", " w1", " w2"]);
    assert_eq!(events[7].1["text"], "w0 w1 w2");
    assert_eq!(events[8].1["part"]["text"], "w0 w1 w2");
    assert_eq!(events[9].1["item"]["status"], "completed");
    assert_eq!(events[9].1["item"]["content"][0]["text"], "w0 w1 w2");

    let completed = &events[10].1["response"];
    assert_eq!(completed["id"], id);
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["output"], json!([events[9].1["item"]]));
    // ceil(29 / 4) = 8, plus 4 cached.
    assert_eq!(
        completed["usage"],
        json!({
            "input_tokens": 12,
            "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
            "output_tokens": 3,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 15
        })
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn streamed_function_call_arguments_reassemble() {
    let mock = start().await;
    let mut body = tool_body();
    body["stream"] = json!(true);
    let reply = post_responses(&mock, &[("x-mock-reasoning-tokens", "2")], &body).await;
    let events = typed_events(&reply);
    let arguments = r#"{"city":"value"}"#;
    let pieces = arguments.len().div_ceil(4);
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_item.added",
    ];
    expected.extend(std::iter::repeat_n(
        "response.function_call_arguments.delta",
        pieces,
    ));
    expected.extend([
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names(&events), expected);
    // The reasoning item comes first, at output index 0.
    assert_eq!(events[2].1["item"]["type"], "reasoning");
    assert_eq!(events[3].1["output_index"], 0);

    let opened = &events[4].1;
    assert_eq!(opened["output_index"], 1);
    assert_eq!(opened["item"]["type"], "function_call");
    assert_eq!(opened["item"]["status"], "in_progress");
    assert_eq!(opened["item"]["name"], "get_weather");
    assert_eq!(opened["item"]["arguments"], "");
    let item_id = opened["item"]["id"].as_str().unwrap();
    let streamed: String = events[5..5 + pieces]
        .iter()
        .map(|(_, data)| {
            assert_eq!(data["item_id"], item_id);
            assert_eq!(data["output_index"], 1);
            data["delta"].as_str().unwrap()
        })
        .collect();
    assert_eq!(streamed, arguments);
    let done = &events[5 + pieces].1;
    assert_eq!(done["arguments"], arguments);
    assert_eq!(done["item_id"], item_id);
    let item = &events[6 + pieces].1["item"];
    assert_eq!(item["status"], "completed");
    assert_eq!(item["arguments"], arguments);
    assert_eq!(item["call_id"], opened["item"]["call_id"]);

    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["output"].as_array().unwrap().len(), 2);
    assert_eq!(completed["output"][1], *item);
    assert_eq!(completed["usage"]["output_tokens"], 22);
    assert_eq!(
        completed["usage"]["output_tokens_details"]["reasoning_tokens"],
        2
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn max_output_tokens_cap_makes_the_answer_incomplete() {
    let mock = start().await;
    let mut body = responses_body();
    body["max_output_tokens"] = json!(5);
    let reply = post_responses(&mock, &[], &body).await.json();
    assert_eq!(reply["status"], "incomplete");
    assert_eq!(
        reply["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(reply["completed_at"], Value::Null);
    assert_eq!(reply["max_output_tokens"], 5);
    assert_eq!(reply["output"][0]["status"], "incomplete");
    assert_eq!(reply["output"][0]["content"][0]["text"], "w0 w1 w2 w3 w4");
    assert_eq!(reply["usage"]["output_tokens"], 5);

    // A cap above the default, or the exact-output knob, leaves it complete.
    body["max_output_tokens"] = json!(500);
    let reply = post_responses(&mock, &[], &body).await.json();
    assert_eq!(reply["status"], "completed");
    assert_eq!(reply["usage"]["output_tokens"], 20);
    body["max_output_tokens"] = json!(5);
    let reply = post_responses(&mock, &[("x-mock-output-tokens", "2")], &body)
        .await
        .json();
    assert_eq!(reply["status"], "completed");
    assert_eq!(reply["incomplete_details"], Value::Null);

    // Streamed, the last event is `response.incomplete`.
    body["max_output_tokens"] = json!(2);
    body["stream"] = json!(true);
    let reply = post_responses(&mock, &[], &body).await;
    let events = typed_events(&reply);
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "response.incomplete");
    assert_eq!(data["response"]["status"], "incomplete");
    assert_eq!(
        data["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(data["response"]["usage"]["output_tokens"], 2);
    assert!(!names(&events).contains(&"response.completed"));
    mock.shutdown().await;
}

#[tokio::test]
async fn cut_stream_drops_the_connection_before_completion() {
    let mock = start().await;
    let mut body = responses_body();
    body["stream"] = json!(true);
    let reply = post_responses(&mock, &[("x-mock-cut-after-chunks", "2")], &body).await;
    assert_eq!(reply.status, 200);
    assert!(reply.broken, "the connection must break: {}", reply.text());
    let events = typed_events(&reply);
    assert_eq!(
        names(&events),
        vec![
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
        ]
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn errors_use_the_openai_envelope() {
    let mock = start().await;
    let url = format!("{}/v1/responses", mock.base_url());
    let reply = post(&url, Auth::None, &[], &responses_body()).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");

    let reply = post_responses(&mock, &[], &json!({"input": "hi"})).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json(),
        json!({"error": {"message": "Missing required parameter: 'model'.",
                         "type": "invalid_request_error", "param": null, "code": null}})
    );
    let reply = post(
        &url,
        Auth::OpenAi,
        &[],
        &json!({"model": "gpt-4.1-mini", "input": 42}),
    )
    .await;
    assert_eq!(reply.status, 400);

    let reply = post(
        &url,
        Auth::OpenAi,
        &[("x-mock-status", "429")],
        &responses_body(),
    )
    .await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.json()["error"]["code"], "rate_limit_exceeded");

    // Failed calls store nothing: retrieving one is a 404 in the same envelope.
    let reply = send(
        reqwest::Method::GET,
        &format!("{}/v1/responses/resp_mock0000000000000001", mock.base_url()),
        Auth::OpenAi,
        &[],
        None,
    )
    .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    assert_eq!(
        reply.json()["error"]["message"],
        "No response found with id 'resp_mock0000000000000001'."
    );
    let stats = mock.stats();
    assert_eq!(stats.requests_to(Endpoint::Responses), 4);
    assert_eq!(stats.requests_to(Endpoint::StoredResponses), 1);
    assert_eq!(stats.requests_to(Endpoint::Unknown), 0);
    mock.shutdown().await;
}
