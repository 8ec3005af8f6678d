"""The parts that need no collector: settings, the gateway rewrite rules,
and the `Blocked` error."""

from __future__ import annotations

import datetime
import pickle
from typing import Any, Dict

import pytest

import tollgate
from tollgate import _gateway, _settings

DEFAULTS: Dict[str, Any] = dict(
    api=None, org=None, project=None, environment=None, key=None, gateway_key=None, gateway=None,
    on_unreachable=None, poll_interval=0.5, reconnect_min=0.1, reconnect_max=5.0, request_timeout=2.0,
    stale_after=5.0, first_state_timeout=2.0,
)


def resolve(env: Dict[str, str], **kw: Any) -> _settings.Settings:
    return _settings.resolve(**{**DEFAULTS, **kw}, env=env)


def test_settings_come_from_arguments_then_variables() -> None:
    env = {"TOLLGATE_PROJECT": "from-env", "TOLLGATE_KEY": "tg-secret", "TOLLGATE_API_URL": "http://c:7070/"}
    s = resolve(env)
    assert (s.project, s.key, s.gateway_key, s.api) == ("from-env", "tg-secret", "tg-secret", "http://c:7070")
    assert (s.gateway.mode, s.fail_closed) == ("auto", False)
    s = resolve(env, project="from-arg", gateway="http://gw:7071/", gateway_key="tg-gw", on_unreachable="closed")
    assert (s.project, s.gateway.mode, s.gateway.url, s.gateway_key, s.fail_closed) == (
        "from-arg", "on", "http://gw:7071", "tg-gw", True
    )
    assert "tg-secret" not in repr(s) and "tg-gw" not in repr(s)


@pytest.mark.parametrize(
    "kw, names",
    [
        ({"gateway": "sometimes"}, "gateway="),
        ({"on_unreachable": "maybe"}, "on_unreachable="),
        ({"api": "127.0.0.1:7070"}, "api="),
        ({"gateway": "http://gw:7071"}, "virtual key"),
        ({"poll_interval": 0}, "poll_interval="),
        ({"reconnect_min": 2.0, "reconnect_max": 1.0}, "reconnect_max="),
    ],
)
def test_a_wrong_setting_names_itself(kw: Dict[str, Any], names: str) -> None:
    with pytest.raises(tollgate.SettingError, match=names):
        resolve({}, **kw)


def test_gateway_paths_cover_what_the_gateway_serves_only() -> None:
    assert _gateway.gateway_path("openai", "/v1/chat/completions") == "/v1/chat/completions"
    assert _gateway.gateway_path("openai", "/openai/v1/embeddings") == "/v1/embeddings"
    assert _gateway.gateway_path("openai", "/v1/responses") == "/v1/responses"
    # Stored responses stay with the provider that stored them.
    assert _gateway.gateway_path("openai", "/v1/responses/resp_1") is None
    assert _gateway.gateway_path("anthropic", "/v1/messages") == "/v1/messages"
    assert _gateway.gateway_path("anthropic", "/v1/messages/count_tokens") is None


def test_gateway_headers_replace_the_provider_key_and_carry_the_scope() -> None:
    headers = _gateway.gateway_headers(
        {"Authorization": "Bearer sk-provider", "X-Api-Key": "sk-ant", "Content-Type": "application/json",
         "X-Tollgate-User": "spoofed"},
        "tg-virtual",
        {"x-tollgate-user": "u-1", "x-tollgate-route": "support"},
        "agent",
        "prod",
    )
    assert headers == {
        "authorization": "Bearer tg-virtual",
        "content-type": "application/json",
        "x-tollgate-user": "u-1",
        "x-tollgate-route": "support",
        "x-tollgate-app": "agent",
        "x-tollgate-environment": "prod",
    }


def test_blocked_says_what_and_survives_pickling() -> None:
    until = datetime.datetime(2026, 12, 8, tzinfo=datetime.timezone.utc)
    err = tollgate.Blocked("daily-tokens", "budget_exceeded", until, scope="project=p", limit=10.0, used=12.0)
    assert str(err) == (
        "model calls for project=p are blocked by rule `daily-tokens` (budget_exceeded) until 2026-12-08T00:00:00+00:00"
    )
    back = pickle.loads(pickle.dumps(err))
    assert (back.rule, back.reason, back.until, back.scope, back.limit, back.used) == (
        "daily-tokens", "budget_exceeded", until, "project=p", 10.0, 12.0
    )
    unreachable = pickle.loads(pickle.dumps(tollgate.CollectorUnreachable()))
    assert isinstance(unreachable, tollgate.CollectorUnreachable)
    assert unreachable.reason == "collector_unreachable"


def test_guard_refuses_what_it_cannot_wrap() -> None:
    with pytest.raises(TypeError, match="tollgate.check"):
        tollgate.guard(object())
