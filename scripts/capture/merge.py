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


EXTRA_DIALECTS = {"anthropic_sdk_native"}


def call_entry(index: int, call: dict, spans: list) -> dict:
    """One call as the manifest states it: what was asked, what the mock
    returned (by its deterministic rule, confirmed by the SDK), its spans."""
    observed = call["observed"]
    returned = {
        "status": observed.get("status"),
        "model": observed.get("response_model"),
        "response_id": observed.get("response_id"),
        "finish_reason": observed.get("finish_reason"),
    }
    if "expected_usage" in call:
        returned["usage"] = call["expected_usage"]
    else:
        returned["error"] = {
            "sdk_exception": observed.get("error_class"),
            "body": observed.get("error_body"),
            "request_id": observed.get("request_id"),
        }
    return {
        "index": index,
        "name": call["name"],
        "api": call["api"],
        "request_model": call["request_model"],
        "streamed": call["streamed"],
        "include_usage": call["include_usage"],
        "mock_headers": call["mock_headers"],
        "mock_returned": returned,
        "sdk_observed": observed,
        "spans": spans,
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

    manifest_path = fixtures_dir / "MANIFEST.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        manifest = {}
    # Re-capturing some dialects keeps the others' entries.
    manifest.update(
        {
            "generated_by": "scripts/capture-fixtures",
            "note": (
                "Spans captured from real instrumentation libraries calling the Tollgate mock "
                "provider (tests/mock-provider). Trace/span ids, timestamps and the mock's port "
                "(in url/api_base attributes) change on every capture; token counts, models, "
                "response ids and statuses do not. Only traces were captured: events some "
                "libraries send as OTLP logs are not included. Calls run in the order listed; "
                "spans are matched to calls by start time."
            ),
            "api_key_used": "sk-fixture-not-a-secret",
            "resource_attributes": {
                "service.name": "<dialect>-agent",
                "deployment.environment.name": "test",
            },
            "mock_usage_rule": USAGE_RULE,
        }
    )
    manifest.setdefault("dialects", {})
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
        keys = sorted({kv.key for span, _ in spans for kv in span.attributes})

        calls, unmatched = [], []
        per_call: list = [[] for _ in result["calls"]]
        for span, scope in spans:
            for i, call in enumerate(result["calls"]):
                lo, hi = call["window_unix_nano"]
                if lo <= span.start_time_unix_nano <= hi:
                    per_call[i].append(span_summary(span, scope))
                    break
            else:
                unmatched.append(span_summary(span, scope))
        for i, call in enumerate(result["calls"]):
            calls.append(call_entry(i, call, per_call[i]))

        notes = []
        scopes = sorted({scope.name for _, scope in spans})
        if len(spans) != len(calls):
            notes.append(f"{len(spans)} spans for {len(calls)} calls (scopes: {', '.join(scopes)})")
        if dialect == "genai_latest":
            notes.append(
                "gen_ai.provider.name is emitted (latest experimental conventions supported)"
                if "gen_ai.provider.name" in keys
                else "gen_ai.provider.name is NOT emitted by this version; still captured"
            )
        for call in calls:
            if call["sdk_observed"].get("exception"):
                notes.append(
                    f"call {call['name']} raised in the SDK/instrumentation: "
                    f"{call['sdk_observed']['exception']}"
                )
            if not call["spans"]:
                notes.append(f"call {call['name']} produced no span")

        entry = {
            "fixture": pb_path.name,
            "text_rendering": f"{dialect}.txt",
            "service_name": f"{dialect}-agent",
            "extra": dialect in EXTRA_DIALECTS,
            "library_family": result["library_family"],
            "instrumentation_package": result["instrumentation_package"],
            "versions": result["versions"],
            "env": result["env"],
            "span_count": len(spans),
            "scopes": scopes,
            "attribute_keys_seen": keys,
            "notes": notes,
            "calls": calls,
        }
        if unmatched:
            entry["unmatched_spans"] = unmatched
        manifest["dialects"][dialect] = entry

    manifest["dialects"] = dict(sorted(manifest["dialects"].items()))
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    if failures:
        sys.exit(f"fixtures that did not decode or hold no spans: {failures}")


if __name__ == "__main__":
    main()
