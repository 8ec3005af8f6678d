"""`tollgate.guard(client)`: the official `openai` and `anthropic` clients
(sync and async) with their HTTP transport wrapped, so that every request
they send, streaming ones included, is first checked against the
kill-switch, and goes through the gateway when calls go there.

Wrapping the transport, not the client's methods, covers every resource
of the SDK, `with_options` copies (they share the HTTP client) and the
frameworks given the client (OpenAI Agents SDK, pydantic-ai). The error raised is also the SDK's own base error class, so
the SDK neither retries it nor wraps it as a connection error. Through the
gateway, its refusals of a scope (HTTP 429 `budget_exceeded`,
`rate_limited`, `blocked`) are raised as the same error."""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any, Dict, Optional, Tuple, TypeVar
from urllib.parse import urlsplit

from opentelemetry import propagate

from . import _runtime
from ._gateway import gateway_headers, gateway_path
from ._killswitch import Blocked, CollectorUnreachable
from ._scope import current_scope

C = TypeVar("C")

_ERRORS: Dict[str, _runtime.Errors] = {}


def _errors_for(dialect: str) -> _runtime.Errors:
    """`Blocked` and `CollectorUnreachable`, also subclasses of the SDK's
    base error (`openai.OpenAIError`, `anthropic.AnthropicError`)."""
    errors = _ERRORS.get(dialect)
    if errors is None:
        module = sys.modules.get(dialect)
        base = getattr(module, "OpenAIError" if dialect == "openai" else "AnthropicError", None)
        if base is None:
            errors = _runtime.DEFAULT_ERRORS
        else:
            # Named like the classes they extend: instrumentation libraries
            # record the refusal's `error.type` as `tollgate.Blocked`.
            blocked = type("Blocked", (Blocked, base), {"__module__": "tollgate", "__qualname__": "Blocked"})
            unreachable = type(
                "CollectorUnreachable",
                (CollectorUnreachable, blocked),
                {"__module__": "tollgate", "__qualname__": "CollectorUnreachable"},
            )
            errors = (blocked, unreachable)
        _ERRORS[dialect] = errors
    return errors


def _dialect(client: Any) -> str:
    module = type(client).__module__.split(".")[0]
    if module in ("openai", "anthropic"):
        return module
    raise TypeError(
        f"tollgate.guard: {type(client).__name__} is not an openai or anthropic client; "
        "call tollgate.check() before its requests instead"
    )


def _route(request: Any, dialect: str, rt: _runtime.Runtime) -> Tuple[Any, bool]:
    """`request` sent to the gateway when calls go there and it serves this
    path, and whether it goes there."""
    gateway = rt.gateway.url()
    key = rt.settings.gateway_key
    if gateway is None or key is None:
        return request, False
    path = gateway_path(dialect, request.url.path)
    if path is None:
        return request, False
    gw = urlsplit(gateway)
    request.url = request.url.copy_with(
        scheme=gw.scheme, host=gw.hostname, port=gw.port, path=gw.path.rstrip("/") + path
    )
    headers = gateway_headers(
        dict(request.headers.items()), key, current_scope().headers(), rt.app, rt.settings.environment
    )
    headers["host"] = gw.netloc
    if "traceparent" not in headers:
        # The gateway's row joins the caller's trace.
        propagate.inject(headers)
    for name in list(request.headers.keys()):
        del request.headers[name]
    request.headers.update(headers)
    if rt.scope_processor is not None:
        rt.scope_processor.mark_gateway_call()
    return request, True


# Codes of the gateway's refusals that mean "this scope may not spend now"
# (inline-gateway/src/proxy/error.rs); they are raised as `Blocked`, as
# the kill-switch would, so agent code handles one error in both modes.
_REFUSALS = ("budget_exceeded", "rate_limited", "blocked")


def _refusal(response: Any, body: bytes, errors: _runtime.Errors) -> Optional[Blocked]:
    """The gateway's 429 refusal in `body`, as a `Blocked`; else `None`."""
    if response.status_code != 429:
        return None
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    if not isinstance(error, dict):
        return None
    code = error.get("code") or error.get("type")
    if code not in _REFUSALS:
        return None
    retry = error.get("retry_after_s")
    until = (
        datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=float(retry))
        if isinstance(retry, (int, float))
        else None
    )
    return errors[0](
        str(error.get("rule_id") or ""), str(code), until,
        scope=str(error.get("scope") or ""), limit=error.get("limit"), used=error.get("used"),
    )


def _replayed(response: Any, body: bytes) -> Any:
    """`response` again, with its body (already read) still to be read."""
    return type(response)(
        response.status_code, headers=response.headers, content=body, request=response.request,
        extensions=response.extensions,
    )


class _GuardedTransport:
    """Delegates to the client's transport after the checks."""

    def __init__(self, inner: Any, dialect: str):
        self._inner = inner
        self._dialect = dialect
        self._errors = _errors_for(dialect)

    def handle_request(self, request: Any) -> Any:
        rt = _runtime.runtime()
        via_gateway = False
        if rt is not None:
            rt.check(self._errors)
            request, via_gateway = _route(request, self._dialect, rt)
        response = self._inner.handle_request(request)
        if via_gateway and response.status_code == 429:
            body = response.read()
            response.close()
            refused = _refusal(response, body, self._errors)
            if refused is not None:
                raise refused
            return _replayed(response, body)
        return response

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> "_GuardedTransport":
        self._inner.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._inner.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _AsyncGuardedTransport(_GuardedTransport):
    async def handle_async_request(self, request: Any) -> Any:
        rt = _runtime.runtime()
        via_gateway = False
        if rt is not None:
            await rt.acheck(self._errors)
            request, via_gateway = _route(request, self._dialect, rt)
        response = await self._inner.handle_async_request(request)
        if via_gateway and response.status_code == 429:
            body = await response.aread()
            await response.aclose()
            refused = _refusal(response, body, self._errors)
            if refused is not None:
                raise refused
            return _replayed(response, body)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> "_AsyncGuardedTransport":
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._inner.__aexit__(*exc)


def _wrap(transport: Any, dialect: str) -> Any:
    if transport is None or isinstance(transport, _GuardedTransport):
        return transport
    if hasattr(transport, "handle_async_request"):
        return _AsyncGuardedTransport(transport, dialect)
    return _GuardedTransport(transport, dialect)


def guard(client: C) -> C:
    """Returns `client` (an `openai.OpenAI`, `openai.AsyncOpenAI`,
    `anthropic.Anthropic` or `anthropic.AsyncAnthropic`, or a subclass such
    as `AzureOpenAI`) with its HTTP transport wrapped: each request raises
    `tollgate.Blocked` before it leaves while the current scope is
    blocked, and goes to the gateway when calls go there. Guarding twice
    is harmless."""
    dialect = _dialect(client)
    http = getattr(client, "_client", None)
    if http is None or not hasattr(http, "_transport"):
        raise TypeError(f"tollgate.guard: {type(client).__name__} has no httpx client to wrap")
    http._transport = _wrap(http._transport, dialect)
    mounts = getattr(http, "_mounts", None)
    if isinstance(mounts, dict):
        for pattern, transport in list(mounts.items()):
            mounts[pattern] = _wrap(transport, dialect)
    return client
