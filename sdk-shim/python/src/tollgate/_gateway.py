"""Whether guarded clients send their calls through Tollgate's inline
gateway, and how a request is rewritten to go there.

With `gateway="auto"` (the default) the collector decides: its
`GET /v1/gateway` says whether the gateway runs and where, asked at
`init` and again every few seconds, so an agent follows
`gateway.enabled` being flipped without a change to its code. A request
sent through the gateway carries the virtual key instead of the
provider's key, and the scope as `x-tollgate-*` headers; the gateway then
writes the call's row, so the spans that describe the same call are not
exported (see `_tracing`)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Dict, Optional

from . import _http, _wire
from ._settings import Settings

log = logging.getLogger("tollgate")

# How often `auto` asks the collector again.
REFRESH_S = 5.0


class GatewayRoute:
    def __init__(self, settings: Settings):
        self._settings = settings
        self._url: Optional[str] = settings.gateway.url if settings.gateway.mode == "on" else None
        self._asked_at = 0.0
        self._lock = threading.Lock()
        self._warned_no_key = False

    def url(self) -> Optional[str]:
        """The gateway's base URL when calls go through it now, else `None`."""
        return self._url

    def refresh(self, force: bool = False) -> None:
        """Asks the collector again (in `auto`, at most every few seconds)."""
        if self._settings.gateway.mode != "auto":
            return
        with self._lock:
            if not force and time.monotonic() - self._asked_at < REFRESH_S:
                return
            self._asked_at = time.monotonic()
        target = _http.url(self._settings.api, _wire.GATEWAY)
        try:
            answer = _http.get_json(target, self._settings.key or self._settings.gateway_key, self._settings.request_timeout)
        except _http.CollectorError as err:
            # Unknown: keep the last answer (a collector restarting keeps its flag).
            log.debug("tollgate: gateway discovery failed: %s", err)
            return
        url = answer.get("url") if answer.get("enabled") is True else None
        if url and not self._settings.gateway_key:
            if not self._warned_no_key:
                log.warning("tollgate: the collector runs a gateway, but no virtual key was given "
                            "(gateway_key= or TOLLGATE_GATEWAY_KEY): calls go to the provider")
                self._warned_no_key = True
            url = None
        url = url.rstrip("/") if isinstance(url, str) else None
        if url != self._url:
            log.info("tollgate: model calls of guarded clients now go %s", f"through the gateway at {url}" if url else "to the provider")
        self._url = url


def gateway_path(dialect: str, path: str) -> Optional[str]:
    """The gateway path serving `path` of a client of `dialect`, if any."""
    for suffix, target in _wire.GATEWAY_PATHS.get(dialect, ()):
        if path.endswith(suffix):
            return target
    return None


def gateway_headers(
    headers: Dict[str, str], key: str, scope_headers: Dict[str, str], app: Optional[str], environment: Optional[str]
) -> Dict[str, str]:
    """`headers` with the provider's credentials replaced by the virtual key
    and the scope added; names are lower-case."""
    out = {k.lower(): v for k, v in headers.items() if k.lower() not in _wire.CREDENTIAL_HEADERS}
    out["authorization"] = f"Bearer {key}"
    for name in (_wire.HEADER_USER, _wire.HEADER_SESSION, _wire.HEADER_ROUTE, _wire.HEADER_APP, _wire.HEADER_ENVIRONMENT):
        out.pop(name, None)
    if app:
        out[_wire.HEADER_APP] = app
    if environment:
        out[_wire.HEADER_ENVIRONMENT] = environment
    out.update(scope_headers)
    return out
