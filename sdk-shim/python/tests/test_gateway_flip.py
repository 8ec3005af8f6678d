"""The gateway flip: the same agent code, with the collector's gateway off
and on, sends its calls to the provider or through the gateway, and the
stored rows are the same apart from `mode`."""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator, List

import pytest
from clients import chat, openai_client
from servers import Collector, CountingProxy

import tollgate

PROJECT = "flip"
# What a row says about a call that both modes must agree on.
COMPARED = (
    "org", "project", "app", "environment", "user", "session", "route", "provider", "operation",
    "request_model", "response_model", "input_tokens", "output_tokens", "cost_usd", "cost_source", "status",
    "stream", "finish_reason",
)


@pytest.fixture
def openllmetry() -> Iterator[None]:
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument()
    yield
    instrumentor.uninstrument()


def agent(provider_url: str) -> None:
    """The agent: unchanged between the two runs."""
    client = openai_client(provider_url)
    with tollgate.scope(user="u-7", session="s-7", route="support"):
        chat(client)
        chat(client, stream=True)


def compared(row: Dict[str, Any]) -> tuple:
    return tuple(row.get(k) for k in COMPARED)


def test_rows_are_the_same_with_the_gateway_off_and_on(
    openllmetry: None, start_collector: Any, provider: CountingProxy
) -> None:
    c: Collector = start_collector(gateway=True)
    key = c.create_key(name="flip agent", org="acme", project=PROJECT)
    common: Dict[str, Any] = dict(
        endpoint=c.otlp_http, api=c.api, org="acme", project=PROJECT, environment="test", app="flip-agent", gateway_key=key
    )

    tollgate.init(gateway="off", **common)
    before = provider.count
    agent(provider.url)
    assert provider.count == before + 2
    assert tollgate.flush()
    observed = c.wait_calls(2, project=PROJECT)

    tollgate.init(gateway="auto", **common)  # the collector says its gateway runs
    before = provider.count
    agent(provider.url)
    assert provider.count == before + 2, "each call reached the provider once, through the gateway"
    assert tollgate.flush()
    rows = c.wait_calls(4, project=PROJECT)
    time.sleep(1.0)  # spans of gateway calls must not come as extra rows
    rows = c.calls(project=PROJECT)
    modes = sorted(r["mode"] for r in rows)
    assert modes == ["gateway", "gateway", "observe", "observe"], rows

    observe: List[tuple] = sorted(compared(r) for r in rows if r["mode"] == "observe")
    gateway: List[tuple] = sorted(compared(r) for r in rows if r["mode"] == "gateway")
    assert observe == sorted(compared(r) for r in observed)
    assert observe == gateway, f"\nobserve: {observe}\ngateway: {gateway}"
    assert {r[COMPARED.index("user")] for r in gateway} == {"u-7"}
    assert {r[COMPARED.index("stream")] for r in gateway} == {True, False}

    # Through the gateway too, a blocked scope is refused in the process.
    c.block({"project": PROJECT})
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            tollgate.check()
        except tollgate.Blocked:
            break
        time.sleep(0.01)
    before = provider.count
    with pytest.raises(tollgate.Blocked):
        agent(provider.url)
    assert provider.count == before
