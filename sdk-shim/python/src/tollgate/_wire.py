"""The wire contract with the collector and the gateway: attribute names the
collector's normaliser reads (collector/src/normalize/semconv.rs), the
`x-tollgate-*` headers the inline gateway reads
(inline-gateway/src/proxy/handle.rs), and the API paths. Defined once here
and used by every other module of the package."""

from __future__ import annotations

# Span and resource attributes (`tollgate.*` rank first in the normaliser).
ORG = "tollgate.org"
PROJECT = "tollgate.project"
ENVIRONMENT = "tollgate.environment"
USER = "tollgate.user"
SESSION = "tollgate.session"
ROUTE = "tollgate.route"
SERVICE_NAME = "service.name"
DEPLOYMENT_ENVIRONMENT = "deployment.environment.name"

# Headers the gateway reads to refine a call's scope (org and project come
# from the virtual key).
HEADER_USER = "x-tollgate-user"
HEADER_SESSION = "x-tollgate-session"
HEADER_ROUTE = "x-tollgate-route"
HEADER_APP = "x-tollgate-app"
HEADER_ENVIRONMENT = "x-tollgate-environment"

# Headers that carry a provider credential; replaced by the virtual key
# when a call goes through the gateway.
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key")

# Collector API paths.
ENFORCEMENT = "/v1/enforcement"
ENFORCEMENT_STREAM = "/v1/enforcement/stream"
GATEWAY = "/v1/gateway"

# Scope dimensions `/v1/enforcement` accepts (rules/src/engine/scope.rs, Scope).
ENFORCEMENT_DIMENSIONS = ("org", "project", "app", "environment", "user", "session", "key", "route")

# Paths the gateway serves, by the dialect of the client that calls them:
# a request whose path ends with one of these goes to the gateway path
# beside it; any other request of a guarded client goes to the provider.
GATEWAY_PATHS = {
    "openai": (
        ("/chat/completions", "/v1/chat/completions"),
        ("/responses", "/v1/responses"),
        ("/embeddings", "/v1/embeddings"),
        ("/models", "/v1/models"),
    ),
    "anthropic": (("/v1/messages", "/v1/messages"),),
}
