"""OpenTelemetry set-up: the span processor that stamps the scope on every
span, whoever creates it (OpenInference, OpenLLMetry, the official
openai-v2 instrumentation, an SDK's own spans, a framework's), and the
exporting processor that leaves out the spans of calls the gateway
recorded itself.

Both are added once to a tracer provider and read the active runtime, so
`tollgate.init` may be called again (another collector, other settings)
without stacking processors."""

from __future__ import annotations

import threading
from typing import Callable, Dict, Optional, Tuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from . import _scope

# Span ids of spans started and not yet ended (to walk from the current span
# to its ancestors), and of those that described a call sent through the
# gateway. Both are bounded: a span that never ends is dropped after this many.
_MAX_TRACKED = 10_000

SpanKey = Tuple[int, int]

# Operations of spans that describe one model call (not an agent run or a
# tool), in the spellings of each instrumentation library.
_CALL_OPERATIONS = {"chat", "text_completion", "completion", "embeddings", "generate_content", "responses"}
_OPENINFERENCE_CALL_KINDS = {"LLM", "EMBEDDING"}
_OPENLLMETRY_CALL_TYPES = {"chat", "completion", "embedding"}


def _is_call_span(span: Span) -> bool:
    attrs = span.attributes or {}
    return (
        attrs.get("gen_ai.operation.name") in _CALL_OPERATIONS
        or attrs.get("llm.request.type") in _OPENLLMETRY_CALL_TYPES
        or attrs.get("openinference.span.kind") in _OPENINFERENCE_CALL_KINDS
    )


def _key(span: ReadableSpan) -> Optional[SpanKey]:
    ctx = span.get_span_context()
    return None if ctx is None else (ctx.trace_id, ctx.span_id)


class _Bounded:
    """An insertion-ordered map that forgets its oldest entries past a size."""

    def __init__(self) -> None:
        self._items: Dict[SpanKey, object] = {}
        self._lock = threading.Lock()

    def put(self, key: SpanKey, value: object) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > _MAX_TRACKED:
                del self._items[next(iter(self._items))]

    def pop(self, key: SpanKey) -> Optional[object]:
        with self._lock:
            return self._items.pop(key, None)

    def get(self, key: SpanKey) -> Optional[object]:
        return self._items.get(key)

    def __len__(self) -> int:
        return len(self._items)


class ScopeSpanProcessor(SpanProcessor):
    """Stamps the process's org, project and environment and the current
    `tollgate.scope` on every span as it starts."""

    def __init__(self, fixed: Callable[[], Dict[str, str]]):
        self._fixed = fixed
        self.live = _Bounded()
        self.gateway_calls = _Bounded()

    def on_start(self, span: Span, parent_context: Optional[otel_context.Context] = None) -> None:
        attrs = dict(self._fixed())
        attrs.update(_scope.current_scope().span_attributes())
        if attrs:
            span.set_attributes(attrs)
        key = _key(span)
        if key is not None:
            self.live.put(key, span)

    def on_end(self, span: ReadableSpan) -> None:
        key = _key(span)
        if key is not None:
            self.live.pop(key)

    def mark_gateway_call(self) -> int:
        """Marks the model-call spans among the current span and its live
        ancestors: the call they describe goes through the gateway, which
        records it. Returns how many were marked."""
        span = trace.get_current_span()
        marked = 0
        for _ in range(32):
            if not isinstance(span, Span):
                break
            key = _key(span)
            if key is None:
                break
            if _is_call_span(span):
                self.gateway_calls.put(key, True)
                marked += 1
            parent = span.parent
            if parent is None:
                break
            span = self.live.get((parent.trace_id, parent.span_id))  # type: ignore[assignment]
        return marked


class ExportSlot(SpanProcessor):
    """Forwards ended spans to the active exporting processor, except the
    spans of calls the gateway recorded (they would be a second row)."""

    def __init__(self, scope_processor: ScopeSpanProcessor):
        self._scope = scope_processor
        self._inner: Optional[SpanProcessor] = None
        self._lock = threading.Lock()

    def swap(self, inner: Optional[SpanProcessor]) -> None:
        with self._lock:
            old, self._inner = self._inner, inner
        if old is not None:
            old.shutdown()

    def on_start(self, span: Span, parent_context: Optional[otel_context.Context] = None) -> None:
        inner = self._inner
        if inner is not None:
            inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        key = _key(span)
        if key is not None and self._scope.gateway_calls.pop(key) is not None:
            return
        inner = self._inner
        if inner is not None:
            inner.on_end(span)

    def shutdown(self) -> None:
        self.swap(None)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        inner = self._inner
        return True if inner is None else inner.force_flush(timeout_millis)
