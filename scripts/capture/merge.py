"""Merges the OTLP bodies captured for each dialect into one
ExportTraceServiceRequest per dialect, writes <dialect>.pb and its protobuf
text rendering <dialect>.txt, and writes MANIFEST.json describing every call.

Usage: python merge.py <raw-bodies-dir> <results-dir> <fixtures-dir> <dialect>...

Bodies are assigned to dialects by their resource's service.name
("<dialect>-agent"); ResourceSpans with the same resource and ScopeSpans with
the same scope are folded together, spans ordered by start time, so each
fixture reads like a single batch export from that agent.

Where the results dir holds <dialect>.wire.jsonl (wire_recorder.py), every
model request in it becomes a "model_calls" entry of the call whose time
window holds it, with what the mock returned; the mock's usage there must
match usage_rule.py, or the merge fails.
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
    "cache_creation_input_tokens = W. OpenAI Responses (instructions + input messages and "
    "function_call_output outputs; output limit max_output_tokens): input_tokens = T+R+W with "
    "input_tokens_details.cached_tokens = R, cache_write_tokens = W. Embeddings: prompt_tokens = "
    "total_tokens = T."
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


# Substrings of the attribute keys a span summary lists with their values. The
# last group (scope, session, cost, ttft) is what hand-recorded Tollgate spans
# carry; none of the library dialects emits such keys.
KEY_ATTRIBUTE_MARKERS = (
    "token", "model", "provider", "system", "operation", "error", "stream",
    "response.id", "finish", "span.kind", "llm.request.type",
    "tollgate.", "user.id", "conversation.id", "session", "cost",
)

# The pre-1.27 GenAI names the legacy OpenLLMetry dialect must really emit.
LEGACY_NAMES = (
    "gen_ai.system",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.usage.total_tokens",
    "llm.request.type",
)
# Their current replacements, which it must NOT emit.
CURRENT_NAMES = ("gen_ai.provider.name", "gen_ai.operation.name", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")


def legacy_notes(keys: list, calls: list) -> tuple:
    """What the legacy dialect emitted, per name; (notes, failures)."""
    notes, failures = [], []
    missing = [k for k in LEGACY_NAMES if k not in keys]
    modern = [k for k in CURRENT_NAMES if k in keys]
    notes.append("pre-1.27 names emitted: " + ", ".join(k for k in LEGACY_NAMES if k in keys))
    if missing:
        failures.append(f"legacy names missing: {missing}")
    if modern:
        failures.append(f"current names present: {modern}")
    for call in calls:
        for span in call["spans"]:
            attrs = span["key_attributes"]
            desc = f"call {call['name']}: "
            if call["mock_returned"]["status"] != 200:
                desc += (
                    f"span status {span['status_code']} ({span['status_message']!r}), "
                    f"error.type {'present' if 'error.type' in attrs else 'absent'}"
                )
            elif "gen_ai.usage.prompt_tokens" not in attrs:
                desc += "no token attributes on the span"
            else:
                desc += ", ".join(
                    f"{k}={attrs[k]}"
                    for k in (
                        "gen_ai.usage.prompt_tokens",
                        "gen_ai.usage.completion_tokens",
                        "llm.usage.total_tokens",
                        "gen_ai.usage.cache_read_input_tokens",
                    )
                    if k in attrs
                )
            desc += f"; llm.request.type={attrs.get('llm.request.type')}, gen_ai.system={attrs.get('gen_ai.system')}"
            notes.append(desc)
    stream = next((c for c in calls if c["streamed"]), None)
    if stream and stream["spans"] and "gen_ai.usage.prompt_tokens" not in stream["spans"][0]["key_attributes"]:
        notes.append(
            "the streamed call's span has llm.is_streaming=true but NO token counts although the "
            "mock sent usage in the last chunk (include_usage): this release ignores the stream's "
            "usage and counts stream tokens only with tiktoken when enrich_token_usage=True "
            "(off by default, and tiktoken would download its encodings)"
        )
    cached = next((c for c in calls if c["name"] == "chat_cached"), None)
    if cached and cached["spans"] and "gen_ai.usage.cache_read_input_tokens" not in cached["spans"][0]["key_attributes"]:
        notes.append(
            "no cache-read attribute: this release does not record prompt_tokens_details.cached_tokens, "
            "so the cached call's gen_ai.usage.prompt_tokens includes the "
            f"{cached['mock_returned']['usage']['cache_read_tokens']} cached tokens with nothing to tell them apart"
        )
    return notes, failures


# Roles in priority order: each key is listed under the first role it matches.
ROLES = (
    ("cost", ("cost",)),
    ("streaming", ("stream", "ttft")),
    ("errors", ("error",)),
    ("tokens", ("usage.", "token_count")),
    ("model", ("model",)),
    ("provider", ("gen_ai.system", "provider")),
    ("operation", ("operation", "request.type", "span.kind")),
    ("response id", ("response.id",)),
    ("scope", ("tollgate.", "user.id", "conversation.id", "session")),
)


def names_by_role(keys: list) -> str:
    """Which attribute names the capture really holds, grouped by what a row needs."""
    grouped: dict = {}
    for key in keys:
        for role, markers in ROLES:
            if any(m in key for m in markers):
                grouped.setdefault(role, []).append(key)
                break
    parts = [f"{role}: {', '.join(grouped[role])}" for role, _ in ROLES if role in grouped]
    return "attribute names by role -- " + "; ".join(parts)


def manual_notes(calls: list) -> list:
    notes = [
        "no instrumentation library: the agent records one CLIENT span per call with the plain "
        "OpenTelemetry SDK (tracer 'agent'), values from the openai client's parsed response",
        "resource carries tollgate.org=acme and tollgate.project=support (see resource_attributes)",
        "every span: user.id=u-17, gen_ai.conversation.id=conv-9, tollgate.route=support-chat, "
        "tollgate.label.team=core",
        "gen_ai.usage.input_tokens = usage.prompt_tokens (includes cached tokens, as in the README), "
        "gen_ai.usage.cache_read.input_tokens = prompt_tokens_details.cached_tokens or 0",
        "tollgate.cost_usd=0.0042 on call chat is a fixed provider-reported cost: the mock reports no cost",
        "tollgate.session=sess-override-7 on call chat_cached overrides gen_ai.conversation.id=conv-9",
        "tollgate.stream=true and tollgate.ttft_ms (measured client-side, milliseconds, varies per "
        "capture) on call chat_stream only",
        "embeddings span is named 'embeddings text-embedding-3-small', gen_ai.operation.name=embeddings, "
        "no gen_ai.response.id / output / cache attributes (the response has none)",
        "failed call: error.type=<openai exception class>, span status ERROR, no response/usage attributes",
    ]
    return notes


def span_summary(span, scope) -> dict:
    return {
        "name": span.name,
        "scope": scope.name,
        "scope_version": scope.version,
        "kind": span.kind,
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
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
                marker in kv.key.lower()  # the AI SDK's ai.usage.inputTokens etc. are camelCase
                for marker in KEY_ATTRIBUTE_MARKERS
            )
            and not kv.key.startswith(("gen_ai.prompt.", "gen_ai.completion.", "llm.input_messages", "llm.output_messages"))
        },
    }


EXTRA_DIALECTS = {"anthropic_sdk_native"}


# --- the wire log (wire_recorder.py): what the mock really returned ----------

def wire_api(path: str) -> str:
    path = path.split("?")[0]
    for suffix, api in (
        ("/chat/completions", "openai_chat"),
        ("/responses", "openai_responses"),
        ("/embeddings", "openai_embeddings"),
        ("/messages", "anthropic_messages"),
    ):
        if path.endswith(suffix):
            return api
    return "other"


def wire_answer(api: str, record: dict) -> dict:
    """Model, id, finish reason and the usage object as the mock sent them
    (keys as in usage_rule.expected_usage's "wire")."""
    if "events" in record:
        data = [e["data"] for e in record["events"] if isinstance(e["data"], dict)]
    else:
        data = [record["response"]] if isinstance(record["response"], dict) else []
    if not data:
        return {}
    if api == "openai_chat":
        usage = next((d["usage"] for d in reversed(data) if d.get("usage")), None)
        finish = [c["finish_reason"] for d in data for c in d.get("choices", []) if c.get("finish_reason")]
        tool_calls = [
            tc["function"]["name"]
            for d in data
            for c in d.get("choices", [])
            for tc in (c.get("message") or c.get("delta") or {}).get("tool_calls") or []
            if tc.get("function", {}).get("name")
        ]
        answer = {
            "model": data[0].get("model"),
            "response_id": data[0].get("id"),
            "finish_reason": finish[-1] if finish else None,
            "tool_calls": tool_calls,
        }
        if usage:
            answer["wire_usage"] = {
                "prompt_tokens": usage["prompt_tokens"],
                "completion_tokens": usage["completion_tokens"],
                "total_tokens": usage["total_tokens"],
                "prompt_tokens_details.cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
                "completion_tokens_details.reasoning_tokens": (usage.get("completion_tokens_details") or {}).get(
                    "reasoning_tokens"
                ),
            }
        return answer
    if api == "openai_responses":
        done = next((d["response"] for d in reversed(data) if isinstance(d.get("response"), dict)), data[-1])
        usage = done.get("usage")
        output = done.get("output") or []
        answer = {
            "model": done.get("model"),
            "response_id": done.get("id"),
            "finish_reason": done.get("status"),
            "tool_calls": [o.get("name") for o in output if o.get("type") == "function_call"],
        }
        if usage:
            answer["wire_usage"] = {
                "input_tokens": usage["input_tokens"],
                "output_tokens": usage["output_tokens"],
                "total_tokens": usage["total_tokens"],
                "input_tokens_details.cached_tokens": (usage.get("input_tokens_details") or {}).get("cached_tokens"),
                "input_tokens_details.cache_write_tokens": (usage.get("input_tokens_details") or {}).get(
                    "cache_write_tokens"
                ),
                "output_tokens_details.reasoning_tokens": (usage.get("output_tokens_details") or {}).get(
                    "reasoning_tokens"
                ),
            }
        return answer
    if api == "anthropic_messages":
        if "events" in record:
            start = next(d["message"] for d in data if d.get("type") == "message_start")
            delta = next((d for d in data if d.get("type") == "message_delta"), {})
            usage = {**start.get("usage", {}), **{k: v for k, v in delta.get("usage", {}).items() if v is not None}}
            stop = (delta.get("delta") or {}).get("stop_reason")
            blocks = [d.get("content_block", {}) for d in data if d.get("type") == "content_block_start"]
        else:
            start, usage, stop, blocks = data[0], data[0].get("usage", {}), data[0].get("stop_reason"), data[0].get("content", [])
        return {
            "model": start.get("model"),
            "response_id": start.get("id"),
            "finish_reason": stop,
            "tool_calls": [b.get("name") for b in blocks if b.get("type") == "tool_use"],
            "wire_usage": {
                k: usage.get(k)
                for k in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
            },
        }
    if api == "openai_embeddings":
        usage = data[0].get("usage", {})
        return {
            "model": data[0].get("model"),
            "response_id": None,
            "wire_usage": {"prompt_tokens": usage.get("prompt_tokens"), "total_tokens": usage.get("total_tokens")},
        }
    return {}


def request_shape(api: str, request) -> dict:
    """What a model request asked for, in brief (the full body is in the wire)."""
    if not isinstance(request, dict):
        return {}
    shape = {"model": request.get("model"), "stream": bool(request.get("stream", False))}
    if api == "openai_chat":
        shape["message_roles"] = [m.get("role") for m in request.get("messages", [])]
    elif api == "anthropic_messages":
        shape["message_roles"] = [m.get("role") for m in request.get("messages", [])]
    elif api == "openai_responses":
        items = request.get("input")
        shape["input_items"] = (
            [i.get("type", "message") for i in items] if isinstance(items, list) else type(items).__name__
        )
    tools = request.get("tools") or []
    if tools:
        shape["tools"] = [t.get("name") or (t.get("function") or {}).get("name") for t in tools]
    return shape


def wire_model_calls(records: list) -> tuple:
    """Every model request the SDK sent, what the mock answered (checked
    against the mock's usage rule); (model_calls, failures)."""
    from usage_rule import expected_usage

    calls, failures = [], []
    for record in records:
        api = wire_api(record["path"])
        if api == "other":
            continue
        answer = wire_answer(api, record)
        returned = {
            "status": record["status"],
            "model": answer.get("model"),
            "response_id": answer.get("response_id"),
            "finish_reason": answer.get("finish_reason"),
        }
        if answer.get("tool_calls"):
            returned["tool_calls"] = answer["tool_calls"]
        if record["status"] == 200:
            usage = expected_usage(api, record["request"], record["mock_headers"])
            if answer.get("wire_usage") != usage["wire"]:
                failures.append(
                    f"{record['path']} #{len(calls)}: mock sent {answer.get('wire_usage')}, rule says {usage['wire']}"
                )
            returned["usage"] = usage
        else:
            returned["error"] = {"body": record.get("response")}
        calls.append(
            {
                "arrived_unix_nano": record["arrived_unix_nano"],
                "api": api,
                "path": record["path"],
                "request": request_shape(api, record["request"]),
                "mock_headers": record["mock_headers"],
                "mock_returned": returned,
            }
        )
    return calls, failures


def call_entry(index: int, call: dict, spans: list, model_calls: list | None = None) -> dict:
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
    elif model_calls is not None and observed.get("status") == 200:
        # A framework operation: what the mock returned is per model call.
        returned = {"status": observed.get("status"), "model_call_count": len(model_calls)}
    else:
        returned["error"] = {
            "sdk_exception": observed.get("error_class"),
            "body": observed.get("error_body"),
            "request_id": observed.get("request_id"),
        }
    entry = {
        "index": index,
        "name": call["name"],
        "api": call["api"],
        "request_model": call["request_model"],
        "streamed": call["streamed"],
        "include_usage": call["include_usage"],
        "mock_headers": call["mock_headers"],
        "mock_returned": returned,
        "sdk_observed": observed,
    }
    if model_calls is not None:
        entry["model_calls"] = [
            {k: v for k, v in mc.items() if k != "arrived_unix_nano"} for mc in model_calls
        ]
    entry["spans"] = spans
    return entry


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
        wire_path = results_dir / f"{dialect}.wire.jsonl"
        per_call_wire = None
        if wire_path.exists():
            records = [json.loads(line) for line in wire_path.read_text().splitlines() if line.strip()]
            model_calls, bad = wire_model_calls(records)
            failures.extend(f"{dialect}: {b}" for b in bad)
            per_call_wire = [[] for _ in result["calls"]]
            for mc in model_calls:
                for i, call in enumerate(result["calls"]):
                    lo, hi = call["window_unix_nano"]
                    if lo <= mc["arrived_unix_nano"] <= hi:
                        per_call_wire[i].append(mc)
                        break
                else:
                    failures.append(f"{dialect}: model request at {mc['path']} outside every call")
        for i, call in enumerate(result["calls"]):
            calls.append(call_entry(i, call, per_call[i], per_call_wire[i] if per_call_wire else None))

        notes = list(result.get("notes", []))
        scopes = sorted({scope.name for _, scope in spans})
        model_call_total = sum(len(c.get("model_calls", [])) for c in calls)
        if per_call_wire is not None and model_call_total != len(calls):
            notes.append(
                f"{len(spans)} spans for {len(calls)} calls making {model_call_total} model requests "
                f"(scopes: {', '.join(scopes)})"
            )
        elif len(spans) != len(calls):
            notes.append(f"{len(spans)} spans for {len(calls)} calls (scopes: {', '.join(scopes)})")
        if dialect == "genai_latest":
            notes.append(
                "gen_ai.provider.name is emitted (latest experimental conventions supported)"
                if "gen_ai.provider.name" in keys
                else "gen_ai.provider.name is NOT emitted by this version; still captured"
            )
        if dialect in ("legacy_openllmetry_openai", "tollgate_python"):
            notes.append(names_by_role(keys))
        if dialect == "legacy_openllmetry_openai":
            more, bad = legacy_notes(keys, calls)
            notes.extend(more)
            failures.extend(f"{dialect}: {b}" for b in bad)
        if dialect == "tollgate_python":
            notes.extend(manual_notes(calls))
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
        }
        # Only where they differ from the manifest-wide resource_attributes.
        resource = result.get("resource_attributes")
        if resource and resource != {"service.name": f"{dialect}-agent", "deployment.environment.name": "test"}:
            entry["resource_attributes"] = resource
        entry |= {
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
        sys.exit(f"fixtures that did not decode, hold no spans or fail their checks: {failures}")


if __name__ == "__main__":
    main()
