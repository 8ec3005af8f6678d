"""Merges the OTLP bodies captured for each dialect into one
ExportTraceServiceRequest per dialect, writes <dialect>.pb and its protobuf
text rendering <dialect>.txt, and writes MANIFEST.json describing every call.

Usage: python merge.py <raw-bodies-dir> <results-dir> <fixtures-dir> <dialect>...

Bodies are assigned to dialects by their resource's service.name
("<dialect>-agent"); ResourceSpans with the same resource and ScopeSpans with
the same scope are folded together, spans ordered by start time, so each
fixture reads like a single batch export from that agent.
"""

import json
import pathlib
import sys

from google.protobuf import text_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

USAGE_RULE = (
    "text input tokens T = max(1, ceil(chars/4) + token_ids) over message contents "
    "(+ Anthropic system); output N = x-mock-output-tokens, else min(max_tokens, 20); "
    "cache read R / write W from x-mock-cache-read/write-tokens. OpenAI prompt_tokens = "
    "T+R+W with cached_tokens = R; Anthropic input_tokens = T, cache_read_input_tokens = R, "
    "cache_creation_input_tokens = W. Embeddings: prompt_tokens = total_tokens = T."
)


def service_name(resource) -> str:
    for kv in resource.attributes:
        if kv.key == "service.name":
            return kv.value.string_value
    return ""


def merge(resource_spans: list) -> ExportTraceServiceRequest:
    out = ExportTraceServiceRequest()
    resources: dict = {}
    for rs in resource_spans:
        rkey = (rs.resource.SerializeToString(deterministic=True), rs.schema_url)
        if rkey not in resources:
            target = out.resource_spans.add()
            target.resource.CopyFrom(rs.resource)
            target.schema_url = rs.schema_url
            resources[rkey] = (target, {})
        target, scopes = resources[rkey]
        for ss in rs.scope_spans:
            skey = (ss.scope.SerializeToString(deterministic=True), ss.schema_url)
            if skey not in scopes:
                scope = target.scope_spans.add()
                scope.scope.CopyFrom(ss.scope)
                scope.schema_url = ss.schema_url
                scopes[skey] = scope
            scopes[skey].spans.extend(ss.spans)
    for rs in out.resource_spans:
        for ss in rs.scope_spans:
            ordered = sorted(ss.spans, key=lambda s: s.start_time_unix_nano)
            del ss.spans[:]
            ss.spans.extend(ordered)
    return out


def any_value(value):
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def span_summary(span, scope) -> dict:
    return {
        "name": span.name,
        "scope": scope.name,
        "scope_version": scope.version,
        "kind": span.kind,
        "span_id": span.span_id.hex(),
        "trace_id": span.trace_id.hex(),
        "status_code": span.status.code,
        "status_message": span.status.message,
        "event_names": [e.name for e in span.events],
        "attribute_keys": sorted(kv.key for kv in span.attributes),
        # Only the attributes that matter for pricing; full detail is in the .txt.
        "key_attributes": {
            kv.key: any_value(kv.value)
            for kv in span.attributes
            if any(
                marker in kv.key
                for marker in ("token", "model", "provider", "system", "operation", "error", "stream", "response.id", "finish", "span.kind", "llm.request.type")
            )
            and not kv.key.startswith(("gen_ai.prompt.", "gen_ai.completion.", "llm.input_messages", "llm.output_messages"))
        },
    }


def main() -> None:
    raw_dir, results_dir, fixtures_dir = map(pathlib.Path, sys.argv[1:4])
    dialects = sys.argv[4:]
    fixtures_dir.mkdir(parents=True, exist_ok=True)

    grouped: dict = {d: [] for d in dialects}
    for body in sorted(raw_dir.glob("*.pb")):
        request = ExportTraceServiceRequest.FromString(body.read_bytes())
        for rs in request.resource_spans:
            dialect = service_name(rs.resource).removesuffix("-agent")
            if dialect in grouped:
                grouped[dialect].append(rs)

    manifest = {
        "generated_by": "scripts/capture-fixtures",
        "note": (
            "Spans captured from real instrumentation libraries calling the Tollgate mock "
            "provider (tests/mock-provider). Trace/span ids and timestamps change on every "
            "capture; token counts, models, response ids and statuses do not. Only traces "
            "were captured: events some libraries send as OTLP logs are not included."
        ),
        "api_key_used": "sk-fixture-not-a-secret",
        "resource_attributes": {"service.name": "<dialect>-agent", "deployment.environment.name": "test"},
        "mock_usage_rule": USAGE_RULE,
        "dialects": {},
    }
    failures = []
    for dialect in dialects:
        result = json.loads((results_dir / f"{dialect}.json").read_text())
        merged = merge(grouped[dialect])
        pb_path = fixtures_dir / f"{dialect}.pb"
        pb_path.write_bytes(merged.SerializeToString(deterministic=True))
        (fixtures_dir / f"{dialect}.txt").write_text(text_format.MessageToString(merged))

        decoded = ExportTraceServiceRequest.FromString(pb_path.read_bytes())
        spans = [
            (span, ss.scope)
            for rs in decoded.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]
        spans.sort(key=lambda pair: pair[0].start_time_unix_nano)
        if decoded != merged or not spans:
            failures.append(dialect)
        summaries = [span_summary(span, scope) for span, scope in spans]
        keys = sorted({k for s in summaries for k in s["attribute_keys"]})

        calls = result["calls"]
        notes = []
        if len(summaries) == len(calls):
            for call, summary in zip(calls, summaries):
                call["span"] = summary
        else:
            notes.append(
                f"{len(summaries)} spans for {len(calls)} calls; spans listed separately, in start order"
            )
        if dialect == "genai_latest":
            has_provider = "gen_ai.provider.name" in keys
            notes.append(
                "gen_ai.provider.name is emitted (latest experimental conventions supported)"
                if has_provider
                else "gen_ai.provider.name is NOT emitted by this version; still captured"
            )
        for call in calls:
            if call["observed"].get("exception"):
                notes.append(f"call {call['name']} raised in the SDK/instrumentation: {call['observed']['exception']}")

        manifest["dialects"][dialect] = {
            "fixture": pb_path.name,
            "text_rendering": f"{dialect}.txt",
            "service_name": f"{dialect}-agent",
            "library_family": result["library_family"],
            "instrumentation_package": result["instrumentation_package"],
            "versions": result["versions"],
            "env": result["env"],
            "span_count": len(summaries),
            "attribute_keys_seen": keys,
            "notes": notes,
            "calls": calls,
            **({} if len(summaries) == len(calls) else {"spans": summaries}),
        }

    (fixtures_dir / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    if failures:
        sys.exit(f"fixtures that did not decode or hold no spans: {failures}")


if __name__ == "__main__":
    main()
