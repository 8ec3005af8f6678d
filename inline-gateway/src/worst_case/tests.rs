//! The bound against fixed shapes, and against real tokenizers on random
//! text: `o200k_base` and `cl100k_base`, as OpenAI counts a chat request.

use proptest::prelude::*;
use serde_json::{Value, json};
use tiktoken_rs::{CoreBPE, cl100k_base_singleton, o200k_base_singleton};

use super::*;

fn chat(request: Value) -> InputBound {
    InputBound::of(Operation::Chat, &request)
}

#[test]
fn text_counts_its_utf8_bytes_plus_framing() {
    // "user" 4 + "role" 4 + "content" 7 + "你好" 6 bytes.
    let b = chat(json!({"model": "gpt-4o", "max_tokens": 9,
                        "messages": [{"role": "user", "content": "你好"}]}));
    assert_eq!(
        b,
        InputBound {
            text: REQUEST_OVERHEAD + MESSAGE_OVERHEAD + 4 + 4 + 7 + 6,
            images: 0,
            unseen: false
        }
    );
    assert_eq!(b.tokens(1_000), b.text);
}

#[test]
fn images_cost_the_per_image_worst_case_not_their_url() {
    let data = "A".repeat(100_000);
    let b = chat(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{data}")}},
        {"image_url": {"url": "https://example.com/a.png"}}
    ]}]}));
    assert_eq!(b.images, 2);
    assert!(b.text < 200, "the image data is not counted as text: {b:?}");
    assert_eq!(b.tokens(1_000), b.text + 2_000);
    let anthropic = InputBound::of(
        Operation::Messages,
        &json!({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
            {"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "image", "source": {"type": "url", "url": "https://example.com/b.png"}}]}
        ]}]}),
    );
    assert_eq!(anthropic.images, 2, "images inside tool results count too");
}

#[test]
fn documents_count_their_bytes_and_a_page_image() {
    let b = InputBound::of(
        Operation::Messages,
        &json!({"messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "QUJD"}}
        ]}]}),
    );
    assert_eq!(b.images, 1);
    assert!(b.text >= 4, "{b:?}");
}

#[test]
fn tools_add_their_definitions_and_the_preamble() {
    let tool = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
    let without = chat(json!({"messages": [{"role": "user", "content": "hi"}]}));
    let with = chat(json!({"messages": [{"role": "user", "content": "hi"}], "tools": [tool]}));
    let definition = chat(json!({"x": tool})).text - REQUEST_OVERHEAD;
    assert_eq!(
        with.text - without.text,
        TOOLS_OVERHEAD + TOOL_OVERHEAD + definition
    );
    // Tool calls and their arguments are input on the next turn.
    let call = chat(
        json!({"messages": [{"role": "assistant", "content": null, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"city\":\"巴黎\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "晴"}]}),
    );
    assert!(call.text > 2 * MESSAGE_OVERHEAD + 15 + 3, "{call:?}");
}

#[test]
fn anthropic_system_blocks_and_unknown_fields_count() {
    let b = InputBound::of(
        Operation::Messages,
        &json!({"system": [{"type": "text", "text": "abcd"}], "messages": [],
                "some_new_prompt_field": "efgh", "temperature": 0.5}),
    );
    // "type" 4 + "text" 4 + "text" 4 + "abcd" 4, and "efgh" 4.
    assert_eq!(b.text, REQUEST_OVERHEAD + MESSAGE_OVERHEAD + 16 + 4);
}

#[test]
fn embeddings_count_strings_by_bytes_and_token_ids_one_each() {
    let e = |input: Value| InputBound::of(Operation::Embeddings, &json!({"input": input}));
    assert_eq!(e(json!("héllo")).text, 6);
    assert_eq!(e(json!(["ab", "cd"])).text, 4);
    assert_eq!(e(json!([1, 2, 3])).text, 3);
    assert_eq!(e(json!([[1, 2], [30_000, 4, 5]])).text, 5);
    assert_eq!(e(json!([])).tokens(0), 1, "never a zero worst case");
}

#[test]
fn output_is_the_cap_times_n() {
    assert_eq!(output_tokens(100, None), 100);
    assert_eq!(output_tokens(100, Some(3)), 300);
    assert_eq!(output_tokens(100, Some(0)), 100);
    assert_eq!(output_tokens(u64::MAX, Some(2)), u64::MAX);
}

#[test]
fn models_that_bill_images_higher_get_their_figure() {
    assert_eq!(image_tokens("gpt-4o-mini-2024-07-18", 4_096), 48_169);
    assert_eq!(image_tokens("gpt-4o", 4_096), 4_096);
    assert_eq!(image_tokens("gpt-4o-mini", 60_000), 60_000);
}

#[test]
fn printed_numbers_are_never_undercounted() {
    for n in [
        json!(0),
        json!(7),
        json!(10),
        json!(-10),
        json!(123_456),
        json!(2.5e-300),
    ] {
        let printed = n.to_string().len() as u64;
        let counted = match &n {
            Value::Number(n) => printed_len(n),
            _ => 0,
        };
        assert!(counted >= printed, "{n}: {counted} < {printed}");
    }
}

/// Tokens of `text` as the API counts prompt text: special-token spellings
/// are ordinary text.
fn tokens(bpe: &CoreBPE, text: &str) -> u64 {
    bpe.encode_ordinary(text).len() as u64
}

/// OpenAI's documented count of a chat request's prompt: 3 tokens a
/// message, 1 more for a name, 3 priming the reply.
fn openai_prompt_tokens(bpe: &CoreBPE, messages: &[(String, Option<String>, String)]) -> u64 {
    let mut n = 3;
    for (role, name, content) in messages {
        n += 3 + tokens(bpe, role) + tokens(bpe, content);
        if let Some(name) = name {
            n += 1 + tokens(bpe, name);
        }
    }
    n
}

/// Text mixing ASCII, Latin, CJK, emoji and control characters, the kinds
/// a 4-characters-a-token guess gets most wrong.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\p{Han}\\p{Hiragana}\\p{Hangul}]{0,200}",
        "[a-zA-Z0-9 .,!?]{0,400}",
        "[\\u{1F300}-\\u{1FAFF}\\u{0300}-\\u{036F}\\u{0E00}-\\u{0E7F}]{0,100}",
        prop::collection::vec(any::<char>(), 0..300).prop_map(|c| c.into_iter().collect()),
    ]
}

fn message() -> impl Strategy<Value = (String, Option<String>, String)> {
    (
        prop_oneof![Just("system"), Just("user"), Just("assistant")].prop_map(str::to_owned),
        prop::option::of("[a-zA-Z0-9_-]{1,20}"),
        text(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A byte-level BPE never makes more tokens than bytes.
    #[test]
    fn bytes_bound_real_tokenizers(s in text()) {
        for bpe in [o200k_base_singleton(), cl100k_base_singleton()] {
            prop_assert!(tokens(bpe, &s) <= s.len() as u64);
        }
    }

    /// The bound of a chat request is never below OpenAI's count of it.
    #[test]
    fn chat_bound_is_at_least_the_exact_count(
        messages in prop::collection::vec(message(), 1..8),
        parts in any::<bool>(),
    ) {
        let body: Vec<Value> = messages
            .iter()
            .map(|(role, name, content)| {
                let content = if parts {
                    json!([{"type": "text", "text": content}])
                } else {
                    Value::from(content.as_str())
                };
                let mut m = json!({"role": role, "content": content});
                if let Some(name) = name {
                    m["name"] = Value::from(name.as_str());
                }
                m
            })
            .collect();
        let bound = chat(json!({"model": "gpt-4o", "messages": body})).tokens(0);
        for bpe in [o200k_base_singleton(), cl100k_base_singleton()] {
            let exact = openai_prompt_tokens(bpe, &messages);
            prop_assert!(bound >= exact, "bound {bound} < exact {exact}");
        }
    }

    /// Tool definitions as OpenAI renders them into the prompt (a
    /// TypeScript-like namespace) stay within the bound of their JSON.
    #[test]
    fn tool_bound_covers_the_rendered_definitions(
        tools in prop::collection::vec(
            ("[a-z_]{1,30}", text(), prop::collection::vec(("[a-z_]{1,20}", text()), 0..5)),
            1..5,
        ),
    ) {
        let mut rendered = String::from("# Tools\n\n## functions\n\nnamespace functions {\n\n");
        let mut defs = Vec::new();
        for (name, description, params) in &tools {
            rendered.push_str(&format!("// {description}\ntype {name} = (_: {{\n"));
            let mut properties = serde_json::Map::new();
            for (p, d) in params {
                rendered.push_str(&format!("// {d}\n{p}?: string,\n"));
                properties.insert(p.clone(), json!({"type": "string", "description": d}));
            }
            rendered.push_str("}) => any;\n\n");
            defs.push(json!({"type": "function", "function": {"name": name,
                "description": description,
                "parameters": {"type": "object", "properties": properties}}}));
        }
        rendered.push_str("} // namespace functions");
        let with = chat(json!({"messages": [], "tools": defs})).tokens(0);
        let without = chat(json!({"messages": []})).tokens(0);
        for bpe in [o200k_base_singleton(), cl100k_base_singleton()] {
            let exact = tokens(bpe, &rendered);
            prop_assert!(with - without >= exact, "{} < {exact}", with - without);
        }
    }
}

/// What the bound costs in admitted calls: how many typical English calls,
/// all in flight at once, a 100,000-token budget admits at the bound and at
/// the four-bytes-a-token estimate it replaced. Figures quoted in the
/// README ("What a reservation costs").
#[test]
fn what_the_bound_costs_typical_english_calls() {
    const SYSTEM: &str = "You are a helpful support assistant for Acme Cloud, a hosting \
        company. Answer the customer's question accurately and concisely, using the \
        documentation excerpts provided. If the excerpts do not contain the answer, say \
        so and suggest contacting support at support@acme.example. Never invent prices, \
        limits or commands. Use short paragraphs and, where steps are involved, a \
        numbered list. Keep a friendly, professional tone and do not mention these \
        instructions.";
    const EXCERPT: &str = "Excerpt: Databases on the Standard plan are backed up every \
        night at 02:00 UTC and kept for 7 days; the Pro plan keeps 30 days of backups \
        and allows point-in-time recovery to any second within the last 7 days. To \
        restore a backup, open the database's page, choose Backups, pick a backup and \
        click Restore; the restore creates a new database and leaves the original \
        untouched. Restores of databases larger than 100 GB may take several hours.";
    const QUESTION: &str = "Hi, we accidentally deleted a table in our production \
        database about an hour ago. We are on the Pro plan. Can we get it back without \
        losing the orders that came in since then, and how long will it take?";
    let body = json!({
        "model": "gpt-4o-mini",
        "max_tokens": 500,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": format!("{EXCERPT}\n\n{QUESTION}")}
        ]
    });
    let messages = vec![
        ("system".to_owned(), None, SYSTEM.to_owned()),
        ("user".to_owned(), None, format!("{EXCERPT}\n\n{QUESTION}")),
    ];
    let billed_input = openai_prompt_tokens(o200k_base_singleton(), &messages);
    let body_bytes = serde_json::to_vec(&body).map_or(0, |b| b.len() as u64);
    let guessed = body_bytes.div_ceil(4) + 500;
    let bound = chat(body.clone()).tokens(0) + 500;
    let budget = 100_000;
    let (admitted_guess, admitted_bound) = (budget / guessed, budget / bound);
    println!(
        "input billed (o200k) {billed_input}; reserved: estimate {guessed}, bound {bound}; \
         a {budget}-token budget admits {admitted_guess} calls in flight at the estimate, \
         {admitted_bound} at the bound"
    );
    assert_eq!(billed_input, 243);
    assert_eq!((guessed, bound), (805, 1_660));
    assert_eq!((admitted_guess, admitted_bound), (124, 60));
    // Both reserve more than is billed (the estimate only because this text
    // is English); the bound by its margin on input.
    assert!(bound > guessed && guessed > billed_input + 500);
}

fn responses(request: Value) -> InputBound {
    InputBound::of(Operation::Responses, &request)
}

#[test]
fn responses_input_counts_instructions_items_and_images() {
    // "instructions" and "input" are not part of the count themselves:
    // a string input is one message of its bytes.
    let plain = responses(json!({"model": "gpt-4o", "input": "你好"}));
    assert_eq!(
        plain,
        InputBound {
            text: REQUEST_OVERHEAD + MESSAGE_OVERHEAD + 6,
            images: 0,
            unseen: false
        }
    );
    let with_instructions =
        responses(json!({"model": "gpt-4o", "input": "你好", "instructions": "Be brief."}));
    assert_eq!(
        with_instructions.text - plain.text,
        MESSAGE_OVERHEAD + "Be brief.".len() as u64
    );
    let encrypted = "Z".repeat(3_000);
    let items = responses(json!({"input": [
        {"role": "user", "content": [{"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "high"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": encrypted},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"city\":\"巴黎\"}"},
        {"type": "function_call_output", "call_id": "c1", "output": "晴"}
    ]}));
    assert_eq!(items.images, 1);
    assert!(!items.unseen);
    // Reasoning items are read back by the model: their bytes count.
    assert!(items.text > REQUEST_OVERHEAD + 4 * MESSAGE_OVERHEAD + 3_000 + 13 + 15 + 3);
}

#[test]
fn responses_state_the_gateway_cannot_see_is_marked_unseen() {
    let unseen = |v: Value| responses(v).unseen;
    assert!(unseen(
        json!({"input": "go on", "previous_response_id": "resp_1"})
    ));
    assert!(!unseen(
        json!({"input": "go on", "previous_response_id": null})
    ));
    assert!(unseen(json!({"input": "go on", "conversation": "conv_1"})));
    assert!(unseen(json!({"prompt": {"id": "pmpt_1"}, "input": "x"})));
    assert!(unseen(
        json!({"input": [{"type": "item_reference", "id": "msg_1"}]})
    ));
    assert!(unseen(
        json!({"input": "x", "tools": [{"type": "web_search"}]})
    ));
    assert!(!unseen(
        json!({"input": "x", "tools": [{"type": "function", "name": "f"}]})
    ));
    // The same fields mean nothing to chat completions.
    assert!(!chat(json!({"messages": [], "previous_response_id": "resp_1"})).unseen);
    let b = responses(json!({"input": "go on", "previous_response_id": "resp_1"}));
    assert_eq!(
        b.tokens_with_unseen(1_000, 50_000),
        b.tokens(1_000) + 50_000
    );
    let seen = responses(json!({"input": "go on"}));
    assert_eq!(seen.tokens_with_unseen(1_000, 50_000), seen.tokens(1_000));
}
