//! `[gateway]` of `tollgate.toml` as written: every field documented here is
//! user documentation. [`GatewayConfig::validate`](super::GatewayConfig::validate)
//! turns it into a typed [`super::ValidConfig`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[gateway]` section of `tollgate.toml`.
///
/// ```toml
/// [gateway]
/// enabled = true
/// listen = "127.0.0.1:7071"
/// default_max_tokens = 4096
///
/// [[gateway.providers]]
/// name = "openai"
/// kind = "openai"
/// api_key_env = "OPENAI_API_KEY"
///
/// [[gateway.providers]]
/// name = "anthropic"
/// kind = "anthropic"
/// api_key_file = "/run/secrets/anthropic"
///
/// [[gateway.routes]]
/// name = "support-chat"
/// retries = 1
/// targets = [
///   { provider = "openai", model = "gpt-4o-mini", timeout = "20s" },
///   { provider = "anthropic", model = "claude-3-5-haiku-20241022" },
/// ]
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Start the inline gateway inside `tollgate serve`. Default: false.
    #[serde(default)]
    pub enabled: bool,
    /// Address the gateway listens on. Default: 127.0.0.1:7071.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Output cap of a request that sets none (`max_tokens`,
    /// `max_completion_tokens`): the gateway sends it to the provider in
    /// the provider's own field (`max_completion_tokens` for openai and
    /// azure, `max_tokens` for the others), so the provider stops where the
    /// budgets' reservation does. Default: 4096.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u64,
    /// Input tokens reserved for each image of a request (its tokens depend
    /// on its pixels, which the gateway does not decode). The default
    /// covers the documented worst cases: OpenAI high detail 1,445 (gpt-4o),
    /// 3,779 (gpt-4.1-nano, 1,536 patches), Anthropic about 1,600;
    /// gpt-4o-mini, which bills up to 48,169 for an image, is always
    /// reserved at that. Default: 4096.
    #[serde(default = "default_image_input_tokens")]
    pub image_input_tokens: u64,
    /// Input tokens reserved, on top of what a Responses API request sends,
    /// when its input is partly kept by the provider where the gateway
    /// cannot see it: `previous_response_id`, `conversation`, a stored
    /// `prompt`, `item_reference` items, or hosted tools (`web_search`,
    /// `file_search`, `mcp`...) whose results the model reads. The call is
    /// settled with the tokens the provider bills. Set it to the context
    /// window of the largest model served for a bound that always holds.
    /// Default: 128000.
    #[serde(default = "default_unseen_input_tokens")]
    pub unseen_input_tokens: u64,
    /// Price in USD per million tokens (input and output alike) of a model
    /// missing from the price table, used to reserve and to settle it.
    /// Without it, a call to such a model under a budget on `cost_usd`
    /// (with `action = "block"`) is refused with 403 `model_unpriced`: its
    /// cost could not be counted. Default: unset.
    #[serde(default)]
    pub unpriced_cost_per_mtok: Option<f64>,
    /// Largest request body accepted, in bytes. Default: 32 MiB.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// When a provider is taken out of rotation after repeated failures.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// The upstream providers, `[[gateway.providers]]`. At least one.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Named chains of provider/model targets, `[[gateway.routes]]`. A
    /// request's `model` may name a route.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

fn default_listen() -> String {
    "127.0.0.1:7071".to_owned()
}

fn default_max_tokens() -> u64 {
    4096
}

fn default_image_input_tokens() -> u64 {
    4096
}

fn default_unseen_input_tokens() -> u64 {
    128_000
}

fn default_max_request_bytes() -> usize {
    32 * 1024 * 1024
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: default_listen(),
            default_max_tokens: default_max_tokens(),
            image_input_tokens: default_image_input_tokens(),
            unseen_input_tokens: default_unseen_input_tokens(),
            unpriced_cost_per_mtok: None,
            max_request_bytes: default_max_request_bytes(),
            circuit_breaker: CircuitBreakerConfig::default(),
            providers: Vec::new(),
            routes: Vec::new(),
        }
    }
}

/// `[gateway.circuit_breaker]`: one breaker per provider.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failed attempts (timeout, connection error, 429, 5xx)
    /// that open a provider's breaker; 0 turns breakers off. Default: 5.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open breaker skips the provider before one trial request
    /// is let through, e.g. "30s". Default: 30s.
    #[serde(default = "default_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
}

fn default_failure_threshold() -> u32 {
    5
}

fn default_cooldown() -> Duration {
    Duration::from_secs(30)
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: default_failure_threshold(),
            cooldown: default_cooldown(),
        }
    }
}

/// The API an upstream speaks and how it authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// api.openai.com (`Authorization: Bearer`).
    Openai,
    /// api.anthropic.com (`x-api-key`, Messages API).
    Anthropic,
    /// Azure OpenAI (`api-key`, deployments, `api-version`).
    Azure,
    /// Google Gemini through its OpenAI-compatible endpoint.
    Gemini,
    /// Any OpenAI-compatible base URL: Mistral, Groq, vLLM, Ollama, OpenRouter...
    OpenaiCompatible,
}

impl ProviderKind {
    /// The name used in `kind = ...`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Azure => "azure",
            ProviderKind::Gemini => "gemini",
            ProviderKind::OpenaiCompatible => "openai_compatible",
        }
    }
}

/// One `[[gateway.providers]]` table.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique name that routes and `provider/model` refer to, e.g. `openai`
    /// or `anthropic-eu`. No `/`.
    pub name: String,
    /// openai, anthropic, azure, gemini or openai_compatible.
    pub kind: ProviderKind,
    /// Where requests go. Defaults: openai `https://api.openai.com/v1`,
    /// anthropic `https://api.anthropic.com`, gemini
    /// `https://generativelanguage.googleapis.com/v1beta/openai`. Required
    /// for azure (`https://RESOURCE.openai.azure.com`) and openai_compatible
    /// (including its `/v1`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the provider's API key, read at start-up.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File holding the provider's API key (surrounding whitespace ignored),
    /// read at start-up. Use this or `api_key_env`; openai_compatible may
    /// have neither (a local vLLM or Ollama).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Not allowed: keys are never written in the config file. Present only
    /// so that writing one gives a clear error instead of "unknown field".
    #[serde(default)]
    pub api_key: Option<InlineKey>,
    /// Azure: the `api-version` query parameter, e.g. "2024-10-21". Required for azure.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Azure: the deployment every model of this provider is sent to.
    /// Without it, the model name is the deployment name.
    #[serde(default)]
    pub deployment: Option<String>,
    /// Time one attempt may take before the next link is tried: until the
    /// whole answer (JSON), or until the first event and then between two
    /// events (streams), e.g. "60s". Default: 120s.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Time to open a TCP (and TLS) connection, e.g. "5s". Default: 10s.
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// Region or endpoint label recorded as the row's `upstream` and checked
    /// by region rules, e.g. "eu-west". Default: the host of `base_url`.
    #[serde(default)]
    pub region: Option<String>,
    /// Models asked for without a provider prefix that this provider
    /// serves, globs allowed (`gpt-4o*`); the first provider listing a model
    /// wins. Defaults: openai `gpt-*`, `o1*`, `o3*`, `o4*`, `chatgpt-*`,
    /// `text-embedding-*`; anthropic `claude-*`; gemini `gemini-*`,
    /// `text-embedding-004`; azure and openai_compatible none (name them
    /// here, or ask for `provider/model`).
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Provider name recorded in rows and matched by rules (`provider/model`
    /// globs, price lookups). Defaults: openai, anthropic, azure.ai.openai,
    /// gcp.gemini, and this provider's `name` for openai_compatible.
    #[serde(default)]
    pub provider_name: Option<String>,
    /// Extra headers sent with every request to this provider, e.g.
    /// `{ "OpenAI-Organization" = "org-..." }`. Not for auth headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Whether this provider serves OpenAI's Responses API at
    /// `{base_url}/responses` (and `/responses/{id}`...). When it does not,
    /// `POST /v1/responses` calls are translated to chat completions for
    /// it, and calls that build on stored state (`previous_response_id`,
    /// `conversation`...) cannot go to it. Only openai and
    /// openai_compatible providers may set it. Defaults: true for openai,
    /// false for the others.
    #[serde(default)]
    pub responses_api: Option<bool>,
}

/// Header values may be sensitive: `Debug` lists their names only.
impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key_env", &self.api_key_env)
            .field("api_key_file", &self.api_key_file)
            .field("api_key", &self.api_key)
            .field("api_version", &self.api_version)
            .field("deployment", &self.deployment)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("region", &self.region)
            .field("models", &self.models)
            .field("provider_name", &self.provider_name)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("responses_api", &self.responses_api)
            .finish()
    }
}

/// A key written inline by mistake: kept only to refuse it, never shown.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct InlineKey(String);

impl fmt::Debug for InlineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One `[[gateway.routes]]` table: a name for an ordered chain of targets.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// What requests put in `model` to use this route, e.g. "support-chat". No `/`.
    pub name: String,
    /// The chain, tried in order on timeout, 429, 5xx or connection error.
    /// When any target has a `weight`, the first target of each request is
    /// drawn by weight (1 when unset) and the others follow in order.
    pub targets: Vec<TargetConfig>,
    /// Extra attempts on the same target before moving to the next (not
    /// after a redirect, which moves on at once). Default: 0.
    #[serde(default)]
    pub retries: u32,
    /// Wait before the first retry, doubled on each further one, e.g. "200ms".
    /// Default: 100ms.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
}

fn default_backoff() -> Duration {
    Duration::from_millis(100)
}

/// One link of a route.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// A provider's `name`.
    pub provider: String,
    /// The model as that provider names it (for azure, the deployment's model).
    pub model: String,
    /// Share of first attempts this target gets; see `targets`.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Overrides the provider's `timeout` for this link.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}
