//! One upstream provider: where each operation goes, how it authenticates,
//! and its pooled client. The request never chooses any of this.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use reqwest::Url;

use super::Breaker;
use crate::config::{CircuitBreakerConfig, ProviderKind, ProviderSettings};
use crate::dialect::{Dialect, UpstreamOp};
use crate::error::GatewayError;
use crate::secret::Secret;

/// Anthropic API version sent unless the caller (speaking Anthropic) sent one.
pub(crate) const ANTHROPIC_VERSION: &str = "2023-06-01";

const REDACTED: &str = "[redacted]";

enum Urls {
    Fixed {
        chat: Box<Url>,
        embeddings: Box<Url>,
        messages: Box<Url>,
        /// The Responses API's `/responses` (when the provider serves it).
        responses: Box<Url>,
    },
    /// Azure without a fixed deployment: the model names the deployment.
    AzurePerModel { base: String, api_version: String },
}

pub(crate) struct Provider {
    pub name: Arc<str>,
    pub kind: ProviderKind,
    pub dialect: Dialect,
    /// Provider name for rows, rules and prices (`openai`, `gcp.gemini`...).
    pub system: Arc<str>,
    /// Region or address label for rows and region rules.
    pub upstream: Arc<str>,
    pub timeout: Duration,
    /// Globs of the bare model names this provider serves.
    pub models: Vec<String>,
    /// Serves OpenAI's Responses API.
    pub responses_api: bool,
    pub breaker: Breaker,
    client: reqwest::Client,
    urls: Urls,
    /// Auth (marked sensitive), defaults and configured extra headers.
    headers: Vec<(HeaderName, HeaderValue)>,
    key: Option<Secret>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

fn url(s: &str, provider: &str) -> Result<Box<Url>, GatewayError> {
    Url::parse(s)
        .map(Box::new)
        .map_err(|e| GatewayError::Client {
            provider: provider.to_owned(),
            message: format!("bad URL {s}: {e}"),
        })
}

fn sensitive(value: &str, provider: &str) -> Result<HeaderValue, GatewayError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| GatewayError::Client {
        provider: provider.to_owned(),
        message: "the API key cannot be sent as a header".to_owned(),
    })?;
    v.set_sensitive(true);
    Ok(v)
}

impl Provider {
    pub(crate) fn build(
        s: &ProviderSettings,
        breaker: &CircuitBreakerConfig,
        tls: &rustls::ClientConfig,
    ) -> Result<Self, GatewayError> {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(s.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            // A redirect is answered as a failure (`Failure::Redirect`), never
            // followed: the key must only go where the config says.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tollgate-gateway/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls.clone())
            .build()
            .map_err(|e| GatewayError::Client {
                provider: s.name.clone(),
                message: e.without_url().to_string(),
            })?;
        let base = &s.base_url;
        let urls = match (s.kind, &s.deployment) {
            (ProviderKind::Azure, Some(d)) => {
                let v = s.api_version.as_deref().unwrap_or_default();
                Urls::Fixed {
                    chat: url(
                        &format!("{base}/openai/deployments/{d}/chat/completions?api-version={v}"),
                        &s.name,
                    )?,
                    embeddings: url(
                        &format!("{base}/openai/deployments/{d}/embeddings?api-version={v}"),
                        &s.name,
                    )?,
                    messages: url(&format!("{base}/v1/messages"), &s.name)?,
                    responses: url(&format!("{base}/openai/v1/responses"), &s.name)?,
                }
            }
            (ProviderKind::Azure, None) => Urls::AzurePerModel {
                base: base.clone(),
                api_version: s.api_version.clone().unwrap_or_default(),
            },
            _ => Urls::Fixed {
                chat: url(&format!("{base}/chat/completions"), &s.name)?,
                embeddings: url(&format!("{base}/embeddings"), &s.name)?,
                messages: url(&format!("{base}/v1/messages"), &s.name)?,
                responses: url(&format!("{base}/responses"), &s.name)?,
            },
        };
        let mut headers = Vec::with_capacity(s.headers.len() + 2);
        if let Some(key) = &s.key {
            match s.kind {
                ProviderKind::Anthropic => headers.push((
                    HeaderName::from_static("x-api-key"),
                    sensitive(key.expose(), &s.name)?,
                )),
                ProviderKind::Azure => headers.push((
                    HeaderName::from_static("api-key"),
                    sensitive(key.expose(), &s.name)?,
                )),
                ProviderKind::Openai | ProviderKind::Gemini | ProviderKind::OpenaiCompatible => {
                    headers.push((
                        http::header::AUTHORIZATION,
                        sensitive(&format!("Bearer {}", key.expose()), &s.name)?,
                    ));
                }
            }
        }
        headers.extend(s.headers.iter().cloned());
        Ok(Self {
            name: Arc::from(s.name.as_str()),
            kind: s.kind,
            dialect: Dialect::of(s.kind),
            system: Arc::from(s.provider_name.as_str()),
            upstream: Arc::from(s.upstream.as_str()),
            timeout: s.timeout,
            models: s.models.clone(),
            responses_api: s.responses_api,
            breaker: Breaker::new(breaker.failure_threshold, breaker.cooldown),
            client,
            urls,
            headers,
            key: s.key.clone(),
        })
    }

    /// Whether this provider serves the bare model name `model`.
    pub(crate) fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|p| crate::glob::matches(p, model))
    }

    /// The request field that caps a chat answer's output here: OpenAI's
    /// own APIs want `max_completion_tokens` (reasoning models refuse
    /// `max_tokens`); other OpenAI-compatible servers (Gemini's included)
    /// may only know `max_tokens`, which is also Anthropic's.
    pub(crate) fn output_cap_field(&self) -> &'static str {
        match self.kind {
            ProviderKind::Openai | ProviderKind::Azure => "max_completion_tokens",
            ProviderKind::Anthropic | ProviderKind::Gemini | ProviderKind::OpenaiCompatible => {
                "max_tokens"
            }
        }
    }

    fn url(&self, op: UpstreamOp, model: &str) -> Result<Url, String> {
        match &self.urls {
            Urls::Fixed {
                chat,
                embeddings,
                messages,
                responses,
            } => Ok(match op {
                UpstreamOp::Chat => Url::clone(chat),
                UpstreamOp::Embeddings => Url::clone(embeddings),
                UpstreamOp::Messages => Url::clone(messages),
                UpstreamOp::Responses => Url::clone(responses),
            }),
            Urls::AzurePerModel { base, api_version } => {
                let path = match op {
                    UpstreamOp::Chat => "chat/completions",
                    UpstreamOp::Embeddings => "embeddings",
                    UpstreamOp::Messages => return Err("azure serves no messages API".into()),
                    UpstreamOp::Responses => {
                        return Err("this azure provider serves no Responses API".into());
                    }
                };
                let mut u = Url::parse(base).map_err(|e| e.to_string())?;
                u.path_segments_mut()
                    .map_err(|()| "base URL cannot take a path".to_owned())?
                    .pop_if_empty()
                    .extend(["openai", "deployments", model])
                    .extend(path.split('/'));
                u.query_pairs_mut().append_pair("api-version", api_version);
                Ok(u)
            }
        }
    }

    /// The upstream request for `op` on `model` with `body` (already in this
    /// provider's dialect). `forwarded` are caller headers the dialect lets
    /// through (`anthropic-version`, `anthropic-beta`).
    pub(crate) fn request(
        &self,
        op: UpstreamOp,
        model: &str,
        body: Bytes,
        stream: bool,
        forwarded: &[(HeaderName, HeaderValue)],
    ) -> Result<reqwest::RequestBuilder, String> {
        let url = self.url(op, model)?;
        let mut req = self
            .client
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::ACCEPT,
                if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            );
        if self.dialect == Dialect::Anthropic
            && !forwarded.iter().any(|(n, _)| n == "anthropic-version")
        {
            req = req.header("anthropic-version", ANTHROPIC_VERSION);
        }
        for (name, value) in self.headers.iter().chain(forwarded) {
            req = req.header(name, value);
        }
        Ok(req.body(body))
    }

    /// A request to the Responses API's `/responses` followed by the path
    /// segments `tail` (each escaped) and the caller's `query`, for the
    /// calls on stored responses: retrieve, delete, cancel, input items,
    /// input token counts. Only for a provider that serves the API.
    pub(crate) fn responses_resource(
        &self,
        method: http::Method,
        tail: &[&str],
        query: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<reqwest::RequestBuilder, String> {
        let base = match &self.urls {
            Urls::Fixed { responses, .. } if self.responses_api => Url::clone(responses),
            _ => return Err(format!("provider `{}` serves no Responses API", self.name)),
        };
        let mut url = base;
        url.path_segments_mut()
            .map_err(|()| "base URL cannot take a path".to_owned())?
            .extend(tail);
        url.set_query(query.filter(|q| !q.is_empty()));
        let mut req = self.client.request(method, url);
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        if let Some(body) = body {
            req = req
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        Ok(req)
    }

    /// `text` with this provider's key replaced, for anything read from the
    /// provider that goes on to a caller or a log (an upstream may echo it).
    pub(crate) fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.key {
            Some(k) if !k.expose().is_empty() && text.contains(k.expose()) => {
                Cow::Owned(text.replace(k.expose(), REDACTED))
            }
            _ => Cow::Borrowed(text),
        }
    }
}
