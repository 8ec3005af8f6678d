//! The wire contract with the collector and the gateway: attribute names the
//! collector's normaliser reads (collector/src/normalize/semconv.rs), the
//! `x-tollgate-*` headers the inline gateway reads
//! (inline-gateway/src/proxy/handle.rs), and the API paths. The same names
//! as the Python shim's `_wire.py`; every other module uses these.

// Span and resource attributes (`tollgate.*` rank first in the normaliser).
export const ORG = "tollgate.org";
export const PROJECT = "tollgate.project";
export const ENVIRONMENT = "tollgate.environment";
export const USER = "tollgate.user";
export const SESSION = "tollgate.session";
export const ROUTE = "tollgate.route";
export const SERVICE_NAME = "service.name";
export const DEPLOYMENT_ENVIRONMENT = "deployment.environment.name";

// Headers the gateway reads to refine a call's scope (org and project come
// from the virtual key).
export const HEADER_USER = "x-tollgate-user";
export const HEADER_SESSION = "x-tollgate-session";
export const HEADER_ROUTE = "x-tollgate-route";
export const HEADER_APP = "x-tollgate-app";
export const HEADER_ENVIRONMENT = "x-tollgate-environment";
export const SCOPE_HEADERS = [HEADER_USER, HEADER_SESSION, HEADER_ROUTE, HEADER_APP, HEADER_ENVIRONMENT] as const;

// Headers that carry a provider credential; replaced by the virtual key when
// a call goes through the gateway.
export const CREDENTIAL_HEADERS = ["authorization", "x-api-key", "api-key"] as const;

// Collector API paths.
export const ENFORCEMENT = "/v1/enforcement";
export const ENFORCEMENT_STREAM = "/v1/enforcement/stream";
export const GATEWAY = "/v1/gateway";

/** The wire dialects of the clients the shim guards. */
export type Dialect = "openai" | "anthropic";

// Paths the gateway serves, by dialect: a request whose path ends with one of
// these goes to the gateway path beside it; any other request of a guarded
// client goes to the provider.
export const GATEWAY_PATHS: Record<Dialect, ReadonlyArray<readonly [string, string]>> = {
  openai: [
    ["/chat/completions", "/v1/chat/completions"],
    ["/responses", "/v1/responses"],
    ["/embeddings", "/v1/embeddings"],
    ["/models", "/v1/models"],
  ],
  anthropic: [["/v1/messages", "/v1/messages"]],
};

// Codes of the gateway's refusals that mean "this scope may not spend now"
// (inline-gateway/src/proxy/error.rs): raised as `Blocked`, as the
// kill-switch would, so agent code handles one error in both modes.
export const GATEWAY_REFUSALS = ["budget_exceeded", "rate_limited", "blocked"] as const;
