"""`tollgate.init`: the settings, the tracer provider it sets up or joins,
the kill-switch watcher and the gateway route of this process, and the
checks guarded clients make before each request."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
from typing import Dict, Optional, Tuple, Type

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from . import _scope, _wire
from ._gateway import GatewayRoute
from ._killswitch import Blocked, CollectorUnreachable, Watcher
from ._settings import Settings, SettingError, resolve
from ._tracing import ExportSlot, ScopeSpanProcessor

log = logging.getLogger("tollgate")

Errors = Tuple[Type[Blocked], Type[CollectorUnreachable]]
DEFAULT_ERRORS: Errors = (Blocked, CollectorUnreachable)


def _protocol(protocol: Optional[str]) -> str:
    p = (
        protocol
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if p not in ("http/protobuf", "grpc"):
        raise SettingError(f"protocol={p!r}: expected 'http/protobuf' or 'grpc'")
    return p


def _exporter(endpoint: Optional[str], protocol: str, key: Optional[str]) -> SpanExporter:
    """An OTLP exporter; what is not given comes from the OTEL_* variables."""
    headers_set = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or os.environ.get("OTEL_EXPORTER_OTLP_HEADERS")
    headers = {"authorization": f"Bearer {key}"} if key and not headers_set else None
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError as err:
            raise SettingError("protocol='grpc' needs the gRPC exporter: pip install 'tollgate[grpc]'") from err
        return GrpcExporter(endpoint=endpoint, headers=headers)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    if endpoint is not None:
        endpoint = endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
    return HttpExporter(endpoint=endpoint, headers=headers)


class Runtime:
    """Everything `init` set up; the active one is `runtime()`."""

    def __init__(self, settings: Settings, app: Optional[str], scope_processor: Optional[ScopeSpanProcessor]):
        self.settings = settings
        self.app = app
        self.scope_processor = scope_processor
        self._waited_first = False
        self.gateway = GatewayRoute(settings)
        self.gateway.refresh(force=True)
        self.watcher = Watcher(settings, app, on_tick=self.gateway.refresh)
        self.watcher.start()

    def fixed_attributes(self) -> Dict[str, str]:
        s = self.settings
        return {
            name: value
            for name, value in ((_wire.ORG, s.org), (_wire.PROJECT, s.project), (_wire.ENVIRONMENT, s.environment))
            if value
        }

    @staticmethod
    def _call_scope() -> Dict[str, str]:
        return {k: v for k, v in _scope.current_scope().items() if v is not None}

    def check(self, errors: Errors = DEFAULT_ERRORS) -> None:
        """Raises `errors[0]` when the current scope is blocked, `errors[1]`
        when the collector cannot say and calls fail closed."""
        if not self._waited_first and not self.watcher.wait_first_state(0):
            # Once: a collector that never answers must not slow every call.
            self.watcher.wait_first_state(self.settings.first_state_timeout)
            self._waited_first = True
        blocks, known = self.watcher.blocks_for(self._call_scope())
        if blocks:
            raise blocks[0].error(errors[0])
        if not known and self.settings.fail_closed:
            raise errors[1]()

    async def acheck(self, errors: Errors = DEFAULT_ERRORS) -> None:
        """`check` without blocking the event loop when it must wait for
        the collector (the first state, or a per-call scope seen first)."""
        first = self._waited_first or self.watcher.wait_first_state(0)
        if first and not self.watcher.needs_fetch(self._call_scope()):
            self.check(errors)
            return
        ctx = contextvars.copy_context()
        await asyncio.get_running_loop().run_in_executor(None, ctx.run, self.check, errors)

    def stop(self) -> None:
        self.watcher.stop()


_LOCK = threading.Lock()
_RUNTIME: Optional[Runtime] = None
# The processors added to each provider, once.
_INSTALLED: Dict[int, Tuple[ScopeSpanProcessor, ExportSlot]] = {}


def runtime() -> Optional[Runtime]:
    return _RUNTIME


def init(
    endpoint: Optional[str] = None,
    org: Optional[str] = None,
    project: Optional[str] = None,
    environment: Optional[str] = None,
    key: Optional[str] = None,
    *,
    app: Optional[str] = None,
    api: Optional[str] = None,
    gateway: Optional[str] = None,
    gateway_key: Optional[str] = None,
    on_unreachable: Optional[str] = None,
    protocol: Optional[str] = None,
    tracer_provider: Optional[TracerProvider] = None,
    export: bool = True,
    poll_interval: float = 0.5,
    reconnect_min: float = 0.1,
    reconnect_max: float = 5.0,
    request_timeout: float = 2.0,
    stale_after: float = 5.0,
    first_state_timeout: float = 2.0,
) -> Runtime:
    """Sets up tracing, the kill-switch watcher and the gateway route.

    - `endpoint`: the collector's OTLP endpoint (`http://127.0.0.1:4318`
      for HTTP, `http://127.0.0.1:4317` with `protocol="grpc"`); by default
      the standard `OTEL_EXPORTER_OTLP_*` variables decide.
    - `org`, `project`, `environment`: where the spend lands (else
      `TOLLGATE_ORG`, `TOLLGATE_PROJECT`, `TOLLGATE_ENVIRONMENT`).
    - `key`: a Tollgate key (`ingest` and `read` roles where the collector
      requires keys; else `TOLLGATE_KEY`), sent as `Authorization: Bearer`.
    - `app`: the `service.name` of a provider set up here (else
      `OTEL_SERVICE_NAME`).
    - `api`: the collector's HTTP API (else `TOLLGATE_API_URL`, else
      `http://127.0.0.1:7070`).
    - `gateway`: `"auto"` (default: follow the collector's `/v1/gateway`),
      `"off"`, or the gateway's URL (else `TOLLGATE_GATEWAY`);
      `gateway_key`: the virtual key calls through the gateway carry
      (else `TOLLGATE_GATEWAY_KEY`, else `key`).
    - `on_unreachable`: `"open"` (default: calls go on while the collector
      cannot be asked) or `"closed"` (they raise `CollectorUnreachable`).

    An SDK `TracerProvider` already set globally (or `tracer_provider`) is
    joined: the scope processor and, when `export`, an OTLP exporter to
    Tollgate are added to it. Otherwise one is created with a resource
    holding `service.name`, `deployment.environment.name`, `tollgate.org`
    and `tollgate.project` (plus `OTEL_RESOURCE_ATTRIBUTES`) and set
    globally. Calling `init` again replaces the previous settings."""
    global _RUNTIME
    settings = resolve(
        api=api, org=org, project=project, environment=environment, key=key, gateway_key=gateway_key,
        gateway=gateway, on_unreachable=on_unreachable, poll_interval=poll_interval,
        reconnect_min=reconnect_min, reconnect_max=reconnect_max, request_timeout=request_timeout,
        stale_after=stale_after, first_state_timeout=first_state_timeout,
    )
    proto = _protocol(protocol)
    with _LOCK:
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            attrs: Dict[str, str] = {}
            if app:
                attrs["service.name"] = app
            if settings.environment:
                attrs[_wire.DEPLOYMENT_ENVIRONMENT] = settings.environment
            if settings.org:
                attrs[_wire.ORG] = settings.org
            if settings.project:
                attrs[_wire.PROJECT] = settings.project
            created = TracerProvider(resource=Resource.create(attrs))
            current = trace.get_tracer_provider()
            if type(current).__name__ != "ProxyTracerProvider" and tracer_provider is None:
                log.warning("tollgate: the global tracer provider is not the OpenTelemetry SDK's; "
                            "spans of instrumentation libraries will not carry the scope")
            else:
                trace.set_tracer_provider(created)
            provider = created
        resource_app = provider.resource.attributes.get("service.name")
        the_app = app or (str(resource_app) if resource_app else None)
        installed = _INSTALLED.get(id(provider))
        if installed is None:
            scope_processor = ScopeSpanProcessor(lambda: _fixed_attributes())
            slot = ExportSlot(scope_processor)
            provider.add_span_processor(scope_processor)
            provider.add_span_processor(slot)
            installed = (scope_processor, slot)
            _INSTALLED[id(provider)] = installed
        scope_processor, slot = installed
        slot.swap(BatchSpanProcessor(_exporter(endpoint, proto, settings.key)) if export else None)
        previous = _RUNTIME
        _RUNTIME = Runtime(settings, the_app, scope_processor)
    if previous is not None:
        previous.stop()
    return _RUNTIME


def _fixed_attributes() -> Dict[str, str]:
    rt = _RUNTIME
    if rt is None:
        return {}
    attrs = rt.fixed_attributes()
    if rt.app:
        attrs["service.name"] = rt.app
    return attrs


def check() -> None:
    """Raises `Blocked` when calls of the current scope are blocked (and
    `CollectorUnreachable` when the collector cannot say and calls fail
    closed): for clients `guard` does not wrap."""
    rt = _RUNTIME
    if rt is None:
        raise RuntimeError("tollgate.check() before tollgate.init()")
    rt.check()


def flush(timeout_s: float = 10.0) -> bool:
    """Exports the spans ended so far; whether all were exported in time."""
    ok = True
    for _, slot in _INSTALLED.values():
        ok = slot.force_flush(int(timeout_s * 1000)) and ok
    return ok


def shutdown() -> None:
    """Exports what is left and stops the watcher."""
    global _RUNTIME
    flush()
    with _LOCK:
        rt, _RUNTIME = _RUNTIME, None
        for _, slot in _INSTALLED.values():
            slot.swap(None)
    if rt is not None:
        rt.stop()
