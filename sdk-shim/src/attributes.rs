//! Attribute names the SDK writes and the collector reads.

/// Attribute keys, current GenAI semantic conventions and `tollgate.*`.
pub mod names {
    pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
    pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
    pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
    pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
    pub const GEN_AI_RESPONSE_ID: &str = "gen_ai.response.id";
    pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
    pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    pub const GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
    pub const GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: &str =
        "gen_ai.usage.cache_creation.input_tokens";
    pub const GEN_AI_USAGE_REASONING_TOKENS: &str = "gen_ai.usage.reasoning.output_tokens";
    pub const GEN_AI_CONVERSATION_ID: &str = "gen_ai.conversation.id";
    pub const GEN_AI_AGENT_ID: &str = "gen_ai.agent.id";
    pub const GEN_AI_AGENT_NAME: &str = "gen_ai.agent.name";
    pub const ERROR_TYPE: &str = "error.type";
    pub const USER_ID: &str = "user.id";
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    pub const SERVER_ADDRESS: &str = "server.address";

    pub const TOLLGATE_ORG: &str = "tollgate.org";
    pub const TOLLGATE_PROJECT: &str = "tollgate.project";
    pub const TOLLGATE_USER: &str = "tollgate.user";
    pub const TOLLGATE_SESSION: &str = "tollgate.session";
    pub const TOLLGATE_ROUTE: &str = "tollgate.route";
    pub const TOLLGATE_ENVIRONMENT: &str = "tollgate.environment";
    pub const TOLLGATE_STREAM: &str = "tollgate.stream";
    pub const TOLLGATE_TTFT_MS: &str = "tollgate.ttft_ms";
    pub const TOLLGATE_COST_USD: &str = "tollgate.cost_usd";
    /// Prefix of custom labels: `tollgate.label.team = "search"`.
    pub const TOLLGATE_LABEL_PREFIX: &str = "tollgate.label.";

    pub const SERVICE_NAME: &str = "service.name";
    pub const DEPLOYMENT_ENVIRONMENT_NAME: &str = "deployment.environment.name";
}
