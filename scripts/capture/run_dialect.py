"""Runs one instrumentation dialect against the mock provider and exports its
spans over OTLP/HTTP; one process per dialect so instrumentations never
patch each other's SDKs.

Usage: python run_dialect.py <dialect> <mock-base-url> <otlp-base-url> <result.json>

Writes <result.json>: the libraries and versions used and, per call in order,
what was sent, what the mock's deterministic rule says it returned, and what
the SDK actually parsed (the two must agree, or the run fails).
"""

import importlib.metadata
import json
import os
import sys
import time
import traceback
import warnings

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from usage_rule import expected_usage

API_KEY = "sk-fixture-not-a-secret"
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-3-5-haiku-20241022"
EMBEDDING_MODEL = "text-embedding-3-small"

# Per dialect: the instrumentation package, the provider SDK, and what the
# library is (for the manifest).
DIALECTS = {
    "genai_openai_v2": {
        "instrumentation": "opentelemetry-instrumentation-openai-v2",
        "provider": "openai",
        "support": ["opentelemetry-util-genai", "opentelemetry-semantic-conventions", "httpx"],
        "family": "OpenTelemetry GenAI (official, opentelemetry-python-contrib), default mode",
    },
    "genai_latest": {
        "instrumentation": "opentelemetry-instrumentation-openai-v2",
        "provider": "openai",
        "support": ["opentelemetry-util-genai", "opentelemetry-semantic-conventions", "httpx"],
        "family": "OpenTelemetry GenAI (official) with OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental",
    },
    "openllmetry_openai": {
        "instrumentation": "opentelemetry-instrumentation-openai",
        "provider": "openai",
        "support": ["opentelemetry-semantic-conventions-ai", "opentelemetry-semantic-conventions"],
        "family": "Traceloop OpenLLMetry",
    },
    "openllmetry_anthropic": {
        "instrumentation": "opentelemetry-instrumentation-anthropic",
        "provider": "anthropic",
        "support": ["opentelemetry-semantic-conventions-ai", "opentelemetry-semantic-conventions"],
        "family": "Traceloop OpenLLMetry",
    },
    "openinference_openai": {
        "instrumentation": "openinference-instrumentation-openai",
        "provider": "openai",
        "support": ["openinference-instrumentation", "openinference-semantic-conventions"],
        "family": "Arize OpenInference",
    },
    # An older OpenLLMetry release, run in its own venv (requirements-legacy.txt):
    # it still emits the pre-1.27 names gen_ai.system, gen_ai.usage.prompt_tokens /
    # completion_tokens, llm.usage.total_tokens and llm.request.type.
    "legacy_openllmetry_openai": {
        "instrumentation": "opentelemetry-instrumentation-openai",
        "provider": "openai",
        "support": [
            "opentelemetry-semantic-conventions-ai",
            "opentelemetry-semantic-conventions",
            "opentelemetry-instrumentation",
            "tiktoken",
        ],
        "family": "Traceloop OpenLLMetry, older release (pre-1.27 GenAI attribute names)",
        "venv": "legacy",
    },
    # No instrumentation library: the agent records one span per model call by
    # hand with the plain OpenTelemetry SDK, as Tollgate's README shows, taking
    # every value from the real response the openai client parsed.
    "tollgate_python": {
        "instrumentation": "opentelemetry-sdk",
        "provider": "openai",
        "support": [],
        "family": "Hand-recorded spans, plain OpenTelemetry Python SDK, Tollgate README attributes (no instrumentation library)",
        "resource": {"tollgate.org": "acme", "tollgate.project": "support"},
    },
    # Not one of the five requested dialects: anthropic>=2 traces its own
    # calls (scope com.anthropic.sdk.python) whenever a global tracer provider
    # is set, so these spans reach collectors with no instrumentation library.
    "anthropic_sdk_native": {
        "instrumentation": "anthropic",
        "provider": "anthropic",
        "support": [],
        "family": "Anthropic Python SDK built-in OpenTelemetry tracing (no instrumentation library)",
    },
}

# Several layers at once: the libraries run together as users combine them, so
# one model call is described by more than one span in the same trace, and
# agent runs add spans that repeat the usage of their model calls. What the
# mock returned for every model call is taken from the wire (wire_recorder.py),
# not from these libraries. "venv" names the pinned environment the dialect
# runs in (scripts/capture/requirements-<venv>.txt; none: requirements.txt).
# Manifest notes for both LangChain dialects.
LANGCHAIN_NOTES = [
    "calls invoke and stream run with no span of the application around them; invoke_in_request_span "
    "runs inside the application's own SERVER span 'POST /chat' (tracer 'app', no GenAI attributes), "
    "as in a web service",
]

DIALECTS |= {
    # The anthropic SDK's own CLIENT span (it traces itself whenever a global
    # tracer provider is set) under OpenInference's INTERNAL span.
    "anthropic_native_openinference": {
        "instrumentation": "openinference-instrumentation-anthropic",
        "provider": "anthropic",
        "support": ["openinference-instrumentation", "openinference-semantic-conventions"],
        "family": "Anthropic Python SDK built-in OpenTelemetry tracing together with Arize OpenInference (anthropic)",
    },
    "langchain_openinference": {
        "instrumentation": "openinference-instrumentation-langchain",
        "provider": "openai",
        "support": [
            "openinference-instrumentation-openai",
            "langchain-openai",
            "langchain-core",
            "openinference-instrumentation",
            "openinference-semantic-conventions",
        ],
        "family": "LangChain ChatOpenAI with Arize OpenInference for both LangChain and openai",
        "scenario": "langchain",
        "notes": LANGCHAIN_NOTES,
        "venv": "langchain",
    },
    "langchain_openllmetry": {
        "instrumentation": "opentelemetry-instrumentation-langchain",
        "provider": "openai",
        "support": [
            "opentelemetry-instrumentation-openai",
            "langchain-openai",
            "langchain-core",
            "opentelemetry-semantic-conventions-ai",
            "opentelemetry-semantic-conventions",
        ],
        "family": "LangChain ChatOpenAI with Traceloop OpenLLMetry for both LangChain and openai",
        "scenario": "langchain",
        "notes": [
            *LANGCHAIN_NOTES,
            "opentelemetry-instrumentation-openai is instrumented too but records no span here: the LangChain "
            "callback sets SUPPRESS_LANGUAGE_MODEL_INSTRUMENTATION_KEY while the chat model runs (the same "
            "openai instrumentation, used alone in this venv, does record openai.chat spans)",
        ],
        "venv": "langchain",
    },
    "pydantic_ai_agent": {
        "instrumentation": "pydantic-ai-slim",
        "provider": "openai",
        "support": ["pydantic-graph", "opentelemetry-semantic-conventions"],
        "family": "Pydantic AI agent built-in OpenTelemetry instrumentation (Agent.instrument_all())",
        "scenario": "pydantic_ai",
        "notes": [
            "one agent run: the mock answers the first request with a get_weather tool call, the second "
            "(after the tool result) with text; the invoke_agent span repeats the sum of both chat spans' "
            "usage as gen_ai.aggregated_usage.*, and each chat span carries operation.cost (Pydantic AI's "
            "own price estimate, genai-prices)",
        ],
        "venv": "pydantic-ai",
    },
    "openai_agents_openinference": {
        "instrumentation": "openinference-instrumentation-openai-agents",
        "provider": "openai",
        "support": ["openai-agents", "openinference-instrumentation", "openinference-semantic-conventions"],
        "family": "OpenAI Agents SDK (Responses API) with Arize OpenInference (openai-agents)",
        "scenario": "openai_agents",
        "notes": [
            "one Runner.run with a function tool: the mock answers the first Responses request with a "
            "get_weather function_call, the second (after the function_call_output) with text",
            "the SDK's own trace export to OpenAI is off: OpenInference's processor is installed as the "
            "only trace processor (exclusive_processor=True); set_tracing_disabled(True) would also stop "
            "the spans OpenInference records",
        ],
        "venv": "openai-agents",
    },
}

# Packages every dialect runs on.
COMMON_PACKAGES = ["opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"]


def versions(dialect: str) -> dict:
    spec = DIALECTS[dialect]
    found = {"python": sys.version.split()[0]}
    for name in [spec["instrumentation"], spec["provider"], *spec["support"], *COMMON_PACKAGES]:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def resource_attributes(dialect: str) -> dict:
    return {
        "service.name": f"{dialect}-agent",
        "deployment.environment.name": "test",
        **DIALECTS[dialect].get("resource", {}),
    }


def setup_tracing(dialect: str, otlp_base: str) -> TracerProvider:
    resource = Resource.create(resource_attributes(dialect))
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=f"{otlp_base}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def instrument(dialect: str, provider: TracerProvider) -> None:
    if dialect in ("genai_openai_v2", "genai_latest"):
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
    elif dialect in ("openllmetry_openai", "legacy_openllmetry_openai"):
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
    elif dialect == "openllmetry_anthropic":
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

        AnthropicInstrumentor().instrument(tracer_provider=provider)
    elif dialect == "openinference_openai":
        from openinference.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
    elif dialect == "anthropic_sdk_native":
        pass  # the SDK's own tracing picks up the global tracer provider
    elif dialect == "anthropic_native_openinference":
        # The SDK's own tracing stays on (global tracer provider).
        from openinference.instrumentation.anthropic import AnthropicInstrumentor

        AnthropicInstrumentor().instrument(tracer_provider=provider)
    elif dialect == "langchain_openinference":
        from openinference.instrumentation.langchain import LangChainInstrumentor
        from openinference.instrumentation.openai import OpenAIInstrumentor

        LangChainInstrumentor().instrument(tracer_provider=provider)
        OpenAIInstrumentor().instrument(tracer_provider=provider)
    elif dialect == "langchain_openllmetry":
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor

        LangchainInstrumentor().instrument(tracer_provider=provider)
        OpenAIInstrumentor().instrument(tracer_provider=provider)
    elif dialect == "pydantic_ai_agent":
        from pydantic_ai import Agent

        Agent.instrument_all()  # the global tracer provider
    elif dialect == "openai_agents_openinference":
        from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

        # The SDK's own exporter would post its traces to OpenAI. The
        # exclusive processor (the default, spelled out) replaces it, so the
        # SDK's traces reach OpenInference only. set_tracing_disabled(True)
        # is no way to do that: it disables the SDK's tracing altogether, and
        # OpenInference (a processor of that tracing) would see nothing.
        OpenAIAgentsInstrumentor().instrument(tracer_provider=provider, exclusive_processor=True)
    elif dialect == "tollgate_python":
        pass  # spans are recorded by hand in run_openai_manual
    else:
        raise SystemExit(f"unknown dialect {dialect}")


# --- the calls -------------------------------------------------------------
# Each call uses distinct token counts so a test can tell the rows apart.

OPENAI_MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Say hello to the Tollgate fixtures."},
]
ANTHROPIC_SYSTEM = "You are a terse assistant."
ANTHROPIC_MESSAGES = [{"role": "user", "content": "Say hello to the Tollgate fixtures."}]


def openai_calls() -> list:
    return [
        {
            "name": "chat",
            "api": "openai_chat",
            "request": {"model": OPENAI_MODEL, "messages": OPENAI_MESSAGES, "max_tokens": 64},
            "headers": {},
        },
        {
            "name": "chat_stream",
            "api": "openai_chat",
            "request": {
                "model": OPENAI_MODEL,
                "messages": OPENAI_MESSAGES,
                "max_tokens": 64,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            "headers": {"x-mock-output-tokens": "7"},
        },
        {
            "name": "chat_cached",
            "api": "openai_chat",
            "request": {"model": OPENAI_MODEL, "messages": OPENAI_MESSAGES, "max_tokens": 64},
            "headers": {"x-mock-cache-read-tokens": "1024", "x-mock-output-tokens": "12"},
        },
        {
            "name": "embeddings",
            "api": "openai_embeddings",
            "request": {"model": EMBEDDING_MODEL, "input": ["alpha beta", "gamma delta epsilon"]},
            "headers": {},
        },
        {
            "name": "chat_rate_limited",
            "api": "openai_chat",
            "request": {"model": OPENAI_MODEL, "messages": OPENAI_MESSAGES, "max_tokens": 64},
            "headers": {"x-mock-status": "429"},
        },
    ]


def anthropic_calls() -> list:
    base = {
        "model": ANTHROPIC_MODEL,
        "max_tokens": 64,
        "system": ANTHROPIC_SYSTEM,
        "messages": ANTHROPIC_MESSAGES,
    }
    return [
        {"name": "chat", "api": "anthropic_messages", "request": dict(base), "headers": {}},
        {
            "name": "chat_stream",
            "api": "anthropic_messages",
            "request": {**base, "stream": True},
            "headers": {"x-mock-output-tokens": "7"},
        },
        {
            "name": "chat_cached",
            "api": "anthropic_messages",
            "request": dict(base),
            "headers": {
                "x-mock-cache-read-tokens": "1024",
                "x-mock-cache-write-tokens": "256",
                "x-mock-output-tokens": "12",
            },
        },
        {
            "name": "chat_rate_limited",
            "api": "anthropic_messages",
            "request": dict(base),
            "headers": {"x-mock-status": "429"},
        },
    ]


def run_openai(call: dict, client) -> dict:
    import openai

    request = call["request"]
    try:
        if call["api"] == "openai_embeddings":
            response = client.embeddings.create(**request, extra_headers=call["headers"])
            return {
                "status": 200,
                "response_id": None,
                "response_model": response.model,
                "wire_usage": {
                    "prompt_tokens": response.usage.prompt_tokens,
                    "total_tokens": response.usage.total_tokens,
                },
                "vectors": len(response.data),
            }
        if request.get("stream"):
            chunks = list(client.chat.completions.create(**request, extra_headers=call["headers"]))
            usage = chunks[-1].usage
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            return {
                "status": 200,
                "response_id": chunks[0].id,
                "response_model": chunks[0].model,
                "finish_reason": finish[-1] if finish else None,
                "chunks": len(chunks),
                "output_text": text,
                "wire_usage": openai_usage(usage),
            }
        response = client.chat.completions.create(**request, extra_headers=call["headers"])
        return {
            "status": 200,
            "response_id": response.id,
            "response_model": response.model,
            "finish_reason": response.choices[0].finish_reason,
            "output_text": response.choices[0].message.content,
            "wire_usage": openai_usage(response.usage),
        }
    except openai.APIStatusError as err:
        return {
            "status": err.status_code,
            "error_class": f"openai.{type(err).__name__}",
            "error_body": err.body,
            "request_id": err.request_id,
        }


def openai_usage(usage) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details.cached_tokens": usage.prompt_tokens_details.cached_tokens,
        "completion_tokens_details.reasoning_tokens": usage.completion_tokens_details.reasoning_tokens,
    }


# --- tollgate_python: spans recorded by hand --------------------------------
# Scope attributes on every model-call span, as an agent following the README
# would set them (resource attributes carry tollgate.org / tollgate.project).
MANUAL_SCOPE = {
    "user.id": "u-17",
    "gen_ai.conversation.id": "conv-9",
    "tollgate.route": "support-chat",
    "tollgate.label.team": "core",
}
# Per call, on top of MANUAL_SCOPE. The mock reports no cost, so the
# provider-reported cost on the first call is a fixed value (as if an upstream
# gateway had returned it); everything else comes from the real response.
MANUAL_EXTRA = {
    "chat": {"tollgate.cost_usd": 0.0042},
    "chat_cached": {"tollgate.session": "sess-override-7"},
}


def run_openai_manual(call: dict, client, tracer) -> dict:
    """One model call wrapped in a hand-made CLIENT span: request attributes
    before the call, response model/id/usage from what the openai client
    parsed, error.type + status ERROR when it raises."""
    import openai
    from opentelemetry.trace import SpanKind, Status, StatusCode

    request = call["request"]
    operation = "embeddings" if call["api"] == "openai_embeddings" else "chat"
    attributes = {
        "gen_ai.provider.name": "openai",
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": request["model"],
        **MANUAL_SCOPE,
        **MANUAL_EXTRA.get(call["name"], {}),
    }
    span = tracer.start_span(f"{operation} {request['model']}", kind=SpanKind.CLIENT, attributes=attributes)
    after: dict = {}
    try:
        if call["api"] == "openai_embeddings":
            response = client.embeddings.create(**request, extra_headers=call["headers"])
            # Embeddings have no id, no output tokens and no cache details.
            after = {
                "gen_ai.response.model": response.model,
                "gen_ai.usage.input_tokens": response.usage.prompt_tokens,
            }
            observed = {
                "status": 200,
                "response_id": None,
                "response_model": response.model,
                "wire_usage": {
                    "prompt_tokens": response.usage.prompt_tokens,
                    "total_tokens": response.usage.total_tokens,
                },
                "vectors": len(response.data),
            }
        elif request.get("stream"):
            started = time.perf_counter()
            ttft_ms = None
            chunks = []
            for chunk in client.chat.completions.create(**request, extra_headers=call["headers"]):
                if ttft_ms is None and chunk.choices and chunk.choices[0].delta.content:
                    ttft_ms = round((time.perf_counter() - started) * 1000.0, 3)
                chunks.append(chunk)
            usage = chunks[-1].usage  # stream_options.include_usage: the last chunk
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            after = {
                "gen_ai.response.model": chunks[0].model,
                "gen_ai.response.id": chunks[0].id,
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "gen_ai.usage.cache_read.input_tokens": cached_tokens(usage),
                "tollgate.stream": True,
                "tollgate.ttft_ms": ttft_ms,
            }
            observed = {
                "status": 200,
                "response_id": chunks[0].id,
                "response_model": chunks[0].model,
                "finish_reason": finish[-1] if finish else None,
                "chunks": len(chunks),
                "output_text": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
                "wire_usage": openai_usage(usage),
            }
        else:
            response = client.chat.completions.create(**request, extra_headers=call["headers"])
            after = {
                "gen_ai.response.model": response.model,
                "gen_ai.response.id": response.id,
                "gen_ai.usage.input_tokens": response.usage.prompt_tokens,
                "gen_ai.usage.output_tokens": response.usage.completion_tokens,
                "gen_ai.usage.cache_read.input_tokens": cached_tokens(response.usage),
            }
            observed = {
                "status": 200,
                "response_id": response.id,
                "response_model": response.model,
                "finish_reason": response.choices[0].finish_reason,
                "output_text": response.choices[0].message.content,
                "wire_usage": openai_usage(response.usage),
            }
    except openai.APIStatusError as err:
        after = {"error.type": type(err).__qualname__}
        span.set_status(Status(StatusCode.ERROR, f"{err.status_code} {type(err).__qualname__}"))
        observed = {
            "status": err.status_code,
            "error_class": f"openai.{type(err).__name__}",
            "error_body": err.body,
            "request_id": err.request_id,
        }
    after = {k: v for k, v in after.items() if v is not None}
    span.set_attributes(after)
    span.end()
    observed["span_attributes_set"] = {**attributes, **after}
    if observed["status"] != 200:
        observed["span_status"] = {"code": "ERROR", "description": f"{observed['status']} {after['error.type']}"}
    return observed


def cached_tokens(usage) -> int:
    # README: prompt_tokens_details?.cached_tokens ?? 0
    details = getattr(usage, "prompt_tokens_details", None)
    return (details.cached_tokens if details is not None else None) or 0


def run_anthropic(call: dict, client) -> dict:
    import anthropic

    request = call["request"]
    try:
        if request.get("stream"):
            events = list(client.messages.create(**request, extra_headers=call["headers"]))
            start = next(e for e in events if e.type == "message_start").message
            delta = next(e for e in events if e.type == "message_delta")
            text = "".join(
                e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
            )
            return {
                "status": 200,
                "response_id": start.id,
                "response_model": start.model,
                "finish_reason": delta.delta.stop_reason,
                "events": [e.type for e in events],
                "output_text": text,
                "wire_usage": {
                    "input_tokens": start.usage.input_tokens,
                    "output_tokens": delta.usage.output_tokens,
                    "cache_read_input_tokens": start.usage.cache_read_input_tokens,
                    "cache_creation_input_tokens": start.usage.cache_creation_input_tokens,
                },
            }
        message = client.messages.create(**request, extra_headers=call["headers"])
        return {
            "status": 200,
            "response_id": message.id,
            "response_model": message.model,
            "finish_reason": message.stop_reason,
            "output_text": message.content[0].text,
            "wire_usage": {
                "input_tokens": message.usage.input_tokens,
                "output_tokens": message.usage.output_tokens,
                "cache_read_input_tokens": message.usage.cache_read_input_tokens,
                "cache_creation_input_tokens": message.usage.cache_creation_input_tokens,
            },
        }
    except anthropic.APIStatusError as err:
        return {
            "status": err.status_code,
            "error_class": f"anthropic.{type(err).__name__}",
            "error_body": err.body,
            "request_id": err.request_id,
        }


# --- framework scenarios ------------------------------------------------------
# A framework builds the provider requests itself, so a call here is one
# framework operation: "run" performs it and returns what the framework
# reported. The requests it made and what the mock answered come from the
# wire log (merge.py), and an agent run makes several model calls.

WEATHER_QUESTION = "What is the weather in Paris? Use the tool, then answer in one line."


def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"Sunny and 21 C in {city}."


def langchain_calls(mock_base: str) -> list:
    from langchain_openai import ChatOpenAI

    messages = [("system", OPENAI_MESSAGES[0]["content"]), ("human", OPENAI_MESSAGES[1]["content"])]

    def model(headers: dict):
        return ChatOpenAI(
            model=OPENAI_MODEL,
            base_url=f"{mock_base}/v1",
            api_key=API_KEY,
            max_tokens=64,
            max_retries=0,
            stream_usage=True,
            default_headers=headers,
        )

    def invoke() -> dict:
        message = model({}).invoke(messages)
        return langchain_observed(message)

    def stream() -> dict:
        chunks = list(model({"x-mock-output-tokens": "7"}).stream(messages))
        total = chunks[0]
        for chunk in chunks[1:]:
            total = total + chunk
        return {**langchain_observed(total), "chunks": len(chunks)}

    def invoke_in_request_span() -> dict:
        # As in a web service: the application's own request span (no GenAI
        # attributes) is current while the model is invoked.
        from opentelemetry.trace import SpanKind

        tracer = trace.get_tracer("app")
        with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER, attributes=APP_SPAN_ATTRIBUTES):
            message = model({"x-mock-output-tokens": "5"}).invoke(messages)
        return langchain_observed(message)

    return [
        scenario_call("invoke", "openai_chat", invoke, streamed=False),
        scenario_call("stream", "openai_chat", stream, streamed=True, headers={"x-mock-output-tokens": "7"}),
        scenario_call(
            "invoke_in_request_span", "openai_chat", invoke_in_request_span, streamed=False,
            headers={"x-mock-output-tokens": "5"},
        ),
    ]


APP_SPAN_ATTRIBUTES = {"http.request.method": "POST", "http.route": "/chat", "url.path": "/chat"}


def langchain_observed(message) -> dict:
    meta = message.response_metadata
    return {
        "status": 200,
        "response_id": meta.get("id") or message.id,
        "response_model": meta.get("model_name"),
        "finish_reason": meta.get("finish_reason"),
        "output_text": message.content,
        "framework_usage": message.usage_metadata,
    }


def pydantic_ai_calls(mock_base: str) -> list:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel(OPENAI_MODEL, provider=OpenAIProvider(base_url=f"{mock_base}/v1", api_key=API_KEY))
    agent = Agent(
        model,
        name="weather_agent",
        instructions="You are a terse assistant.",
        model_settings={"max_tokens": 64},
    )
    agent.tool_plain(get_weather)

    def run() -> dict:
        result = agent.run_sync(WEATHER_QUESTION)
        usage = result.usage
        responses = [m for m in result.all_messages() if m.kind == "response"]
        return {
            "status": 200,
            "output_text": result.output,
            "model_requests": usage.requests,
            "tool_calls": usage.tool_calls,
            "framework_usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
            "response_ids": [m.provider_response_id for m in responses],
            "finish_reasons": [m.finish_reason for m in responses],
        }

    return [scenario_call("agent_run_with_tool", "openai_chat", run, streamed=False)]


def openai_agents_calls(mock_base: str) -> list:
    import asyncio

    from agents import Agent, OpenAIResponsesModel, Runner, function_tool
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key=API_KEY, base_url=f"{mock_base}/v1", max_retries=0)
    agent = Agent(
        name="weather_agent",
        instructions="You are a terse assistant.",
        model=OpenAIResponsesModel(model=OPENAI_MODEL, openai_client=client),
        tools=[function_tool(get_weather)],
    )

    def run() -> dict:
        result = asyncio.run(Runner.run(agent, WEATHER_QUESTION))
        usage = result.context_wrapper.usage
        return {
            "status": 200,
            "output_text": result.final_output,
            "model_requests": usage.requests,
            "framework_usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
            "response_ids": [r.response_id for r in result.raw_responses],
        }

    return [scenario_call("runner_run_with_tool", "openai_responses", run, streamed=False)]


def scenario_call(name: str, api: str, run, streamed: bool, headers: dict | None = None) -> dict:
    return {
        "name": name,
        "api": api,
        "request_model": OPENAI_MODEL,
        "streamed": streamed,
        "include_usage": streamed,
        "headers": headers or {},
        "run": run,
    }


SCENARIOS = {"langchain": langchain_calls, "pydantic_ai": pydantic_ai_calls, "openai_agents": openai_agents_calls}


def main() -> None:
    dialect, mock_base, otlp_base, result_path = sys.argv[1:5]
    spec = DIALECTS[dialect]
    provider = setup_tracing(dialect, otlp_base)
    instrument(dialect, provider)

    # max_retries=0: the failing call must reach the mock exactly once, so
    # the manifest's request sequence (and the mock's ids) stay predictable.
    if "scenario" in spec:
        client = None
        calls = SCENARIOS[spec["scenario"]](mock_base)

        def runner(call: dict, client) -> dict:
            return call["run"]()
    elif spec["provider"] == "openai":
        import openai

        client = openai.OpenAI(api_key=API_KEY, base_url=f"{mock_base}/v1", max_retries=0)
        calls, runner = openai_calls(), run_openai
        if dialect == "tollgate_python":
            tracer = provider.get_tracer("agent")

            def runner(call: dict, client) -> dict:
                return run_openai_manual(call, client, tracer)
    else:
        import anthropic

        client = anthropic.Anthropic(api_key=API_KEY, base_url=mock_base, max_retries=0)
        calls, runner = anthropic_calls(), run_anthropic

    results, mismatches = [], []
    for call in calls:
        # Spans are matched to calls by start time (same clock as the SDK's).
        started = time.time_ns()
        # Warnings (e.g. the SDK's model-deprecation notice) are findings to
        # record in the manifest, not noise for the terminal.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                observed = runner(call, client)
            except Exception as err:  # an instrumentation crash is a finding, not a stop
                observed = {"status": None, "exception": repr(err), "traceback": traceback.format_exc()}
        ended = time.time_ns()
        if caught:
            observed["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
        expected_status = int(call["headers"].get("x-mock-status", 200))
        if "request" in call:
            request = call["request"]
            shape = {
                "request_model": request["model"],
                "streamed": bool(request.get("stream", False)),
                "include_usage": bool(request.get("stream_options", {}).get("include_usage", False)),
            }
        else:  # a framework operation: its requests are in the wire log
            shape = {k: call[k] for k in ("request_model", "streamed", "include_usage")}
        entry = {
            "name": call["name"],
            "api": call["api"],
            **shape,
            "mock_headers": call["headers"],
            "expected_status": expected_status,
            "observed": observed,
            "window_unix_nano": [started, ended],
        }
        if expected_status == 200 and "request" in call:
            entry["expected_usage"] = expected_usage(call["api"], call["request"], call["headers"])
            if observed.get("wire_usage") != entry["expected_usage"]["wire"]:
                mismatches.append(call["name"])
        if observed.get("status") != expected_status:
            mismatches.append(call["name"])
        results.append(entry)

    provider.force_flush()
    provider.shutdown()

    output = {
        "dialect": dialect,
        "library_family": spec["family"],
        "instrumentation_package": spec["instrumentation"],
        "versions": versions(dialect),
        "resource_attributes": resource_attributes(dialect),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OTEL_", "TRACELOOP_", "OPENINFERENCE_"))},
        "calls": results,
        "notes": spec.get("notes", []),
        "mismatches": mismatches,
    }
    with open(result_path, "w") as fh:
        json.dump(output, fh, indent=2, default=str)
    if mismatches:
        print(f"{dialect}: usage/status mismatch for {mismatches}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
