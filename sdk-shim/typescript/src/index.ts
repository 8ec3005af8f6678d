//! Tollgate for Node agents: scope, kill-switch and gateway flip.
//!
//!     import OpenAI from "openai";
//!     import * as tollgate from "tollgate";
//!
//!     tollgate.init({ endpoint: "http://127.0.0.1:4318", org: "acme", project: "support" });
//!     const client = tollgate.guard(new OpenAI());
//!     await tollgate.scope({ user: "u-17" }, () => client.chat.completions.create(...)); // throws Blocked while blocked
//!
//! - `init` sets up (or joins) the OpenTelemetry tracer provider and OTLP
//!   exporter, starts the kill-switch watcher and asks where calls go.
//! - `scope` stamps who a call is for on every span started inside it,
//!   whichever library creates the span.
//! - `guard` makes an `openai` or `@anthropic-ai/sdk` client refuse calls
//!   of a blocked scope and send calls through the gateway when it runs;
//!   `guardedFetch` does the same for any client that takes a `fetch`.
//! - `check` does the check alone; `tollgate/ai` is the Vercel AI SDK
//!   middleware.

export { guard, guardedFetch, type Fetch } from "./guard.js";
export { Blocked, CollectorUnreachable, type BlockedDetails } from "./killswitch.js";
export { check, flush, init, runtime, shutdown, Runtime, type InitOptions } from "./runtime.js";
export { currentScope, scope, type Scope } from "./scope.js";
export { SettingError, type SettingOptions } from "./settings.js";
export { VERSION } from "./version.js";
