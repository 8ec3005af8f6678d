//! `guard(client)`: an official `openai` or `@anthropic-ai/sdk` client whose
//! requests, streaming ones included, are first checked against the
//! kill-switch, and go through the gateway when calls go there; and
//! `guardedFetch()`, the same as a `fetch` to give any client that takes one
//! (the Vercel AI SDK's providers, other SDKs).
//!
//! `guard` wraps the client's `fetch` (what both SDKs document as the way to
//! change how requests are sent) and its request entry point, so that the
//! refusal is thrown as `Blocked`, not retried nor wrapped by the SDK as a
//! connection error. The error thrown is also the SDK's own base error
//! class, so its stream helpers pass it on unwrapped. Through the gateway,
//! its refusals of a scope (HTTP 429 `budget_exceeded`, `rate_limited`,
//! `blocked`) are thrown as the same error.

import { AsyncLocalStorage } from "node:async_hooks";

import { context, propagation } from "@opentelemetry/api";

import { dialectOf, gatewayHeaders, gatewayPath, gatewayRefusal } from "./gateway.js";
import { Blocked, blockedAs } from "./killswitch.js";
import { runtime } from "./runtime.js";
import { currentScope, scopeHeaders } from "./scope.js";
import type { Dialect } from "./wire.js";

export type Fetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/** A model call being sent by a guarded client's request entry point
 * (`sdk`) or by a model wrapped with the AI SDK middleware (`middleware`):
 * the kill-switch was checked before it, and its fetch goes through the
 * gateway when calls go there. */
export interface GuardedCall {
  readonly by: "sdk" | "middleware";
  /** The gateway's refusal, when it refused the call. */
  refusal?: Blocked;
}

export const calls = new AsyncLocalStorage<GuardedCall>();
const GUARDED = Symbol.for("tollgate.guarded");

export function urlOf(input: string | URL | Request): string {
  return typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
}

/** `fetch` (default: the global one at call time) with the kill-switch check
 * and the gateway route. A refused call throws `Blocked` from the fetch.
 * `dialect` names the wire format; by default it follows from the path
 * (`/chat/completions`, `/responses`, `/embeddings`, `/models`: OpenAI; `/v1/messages`:
 * Anthropic). */
export function guardedFetch(inner?: Fetch, dialect?: Dialect): Fetch {
  if (inner !== undefined && (inner as { [GUARDED]?: true })[GUARDED]) return inner;
  const send: Fetch = inner ?? ((input, init) => globalThis.fetch(input, init));
  const guarded: Fetch = async (input, init) => {
    const rt = runtime();
    if (rt === undefined) return send(input, init);
    const call = calls.getStore();
    // Inside `guard`'s entry point the check was made before the SDK's
    // retry loop; elsewhere it is made here.
    if (call === undefined) await rt.check();
    await rt.gatewayKnown;
    const gateway = rt.gateway.url();
    const key = rt.settings.gatewayKey;
    const target = new URL(urlOf(input));
    const path = gateway === undefined ? undefined : gatewayPath(dialect ?? dialectOf(target.pathname) ?? "openai", target.pathname);
    if (gateway === undefined || key === undefined || path === undefined) return send(input, init);

    const request = new Request(input, init);
    const headers = gatewayHeaders(request.headers, key, scopeHeaders(currentScope()), rt.app, rt.settings.environment);
    headers.delete("host");
    if (!headers.has("traceparent")) {
      // The gateway's row joins the caller's trace.
      propagation.inject(context.active(), headers, { set: (h, k, v) => h.set(k, v) });
    }
    const body = request.method === "GET" || request.method === "HEAD" ? undefined : await request.arrayBuffer();
    const routedInit: RequestInit = { method: request.method, headers, signal: request.signal };
    if (body !== undefined) routedInit.body = body;
    rt.scopeProcessor.markGatewayCall();
    const response = await send(`${gateway}${path}${target.search}`, routedInit);
    if (response.status !== 429) return response;
    const text = await response.text();
    const refusal = gatewayRefusal(response.status, text);
    if (refusal === undefined) return new Response(text, response);
    // The AI SDK passes an error thrown by fetch on as it is (a 429 it would retry).
    if (call === undefined || call.by === "middleware") throw refusal;
    call.refusal = refusal;
    // The SDK sees the 429 and must not retry it; its entry point then
    // throws the refusal instead of the SDK's rate-limit error.
    const replayed = new Headers(response.headers);
    replayed.set("x-should-retry", "false");
    return new Response(text, { status: response.status, statusText: response.statusText, headers: replayed });
  };
  (guarded as { [GUARDED]?: true })[GUARDED] = true;
  return guarded;
}

/** What `guard` touches of an `openai` or `@anthropic-ai/sdk` client. */
interface GuardableClient {
  fetch?: Fetch;
  makeRequest?: (...args: unknown[]) => Promise<unknown>;
  withOptions?: (...args: unknown[]) => unknown;
  [GUARDED]?: true;
}

function dialectOfClient(client: object): { dialect: Dialect; base: new (message: string) => Error } {
  const statics = client.constructor as unknown as Record<string, unknown>;
  const c = client as Record<string, unknown>;
  if (typeof c.chat === "object" && typeof statics.OpenAIError === "function") {
    return { dialect: "openai", base: statics.OpenAIError as new (message: string) => Error };
  }
  if (typeof c.messages === "object" && typeof statics.AnthropicError === "function") {
    return { dialect: "anthropic", base: statics.AnthropicError as new (message: string) => Error };
  }
  throw new TypeError(
    `tollgate.guard: ${client.constructor.name} is not an openai or @anthropic-ai/sdk client; ` +
      "give it fetch: tollgate.guardedFetch(), or call tollgate.check() before its requests",
  );
}

/** Returns `client` (an `OpenAI`, `AzureOpenAI` or `Anthropic` client) with
 * its `fetch` and request entry point wrapped: each request throws
 * `Blocked` before it leaves while the current scope is blocked, and goes
 * to the gateway when calls go there. `withOptions` copies are guarded too;
 * guarding twice is harmless. */
export function guard<C extends object>(client: C): C {
  const c = client as C & GuardableClient;
  if (c[GUARDED]) return client;
  const { dialect, base } = dialectOfClient(client);
  const makeRequest = c.makeRequest;
  if (typeof c.fetch !== "function" || typeof makeRequest !== "function") {
    throw new TypeError(`tollgate.guard: this version of the ${dialect} SDK has no fetch to wrap`);
  }
  c.fetch = guardedFetch(c.fetch, dialect);
  c.makeRequest = async function (this: unknown, ...args: unknown[]): Promise<unknown> {
    const call: GuardedCall = { by: "sdk" };
    try {
      await runtime()?.check();
      return await calls.run(call, () => makeRequest.apply(this, args));
    } catch (err) {
      const refused = call.refusal ?? (err instanceof Blocked ? err : undefined);
      if (refused !== undefined) throw blockedAs(base, refused);
      throw err;
    }
  };
  const withOptions = c.withOptions;
  if (typeof withOptions === "function") {
    c.withOptions = function (this: unknown, ...args: unknown[]): unknown {
      return guard(withOptions.apply(this, args) as object);
    };
  }
  c[GUARDED] = true;
  return client;
}
