//! OpenTelemetry span processors: one stamps the scope on every span as it
//! starts, whoever creates it (the Vercel AI SDK's telemetry, the Anthropic
//! SDK's own spans, OpenInference, OpenLLMetry, the official openai
//! instrumentation); one exports, leaving out the spans of calls the gateway
//! recorded itself (they would be a second row).
//!
//! Both are added once to a tracer provider and read the active runtime, so
//! `init` may be called again without stacking processors.

import { trace, type Context } from "@opentelemetry/api";
import type { ReadableSpan, Span, SpanProcessor } from "@opentelemetry/sdk-trace-base";

import { currentScope, spanAttributes } from "./scope.js";

// Spans started and not yet ended (to walk from the current span to its
// ancestors), and those that described a call sent through the gateway.
// Both are bounded: a span that never ends is forgotten past this many.
const MAX_TRACKED = 10_000;

// Operations of spans that describe one model call (not an agent run or a
// tool), in the spellings of each instrumentation library.
const CALL_OPERATIONS = new Set(["chat", "text_completion", "completion", "embeddings", "generate_content", "responses"]);
const OPENINFERENCE_CALL_KINDS = new Set(["LLM", "EMBEDDING"]);
const OPENLLMETRY_CALL_TYPES = new Set(["chat", "completion", "embedding"]);
// The Vercel AI SDK: `ai.<function>.do<Step>` is one model call.
const AI_SDK_CALL = /^ai\.[A-Za-z]+\.do(Generate|Stream|Embed)$/;

function isCallSpan(span: ReadableSpan): boolean {
  const a = span.attributes;
  const op = a["gen_ai.operation.name"];
  const llmType = a["llm.request.type"];
  const kind = a["openinference.span.kind"];
  const aiOp = a["ai.operationId"];
  return (
    (typeof op === "string" && CALL_OPERATIONS.has(op)) ||
    (typeof llmType === "string" && OPENLLMETRY_CALL_TYPES.has(llmType)) ||
    (typeof kind === "string" && OPENINFERENCE_CALL_KINDS.has(kind)) ||
    (typeof aiOp === "string" && AI_SDK_CALL.test(aiOp))
  );
}

function keyOf(traceId: string, spanId: string): string {
  return `${traceId}/${spanId}`;
}

/** An insertion-ordered map that forgets its oldest entries past a size. */
class Bounded<V> {
  private readonly items = new Map<string, V>();

  put(key: string, value: V): void {
    this.items.delete(key);
    this.items.set(key, value);
    while (this.items.size > MAX_TRACKED) {
      const oldest = this.items.keys().next();
      if (oldest.done) break;
      this.items.delete(oldest.value);
    }
  }

  take(key: string): V | undefined {
    const value = this.items.get(key);
    this.items.delete(key);
    return value;
  }

  get(key: string): V | undefined {
    return this.items.get(key);
  }
}

/** Stamps the process's org, project and environment and the current
 * `scope` on every span as it starts. */
export class ScopeSpanProcessor implements SpanProcessor {
  private readonly live = new Bounded<ReadableSpan>();
  readonly gatewayCalls = new Bounded<true>();

  constructor(private readonly fixed: () => Record<string, string>) {}

  onStart(span: Span, _parentContext: Context): void {
    span.setAttributes({ ...this.fixed(), ...spanAttributes(currentScope()) });
    const ctx = span.spanContext();
    this.live.put(keyOf(ctx.traceId, ctx.spanId), span);
  }

  onEnd(span: ReadableSpan): void {
    const ctx = span.spanContext();
    this.live.take(keyOf(ctx.traceId, ctx.spanId));
  }

  /** Marks the model-call spans among the active span and its live
   * ancestors: the call they describe goes through the gateway, which
   * records it. Returns how many were marked. */
  markGatewayCall(): number {
    const active = trace.getActiveSpan();
    if (active === undefined) return 0;
    const ctx = active.spanContext();
    let span = this.live.get(keyOf(ctx.traceId, ctx.spanId));
    let marked = 0;
    for (let depth = 0; span !== undefined && depth < 32; depth++) {
      const own = span.spanContext();
      if (isCallSpan(span)) {
        this.gatewayCalls.put(keyOf(own.traceId, own.spanId), true);
        marked++;
      }
      const parent = span.parentSpanContext;
      span = parent === undefined ? undefined : this.live.get(keyOf(parent.traceId, parent.spanId));
    }
    return marked;
  }

  forceFlush(): Promise<void> {
    return Promise.resolve();
  }

  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

/** Forwards ended spans to the active exporting processor, except the
 * spans of calls the gateway recorded. */
export class ExportSlot implements SpanProcessor {
  private inner: SpanProcessor | undefined;

  constructor(private readonly scope: ScopeSpanProcessor) {}

  /** Puts `inner` in place; the previous one is flushed and shut down. */
  async swap(inner: SpanProcessor | undefined): Promise<void> {
    const old = this.inner;
    this.inner = inner;
    if (old !== undefined) await old.shutdown();
  }

  onStart(span: Span, parentContext: Context): void {
    this.inner?.onStart(span, parentContext);
  }

  onEnd(span: ReadableSpan): void {
    const ctx = span.spanContext();
    if (this.scope.gatewayCalls.take(keyOf(ctx.traceId, ctx.spanId)) !== undefined) return;
    this.inner?.onEnd(span);
  }

  forceFlush(): Promise<void> {
    return this.inner === undefined ? Promise.resolve() : this.inner.forceFlush();
  }

  shutdown(): Promise<void> {
    return this.swap(undefined);
  }
}
