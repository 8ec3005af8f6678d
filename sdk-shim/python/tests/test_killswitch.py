"""The kill-switch: guarded clients refuse calls of a blocked scope before
they leave the process, learn of a block within a second, resume when it
is lifted, and fail open or closed as configured."""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Callable

import anthropic
import openai
import pytest
from clients import (
    achat,
    amessage,
    anthropic_client,
    async_anthropic_client,
    async_openai_client,
    chat,
    message,
    openai_client,
)
from servers import Collector, CountingProxy, free_port

import tollgate

PROJECT = "support"


def init(c: Collector, **kw: object) -> None:
    tollgate.init(
        endpoint=c.otlp_http, api=c.api, org="acme", project=PROJECT, environment="test",
        app="shim-test", gateway="off", **kw,  # type: ignore[arg-type]
    )


def seconds_until(condition: Callable[[], bool], limit: float) -> float:
    """How long until `condition()` holds, checked every 10 ms; fails past `limit`."""
    start = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - start
        assert elapsed < limit, f"not within {limit} s"
        time.sleep(0.01)
    return time.monotonic() - start


def blocked_now() -> bool:
    try:
        tollgate.check()
    except tollgate.Blocked:
        return True
    return False


def test_a_blocked_project_is_refused_within_a_second_without_reaching_the_provider(
    collector: Collector, provider: CountingProxy
) -> None:
    init(collector)
    client = openai_client(provider.url)
    assert chat(client)
    before = provider.count

    collector.block({"project": PROJECT}, reason="over budget", for_s=600)
    latency = seconds_until(blocked_now, 1.0)
    assert latency < 1.0

    with pytest.raises(tollgate.Blocked) as refused:
        chat(client)
    err = refused.value
    assert err.rule == "admin"
    assert err.reason == "over budget"
    assert err.scope == f"project={PROJECT}"
    assert isinstance(err, openai.OpenAIError), "the SDK must neither retry nor wrap it"
    assert err.until is not None
    expected = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=600)
    assert abs((err.until - expected).total_seconds()) < 5
    with pytest.raises(tollgate.Blocked):
        chat(client, stream=True)
    assert provider.count == before, "a refused call reached the provider"

    collector.lift({"project": PROJECT})
    assert seconds_until(lambda: not blocked_now(), 1.0) < 1.0
    assert chat(client)
    assert provider.count == before + 1


def test_every_client_kind_is_refused_while_blocked_and_served_after(
    collector: Collector, provider: CountingProxy
) -> None:
    init(collector)
    oa, aoa = openai_client(provider.url), async_openai_client(provider.url)
    an, aan = anthropic_client(provider.url), async_anthropic_client(provider.url)

    async def async_calls(stream: bool) -> None:
        await achat(aoa, stream=stream)

    async def async_messages(stream: bool) -> None:
        await amessage(aan, stream=stream)

    calls = [
        ("openai", lambda: chat(oa)),
        ("openai stream", lambda: chat(oa, stream=True)),
        ("async openai", lambda: asyncio.run(async_calls(False))),
        ("async openai stream", lambda: asyncio.run(async_calls(True))),
        ("anthropic", lambda: message(an)),
        ("anthropic stream", lambda: message(an, stream=True)),
        ("async anthropic", lambda: asyncio.run(async_messages(False))),
        ("async anthropic stream", lambda: asyncio.run(async_messages(True))),
    ]
    collector.block({"project": PROJECT}, reason="over budget")
    seconds_until(blocked_now, 1.0)
    before = provider.count
    for name, call in calls:
        with pytest.raises(tollgate.Blocked) as refused:
            call()
        sdk_error = anthropic.AnthropicError if "anthropic" in name else openai.OpenAIError
        assert isinstance(refused.value, sdk_error), name
        assert refused.value.rule == "admin", name
    assert provider.count == before

    collector.lift({"project": PROJECT})
    seconds_until(lambda: not blocked_now(), 1.0)
    for name, call in calls:
        call()
    assert provider.count == before + len(calls)


def test_a_block_on_one_user_refuses_only_that_users_calls(collector: Collector, provider: CountingProxy) -> None:
    init(collector)
    client = openai_client(provider.url)
    collector.block({"project": PROJECT, "user": "u-over"}, reason="user over budget")
    before = provider.count
    with tollgate.scope(user="u-over", session="s-1"):
        # Asked for at once on first sight of the scope.
        with pytest.raises(tollgate.Blocked) as refused:
            chat(client)
        assert refused.value.scope == f"project={PROJECT},user=u-over"
    with tollgate.scope(user="u-fine"):
        assert chat(client)
    assert chat(client)
    assert provider.count == before + 2

    # A block set while the user's scope is in use is polled within a second.
    with tollgate.scope(user="u-later"):
        assert chat(client)
        collector.block({"project": PROJECT, "user": "u-later"})
        assert seconds_until(blocked_now, 1.0) < 1.0
        with pytest.raises(tollgate.Blocked):
            chat(client)
    assert provider.count == before + 3


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_an_unreachable_collector_fails_open_or_closed(mode: str, provider: CountingProxy) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    tollgate.init(api=dead, project=PROJECT, gateway="off", export=False, on_unreachable=mode, first_state_timeout=0.5)
    client = openai_client(provider.url)
    before = provider.count
    try:
        if mode == "closed":
            with pytest.raises(tollgate.CollectorUnreachable) as refused:
                chat(client)
            assert refused.value.reason == "collector_unreachable"
            assert isinstance(refused.value, openai.OpenAIError)
            assert provider.count == before
        else:
            assert chat(client)
            # Only the first call waits for the collector's first answer.
            start = time.monotonic()
            assert chat(client)
            assert time.monotonic() - start < 0.25
            assert provider.count == before + 2
    finally:
        tollgate.shutdown()


def test_the_watcher_reconnects_after_the_collector_restarts(start_collector: Callable[..., Collector], provider: CountingProxy) -> None:
    ports = {"grpc": free_port(), "http": free_port(), "api": free_port(), "gateway": 0}
    c = start_collector(ports=ports)
    init(c, reconnect_max=1.0)
    client = openai_client(provider.url)
    assert chat(client)
    c.stop()
    # Fail open while it is down.
    time.sleep(0.5)
    assert chat(client)
    c.start()
    c.block({"project": PROJECT})
    # The stream is reopened (or the state polled meanwhile) within backoff + poll.
    assert seconds_until(blocked_now, 2.0) < 2.0
    with pytest.raises(tollgate.Blocked):
        chat(client)
