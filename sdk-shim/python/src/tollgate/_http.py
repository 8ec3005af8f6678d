"""Requests to the collector's API with the standard library only, so the
package adds no HTTP client to an agent's dependencies: one JSON GET, and
a server-sent-events reader for `/v1/enforcement/stream`."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterator, List, Mapping, Optional

from . import __about__


class CollectorError(Exception):
    """The collector could not be asked (or answered something unusable)."""


class KeyRefused(CollectorError):
    """The collector refused the key (401) or what it asked for (403)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"the collector answered {status}: {message}")
        self.status = status


def _tls_context() -> Optional[ssl.SSLContext]:
    # The collector's CA, when private, is the one its OTLP exporter trusts.
    cafile = os.environ.get("OTEL_EXPORTER_OTLP_CERTIFICATE") or None
    return ssl.create_default_context(cafile=cafile) if cafile else None


def url(api: str, path: str, query: Optional[Mapping[str, str]] = None) -> str:
    q = urllib.parse.urlencode(sorted((query or {}).items()))
    return f"{api}{path}?{q}" if q else f"{api}{path}"


def _request(target: str, key: Optional[str], accept: str) -> urllib.request.Request:
    headers = {"Accept": accept, "User-Agent": f"tollgate-python/{__about__.__version__}"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return urllib.request.Request(target, headers=headers, method="GET")


def _refusal(err: urllib.error.HTTPError) -> CollectorError:
    try:
        body = err.read(4096).decode("utf-8", "replace")
        message = json.loads(body).get("message") or body
    except (ValueError, AttributeError, OSError):
        message = err.reason
    if err.code in (401, 403):
        return KeyRefused(err.code, str(message))
    return CollectorError(f"the collector answered {err.code}: {message}")


def get_json(target: str, key: Optional[str], timeout: float) -> Dict[str, Any]:
    """GETs `target` and decodes its JSON object."""
    try:
        with urllib.request.urlopen(_request(target, key, "application/json"), timeout=timeout, context=_tls_context()) as r:
            answer = json.loads(r.read(1 << 20))
    except urllib.error.HTTPError as err:
        raise _refusal(err) from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise CollectorError(f"cannot read {target.split('?')[0]}: {err}") from None
    if not isinstance(answer, dict):
        raise CollectorError(f"{target.split('?')[0]} answered something other than a JSON object")
    return answer


def sse_events(target: str, key: Optional[str], connect_timeout: float, read_timeout: float) -> Iterator[Optional[str]]:
    """Follows a server-sent-events stream: yields each event's data, and
    `None` for every keep-alive comment (so the caller knows the stream is
    alive). Ends when the server closes it; raises `CollectorError` when
    it cannot be opened or a read times out."""
    try:
        response = urllib.request.urlopen(
            _request(target, key, "text/event-stream"), timeout=connect_timeout, context=_tls_context()
        )
    except urllib.error.HTTPError as err:
        raise _refusal(err) from None
    except (urllib.error.URLError, OSError) as err:
        raise CollectorError(f"cannot open {target.split('?')[0]}: {err}") from None
    try:
        # Reads wait for the next event or keep-alive, longer than a connect.
        sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
        if sock is not None:
            sock.settimeout(read_timeout)
        data: List[str] = []
        while True:
            try:
                raw = response.readline(1 << 20)
            except OSError as err:
                raise CollectorError(f"the enforcement stream broke: {err}") from None
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line == "":
                if data:
                    yield "\n".join(data)
                    data = []
            elif line.startswith(":"):
                yield None
            elif line.startswith("data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(" ") else value)
    finally:
        response.close()
