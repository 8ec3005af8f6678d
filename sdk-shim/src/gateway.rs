//! The gateway setting: whether an agent's model calls go straight to the
//! provider (the agent records a span per call, observe mode) or through
//! Tollgate's inline gateway (the gateway enforces the rules before the
//! provider and writes the row itself, so the agent records nothing).
//!
//! With [`GatewaySetting::Auto`] the collector decides: [`ModelRoute::resolve`]
//! asks its API (`GET /v1/gateway`) once, so the same agent, unchanged,
//! follows `gateway.enabled` being flipped on the collector. Either way the
//! rows carry the same scope: the agent's scope travels as span attributes
//! or as `X-Tollgate-*` headers.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use opentelemetry::trace::Tracer;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use crate::call::{ModelCall, Scope, record_model_call};
use crate::key::{self, VirtualKey};

const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Where model calls go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewaySetting {
    /// Straight to the provider.
    Off,
    /// Through the gateway when the collector runs one, else straight.
    Auto,
    /// Always through the gateway at this base URL (`http://host:7071`).
    On(String),
}

impl FromStr for GatewaySetting {
    type Err = GatewayError;

    /// `off`, `auto`, or the gateway's `http(s)://` base URL.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" | "false" => Ok(Self::Off),
            "auto" => Ok(Self::Auto),
            url if url.starts_with("http://") || url.starts_with("https://") => {
                Ok(Self::On(url.trim_end_matches('/').to_owned()))
            }
            other => Err(GatewayError::Setting(other.to_owned())),
        }
    }
}

/// Errors deciding where calls go.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    #[error("gateway setting `{0}`: expected `off`, `auto` or the gateway's http(s):// URL")]
    Setting(String),
    #[error("calls go through the gateway, which needs a virtual key (none was given)")]
    NoVirtualKey,
    #[error("a credential or scope value cannot be sent as an HTTP header: {0}")]
    Header(&'static str),
}

/// What the agent was given to reach its provider directly.
#[derive(Clone)]
pub struct Direct {
    /// OpenAI-compatible base URL, with or without the trailing `/v1`.
    pub base_url: String,
    pub api_key: String,
}

impl fmt::Debug for Direct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Direct")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// The inputs of [`ModelRoute::resolve`].
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub setting: GatewaySetting,
    /// The collector's HTTP API (`http://host:7070`), asked in `Auto`.
    pub collector_api: String,
    pub direct: Direct,
    /// The agent's virtual key, used when calls go through the gateway.
    pub virtual_key: Option<VirtualKey>,
    /// `service.name` of the agent: the rows' app.
    pub app: String,
    pub scope: Scope,
}

#[derive(Debug, Deserialize)]
struct Discovery {
    enabled: bool,
    #[serde(default)]
    url: Option<String>,
}

/// Where this agent's model calls go, decided once at start-up.
#[derive(Clone)]
pub struct ModelRoute {
    base_url: String,
    headers: HeaderMap,
    via_gateway: bool,
}

impl fmt::Debug for ModelRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelRoute")
            .field("base_url", &self.base_url)
            .field("via_gateway", &self.via_gateway)
            .finish_non_exhaustive()
    }
}

fn header(value: &str, what: &'static str) -> Result<HeaderValue, GatewayError> {
    HeaderValue::from_str(value).map_err(|_| GatewayError::Header(what))
}

fn bearer(token: &str) -> Result<HeaderValue, GatewayError> {
    key::bearer(token).map_err(|_| GatewayError::Header("the API key"))
}

/// The base URL with exactly one trailing `/v1`.
fn with_v1(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1") {
        base.to_owned()
    } else {
        format!("{base}/v1")
    }
}

/// Asks the collector whether it runs the gateway; `None` when it cannot
/// be asked (the agent then calls the provider and its spans say the rest).
/// Asks the collector where its gateway is, with the agent's key when it
/// has one (a collector that requires keys answers any valid key).
async fn discover(collector_api: &str, key: Option<&VirtualKey>) -> Option<String> {
    let client = reqwest::Client::builder()
        .timeout(DISCOVERY_TIMEOUT)
        .build()
        .ok()?;
    let url = format!("{}/v1/gateway", collector_api.trim_end_matches('/'));
    let mut request = client.get(&url);
    if let Some(k) = key {
        request = request.header(AUTHORIZATION, k.bearer_header().ok()?);
    }
    let answer = match request.send().await {
        Ok(a) if a.status().is_success() => a,
        Ok(a) => {
            tracing::warn!(status = %a.status(), "gateway discovery refused; calling the provider directly");
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e.without_url(), "gateway discovery failed; calling the provider directly");
            return None;
        }
    };
    let d: Discovery = answer.json().await.ok()?;
    if d.enabled { d.url } else { None }
}

impl ModelRoute {
    /// Decides where calls go (asking the collector in `Auto`).
    pub async fn resolve(config: &RouteConfig) -> Result<Self, GatewayError> {
        let gateway = match &config.setting {
            GatewaySetting::Off => None,
            GatewaySetting::On(url) => Some(url.clone()),
            GatewaySetting::Auto => {
                discover(&config.collector_api, config.virtual_key.as_ref()).await
            }
        };
        Self::new(config, gateway.as_deref())
    }

    /// Through the gateway at `gateway` when given, else direct.
    pub fn new(config: &RouteConfig, gateway: Option<&str>) -> Result<Self, GatewayError> {
        let mut headers = HeaderMap::new();
        let Some(gateway) = gateway else {
            headers.insert(AUTHORIZATION, bearer(&config.direct.api_key)?);
            return Ok(Self {
                base_url: with_v1(&config.direct.base_url),
                headers,
                via_gateway: false,
            });
        };
        let key = config
            .virtual_key
            .as_ref()
            .ok_or(GatewayError::NoVirtualKey)?;
        headers.insert(AUTHORIZATION, bearer(&key.0)?);
        let scope = &config.scope;
        let metadata = [
            ("x-tollgate-app", Some(config.app.as_str())),
            ("x-tollgate-user", scope.user.as_deref()),
            ("x-tollgate-session", scope.session.as_deref()),
            ("x-tollgate-route", scope.route.as_deref()),
            ("x-tollgate-environment", scope.environment.as_deref()),
        ];
        for (name, value) in metadata {
            if let Some(v) = value {
                headers.insert(HeaderName::from_static(name), header(v, name)?);
            }
        }
        Ok(Self {
            base_url: with_v1(gateway),
            headers,
            via_gateway: true,
        })
    }

    /// OpenAI-compatible base URL ending in `/v1`: the provider's or the gateway's.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `Authorization` (the provider key or the virtual key) and, through
    /// the gateway, the scope headers. Marked sensitive.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn via_gateway(&self) -> bool {
        self.via_gateway
    }

    /// Records `call` as a span when calls go straight to the provider;
    /// through the gateway, the gateway writes the row and this does nothing
    /// (recording both would count the call twice).
    pub fn record<T: Tracer>(&self, tracer: &T, call: &ModelCall, scope: &Scope) {
        if !self.via_gateway {
            record_model_call(tracer, call, scope);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(setting: GatewaySetting) -> RouteConfig {
        RouteConfig {
            setting,
            collector_api: "http://127.0.0.1:1".to_owned(),
            direct: Direct {
                base_url: "http://provider.test".to_owned(),
                api_key: "sk-direct".to_owned(),
            },
            virtual_key: Some(VirtualKey("tg-virtual".to_owned())),
            app: "agent".to_owned(),
            scope: Scope {
                project: Some("p".to_owned()),
                user: Some("alice".to_owned()),
                ..Scope::default()
            },
        }
    }

    #[test]
    fn settings_parse() {
        assert_eq!(
            "off".parse::<GatewaySetting>().unwrap(),
            GatewaySetting::Off
        );
        assert_eq!(
            "auto".parse::<GatewaySetting>().unwrap(),
            GatewaySetting::Auto
        );
        assert_eq!(
            "http://gw:7071/".parse::<GatewaySetting>().unwrap(),
            GatewaySetting::On("http://gw:7071".to_owned())
        );
        assert!("sometimes".parse::<GatewaySetting>().is_err());
    }

    #[test]
    fn direct_calls_use_the_provider_key_and_no_scope_headers() {
        let route = ModelRoute::new(&config(GatewaySetting::Off), None).unwrap();
        assert!(!route.via_gateway());
        assert_eq!(route.base_url(), "http://provider.test/v1");
        assert_eq!(route.headers()[AUTHORIZATION], "Bearer sk-direct");
        assert!(route.headers()[AUTHORIZATION].is_sensitive());
        assert!(route.headers().get("x-tollgate-user").is_none());
    }

    #[test]
    fn gateway_calls_use_the_virtual_key_and_carry_the_scope() {
        let route = ModelRoute::new(&config(GatewaySetting::Auto), Some("http://gw:7071")).unwrap();
        assert!(route.via_gateway());
        assert_eq!(route.base_url(), "http://gw:7071/v1");
        assert_eq!(route.headers()[AUTHORIZATION], "Bearer tg-virtual");
        assert_eq!(route.headers()["x-tollgate-user"], "alice");
        assert_eq!(route.headers()["x-tollgate-app"], "agent");
        assert!(route.headers().get("x-tollgate-session").is_none());
        assert!(!format!("{route:?}").contains("tg-virtual"));
    }

    #[test]
    fn the_gateway_without_a_virtual_key_is_an_error() {
        let mut c = config(GatewaySetting::Auto);
        c.virtual_key = None;
        assert!(matches!(
            ModelRoute::new(&c, Some("http://gw:7071")),
            Err(GatewayError::NoVirtualKey)
        ));
    }

    #[tokio::test]
    async fn auto_calls_directly_when_the_collector_cannot_be_asked() {
        // Nothing listens on port 1.
        let route = ModelRoute::resolve(&config(GatewaySetting::Auto))
            .await
            .unwrap();
        assert!(!route.via_gateway());
    }
}
