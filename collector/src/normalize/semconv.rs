//! Attribute names of every GenAI dialect, mapped to one field each.
//!
//! Rank 0 is preferred: when a span carries several spellings of one field
//! (instrumentations in transition often emit old and new names together),
//! the lowest rank wins. `tollgate.*` attributes rank first because the agent
//! set them on purpose.

/// A field of the call record an attribute can fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Field {
    Provider,
    Operation,
    RequestModel,
    ResponseModel,
    InputTokens,
    OutputTokens,
    TotalTokens,
    CacheReadTokens,
    CacheWriteTokens,
    ReasoningTokens,
    Session,
    User,
    Org,
    Project,
    Route,
    Environment,
    App,
    AgentId,
    AgentName,
    ErrorType,
    HttpStatus,
    ResponseId,
    FinishReason,
    Stream,
    TtftMs,
    TtftSeconds,
    CostUsd,
    ServerAddress,
    ServerPort,
    /// OpenInference's JSON string of request parameters (`model`, `stream`).
    InvocationParameters,
}

/// Number of [`Field`] variants.
pub(crate) const FIELD_COUNT: usize = Field::InvocationParameters as usize + 1;

/// The field and rank of a span or resource attribute, if it is one we read.
pub(crate) fn field_of(key: &str) -> Option<(Field, u8)> {
    use Field::*;
    Some(match key {
        // Provider.
        "gen_ai.provider.name" => (Provider, 0),
        "gen_ai.system" => (Provider, 1),
        "llm.provider" => (Provider, 2),
        "llm.system" => (Provider, 3),
        // Operation. OpenInference's span kind and OpenLLMetry's request type
        // are mapped to GenAI operation names by `normalize_operation`.
        "gen_ai.operation.name" => (Operation, 0),
        "llm.request.type" => (Operation, 1),
        "openinference.span.kind" => (Operation, 2),
        // Models.
        "gen_ai.request.model" => (RequestModel, 0),
        "llm.request.model" => (RequestModel, 1),
        "gen_ai.response.model" => (ResponseModel, 0),
        "llm.response.model" => (ResponseModel, 1),
        "llm.model_name" => (ResponseModel, 2),
        "embedding.model_name" => (ResponseModel, 3),
        // Tokens.
        "gen_ai.usage.input_tokens" => (InputTokens, 0),
        "gen_ai.usage.prompt_tokens" => (InputTokens, 1),
        "llm.usage.prompt_tokens" => (InputTokens, 2),
        "llm.token_count.prompt" => (InputTokens, 3),
        "gen_ai.usage.output_tokens" => (OutputTokens, 0),
        "gen_ai.usage.completion_tokens" => (OutputTokens, 1),
        "llm.usage.completion_tokens" => (OutputTokens, 2),
        "llm.token_count.completion" => (OutputTokens, 3),
        "gen_ai.usage.total_tokens" => (TotalTokens, 0),
        "llm.usage.total_tokens" => (TotalTokens, 1),
        "llm.token_count.total" => (TotalTokens, 2),
        "gen_ai.usage.cache_read.input_tokens" => (CacheReadTokens, 0),
        "gen_ai.usage.cache_read_input_tokens" => (CacheReadTokens, 1),
        "llm.usage.cache_read_input_tokens" => (CacheReadTokens, 2),
        "llm.token_count.prompt_details.cache_read" => (CacheReadTokens, 3),
        "gen_ai.usage.cache_creation.input_tokens" => (CacheWriteTokens, 0),
        // The Anthropic SDK's own tracing spells it `cache_write`.
        "gen_ai.usage.cache_write.input_tokens" => (CacheWriteTokens, 1),
        "gen_ai.usage.cache_creation_input_tokens" => (CacheWriteTokens, 2),
        "llm.usage.cache_creation_input_tokens" => (CacheWriteTokens, 3),
        "llm.token_count.prompt_details.cache_write" => (CacheWriteTokens, 4),
        "gen_ai.usage.reasoning.output_tokens" => (ReasoningTokens, 0),
        "gen_ai.usage.reasoning_tokens" => (ReasoningTokens, 1),
        "llm.usage.reasoning_tokens" => (ReasoningTokens, 2),
        "llm.token_count.completion_details.reasoning" => (ReasoningTokens, 3),
        // Who and where.
        "tollgate.session" => (Session, 0),
        "gen_ai.conversation.id" => (Session, 1),
        "session.id" => (Session, 2),
        "tollgate.user" => (User, 0),
        "user.id" => (User, 1),
        "enduser.id" => (User, 2),
        "tollgate.org" => (Org, 0),
        "tollgate.project" => (Project, 0),
        "tollgate.route" => (Route, 0),
        "tollgate.environment" => (Environment, 0),
        "deployment.environment.name" => (Environment, 1),
        "deployment.environment" => (Environment, 2),
        "service.name" => (App, 0),
        "gen_ai.agent.id" => (AgentId, 0),
        "gen_ai.agent.name" => (AgentName, 0),
        // Outcome.
        "error.type" => (ErrorType, 0),
        "http.response.status_code" => (HttpStatus, 0),
        "http.status_code" => (HttpStatus, 1),
        "gen_ai.response.id" => (ResponseId, 0),
        "llm.response.id" => (ResponseId, 1),
        "gen_ai.response.finish_reasons" => (FinishReason, 0),
        "llm.response.finish_reason" => (FinishReason, 1),
        "tollgate.stream" => (Stream, 0),
        "gen_ai.request.stream" => (Stream, 1),
        "gen_ai.is_streaming" => (Stream, 2),
        "llm.is_streaming" => (Stream, 3),
        "tollgate.ttft_ms" => (TtftMs, 0),
        "gen_ai.response.time_to_first_chunk" => (TtftSeconds, 0),
        "tollgate.cost_usd" => (CostUsd, 0),
        "gen_ai.usage.cost" => (CostUsd, 1),
        "llm.cost.total" => (CostUsd, 2),
        "tollgate.upstream" => (ServerAddress, 0),
        "server.address" => (ServerAddress, 1),
        "server.port" => (ServerPort, 0),
        "llm.invocation_parameters" => (InvocationParameters, 0),
        _ => return None,
    })
}

/// Prefix of custom label attributes.
pub(crate) const LABEL_PREFIX: &str = "tollgate.label.";

/// Whether a span with this (normalised) operation is a model call.
pub(crate) enum OperationKind {
    ModelCall,
    NotModelCall,
    /// Unknown operation name: a model call when a model is named.
    Unknown,
}

/// Maps dialect operation names onto GenAI operation names.
pub(crate) fn normalize_operation(raw: &str) -> (&'static str, OperationKind) {
    use OperationKind::*;
    match raw {
        "chat" | "LLM" | "llm" => ("chat", ModelCall),
        "text_completion" | "completion" => ("text_completion", ModelCall),
        "generate_content" => ("generate_content", ModelCall),
        "embeddings" | "embedding" | "EMBEDDING" => ("embeddings", ModelCall),
        "rerank" | "RERANKER" => ("rerank", ModelCall),
        "invoke_agent" | "AGENT" => ("invoke_agent", NotModelCall),
        "create_agent" => ("create_agent", NotModelCall),
        "execute_tool" | "TOOL" => ("execute_tool", NotModelCall),
        "CHAIN" | "RETRIEVER" | "GUARDRAIL" | "EVALUATOR" | "workflow" | "task" => {
            ("other", NotModelCall)
        }
        _ => ("other", Unknown),
    }
}

/// Normalises a provider name to the current `gen_ai.provider.name` values,
/// so rows from old and new instrumentations group together.
pub fn normalize_provider(raw: &str) -> String {
    let lower = raw.trim().to_ascii_lowercase();
    let canonical = match lower.as_str() {
        "az.ai.openai" | "azure" | "azure_openai" | "azure.openai" => "azure.ai.openai",
        "az.ai.inference" => "azure.ai.inference",
        "vertex_ai" | "vertexai" | "vertex" => "gcp.vertex_ai",
        "gemini" | "google" | "google_genai" | "googleai" => "gcp.gemini",
        "bedrock" | "aws_bedrock" => "aws.bedrock",
        "mistral" | "mistralai" => "mistral_ai",
        "xai" | "grok" => "x_ai",
        "cohere" | "openai" | "anthropic" | "groq" | "deepseek" | "perplexity"
        | "ibm.watsonx.ai" => {
            return lower;
        }
        _ => return lower,
    };
    canonical.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_converge() {
        assert_eq!(normalize_provider("OpenAI"), "openai");
        assert_eq!(normalize_provider("Anthropic"), "anthropic");
        assert_eq!(normalize_provider("az.ai.openai"), "azure.ai.openai");
        assert_eq!(normalize_provider("vertex_ai"), "gcp.vertex_ai");
        assert_eq!(normalize_provider("gemini"), "gcp.gemini");
        assert_eq!(normalize_provider("MistralAI"), "mistral_ai");
        assert_eq!(normalize_provider("my-vllm"), "my-vllm");
    }

    #[test]
    fn operations_from_every_dialect() {
        assert!(matches!(
            normalize_operation("LLM"),
            ("chat", OperationKind::ModelCall)
        ));
        assert!(matches!(
            normalize_operation("completion"),
            ("text_completion", OperationKind::ModelCall)
        ));
        assert!(matches!(
            normalize_operation("embedding"),
            ("embeddings", OperationKind::ModelCall)
        ));
        assert!(matches!(
            normalize_operation("invoke_agent"),
            (_, OperationKind::NotModelCall)
        ));
        assert!(matches!(
            normalize_operation("CHAIN"),
            (_, OperationKind::NotModelCall)
        ));
        assert!(matches!(
            normalize_operation("whatever"),
            (_, OperationKind::Unknown)
        ));
    }

    #[test]
    fn every_field_has_a_preferred_spelling() {
        let keys = [
            "gen_ai.provider.name",
            "gen_ai.operation.name",
            "gen_ai.request.model",
            "gen_ai.response.model",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.total_tokens",
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_creation.input_tokens",
            "gen_ai.usage.reasoning.output_tokens",
            "tollgate.session",
            "tollgate.user",
            "tollgate.org",
            "tollgate.project",
            "tollgate.route",
            "tollgate.environment",
            "service.name",
            "gen_ai.agent.id",
            "gen_ai.agent.name",
            "error.type",
            "http.response.status_code",
            "gen_ai.response.id",
            "gen_ai.response.finish_reasons",
            "tollgate.stream",
            "tollgate.ttft_ms",
            "gen_ai.response.time_to_first_chunk",
            "tollgate.cost_usd",
            "tollgate.upstream",
            "server.port",
            "llm.invocation_parameters",
        ];
        let mut seen = [false; FIELD_COUNT];
        for k in keys {
            let (f, rank) = field_of(k).unwrap();
            assert_eq!(rank, 0, "{k}");
            seen[f as usize] = true;
        }
        assert!(seen.iter().all(|s| *s), "a field has no rank-0 attribute");
    }
}
