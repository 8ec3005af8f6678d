//! The Vercel AI SDK middleware (`tollgate/ai`): a model wrapped with it
//! refuses its calls while the current scope is blocked, throwing `Blocked`
//! before the request leaves (the AI SDK does not retry it), and sends them
//! through the gateway when calls go there.
//!
//!     import { wrapLanguageModel } from "ai";
//!     import { tollgateMiddleware } from "tollgate/ai";
//!
//!     const model = wrapLanguageModel({ model: openai.chat("gpt-4o-mini"), middleware: tollgateMiddleware() });
//!
//! The provider's requests are routed by a hook on the global `fetch`,
//! installed once by the first middleware made: it touches only requests
//! sent while a wrapped model's call is running, and only while the
//! gateway is on. A provider given its own `fetch` routes through the
//! gateway when that `fetch` is `tollgate.guardedFetch()`.

import type { LanguageModelV3Middleware } from "@ai-sdk/provider";

import { calls, guardedFetch, urlOf, type Fetch, type GuardedCall } from "./guard.js";
import { runtime } from "./runtime.js";

const HOOKED = Symbol.for("tollgate.fetchHook");

function installFetchHook(): void {
  const current = globalThis.fetch as Fetch & { [HOOKED]?: true };
  if (current[HOOKED]) return;
  const original: Fetch = current.bind(globalThis);
  const routed = guardedFetch(original);
  const hook = ((input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const call = calls.getStore();
    const gateway = runtime()?.gateway.url();
    // Requests already sent to the gateway (by a provider given
    // `guardedFetch()`) and those outside a wrapped model's call go as they are.
    if (call?.by !== "middleware" || gateway === undefined || urlOf(input).startsWith(gateway)) return original(input, init);
    return routed(input, init);
  }) as typeof globalThis.fetch & { [HOOKED]?: true };
  hook[HOOKED] = true;
  globalThis.fetch = hook;
}

async function checked<T>(run: () => PromiseLike<T>): Promise<T> {
  const rt = runtime();
  if (rt === undefined) return run();
  await rt.check();
  const call: GuardedCall = { by: "middleware" };
  return calls.run(call, async () => await run());
}

/** The middleware for `wrapLanguageModel` (AI SDK 6, specification v3). */
export function tollgateMiddleware(): LanguageModelV3Middleware {
  installFetchHook();
  return {
    specificationVersion: "v3",
    wrapGenerate: ({ doGenerate }) => checked(doGenerate),
    wrapStream: ({ doStream }) => checked(doStream),
  };
}
