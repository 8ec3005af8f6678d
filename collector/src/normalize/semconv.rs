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
    /// `gen_ai.usage.cost.currency`: a cost in another currency is not used.
    CostCurrency,
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
        "ai.model.provider" => (Provider, 4),
        // Operation. OpenInference's span kind and OpenLLMetry's request type
        // are mapped to GenAI operation names by `normalize_operation`.
        "gen_ai.operation.name" => (Operation, 0),
        "llm.request.type" => (Operation, 1),
        "openinference.span.kind" => (Operation, 2),
        // The Vercel AI SDK: `ai.generateText` (the run) around one
        // `ai.generateText.doGenerate` per model call.
        "ai.operationId" => (Operation, 3),
        // Models.
        "gen_ai.request.model" => (RequestModel, 0),
        "llm.request.model" => (RequestModel, 1),
        "ai.model.id" => (RequestModel, 2),
        "gen_ai.response.model" => (ResponseModel, 0),
        "llm.response.model" => (ResponseModel, 1),
        "llm.model_name" => (ResponseModel, 2),
        "embedding.model_name" => (ResponseModel, 3),
        "ai.response.model" => (ResponseModel, 4),
        // Tokens.
        "gen_ai.usage.input_tokens" => (InputTokens, 0),
        "gen_ai.usage.prompt_tokens" => (InputTokens, 1),
        "llm.usage.prompt_tokens" => (InputTokens, 2),
        "llm.token_count.prompt" => (InputTokens, 3),
        "ai.usage.inputTokens" => (InputTokens, 4),
        "ai.usage.promptTokens" => (InputTokens, 5),
        "gen_ai.usage.output_tokens" => (OutputTokens, 0),
        "gen_ai.usage.completion_tokens" => (OutputTokens, 1),
        "llm.usage.completion_tokens" => (OutputTokens, 2),
        "llm.token_count.completion" => (OutputTokens, 3),
        "ai.usage.outputTokens" => (OutputTokens, 4),
        "ai.usage.completionTokens" => (OutputTokens, 5),
        "gen_ai.usage.total_tokens" => (TotalTokens, 0),
        "llm.usage.total_tokens" => (TotalTokens, 1),
        "llm.token_count.total" => (TotalTokens, 2),
        "ai.usage.totalTokens" => (TotalTokens, 3),
        "gen_ai.usage.cache_read.input_tokens" => (CacheReadTokens, 0),
        "gen_ai.usage.cache_read_input_tokens" => (CacheReadTokens, 1),
        "llm.usage.cache_read_input_tokens" => (CacheReadTokens, 2),
        "llm.token_count.prompt_details.cache_read" => (CacheReadTokens, 3),
        "ai.usage.cachedInputTokens" => (CacheReadTokens, 4),
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
        "ai.usage.reasoningTokens" => (ReasoningTokens, 4),
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
        "ai.response.id" => (ResponseId, 2),
        "gen_ai.response.finish_reasons" => (FinishReason, 0),
        "llm.response.finish_reason" => (FinishReason, 1),
        "ai.response.finishReason" => (FinishReason, 2),
        // The Anthropic SDK's own tracing.
        "anthropic.message.stop_reason" => (FinishReason, 3),
        "tollgate.stream" => (Stream, 0),
        "gen_ai.request.stream" => (Stream, 1),
        "gen_ai.is_streaming" => (Stream, 2),
        "llm.is_streaming" => (Stream, 3),
        "tollgate.ttft_ms" => (TtftMs, 0),
        "ai.response.msToFirstChunk" => (TtftMs, 1),
        "gen_ai.response.time_to_first_chunk" => (TtftSeconds, 0),
        "tollgate.cost_usd" => (CostUsd, 0),
        // Proposed GenAI cost attributes (amount, currency, source).
        "gen_ai.usage.cost.amount" => (CostUsd, 1),
        "gen_ai.usage.cost" => (CostUsd, 2),
        "llm.cost.total" => (CostUsd, 3),
        "gen_ai.usage.cost.currency" => (CostCurrency, 0),
        "tollgate.upstream" => (ServerAddress, 0),
        "server.address" => (ServerAddress, 1),
        "server.port" => (ServerPort, 0),
        "llm.invocation_parameters" => (InvocationParameters, 0),
        _ => return None,
    })
}

/// Prefix of custom label attributes.
pub(crate) const LABEL_PREFIX: &str = "tollgate.label.";

/// What a span that is not a model call is, for `/metrics`. Such spans
/// often repeat the usage totals of the calls they contain (an agent run,
/// the AI SDK's `ai.generateText`): counting them would count twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NonCallKind {
    /// An agent run (`invoke_agent`, `create_agent`, OpenInference `AGENT`).
    Agent,
    /// A workflow or run around calls (`invoke_workflow`, `ai.generateText`).
    Workflow,
    /// A tool execution (`execute_tool`, OpenInference `TOOL`).
    Tool,
    /// A framework chain, retriever, guardrail, evaluator, memory operation.
    Chain,
    /// Anything else (no GenAI operation and no model).
    Other,
}

impl NonCallKind {
    pub const ALL: [NonCallKind; 5] = [
        NonCallKind::Agent,
        NonCallKind::Workflow,
        NonCallKind::Tool,
        NonCallKind::Chain,
        NonCallKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NonCallKind::Agent => "agent",
            NonCallKind::Workflow => "workflow",
            NonCallKind::Tool => "tool",
            NonCallKind::Chain => "chain",
            NonCallKind::Other => "other",
        }
    }
}

/// Whether a span with this (normalised) operation is a model call.
pub(crate) enum OperationKind {
    /// `streamed`: the operation itself says the answer was streamed
    /// (the AI SDK's `….doStream`).
    ModelCall {
        streamed: bool,
    },
    NotModelCall(NonCallKind),
    /// Unknown operation name: a model call when a model is named.
    Unknown,
}

/// Maps dialect operation names onto GenAI operation names.
pub(crate) fn normalize_operation(raw: &str) -> (&'static str, OperationKind) {
    use NonCallKind::*;
    use OperationKind::*;
    const CALL: OperationKind = ModelCall { streamed: false };
    match raw {
        "chat" | "LLM" | "llm" => ("chat", CALL),
        "text_completion" | "completion" => ("text_completion", CALL),
        "generate_content" => ("generate_content", CALL),
        "embeddings" | "embedding" | "EMBEDDING" => ("embeddings", CALL),
        "rerank" | "RERANKER" => ("rerank", CALL),
        "invoke_agent" | "create_agent" | "AGENT" | "agent" => {
            ("invoke_agent", NotModelCall(Agent))
        }
        "execute_tool" | "TOOL" | "ai.toolCall" => ("execute_tool", NotModelCall(Tool)),
        "invoke_workflow" | "workflow" | "task" => ("invoke_workflow", NotModelCall(Workflow)),
        // `fetch_response` reads back a stored response: no usage, no call.
        "CHAIN" | "RETRIEVER" | "GUARDRAIL" | "EVALUATOR" | "PROMPT" | "fetch_response"
        | "retrieval" | "retrieve" => ("other", NotModelCall(Chain)),
        s if s.ends_with("_memory") => ("other", NotModelCall(Chain)),
        // The Vercel AI SDK's operation ids: `ai.<function>` is the run,
        // `ai.<function>.do<Step>` one model call.
        s if s.starts_with("ai.") => ai_sdk_operation(s),
        _ => ("other", Unknown),
    }
}

/// `ai.generateText.doGenerate`, `ai.streamText.doStream`, `ai.embed.doEmbed`...
fn ai_sdk_operation(id: &str) -> (&'static str, OperationKind) {
    use OperationKind::*;
    let Some((function, step)) = id["ai.".len()..].split_once('.') else {
        return ("invoke_workflow", NotModelCall(NonCallKind::Workflow));
    };
    let streamed = step == "doStream";
    match (function, step) {
        ("embed" | "embedMany", _) => ("embeddings", ModelCall { streamed: false }),
        (_, "doGenerate" | "doStream") => ("chat", ModelCall { streamed }),
        _ => ("other", NotModelCall(NonCallKind::Other)),
    }
}

/// Normalises a provider name to the current `gen_ai.provider.name` values,
/// so rows from old and new instrumentations group together.
pub fn normalize_provider(raw: &str) -> String {
    let lower = raw.trim().to_ascii_lowercase();
    let canonical = match lower.as_str() {
        "az.ai.openai" | "azure" | "azure_openai" | "azure.openai" | "azure-openai" => {
            "azure.ai.openai"
        }
        "az.ai.inference" => "azure.ai.inference",
        "vertex_ai" | "vertexai" | "vertex" | "google.vertex" => "gcp.vertex_ai",
        "gemini" | "google" | "google_genai" | "googleai" | "google.generative-ai" => "gcp.gemini",
        "bedrock" | "aws_bedrock" | "amazon-bedrock" | "amazon_bedrock" => "aws.bedrock",
        "mistral" | "mistralai" => "mistral_ai",
        "togetherai" => "together_ai",
        "xai" | "grok" => "x_ai",
        "cohere" | "openai" | "anthropic" | "groq" | "deepseek" | "perplexity"
        | "ibm.watsonx.ai" | "azure.ai.openai" | "azure.ai.inference" => {
            return lower;
        }
        // The Vercel AI SDK names a provider and its API (`openai.chat`,
        // `openai.responses`, `anthropic.messages`, `azure-openai.chat`,
        // `google.generative-ai`, `vertex.anthropic`...): the provider is
        // the part before the API.
        other => match other.split_once('.') {
            Some((
                head @ ("openai" | "anthropic" | "mistral" | "groq" | "xai" | "deepseek" | "cohere"
                | "perplexity" | "azure-openai" | "azure" | "vertex" | "google"
                | "amazon-bedrock" | "bedrock" | "togetherai" | "fireworks" | "cerebras"
                | "ollama"),
                _,
            )) => return normalize_provider(head),
            _ => return lower,
        },
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
            ("chat", OperationKind::ModelCall { streamed: false })
        ));
        assert!(matches!(
            normalize_operation("completion"),
            ("text_completion", OperationKind::ModelCall { .. })
        ));
        assert!(matches!(
            normalize_operation("embedding"),
            ("embeddings", OperationKind::ModelCall { .. })
        ));
        assert!(matches!(
            normalize_operation("invoke_agent"),
            (_, OperationKind::NotModelCall(NonCallKind::Agent))
        ));
        assert!(matches!(
            normalize_operation("CHAIN"),
            (_, OperationKind::NotModelCall(NonCallKind::Chain))
        ));
        assert!(matches!(
            normalize_operation("whatever"),
            (_, OperationKind::Unknown)
        ));
    }

    #[test]
    fn newer_operation_names_and_the_ai_sdk() {
        for (raw, kind) in [
            ("invoke_workflow", NonCallKind::Workflow),
            ("fetch_response", NonCallKind::Chain),
            ("create_memory", NonCallKind::Chain),
            ("execute_tool", NonCallKind::Tool),
            ("ai.generateText", NonCallKind::Workflow),
            ("ai.streamText", NonCallKind::Workflow),
            ("ai.toolCall", NonCallKind::Tool),
        ] {
            match normalize_operation(raw) {
                (_, OperationKind::NotModelCall(k)) => assert_eq!(k, kind, "{raw}"),
                _ => panic!("{raw} is not a call"),
            }
        }
        assert!(matches!(
            normalize_operation("ai.streamText.doStream"),
            ("chat", OperationKind::ModelCall { streamed: true })
        ));
        assert!(matches!(
            normalize_operation("ai.generateText.doGenerate"),
            ("chat", OperationKind::ModelCall { streamed: false })
        ));
        assert!(matches!(
            normalize_operation("ai.embedMany.doEmbed"),
            ("embeddings", OperationKind::ModelCall { .. })
        ));
    }

    #[test]
    fn provider_ids_of_the_ai_sdk() {
        for (raw, want) in [
            ("openai.chat", "openai"),
            ("openai.responses", "openai"),
            ("anthropic.messages", "anthropic"),
            ("google.generative-ai", "gcp.gemini"),
            ("amazon-bedrock", "aws.bedrock"),
            ("azure-openai.chat", "azure.ai.openai"),
            ("azure.ai.openai", "azure.ai.openai"),
            ("azure.ai.inference", "azure.ai.inference"),
            ("vertex", "gcp.vertex_ai"),
            ("vertex.anthropic", "gcp.vertex_ai"),
            ("gcp.gemini", "gcp.gemini"),
            ("aws.bedrock", "aws.bedrock"),
        ] {
            assert_eq!(normalize_provider(raw), want, "{raw}");
        }
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
            "gen_ai.usage.cost.currency",
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
