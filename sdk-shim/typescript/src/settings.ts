//! What `init` was given, completed from the environment and checked once,
//! so that a wrong setting fails at start-up with one message naming it
//! rather than at the first model call.

export const DEFAULT_API = "http://127.0.0.1:7070";

// Environment variables (options of `init` win over them). TOLLGATE_KEY and
// TOLLGATE_API_URL are the ones the `tollgate` CLI reads too.
export const ENV_API = "TOLLGATE_API_URL";
export const ENV_KEY = "TOLLGATE_KEY";
export const ENV_GATEWAY_KEY = "TOLLGATE_GATEWAY_KEY";
export const ENV_ORG = "TOLLGATE_ORG";
export const ENV_PROJECT = "TOLLGATE_PROJECT";
export const ENV_ENVIRONMENT = "TOLLGATE_ENVIRONMENT";
export const ENV_GATEWAY = "TOLLGATE_GATEWAY";
export const ENV_ON_UNREACHABLE = "TOLLGATE_ON_UNREACHABLE";

/** A setting of `init` (or its variable) that cannot be used. */
export class SettingError extends Error {
  override name = "SettingError";
}

/** Where guarded clients send model calls: `off` (to the provider), `auto`
 * (through the gateway when the collector runs one) or a fixed gateway URL. */
export type GatewaySetting = { mode: "off" } | { mode: "auto" } | { mode: "on"; url: string };

export function parseGateway(value: string): GatewaySetting {
  const v = value.trim();
  if (v === "off" || v === "false") return { mode: "off" };
  if (v === "auto") return { mode: "auto" };
  if (v.startsWith("http://") || v.startsWith("https://")) return { mode: "on", url: v.replace(/\/+$/, "") };
  throw new SettingError(`gateway=${JSON.stringify(value)}: expected 'off', 'auto' or the gateway's http(s):// URL`);
}

/** The options of `init` that `resolve` checks (the tracing ones are read by `init`). */
export interface SettingOptions {
  /** The collector's HTTP API (kill-switch, gateway discovery); else TOLLGATE_API_URL, else http://127.0.0.1:7070. */
  api?: string;
  /** Where the spend lands; else TOLLGATE_ORG. */
  org?: string;
  /** Where the spend lands; else TOLLGATE_PROJECT. */
  project?: string;
  /** Where the spend lands; else TOLLGATE_ENVIRONMENT. */
  environment?: string;
  /** A Tollgate key (`ingest` and `read` roles where the collector requires keys); else TOLLGATE_KEY. Never printed. */
  key?: string;
  /** The virtual key calls through the gateway carry; else TOLLGATE_GATEWAY_KEY, else `key`. */
  gatewayKey?: string;
  /** `auto` (follow the collector's `/v1/gateway`), `off`, or the gateway's URL; else TOLLGATE_GATEWAY, else `auto`. */
  gateway?: string;
  /** `open`: calls go on while the collector cannot be asked; `closed`: they throw `CollectorUnreachable`. Else TOLLGATE_ON_UNREACHABLE, else `open`. */
  onUnreachable?: "open" | "closed";
  /** How often per-call scopes (and the process's scope while the stream is down) are polled. */
  pollIntervalMs?: number;
  /** First delay before reopening the enforcement stream; doubles up to `reconnectMaxMs`. */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** Timeout of one request to the collector's API. */
  requestTimeoutMs?: number;
  /** With no answer (and no live stream) for this long, the collector counts as unreachable. */
  staleAfterMs?: number;
  /** How long the first guarded call waits for the collector's first answer. */
  firstStateTimeoutMs?: number;
}

export interface Settings {
  readonly api: string;
  readonly org: string | undefined;
  readonly project: string | undefined;
  readonly environment: string | undefined;
  readonly key: string | undefined;
  readonly gatewayKey: string | undefined;
  readonly gateway: GatewaySetting;
  readonly failClosed: boolean;
  readonly pollIntervalMs: number;
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
  readonly requestTimeoutMs: number;
  readonly staleAfterMs: number;
  readonly firstStateTimeoutMs: number;
}

/** The process's fixed scope dimensions (without app). */
export function baseScope(s: Settings): Record<string, string> {
  const out: Record<string, string> = {};
  if (s.org) out.org = s.org;
  if (s.project) out.project = s.project;
  if (s.environment) out.environment = s.environment;
  return out;
}

type Env = Record<string, string | undefined>;

function pick(arg: string | undefined, env: Env, name: string): string | undefined {
  if (arg !== undefined) return arg === "" ? undefined : arg;
  const value = (env[name] ?? "").trim();
  return value === "" ? undefined : value;
}

export function resolve(options: SettingOptions, env: Env = process.env): Settings {
  const api = (pick(options.api, env, ENV_API) ?? DEFAULT_API).replace(/\/+$/, "");
  if (!api.startsWith("http://") && !api.startsWith("https://")) {
    throw new SettingError(`api=${JSON.stringify(api)}: expected the collector API's http(s):// URL, e.g. ${DEFAULT_API}`);
  }
  const mode = (pick(options.onUnreachable, env, ENV_ON_UNREACHABLE) ?? "open").trim();
  if (mode !== "open" && mode !== "closed") {
    throw new SettingError(`onUnreachable=${JSON.stringify(mode)}: expected 'open' (allow calls) or 'closed' (refuse them)`);
  }
  const durations = {
    pollIntervalMs: options.pollIntervalMs ?? 500,
    reconnectMinMs: options.reconnectMinMs ?? 100,
    reconnectMaxMs: options.reconnectMaxMs ?? 5000,
    requestTimeoutMs: options.requestTimeoutMs ?? 2000,
    staleAfterMs: options.staleAfterMs ?? 5000,
  };
  for (const [name, value] of Object.entries(durations)) {
    if (!(typeof value === "number" && value > 0)) {
      throw new SettingError(`${name}=${String(value)}: expected a number of milliseconds above 0`);
    }
  }
  if (durations.reconnectMaxMs < durations.reconnectMinMs) {
    throw new SettingError(`reconnectMaxMs=${durations.reconnectMaxMs} is below reconnectMinMs=${durations.reconnectMinMs}`);
  }
  const firstStateTimeoutMs = options.firstStateTimeoutMs ?? 2000;
  if (!(firstStateTimeoutMs >= 0)) {
    throw new SettingError(`firstStateTimeoutMs=${String(firstStateTimeoutMs)}: expected milliseconds, 0 or more`);
  }
  const gateway = parseGateway(pick(options.gateway, env, ENV_GATEWAY) ?? "auto");
  const key = pick(options.key, env, ENV_KEY);
  const gatewayKey = pick(options.gatewayKey, env, ENV_GATEWAY_KEY) ?? key;
  if (gateway.mode === "on" && !gatewayKey) {
    throw new SettingError(
      `gateway=${JSON.stringify(gateway.url)} sends calls through the gateway, which needs a virtual key: ` +
        `pass gatewayKey (or key), or set ${ENV_GATEWAY_KEY}`,
    );
  }
  const settings: Settings = {
    api,
    org: pick(options.org, env, ENV_ORG),
    project: pick(options.project, env, ENV_PROJECT),
    environment: pick(options.environment, env, ENV_ENVIRONMENT),
    key,
    gatewayKey,
    gateway,
    failClosed: mode === "closed",
    ...durations,
    firstStateTimeoutMs,
  };
  // Keys stay out of logs and error messages: printing the settings shows
  // whether a key is set, never the key.
  Object.defineProperty(settings, "toJSON", {
    enumerable: false,
    value: () => ({ ...settings, key: settings.key ? "set" : undefined, gatewayKey: settings.gatewayKey ? "set" : undefined }),
  });
  Object.defineProperty(settings, Symbol.for("nodejs.util.inspect.custom"), {
    enumerable: false,
    value: () => (settings as unknown as { toJSON(): unknown }).toJSON(),
  });
  return Object.freeze(settings);
}
