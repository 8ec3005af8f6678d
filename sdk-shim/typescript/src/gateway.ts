//! Whether guarded clients send their calls through Tollgate's inline
//! gateway, how a request is rewritten to go there, and how the gateway's
//! refusals become `Blocked`.
//!
//! With `gateway: "auto"` (the default) the collector decides: its
//! `GET /v1/gateway` says whether the gateway runs and where, asked at
//! `init` and again every few seconds, so an agent follows
//! `gateway.enabled` being flipped without a change to its code. A request
//! sent through the gateway carries the virtual key instead of the
//! provider's key, and the scope as `x-tollgate-*` headers; the gateway then
//! writes the call's row, so the spans that describe the same call are not
//! exported (see `tracing.ts`).

import * as api from "./http.js";
import { Blocked } from "./killswitch.js";
import type { Settings } from "./settings.js";
import * as wire from "./wire.js";

// How often `auto` asks the collector again.
const REFRESH_MS = 5000;

export class GatewayRoute {
  private current: string | undefined;
  private askedAt = -Infinity;
  private warnedNoKey = false;

  constructor(private readonly settings: Settings) {
    this.current = settings.gateway.mode === "on" ? settings.gateway.url : undefined;
  }

  /** The gateway's base URL when calls go through it now. */
  url(): string | undefined {
    return this.current;
  }

  /** Asks the collector again (in `auto`, at most every few seconds). */
  async refresh(force = false): Promise<void> {
    if (this.settings.gateway.mode !== "auto") return;
    if (!force && performance.now() - this.askedAt < REFRESH_MS) return;
    this.askedAt = performance.now();
    let answer: Record<string, unknown>;
    try {
      answer = await api.getJson(
        api.url(this.settings.api, wire.GATEWAY),
        this.settings.key ?? this.settings.gatewayKey,
        this.settings.requestTimeoutMs,
        // The first answer is waited for by the first call.
        force,
      );
    } catch {
      // Unknown: keep the last answer (a collector restarting keeps its flag).
      return;
    }
    let url = answer.enabled === true && typeof answer.url === "string" ? answer.url.replace(/\/+$/, "") : undefined;
    if (url !== undefined && !this.settings.gatewayKey) {
      if (!this.warnedNoKey) {
        console.warn(
          "tollgate: the collector runs a gateway, but no virtual key was given (gatewayKey or TOLLGATE_GATEWAY_KEY): calls go to the provider",
        );
        this.warnedNoKey = true;
      }
      url = undefined;
    }
    this.current = url;
  }
}

/** The gateway path serving `path` of a client of `dialect`, if any. */
export function gatewayPath(dialect: wire.Dialect, path: string): string | undefined {
  for (const [suffix, target] of wire.GATEWAY_PATHS[dialect]) {
    if (path.endsWith(suffix)) return target;
  }
  return undefined;
}

/** The dialect of a request by its path, for a fetch not tied to one SDK. */
export function dialectOf(path: string): wire.Dialect | undefined {
  for (const dialect of ["anthropic", "openai"] as const) {
    if (gatewayPath(dialect, path) !== undefined) return dialect;
  }
  return undefined;
}

/** `headers` with the provider's credentials replaced by the virtual key
 * and the scope added; names are lower-case. */
export function gatewayHeaders(
  headers: Headers,
  key: string,
  scopeHeaders: Record<string, string>,
  app: string | undefined,
  environment: string | undefined,
): Headers {
  const out = new Headers(headers);
  for (const name of wire.CREDENTIAL_HEADERS) out.delete(name);
  for (const name of wire.SCOPE_HEADERS) out.delete(name);
  out.set("authorization", `Bearer ${key}`);
  if (app) out.set(wire.HEADER_APP, app);
  if (environment) out.set(wire.HEADER_ENVIRONMENT, environment);
  for (const [name, value] of Object.entries(scopeHeaders)) out.set(name, value);
  return out;
}

/** The gateway's 429 refusal of a scope in `body`, as a `Blocked`. */
export function gatewayRefusal(status: number, body: string): Blocked | undefined {
  if (status !== 429) return undefined;
  let error: unknown;
  try {
    error = (JSON.parse(body) as { error?: unknown } | null)?.error;
  } catch {
    return undefined;
  }
  if (error === null || typeof error !== "object") return undefined;
  const e = error as Record<string, unknown>;
  const code = e.code ?? e.type;
  if (typeof code !== "string" || !(wire.GATEWAY_REFUSALS as readonly string[]).includes(code)) return undefined;
  const retry = e.retry_after_s;
  const until = typeof retry === "number" ? new Date(Date.now() + retry * 1000) : undefined;
  return new Blocked(String(e.rule_id ?? ""), code, until, {
    scope: String(e.scope ?? ""),
    limit: typeof e.limit === "number" ? e.limit : undefined,
    used: typeof e.used === "number" ? e.used : undefined,
  });
}
