"""Tollgate for Python agents: scope, kill-switch and gateway flip.

    import openai, tollgate

    tollgate.init(endpoint="http://127.0.0.1:4318", org="acme", project="support")
    client = tollgate.guard(openai.OpenAI())

    with tollgate.scope(user="u-17", session="s-9", route="support"):
        client.chat.completions.create(...)   # raises tollgate.Blocked while blocked

- `init` sets up (or joins) the OpenTelemetry tracer provider and OTLP
  exporter, starts the kill-switch watcher and asks where calls go.
- `scope` stamps who a call is for on every span started inside it,
  whichever library creates the span.
- `guard` makes an `openai` or `anthropic` client refuse calls of a
  blocked scope and send calls through the gateway when it runs.
- `check` does the same check for any other client."""

from .__about__ import __version__
from ._guard import guard
from ._killswitch import Blocked, CollectorUnreachable
from ._runtime import Runtime, check, flush, init, shutdown
from ._scope import Scope, current_scope, scope
from ._settings import SettingError

__all__ = [
    "Blocked",
    "CollectorUnreachable",
    "Runtime",
    "Scope",
    "SettingError",
    "__version__",
    "check",
    "current_scope",
    "flush",
    "guard",
    "init",
    "scope",
    "shutdown",
]
