//! `init`: the settings, the tracer provider it sets up or joins, the
//! kill-switch watcher and the gateway route of this process, and the check
//! guarded clients make before each request.

import { trace, type TracerProvider } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, type SpanProcessor } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";

import { GatewayRoute } from "./gateway.js";
import { blockError, CollectorUnreachable, Watcher } from "./killswitch.js";
import { currentScope, scopeEntries } from "./scope.js";
import { resolve, SettingError, type SettingOptions, type Settings } from "./settings.js";
import { ExportSlot, ScopeSpanProcessor } from "./tracing.js";
import * as wire from "./wire.js";

export interface InitOptions extends SettingOptions {
  /** The collector's OTLP/HTTP endpoint (e.g. `http://127.0.0.1:4318`); by
   * default the standard `OTEL_EXPORTER_OTLP_*` variables decide. */
  endpoint?: string;
  /** The `service.name` of a provider set up here (else `OTEL_SERVICE_NAME`). */
  app?: string;
  /** Join this SDK provider instead of the global one. */
  tracerProvider?: NodeTracerProvider;
  /** Export spans to the collector (default); `false` only stamps the scope. */
  export?: boolean;
}

/** Everything `init` set up; the active one is `runtime()`. */
export class Runtime {
  readonly gateway: GatewayRoute;
  readonly watcher: Watcher;
  /** Settles once the collector was first asked whether its gateway runs. */
  readonly gatewayKnown: Promise<void>;
  private waitedFirst = false;

  constructor(
    readonly settings: Settings,
    readonly app: string | undefined,
    readonly scopeProcessor: ScopeSpanProcessor,
  ) {
    this.gateway = new GatewayRoute(settings);
    this.gatewayKnown = this.gateway.refresh(true);
    this.watcher = new Watcher(settings, app, () => void this.gateway.refresh());
    this.watcher.start();
  }

  fixedAttributes(): Record<string, string> {
    const s = this.settings;
    const out: Record<string, string> = {};
    if (s.org) out[wire.ORG] = s.org;
    if (s.project) out[wire.PROJECT] = s.project;
    if (s.environment) out[wire.ENVIRONMENT] = s.environment;
    if (this.app) out[wire.SERVICE_NAME] = this.app;
    return out;
  }

  /** Throws `Blocked` when the current scope is blocked, `CollectorUnreachable`
   * when the collector cannot say and calls fail closed. */
  async check(): Promise<void> {
    if (!this.waitedFirst && !this.watcher.hasFirstState()) {
      // Once: a collector that never answers must not slow every call.
      await this.watcher.waitFirstState(this.settings.firstStateTimeoutMs);
    }
    this.waitedFirst = true;
    const { blocks, known } = await this.watcher.blocksFor(scopeEntries(currentScope()));
    const first = blocks[0];
    if (first !== undefined) throw blockError(first);
    if (!known && this.settings.failClosed) throw new CollectorUnreachable();
  }

  stop(): void {
    this.watcher.stop();
  }
}

let active: Runtime | undefined;
// The processors added to each provider, once.
const installed = new Map<object, { scope: ScopeSpanProcessor; slot: ExportSlot }>();

export function runtime(): Runtime | undefined {
  return active;
}

function fixedAttributes(): Record<string, string> {
  return active === undefined ? {} : active.fixedAttributes();
}

function exporter(endpoint: string | undefined, key: string | undefined): OTLPTraceExporter {
  const headersSet = process.env.OTEL_EXPORTER_OTLP_TRACES_HEADERS || process.env.OTEL_EXPORTER_OTLP_HEADERS;
  const config: { url?: string; headers?: Record<string, string> } = {};
  if (key && !headersSet) config.headers = { authorization: `Bearer ${key}` };
  if (endpoint !== undefined) {
    let url = endpoint.replace(/\/+$/, "");
    if (!url.endsWith("/v1/traces")) url += "/v1/traces";
    config.url = url;
  }
  return new OTLPTraceExporter(config);
}

interface JoinableProvider {
  _activeSpanProcessor?: { _spanProcessors?: SpanProcessor[] };
  resource?: { attributes?: Record<string, unknown> };
}

/** The SDK provider to add the processors to: the given one, the global one
 * when it is an SDK provider, or a new one registered globally. */
function providerFor(options: InitOptions, settings: Settings): { provider: object; processors: SpanProcessor[] | undefined; app: string | undefined } {
  const given = options.tracerProvider as unknown as JoinableProvider | undefined;
  const global = trace.getTracerProvider() as TracerProvider & { getDelegate?: () => TracerProvider };
  const delegate = (given ?? global.getDelegate?.() ?? global) as JoinableProvider & object;
  const processors = delegate._activeSpanProcessor?._spanProcessors;
  if (Array.isArray(processors)) {
    const name = delegate.resource?.attributes?.[wire.SERVICE_NAME];
    return { provider: delegate, processors, app: options.app ?? (typeof name === "string" ? name : undefined) };
  }
  if (given === undefined && delegate.constructor.name !== "NoopTracerProvider") {
    console.warn(
      "tollgate: the global tracer provider is not the OpenTelemetry SDK's; spans of instrumentation libraries will not carry the scope",
    );
  }
  const attrs: Record<string, string> = {};
  if (options.app) attrs[wire.SERVICE_NAME] = options.app;
  if (settings.environment) attrs[wire.DEPLOYMENT_ENVIRONMENT] = settings.environment;
  if (settings.org) attrs[wire.ORG] = settings.org;
  if (settings.project) attrs[wire.PROJECT] = settings.project;
  const resource = defaultResource()
    .merge(detectResources({ detectors: [envDetector] }))
    .merge(resourceFromAttributes(attrs));
  const created = new NodeTracerProvider({ resource, spanProcessors: [] });
  if (delegate.constructor.name === "NoopTracerProvider") created.register();
  const name = resource.attributes[wire.SERVICE_NAME];
  const own = (created as unknown as JoinableProvider)._activeSpanProcessor?._spanProcessors;
  return { provider: created, processors: own, app: options.app ?? (typeof name === "string" ? name : undefined) };
}

/** Sets up tracing, the kill-switch watcher and the gateway route.
 *
 * An SDK `NodeTracerProvider` already registered globally (or
 * `tracerProvider`) is joined: the scope processor and, unless
 * `export: false`, an OTLP/HTTP exporter to Tollgate are added to it.
 * Otherwise one is created with a resource holding `service.name`,
 * `deployment.environment.name`, `tollgate.org` and `tollgate.project` (plus
 * `OTEL_RESOURCE_ATTRIBUTES`) and registered globally. Calling `init` again
 * replaces the previous settings. */
export function init(options: InitOptions = {}): Runtime {
  const settings = resolve(options);
  const { provider, processors, app } = providerFor(options, settings);
  let mine = installed.get(provider);
  if (mine === undefined) {
    if (processors === undefined) {
      throw new SettingError("the tracer provider to join has no span processors to add to: pass an @opentelemetry/sdk-trace-node provider");
    }
    const scope = new ScopeSpanProcessor(fixedAttributes);
    const slot = new ExportSlot(scope);
    processors.push(scope, slot);
    mine = { scope, slot };
    installed.set(provider, mine);
  }
  void mine.slot.swap(options.export === false ? undefined : new BatchSpanProcessor(exporter(options.endpoint, settings.key)));
  const previous = active;
  active = new Runtime(settings, app, mine.scope);
  previous?.stop();
  return active;
}

/** Throws `Blocked` when calls of the current scope are blocked (and
 * `CollectorUnreachable` when the collector cannot say and calls fail
 * closed): for clients `guard` does not wrap. */
export async function check(): Promise<void> {
  const rt = active;
  if (rt === undefined) throw new Error("tollgate.check() before tollgate.init()");
  await rt.check();
}

/** Exports the spans ended so far. */
export async function flush(): Promise<void> {
  await Promise.all([...installed.values()].map(({ slot }) => slot.forceFlush()));
}

/** Exports what is left and stops the watcher. */
export async function shutdown(): Promise<void> {
  await flush();
  const rt = active;
  active = undefined;
  await Promise.all([...installed.values()].map(({ slot }) => slot.swap(undefined)));
  rt?.stop();
}
