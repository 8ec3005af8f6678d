//! Tool calling: when a request offers tools the mock answers with a call to
//! one of them, with arguments synthesised from the tool's JSON schema.
//!
//! The mock calls a tool only when the last turn is not already a tool
//! result, so an agent loop driven by it makes exactly one call and then
//! gets a text answer, instead of looping forever.

use serde_json::{Map, Value};

/// The tool call the mock will answer with.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ToolCallPlan {
    pub(crate) name: String,
    pub(crate) arguments: Value,
}

impl ToolCallPlan {
    /// Arguments as the JSON text OpenAI sends and Anthropic streams.
    pub(crate) fn arguments_json(&self) -> String {
        self.arguments.to_string()
    }
}

/// OpenAI: `tools: [{type: "function", function: {name, parameters}}]`,
/// `tool_choice: "none" | "auto" | "required" | {type: "function", function: {name}}`.
pub(crate) fn openai_tool_call(request: &Value) -> Option<ToolCallPlan> {
    let tools = request.get("tools")?.as_array()?;
    let choice = request.get("tool_choice");
    if choice.and_then(Value::as_str) == Some("none") {
        return None;
    }
    let last_role = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| messages.last())
        .and_then(|message| message.get("role"))
        .and_then(Value::as_str);
    if last_role == Some("tool") {
        return None;
    }
    let forced = choice
        .and_then(|choice| choice.get("function"))
        .and_then(|function| function.get("name"))
        .and_then(Value::as_str);
    let functions = tools
        .iter()
        .filter(|tool| {
            tool.get("type")
                .and_then(Value::as_str)
                .unwrap_or("function")
                == "function"
        })
        .filter_map(|tool| tool.get("function"));
    pick(functions, forced, "parameters")
}

/// OpenAI Responses API: `tools: [{type: "function", name, parameters}]`
/// (built-in tools such as `web_search` or `file_search` are skipped),
/// `tool_choice: "none" | "auto" | "required" | {type: "function", name}`.
/// No call once the last `input` item is a `function_call_output`.
pub(crate) fn responses_tool_call(request: &Value) -> Option<ToolCallPlan> {
    let tools = request.get("tools")?.as_array()?;
    let choice = request.get("tool_choice");
    if choice.and_then(Value::as_str) == Some("none") {
        return None;
    }
    let last_is_tool_output = request
        .get("input")
        .and_then(Value::as_array)
        .and_then(|items| items.last())
        .and_then(|item| item.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|kind| kind == "function_call_output");
    if last_is_tool_output {
        return None;
    }
    let forced = choice
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("function"))
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str);
    let functions = tools
        .iter()
        .filter(|tool| tool.get("type").and_then(Value::as_str) == Some("function"));
    pick(functions, forced, "parameters")
}

/// Anthropic: `tools: [{name, input_schema}]` (server tools, which carry a
/// `type`, are skipped), `tool_choice: {type: "auto" | "any" | "tool" | "none", name?}`.
pub(crate) fn anthropic_tool_call(request: &Value) -> Option<ToolCallPlan> {
    let tools = request.get("tools")?.as_array()?;
    let choice = request.get("tool_choice");
    if choice.and_then(|c| c.get("type")).and_then(Value::as_str) == Some("none") {
        return None;
    }
    let last_is_tool_result = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| messages.last())
        .and_then(|message| message.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|blocks| {
            blocks
                .iter()
                .any(|block| block.get("type").and_then(Value::as_str) == Some("tool_result"))
        });
    if last_is_tool_result {
        return None;
    }
    let forced = choice
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("tool"))
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str);
    let custom = tools.iter().filter(|tool| {
        tool.get("type")
            .and_then(Value::as_str)
            .is_none_or(|kind| kind == "custom")
    });
    pick(custom, forced, "input_schema")
}

fn pick<'a>(
    mut tools: impl Iterator<Item = &'a Value>,
    forced: Option<&str>,
    schema_key: &str,
) -> Option<ToolCallPlan> {
    let name_of = |tool: &Value| tool.get("name").and_then(Value::as_str).map(str::to_owned);
    let tool = match forced {
        Some(wanted) => tools.find(|tool| name_of(tool).as_deref() == Some(wanted))?,
        None => tools.next()?,
    };
    Some(ToolCallPlan {
        name: name_of(tool)?,
        arguments: example_for(tool.get(schema_key).unwrap_or(&Value::Null)),
    })
}

/// A value that satisfies simple schemas: every declared property filled with
/// the first enum value or a fixed value of its type.
fn example_for(schema: &Value) -> Value {
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|values| values.first())
    {
        return first.clone();
    }
    let kind = match schema.get("type") {
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null"),
        Some(Value::String(kind)) => Some(kind.as_str()),
        _ => None,
    };
    match kind {
        Some("string") => Value::from("value"),
        Some("integer" | "number") => Value::from(1),
        Some("boolean") => Value::Bool(true),
        Some("array") => Value::Array(Vec::new()),
        Some("null") => Value::Null,
        // Objects, and schemas without a type (top level is always an object).
        _ => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let filled: Map<String, Value> = properties
                .into_iter()
                .flatten()
                .map(|(name, property)| (name.clone(), example_for(property)))
                .collect();
            Value::Object(filled)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn weather_openai() -> Value {
        json!({"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"}
            },
            "required": ["city"]
        }}})
    }

    #[test]
    fn openai_calls_the_first_function_with_schema_arguments() {
        let request = json!({"messages": [{"role": "user", "content": "hi"}],
                             "tools": [weather_openai()]});
        assert_eq!(
            openai_tool_call(&request),
            Some(ToolCallPlan {
                name: "get_weather".into(),
                arguments: json!({"city": "value", "unit": "celsius", "days": 1}),
            })
        );
    }

    #[test]
    fn openai_respects_none_named_choice_and_tool_results() {
        let other = json!({"type": "function", "function": {"name": "other"}});
        let named = json!({"messages": [], "tools": [weather_openai(), other],
                           "tool_choice": {"type": "function", "function": {"name": "other"}}});
        assert_eq!(
            openai_tool_call(&named).map(|p| p.name),
            Some("other".into())
        );
        let none = json!({"messages": [], "tools": [weather_openai()], "tool_choice": "none"});
        assert_eq!(openai_tool_call(&none), None);
        let answered = json!({"tools": [weather_openai()], "messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "c", "content": "sunny"}]});
        assert_eq!(openai_tool_call(&answered), None);
    }

    #[test]
    fn responses_skip_built_in_tools_and_stop_after_a_tool_output() {
        let tools = json!([
            {"type": "web_search"},
            {"type": "function", "name": "get_weather", "strict": true,
             "parameters": weather_openai()["function"]["parameters"]},
            {"type": "function", "name": "other", "parameters": {"type": "object"}}
        ]);
        let request = json!({"input": "Weather?", "tools": tools});
        assert_eq!(
            responses_tool_call(&request),
            Some(ToolCallPlan {
                name: "get_weather".into(),
                arguments: json!({"city": "value", "unit": "celsius", "days": 1}),
            })
        );
        let named = json!({"input": "x", "tools": tools,
                           "tool_choice": {"type": "function", "name": "other"}});
        assert_eq!(
            responses_tool_call(&named).map(|p| p.name),
            Some("other".into())
        );
        let none = json!({"input": "x", "tools": tools, "tool_choice": "none"});
        assert_eq!(responses_tool_call(&none), None);
        let answered = json!({"tools": tools, "input": [
            {"role": "user", "content": "Weather?"},
            {"type": "function_call", "call_id": "c", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "sunny"}]});
        assert_eq!(responses_tool_call(&answered), None);
        let built_in_only = json!({"input": "x", "tools": [{"type": "web_search"}]});
        assert_eq!(responses_tool_call(&built_in_only), None);
    }

    #[test]
    fn anthropic_skips_server_tools_and_tool_results() {
        let request = json!({
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [
                {"type": "web_search_20250305", "name": "web_search"},
                {"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
            ]
        });
        assert_eq!(
            anthropic_tool_call(&request),
            Some(ToolCallPlan {
                name: "lookup".into(),
                arguments: json!({"q": "value"})
            })
        );
        let answered = json!({"tools": request["tools"], "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}]}]});
        assert_eq!(anthropic_tool_call(&answered), None);
    }
}
