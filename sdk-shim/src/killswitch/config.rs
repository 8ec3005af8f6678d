//! Where the kill-switch looks, for which scope, and how often.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap};
use tollgate_proto::enforcement::v1 as proto;
use tonic::metadata::AsciiMetadataValue;
use url::Url;

use super::error::KillSwitchError;
use crate::call::Scope;
use crate::key::{KEY_ENV, VirtualKey};

/// How a [`KillSwitch`](super::KillSwitch) reaches the collector.
///
/// Build with [`KillSwitchConfig::new`]; the timing fields have defaults
/// that keep an agent within a second of the collector and may be changed
/// afterwards.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KillSwitchConfig {
    /// The collector's OTLP gRPC endpoint, which also serves
    /// `Enforcement/Watch`, e.g. `http://127.0.0.1:4317`.
    pub grpc_endpoint: String,
    /// Base URL of the collector's HTTP API (the fallback), e.g.
    /// `http://127.0.0.1:7070`; `/v1/enforcement` is appended.
    pub api_base: String,
    /// The agent's scope; unset fields match any value of a block's scope.
    /// Custom labels are not part of the enforcement protocol and are ignored.
    pub scope: Scope,
    /// The agent's app (its `service.name`), so blocks on `app=...` apply.
    pub app: Option<String>,
    /// A `read` key, for a collector that requires keys (`[auth] mode =
    /// "keys"`): sent as `Authorization: Bearer <key>` on the gRPC watch
    /// and on every HTTP poll. [`new`](Self::new) takes it from
    /// `TOLLGATE_KEY` when that is set and not empty; never printed.
    pub key: Option<VirtualKey>,
    /// How often the HTTP endpoint is polled while no gRPC stream is up.
    /// Default 500 ms.
    pub poll_interval: Duration,
    /// First delay before reopening a failed gRPC stream. Default 100 ms.
    pub reconnect_min: Duration,
    /// The delay doubles after each failed attempt up to this. Default 5 s.
    pub reconnect_max: Duration,
    /// Limit for one HTTP poll, one gRPC connect and the first gRPC state.
    /// Default 2 s.
    pub request_timeout: Duration,
}

impl KillSwitchConfig {
    /// A config for `scope` with the default timings, and the key from
    /// `TOLLGATE_KEY` when that is set.
    pub fn new(
        grpc_endpoint: impl Into<String>,
        api_base: impl Into<String>,
        scope: Scope,
    ) -> Self {
        Self {
            grpc_endpoint: grpc_endpoint.into(),
            api_base: api_base.into(),
            scope,
            app: None,
            key: VirtualKey::from_lookup(KEY_ENV, |name| std::env::var(name).ok()),
            poll_interval: Duration::from_millis(500),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            request_timeout: Duration::from_secs(2),
        }
    }

    /// Sets [`app`](Self::app).
    #[must_use]
    pub fn with_app(mut self, app: impl Into<String>) -> Self {
        self.app = Some(app.into());
        self
    }

    /// Sets [`key`](Self::key), whatever `TOLLGATE_KEY` says.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(VirtualKey(key.into()));
        self
    }

    /// Checks every field and derives what the watcher needs.
    pub(crate) fn validate(&self) -> Result<ValidatedConfig, KillSwitchError> {
        for (field, value) in [
            ("poll_interval", self.poll_interval),
            ("reconnect_min", self.reconnect_min),
            ("reconnect_max", self.reconnect_max),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                return Err(KillSwitchError::ZeroDuration { field });
            }
        }
        if self.reconnect_min > self.reconnect_max {
            return Err(KillSwitchError::Backoff {
                min: self.reconnect_min,
                max: self.reconnect_max,
            });
        }

        if !self.grpc_endpoint.starts_with("http://") {
            return Err(KillSwitchError::Scheme {
                field: "grpc_endpoint",
                url: self.grpc_endpoint.clone(),
            });
        }
        let grpc = tonic::transport::Endpoint::from_shared(self.grpc_endpoint.clone())
            .map_err(|source| KillSwitchError::GrpcEndpoint {
                endpoint: self.grpc_endpoint.clone(),
                source,
            })?
            .connect_timeout(self.request_timeout)
            .tcp_nodelay(true)
            // A collector that vanishes without closing the connection must
            // still end the stream, or the agent would trust a dead watch.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);

        let api_base = self.api_base.trim_end_matches('/');
        let mut poll_url = Url::parse(&format!("{api_base}/v1/enforcement")).map_err(|source| {
            KillSwitchError::ApiBase {
                url: self.api_base.clone(),
                source,
            }
        })?;
        if poll_url.scheme() != "http" {
            return Err(KillSwitchError::Scheme {
                field: "api_base",
                url: self.api_base.clone(),
            });
        }
        let scope = self.proto_scope();
        {
            let mut query = poll_url.query_pairs_mut();
            for (name, value) in scope_dims(&scope) {
                // The collector rejects unknown parameters, and an empty
                // value would be a different scope from an absent one.
                if !value.is_empty() {
                    query.append_pair(name, value);
                }
            }
        }
        let mut headers = HeaderMap::new();
        let mut watch_authorization = None;
        if let Some(key) = &self.key {
            if key.is_empty() {
                return Err(KillSwitchError::Key("is empty"));
            }
            // The parse errors are dropped: their text could show the key.
            let unsendable = || KillSwitchError::Key("contains characters a header cannot carry");
            headers.insert(
                AUTHORIZATION,
                key.bearer_header().map_err(|_| unsendable())?,
            );
            watch_authorization = Some(key.bearer_metadata().map_err(|_| unsendable())?);
        }
        let http = reqwest::Client::builder()
            .timeout(self.request_timeout)
            .default_headers(headers)
            .build()
            .map_err(KillSwitchError::HttpClient)?;

        Ok(ValidatedConfig {
            grpc,
            watch_request: proto::WatchRequest { scope: Some(scope) },
            watch_authorization,
            http,
            poll_url,
            poll_interval: self.poll_interval,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            request_timeout: self.request_timeout,
        })
    }

    /// The SDK scope in the protocol's terms: unset is the empty string.
    fn proto_scope(&self) -> proto::Scope {
        let s = &self.scope;
        let owned = |v: &Option<String>| v.clone().unwrap_or_default();
        proto::Scope {
            org: owned(&s.org),
            project: owned(&s.project),
            app: owned(&self.app),
            environment: owned(&s.environment),
            user: owned(&s.user),
            session: owned(&s.session),
            key: String::new(),
            route: owned(&s.route),
        }
    }
}

/// The scope's dimensions under the names the HTTP API uses.
fn scope_dims(scope: &proto::Scope) -> [(&'static str, &str); 8] {
    [
        ("org", scope.org.as_str()),
        ("project", scope.project.as_str()),
        ("app", scope.app.as_str()),
        ("environment", scope.environment.as_str()),
        ("user", scope.user.as_str()),
        ("session", scope.session.as_str()),
        ("key", scope.key.as_str()),
        ("route", scope.route.as_str()),
    ]
}

/// A checked [`KillSwitchConfig`], in the types the watcher uses.
#[derive(Debug)]
pub(crate) struct ValidatedConfig {
    pub(crate) grpc: tonic::transport::Endpoint,
    pub(crate) watch_request: proto::WatchRequest,
    /// `Bearer <key>` for the watch's `authorization` metadata, sensitive.
    pub(crate) watch_authorization: Option<AsciiMetadataValue>,
    /// Sends `Authorization: Bearer <key>` (sensitive) on every request.
    pub(crate) http: reqwest::Client,
    /// `{api_base}/v1/enforcement?project=..`, built once.
    pub(crate) poll_url: Url,
    pub(crate) poll_interval: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) request_timeout: Duration,
}
