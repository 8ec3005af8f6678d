"""A collector that requires keys: the shim sends its key as
`Authorization: Bearer` on OTLP exports, kill-switch reads and gateway
discovery; a refused key makes the kill-switch state unknown, so calls
fail open or closed as configured."""

from __future__ import annotations

import time
from typing import Any

import pytest
from clients import chat, openai_client
from servers import Collector, CountingProxy

import tollgate

PROJECT = "keyed"


def test_the_key_is_sent_on_every_request_to_the_collector(
    openllmetry: None, start_collector: Any, provider: CountingProxy
) -> None:
    c: Collector = start_collector(gateway=True, extra='[auth]\nmode = "keys"\n')
    key = c.create_key(name="agent", roles=["ingest", "read", "gateway"], org="acme", project=PROJECT)
    tollgate.init(endpoint=c.otlp_http, api=c.api, org="acme", project=PROJECT, app="keyed-agent", key=key, gateway="auto")
    client = openai_client(provider.url)
    with tollgate.scope(user="u-1"):
        chat(client)  # through the gateway: discovery answered the key
    tollgate.init(endpoint=c.otlp_http, api=c.api, org="acme", project=PROJECT, app="keyed-agent", key=key, gateway="off")
    with tollgate.scope(user="u-1"):
        chat(client)  # to the provider, with a span exported with the key
    assert tollgate.flush()
    rows = c.wait_calls(2, project=PROJECT)
    assert sorted(r["mode"] for r in rows) == ["gateway", "observe"], rows
    assert {(r["org"], r["user"]) for r in rows} == {("acme", "u-1")}

    c.block({"project": PROJECT})
    start = time.monotonic()
    while True:
        try:
            tollgate.check()
        except tollgate.Blocked:
            break
        assert time.monotonic() - start < 1.0, "the block was not seen with the key"
        time.sleep(0.01)


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_a_refused_key_fails_open_or_closed(mode: str, start_collector: Any, provider: CountingProxy) -> None:
    c: Collector = start_collector(extra='[auth]\nmode = "keys"\n')
    tollgate.init(
        api=c.api, project=PROJECT, key="tg-not-a-key-of-this-collector", gateway="off", export=False,
        on_unreachable=mode, first_state_timeout=0.5,
    )
    client = openai_client(provider.url)
    before = provider.count
    if mode == "closed":
        with pytest.raises(tollgate.CollectorUnreachable):
            chat(client)
        assert provider.count == before
    else:
        assert chat(client)
        assert provider.count == before + 1
