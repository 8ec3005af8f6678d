"""Exports one GenAI span with the official OpenTelemetry Python SDK, its
exporter configured by the standard environment alone:
OTEL_EXPORTER_OTLP_PROTOCOL (grpc | http/protobuf),
OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_CERTIFICATE,
OTEL_EXPORTER_OTLP_HEADERS.

    otlp_export.py PROJECT

Prints one JSON line (the protocol, the export results, the span's ids) and
exits non-zero unless every export succeeded.
"""

import json
import os
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind


def exporter_from_env():
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        sys.exit(f"unsupported OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r}")
    return protocol, OTLPSpanExporter()


class Recording(SpanExporter):
    """Passes spans on and keeps each export's result."""

    def __init__(self, inner):
        self.inner = inner
        self.results = []

    def export(self, spans):
        result = self.inner.export(spans)
        self.results.append(result)
        return result

    def shutdown(self):
        self.inner.shutdown()


def main():
    project = sys.argv[1]
    protocol, exporter = exporter_from_env()
    recording = Recording(exporter)
    provider = TracerProvider(resource=Resource.create({"service.name": "python-otlp-tls"}))
    provider.add_span_processor(SimpleSpanProcessor(recording))
    tracer = provider.get_tracer("tollgate-e2e")
    with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.provider.name", "openai")
        span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
        span.set_attribute("gen_ai.usage.input_tokens", 1200)
        span.set_attribute("gen_ai.usage.output_tokens", 300)
        span.set_attribute("tollgate.project", project)
        ctx = span.get_span_context()
    provider.shutdown()
    ok = bool(recording.results) and all(r == SpanExportResult.SUCCESS for r in recording.results)
    print(
        json.dumps(
            {
                "protocol": protocol,
                "results": [r.name for r in recording.results],
                "trace_id": format(ctx.trace_id, "032x"),
                "span_id": format(ctx.span_id, "016x"),
            }
        )
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
