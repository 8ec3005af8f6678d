"""The gateway flip: the same agent code, with the collector's gateway off
and on, sends its calls to the provider or through the gateway, and the
stored rows are the same apart from `mode`. The openai calls are described
by OpenLLMetry's spans, the anthropic ones by the Anthropic SDK's own."""

from __future__ import annotations

import datetime
import time
from typing import Any, Dict, List

import anthropic
import openai
import pytest
from clients import anthropic_client, chat, message, openai_client
from servers import Collector, CountingProxy

import tollgate

PROJECT = "flip"
CALLS = 4  # what `agent` makes
# What a row says about a call that both modes must agree on.
COMPARED = (
    "org", "project", "app", "environment", "user", "session", "route", "provider", "operation",
    "request_model", "response_model", "input_tokens", "output_tokens", "cost_usd", "cost_source", "status",
    "stream", "finish_reason",
)


def agent(provider_url: str) -> None:
    """The agent: unchanged between the two runs."""
    client = openai_client(provider_url)
    claude = anthropic_client(provider_url)
    with tollgate.scope(user="u-7", session="s-7", route="support"):
        chat(client)
        chat(client, stream=True)
        message(claude)
        message(claude, stream=True)


def compared(row: Dict[str, Any]) -> tuple:
    values = {k: row.get(k) for k in COMPARED}
    if values["provider"] == "anthropic":
        # The Anthropic SDK's own span names its stop reason
        # `anthropic.message.stop_reason`, which the collector does not map
        # to `finish_reason` (the gateway row has it): not compared.
        values["finish_reason"] = None
    return tuple(values.values())


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
    assert provider.count == before + CALLS
    assert tollgate.flush()
    observed = c.wait_calls(CALLS, project=PROJECT)

    tollgate.init(gateway="auto", **common)  # the collector says its gateway runs
    before = provider.count
    agent(provider.url)
    assert provider.count == before + CALLS, "each call reached the provider once, through the gateway"
    assert tollgate.flush()
    rows = c.wait_calls(2 * CALLS, project=PROJECT)
    time.sleep(1.0)  # spans of gateway calls must not come as extra rows
    rows = c.calls(project=PROJECT)
    modes = sorted(r["mode"] for r in rows)
    assert modes == ["gateway"] * CALLS + ["observe"] * CALLS, rows

    observe: List[tuple] = sorted(compared(r) for r in rows if r["mode"] == "observe")
    gateway: List[tuple] = sorted(compared(r) for r in rows if r["mode"] == "gateway")
    assert observe == sorted(compared(r) for r in observed)
    assert observe == gateway, f"\nobserve: {observe}\ngateway: {gateway}"
    assert {r[COMPARED.index("user")] for r in gateway} == {"u-7"}
    assert {(r[COMPARED.index("provider")], r[COMPARED.index("stream")]) for r in gateway} == {
        ("openai", False), ("openai", True), ("anthropic", False), ("anthropic", True)
    }

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


def test_a_gateway_refusal_is_raised_as_blocked(start_collector: Any, provider: CountingProxy) -> None:
    """A refusal only the gateway makes (the key's own rate limit) reaches
    the agent as `tollgate.Blocked`, not as the SDK's rate-limit error
    (which it would retry)."""
    c: Collector = start_collector(gateway=True)
    key = c.create_key(name="limited", org="acme", project="limited", limits={"requests_per_minute": 2})
    tollgate.init(
        endpoint=c.otlp_http, api=c.api, org="acme", project="limited", app="limited-agent", gateway_key=key, gateway="auto"
    )
    client = openai_client(provider.url)
    claude = anthropic_client(provider.url)
    before = provider.count
    chat(client)
    message(claude)
    for name, call in (
        ("openai", lambda: chat(client)),
        ("openai stream", lambda: chat(client, stream=True)),
        ("anthropic", lambda: message(claude)),
    ):
        with pytest.raises(tollgate.Blocked) as refused:
            call()
        err = refused.value
        assert (err.rule, err.reason, err.limit, err.used) == ("key.requests_per_minute", "rate_limited", 2, 2), name
        assert err.scope.startswith("key=key_"), name
        assert err.until is not None and err.until > datetime.datetime.now(datetime.timezone.utc), name
        sdk_error = anthropic.AnthropicError if name == "anthropic" else openai.OpenAIError
        assert isinstance(err, sdk_error), name
    assert provider.count == before + 2, "refused calls never reached the provider"
