"""`tollgate.scope` lands on the spans instrumentation libraries create
(OpenInference, OpenLLMetry, the official openai-v2 one) for calls of the official openai client, and
on the Anthropic SDK's own spans, as stored rows show; it never leaks
between asyncio tasks or threads."""

from __future__ import annotations

import asyncio
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List

import pytest
from clients import achat, anthropic_client, async_openai_client, chat, message, openai_client
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from servers import Collector, CountingProxy

import tollgate


def init(c: Collector, project: str) -> None:
    tollgate.init(
        endpoint=c.otlp_http, api=c.api, org="acme", project=project, environment="test",
        app="shim-test", gateway="off",
    )


@pytest.fixture(params=["openinference", "openllmetry", "openai-v2"])
def instrumented(request: pytest.FixtureRequest) -> Iterator[str]:
    """The official openai client instrumented by one library at a time."""
    if request.param == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor
    elif request.param == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    else:
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument()
    yield request.param
    instrumentor.uninstrument()


def test_scope_lands_on_the_instrumentation_spans_of_the_openai_client(
    instrumented: str, collector: Collector, provider: CountingProxy
) -> None:
    project = f"scope-{instrumented}"
    init(collector, project)
    client = openai_client(provider.url)
    with tollgate.scope(user="u-17", session="s-9", route="support"):
        chat(client)
        with tollgate.scope(user="u-18"):  # nested: inherits session and route
            chat(client, stream=True)
    chat(client)  # outside any scope
    assert tollgate.flush()

    rows = collector.wait_calls(3, project=project)
    assert len(rows) == 3, rows
    by_user = {r["user"]: r for r in rows}
    assert set(by_user) == {"u-17", "u-18", None}, rows
    for user, session, route in (("u-17", "s-9", "support"), ("u-18", "s-9", "support"), (None, None, None)):
        row = by_user[user]
        assert (row["session"], row["route"]) == (session, route), row
        assert (row["org"], row["project"], row["app"], row["environment"]) == ("acme", project, "shim-test", "test"), row
        assert row["provider"] == "openai", row
        assert row["mode"] == "observe", row
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0, row
    assert by_user["u-18"]["stream"] is True


def test_scope_lands_on_the_anthropic_sdks_own_spans(collector: Collector, provider: CountingProxy) -> None:
    project = "scope-anthropic"
    init(collector, project)
    client = anthropic_client(provider.url)
    with tollgate.scope(user="u-5", session="s-5", route="billing"):
        message(client)
        message(client, stream=True)
    assert tollgate.flush()
    rows = collector.wait_calls(2, project=project)
    assert len(rows) == 2, rows
    assert {(r["user"], r["session"], r["route"], r["provider"], r["stream"]) for r in rows} == {
        ("u-5", "s-5", "billing", "anthropic", False),
        ("u-5", "s-5", "billing", "anthropic", True),
    }, rows


def test_spans_go_over_otlp_grpc_too(openllmetry: None, collector: Collector, provider: CountingProxy) -> None:
    project = "scope-grpc"
    tollgate.init(
        endpoint=collector.otlp_grpc, protocol="grpc", api=collector.api, org="acme", project=project,
        app="shim-test", gateway="off",
    )
    with tollgate.scope(user="u-grpc"):
        chat(openai_client(provider.url))
    assert tollgate.flush()
    rows = collector.wait_calls(1, project=project)
    assert [(r["user"], r["app"], r["provider"]) for r in rows] == [("u-grpc", "shim-test", "openai")]


class Recorder:
    """An in-memory copy of every span the process ends."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, name: str) -> List[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


def test_scopes_never_leak_between_concurrent_tasks(collector: Collector, provider: CountingProxy) -> None:
    project = "scope-tasks"
    init(collector, project)
    recorder = Recorder()
    tracer = trace.get_tracer("agent")
    client = async_openai_client(provider.url)
    seen: List[tuple] = []

    async def agent(i: int) -> None:
        async with tollgate.scope(user=f"u-{i}", session=f"s-{i}"):
            for turn in range(3):
                await asyncio.sleep(random.random() / 50)
                with tracer.start_as_current_span("turn"):
                    await achat(client)
                    current = tollgate.current_scope()
                    seen.append((i, current.user, current.session))

    @tollgate.scope(route="batch")
    async def run_all() -> None:
        await asyncio.gather(*(agent(i) for i in range(12)))

    asyncio.run(run_all())
    assert tollgate.current_scope() == tollgate.Scope()
    assert len(seen) == 36
    assert all((u, s) == (f"u-{i}", f"s-{i}") for i, u, s in seen), seen
    turns = recorder.spans("turn")
    assert len(turns) == 36
    for span in turns:
        attrs = span.attributes or {}
        user = attrs["tollgate.user"]
        assert attrs["tollgate.session"] == "s-" + str(user)[2:], dict(attrs)
        assert attrs["tollgate.route"] == "batch"
        assert attrs["tollgate.project"] == project


def test_scopes_never_leak_between_threads(collector: Collector, provider: CountingProxy) -> None:
    project = "scope-threads"
    init(collector, project)
    recorder = Recorder()
    tracer = trace.get_tracer("agent")
    client = openai_client(provider.url)
    barrier = threading.Barrier(6)

    def agent(i: int) -> str:
        # Threads start in an empty context: nothing leaks in from the caller.
        assert tollgate.current_scope() == tollgate.Scope()
        with tollgate.scope(user=f"u-{i}", session=f"s-{i}"):
            barrier.wait(10)  # every thread is inside its scope at once
            for _ in range(3):
                with tracer.start_as_current_span("turn"):
                    chat(client)
            return str(tollgate.current_scope().user)

    with tollgate.scope(user="main-thread"):
        with ThreadPoolExecutor(6) as pool:
            users = list(pool.map(agent, range(6)))
        assert tollgate.current_scope().user == "main-thread"
    assert users == [f"u-{i}" for i in range(6)]
    turns = recorder.spans("turn")
    assert len(turns) == 18
    for span in turns:
        attrs = span.attributes or {}
        assert attrs["tollgate.session"] == "s-" + str(attrs["tollgate.user"])[2:], dict(attrs)


def test_scope_checks_its_values() -> None:
    with pytest.raises(ValueError):
        tollgate.scope(user="")
    with pytest.raises(ValueError):
        tollgate.scope(session="x" * 257)

    @tollgate.scope(user="decorated")
    def who() -> str:
        return str(tollgate.current_scope().user)

    assert who() == "decorated"
    assert tollgate.current_scope().user is None
