//! Validation: [`GatewayConfig`] -> [`ValidConfig`], with provider keys read
//! from the environment or files. Every error names the field and the fix.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use tollgate_rules::pricing::ModelPrice;

use super::raw::{CircuitBreakerConfig, GatewayConfig, ProviderConfig, ProviderKind, RouteConfig};
use crate::error::GatewayError;
use crate::secret::Secret;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers the gateway sets itself; a provider's `headers` may not.
const RESERVED_HEADERS: [&str; 9] = [
    "authorization",
    "x-api-key",
    "api-key",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "accept",
];

/// A validated `[gateway]`, provider keys loaded. `Debug` shows no key.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) default_max_tokens: u64,
    pub(crate) image_input_tokens: u64,
    pub(crate) unseen_input_tokens: u64,
    /// `unpriced_cost_per_mtok` as a price (input and output alike).
    pub(crate) unpriced_price: Option<ModelPrice>,
    pub(crate) max_request_bytes: usize,
    pub(crate) breaker: CircuitBreakerConfig,
    pub(crate) providers: Vec<ProviderSettings>,
    pub(crate) routes: Vec<RouteSettings>,
    /// Roots trusted by upstream connections besides the Mozilla ones.
    pub(crate) extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl ValidConfig {
    /// The address to listen on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The largest request body accepted (`gateway.max_request_bytes`).
    pub fn max_body_bytes(&self) -> usize {
        self.max_request_bytes
    }

    /// Also trusts `roots` on upstream connections (a private CA, a
    /// TLS-inspecting proxy), on top of the Mozilla roots.
    #[must_use]
    pub fn with_extra_roots(
        mut self,
        roots: impl IntoIterator<Item = rustls::pki_types::CertificateDer<'static>>,
    ) -> Self {
        self.extra_roots.extend(roots);
        self
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ProviderSettings {
    pub name: String,
    pub kind: ProviderKind,
    /// Without a trailing slash.
    pub base_url: String,
    pub key: Option<Secret>,
    pub api_version: Option<String>,
    pub deployment: Option<String>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub upstream: String,
    pub models: Vec<String>,
    pub provider_name: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Serves the Responses API.
    pub responses_api: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct RouteSettings {
    pub name: String,
    pub targets: Vec<TargetSettings>,
    pub retries: u32,
    pub backoff: Duration,
    /// Whether any target has a weight.
    pub weighted: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct TargetSettings {
    /// Index into [`ValidConfig::providers`].
    pub provider: usize,
    pub model: String,
    pub weight: u32,
    pub timeout: Option<Duration>,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> GatewayError {
    GatewayError::Config {
        field: field.into(),
        message: message.into(),
    }
}

impl GatewayConfig {
    /// Validates the section and reads every provider key (from the process
    /// environment or files).
    pub fn validate(&self) -> Result<ValidConfig, GatewayError> {
        self.validate_with(&|name| std::env::var(name).ok())
    }

    /// [`GatewayConfig::validate`] with environment variables read by `env`.
    pub fn validate_with(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ValidConfig, GatewayError> {
        let listen = self.listen.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "gateway.listen",
                format!("`{}` is not an address like 127.0.0.1:7071", self.listen),
            )
        })?;
        if self.default_max_tokens == 0 {
            return Err(invalid(
                "gateway.default_max_tokens",
                "must be at least 1, e.g. 4096",
            ));
        }
        if self.image_input_tokens == 0 {
            return Err(invalid(
                "gateway.image_input_tokens",
                "must be at least 1, e.g. 4096 (an image is never free)",
            ));
        }
        let unpriced_price = match self.unpriced_cost_per_mtok {
            None => None,
            Some(p) if p.is_finite() && p > 0.0 => Some(ModelPrice::new(p, p)),
            Some(p) => {
                return Err(invalid(
                    "gateway.unpriced_cost_per_mtok",
                    format!(
                        "`{p}` is not a price: give USD per million tokens above 0, e.g. 15.0 \
                         (remove the key to refuse unpriced models under cost budgets)"
                    ),
                ));
            }
        };
        if self.max_request_bytes < 1024 {
            return Err(invalid(
                "gateway.max_request_bytes",
                "must be at least 1024 bytes",
            ));
        }
        if self.circuit_breaker.failure_threshold > 0 && self.circuit_breaker.cooldown.is_zero() {
            return Err(invalid(
                "gateway.circuit_breaker.cooldown",
                "must be more than 0s, e.g. \"30s\" (failure_threshold = 0 turns breakers off)",
            ));
        }
        if self.providers.is_empty() {
            return Err(invalid(
                "gateway.providers",
                "the gateway needs at least one [[gateway.providers]] table",
            ));
        }
        let mut names = HashSet::new();
        let mut providers = Vec::with_capacity(self.providers.len());
        for (i, p) in self.providers.iter().enumerate() {
            let at = format!("gateway.providers[{i}]");
            let settings = provider(p, &at, env)?;
            if !names.insert(settings.name.clone()) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!(
                        "provider `{}` is defined twice; names must be unique",
                        p.name
                    ),
                ));
            }
            providers.push(settings);
        }
        let mut route_names = HashSet::new();
        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("gateway.routes[{i}]");
            let settings = route(r, &at, &providers)?;
            if !route_names.insert(settings.name.clone()) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!("route `{}` is defined twice; names must be unique", r.name),
                ));
            }
            routes.push(settings);
        }
        Ok(ValidConfig {
            listen,
            default_max_tokens: self.default_max_tokens,
            image_input_tokens: self.image_input_tokens,
            unseen_input_tokens: self.unseen_input_tokens,
            unpriced_price,
            max_request_bytes: self.max_request_bytes,
            breaker: self.circuit_breaker.clone(),
            providers,
            routes,
            extra_roots: Vec::new(),
        })
    }
}

fn check_name(name: &str, field: &str) -> Result<(), GatewayError> {
    if name.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if name.contains('/') || name.chars().any(char::is_whitespace) {
        return Err(invalid(
            field,
            format!("`{name}` may not contain `/` or spaces (requests write `provider/model`)"),
        ));
    }
    Ok(())
}

fn default_base_url(kind: ProviderKind) -> Option<&'static str> {
    match kind {
        ProviderKind::Openai => Some("https://api.openai.com/v1"),
        ProviderKind::Anthropic => Some("https://api.anthropic.com"),
        ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com/v1beta/openai"),
        ProviderKind::Azure | ProviderKind::OpenaiCompatible => None,
    }
}

fn default_models(kind: ProviderKind) -> Vec<String> {
    let list: &[&str] = match kind {
        ProviderKind::Openai => &[
            "gpt-*",
            "o1*",
            "o3*",
            "o4*",
            "chatgpt-*",
            "text-embedding-*",
        ],
        ProviderKind::Anthropic => &["claude-*"],
        ProviderKind::Gemini => &["gemini-*", "text-embedding-004"],
        ProviderKind::Azure | ProviderKind::OpenaiCompatible => &[],
    };
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn default_provider_name(kind: ProviderKind, name: &str) -> String {
    match kind {
        ProviderKind::Openai => "openai".to_owned(),
        ProviderKind::Anthropic => "anthropic".to_owned(),
        ProviderKind::Azure => "azure.ai.openai".to_owned(),
        ProviderKind::Gemini => "gcp.gemini".to_owned(),
        ProviderKind::OpenaiCompatible => name.to_owned(),
    }
}

fn provider(
    p: &ProviderConfig,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ProviderSettings, GatewayError> {
    check_name(&p.name, &format!("{at}.name"))?;
    if p.api_key.is_some() {
        return Err(invalid(
            format!("{at}.api_key"),
            "provider keys are never written in the config file; \
             set api_key_env (an environment variable) or api_key_file instead",
        ));
    }
    let base = match (&p.base_url, default_base_url(p.kind)) {
        (Some(url), _) => url.trim().to_owned(),
        (None, Some(default)) => default.to_owned(),
        (None, None) => {
            return Err(invalid(
                format!("{at}.base_url"),
                format!(
                    "required for kind = \"{}\", e.g. {}",
                    p.kind.as_str(),
                    if p.kind == ProviderKind::Azure {
                        "\"https://RESOURCE.openai.azure.com\""
                    } else {
                        "\"http://127.0.0.1:8000/v1\""
                    }
                ),
            ));
        }
    };
    let parsed = url::Url::parse(&base).map_err(|e| {
        invalid(
            format!("{at}.base_url"),
            format!("`{base}` is not a URL: {e}"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(
            format!("{at}.base_url"),
            "must start with http:// or https://",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            format!("{at}.base_url"),
            "must not carry credentials; use api_key_env or api_key_file",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid(
            format!("{at}.base_url"),
            "must not have a query or fragment (azure: set api_version instead)",
        ));
    }
    let host = parsed.host_str().unwrap_or_default();
    let upstream_default = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let key = read_key(p, at, env)?;
    if p.kind == ProviderKind::Azure && p.api_version.as_deref().is_none_or(str::is_empty) {
        return Err(invalid(
            format!("{at}.api_version"),
            "required for kind = \"azure\", e.g. \"2024-10-21\"",
        ));
    }
    if p.kind != ProviderKind::Azure && (p.api_version.is_some() || p.deployment.is_some()) {
        let field = if p.api_version.is_some() {
            "api_version"
        } else {
            "deployment"
        };
        return Err(invalid(
            format!("{at}.{field}"),
            "only azure providers take api_version and deployment",
        ));
    }
    let timeout = p.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        return Err(invalid(
            format!("{at}.timeout"),
            "must be more than 0s, e.g. \"60s\"",
        ));
    }
    let connect_timeout = p.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    if connect_timeout.is_zero() {
        return Err(invalid(
            format!("{at}.connect_timeout"),
            "must be more than 0s, e.g. \"5s\"",
        ));
    }
    let models = match &p.models {
        Some(list) => {
            if let Some(i) = list.iter().position(|m| m.trim().is_empty()) {
                return Err(invalid(format!("{at}.models[{i}]"), "must not be empty"));
            }
            list.clone()
        }
        None => default_models(p.kind),
    };
    let mut headers = Vec::with_capacity(p.headers.len());
    for (name, value) in &p.headers {
        let field = format!("{at}.headers.{name}");
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(&field, "is not a valid header name"))?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(invalid(
                &field,
                "is set by the gateway itself; provider keys go in api_key_env or api_key_file",
            ));
        }
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| invalid(&field, "is not a valid header value"))?;
        value.set_sensitive(true);
        headers.push((header, value));
    }
    let provider_name = match &p.provider_name {
        Some(n) if n.trim().is_empty() => {
            return Err(invalid(format!("{at}.provider_name"), "must not be empty"));
        }
        Some(n) => n.clone(),
        None => default_provider_name(p.kind, &p.name),
    };
    let upstream = match &p.region {
        Some(r) if r.trim().is_empty() => {
            return Err(invalid(format!("{at}.region"), "must not be empty"));
        }
        Some(r) => r.clone(),
        None => upstream_default,
    };
    let responses_api = match (p.responses_api, p.kind) {
        (Some(true), ProviderKind::Openai | ProviderKind::OpenaiCompatible) => true,
        (Some(true), _) => {
            return Err(invalid(
                format!("{at}.responses_api"),
                "only openai and openai_compatible providers serve the Responses API; \
                 remove it (Responses calls are translated for this provider)",
            ));
        }
        (Some(false), _) => false,
        (None, kind) => kind == ProviderKind::Openai,
    };
    Ok(ProviderSettings {
        responses_api,
        name: p.name.clone(),
        kind: p.kind,
        base_url: base.trim_end_matches('/').to_owned(),
        key,
        api_version: p.api_version.clone(),
        deployment: p.deployment.clone(),
        timeout,
        connect_timeout,
        upstream,
        models,
        provider_name,
        headers,
    })
}

fn read_key(
    p: &ProviderConfig,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, GatewayError> {
    let key = match (&p.api_key_env, &p.api_key_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                format!("{at}.api_key_file"),
                "set either api_key_env or api_key_file, not both",
            ));
        }
        (Some(var), None) => {
            let value = env(var).unwrap_or_default();
            if value.trim().is_empty() {
                return Err(GatewayError::ProviderKey {
                    field: format!("{at}.api_key_env"),
                    message: format!("environment variable {var} is not set or empty"),
                });
            }
            Some(Secret::new(value.trim()))
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| GatewayError::ProviderKey {
                field: format!("{at}.api_key_file"),
                message: format!("cannot read {}: {}", path.display(), e.kind()),
            })?;
            if text.trim().is_empty() {
                return Err(GatewayError::ProviderKey {
                    field: format!("{at}.api_key_file"),
                    message: format!("{} is empty", path.display()),
                });
            }
            Some(Secret::new(text.trim()))
        }
        (None, None) if p.kind == ProviderKind::OpenaiCompatible => None,
        (None, None) => {
            return Err(invalid(
                format!("{at}.api_key_env"),
                format!(
                    "kind = \"{}\" needs a key: set api_key_env or api_key_file",
                    p.kind.as_str()
                ),
            ));
        }
    };
    if let Some(k) = &key
        && HeaderValue::from_str(k.expose()).is_err()
    {
        return Err(GatewayError::ProviderKey {
            field: format!(
                "{at}.{}",
                if p.api_key_env.is_some() {
                    "api_key_env"
                } else {
                    "api_key_file"
                }
            ),
            message: "the key contains characters a header cannot carry".to_owned(),
        });
    }
    Ok(key)
}

fn route(
    r: &RouteConfig,
    at: &str,
    providers: &[ProviderSettings],
) -> Result<RouteSettings, GatewayError> {
    check_name(&r.name, &format!("{at}.name"))?;
    if r.targets.is_empty() {
        return Err(invalid(
            format!("{at}.targets"),
            "a route needs at least one target, e.g. [{ provider = \"openai\", model = \"gpt-4o-mini\" }]",
        ));
    }
    if r.retries > 10 {
        return Err(invalid(format!("{at}.retries"), "must be at most 10"));
    }
    let mut targets = Vec::with_capacity(r.targets.len());
    for (i, t) in r.targets.iter().enumerate() {
        let tat = format!("{at}.targets[{i}]");
        let Some(provider) = providers.iter().position(|p| p.name == t.provider) else {
            let known: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
            return Err(invalid(
                format!("{tat}.provider"),
                format!(
                    "no provider is named `{}`; known: {}",
                    t.provider,
                    known.join(", ")
                ),
            ));
        };
        if t.model.trim().is_empty() {
            return Err(invalid(format!("{tat}.model"), "must not be empty"));
        }
        if t.weight == Some(0) {
            return Err(invalid(
                format!("{tat}.weight"),
                "must be at least 1 (remove the target to stop using it)",
            ));
        }
        if t.timeout.is_some_and(|d| d.is_zero()) {
            return Err(invalid(format!("{tat}.timeout"), "must be more than 0s"));
        }
        targets.push(TargetSettings {
            provider,
            model: t.model.clone(),
            weight: t.weight.unwrap_or(1),
            timeout: t.timeout,
        });
    }
    Ok(RouteSettings {
        name: r.name.clone(),
        weighted: r.targets.iter().any(|t| t.weight.is_some()),
        targets,
        retries: r.retries,
        backoff: r.backoff,
    })
}
