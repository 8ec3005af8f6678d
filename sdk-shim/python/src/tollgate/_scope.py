"""Who a model call is for, taken from context.

`scope(user=..., session=..., route=...)` sets the scope for the code
inside it: a `with` block (sync or async) or a decorated function. The
scope lives in a `contextvars.ContextVar`, so every asyncio task and every
thread sees its own: a task inherits the scope of the code that created
it, and nothing set in one task or thread is seen by another.
Nested scopes inherit the fields they do not set."""

from __future__ import annotations

import contextvars
import functools
import inspect
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, cast

from . import _wire

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Scope:
    """The per-call part of a call's scope. Org, project, app and
    environment are the process's, given to `tollgate.init`."""

    user: Optional[str] = None
    session: Optional[str] = None
    route: Optional[str] = None

    def merged(self, inner: "Scope") -> "Scope":
        """This scope with the fields `inner` sets replaced."""
        changes = {name: value for name, value in inner.items() if value is not None}
        return replace(self, **changes)

    def items(self) -> List[Tuple[str, Optional[str]]]:
        return [("user", self.user), ("session", self.session), ("route", self.route)]

    def span_attributes(self) -> Dict[str, str]:
        """The span attributes the collector reads for these fields."""
        names = {"user": _wire.USER, "session": _wire.SESSION, "route": _wire.ROUTE}
        return {names[k]: v for k, v in self.items() if v is not None}

    def headers(self) -> Dict[str, str]:
        """The `x-tollgate-*` headers the gateway reads for these fields."""
        names = {"user": _wire.HEADER_USER, "session": _wire.HEADER_SESSION, "route": _wire.HEADER_ROUTE}
        return {names[k]: v for k, v in self.items() if v is not None}


_EMPTY = Scope()
_CURRENT: contextvars.ContextVar[Scope] = contextvars.ContextVar("tollgate_scope", default=_EMPTY)


def current_scope() -> Scope:
    """The scope of the calling context (empty outside any `scope`)."""
    return _CURRENT.get()


def _check(name: str, value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"tollgate.scope: {name} must be a non-empty string, not {value!r}")
    if len(value) > 256:
        # The gateway keeps at most 256 bytes of a metadata header.
        raise ValueError(f"tollgate.scope: {name} is {len(value)} characters long; at most 256 are kept")
    return value


class scope:  # noqa: N801 - used like a function: `with tollgate.scope(user=...)`
    """Sets the scope of the model calls made inside it.

    >>> with tollgate.scope(user="u-17", session="s-9", route="support"):
    ...     client.chat.completions.create(...)

    Also an async context manager and a decorator of sync and async
    functions (each call of the function runs in the scope)."""

    def __init__(self, user: Optional[str] = None, session: Optional[str] = None, route: Optional[str] = None):
        self._scope = Scope(
            user=_check("user", user), session=_check("session", session), route=_check("route", route)
        )
        self._tokens: List[contextvars.Token[Scope]] = []

    def _enter(self) -> contextvars.Token[Scope]:
        return _CURRENT.set(_CURRENT.get().merged(self._scope))

    def __enter__(self) -> Scope:
        self._tokens.append(self._enter())
        return _CURRENT.get()

    def __exit__(self, *exc: object) -> None:
        _CURRENT.reset(self._tokens.pop())

    async def __aenter__(self) -> Scope:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                token = self._enter()
                try:
                    return await func(*args, **kwargs)
                finally:
                    _CURRENT.reset(token)

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            token = self._enter()
            try:
                return func(*args, **kwargs)
            finally:
                _CURRENT.reset(token)

        return cast(F, run)
