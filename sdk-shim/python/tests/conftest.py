"""Fixtures: the mock provider behind a counting proxy, collectors started
from the real `tollgate` binary, and a clean `tollgate` runtime per test."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tollgate  # noqa: E402
from servers import Collector, CountingProxy, MockProvider  # noqa: E402


@pytest.fixture(scope="session")
def provider() -> Iterator[CountingProxy]:
    """The mock provider; `provider.count` is how many requests reached it."""
    mock = MockProvider()
    proxy = CountingProxy(mock.url)
    yield proxy
    proxy.stop()
    mock.stop()


@pytest.fixture
def start_collector(tmp_path: Path, provider: CountingProxy) -> Iterator[Callable[..., Collector]]:
    started: List[Collector] = []

    def start(**kwargs: object) -> Collector:
        d = tmp_path / f"collector-{len(started)}"
        d.mkdir()
        c = Collector(d, provider.url, **kwargs)  # type: ignore[arg-type]
        started.append(c)
        return c

    yield start
    tollgate.shutdown()
    for c in started:
        c.stop()


@pytest.fixture
def collector(start_collector: Callable[..., Collector]) -> Collector:
    return start_collector()


@pytest.fixture
def openllmetry() -> Iterator[None]:
    """OpenLLMetry's instrumentation of the official openai client."""
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument()
    yield
    instrumentor.uninstrument()
