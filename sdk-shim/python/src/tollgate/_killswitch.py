"""The kill-switch as the agent sees it: which of its scopes the collector
blocks, kept current by a background watcher, and the `Blocked` error
guarded clients raise.

The watcher follows `/v1/enforcement/stream` (server-sent events) for the
process's own scope (org, project, app, environment), so a block on any of
those is known within the stream's latency; while the stream is down it
polls `/v1/enforcement` and reopens the stream with exponential backoff.
Per-call scopes (user, session, route) are asked for once when first seen
and then polled while in use, since a block may name one user only."""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

from . import _http, _wire
from ._settings import Settings

log = logging.getLogger("tollgate")

Query = Tuple[Tuple[str, str], ...]

# A per-call scope unused this long is no longer polled, and forgotten.
_IDLE_SCOPE_S = 120.0
# At most this many per-call scopes are polled; the least recently used go.
_MAX_SCOPES = 256


class Blocked(Exception):
    """A model call refused before it left the process, because the
    collector blocks its scope.

    `rule` is the rule that tripped (`admin` for a block set by hand),
    `reason` why (`budget_exceeded`, `rate_limited`, ...), `until` when the
    block lifts by itself (`None`: until lifted)."""

    def __init__(
        self,
        rule: str,
        reason: str,
        until: Optional[datetime.datetime],
        *,
        scope: str = "",
        limit: Optional[float] = None,
        used: Optional[float] = None,
    ):
        self.rule = rule
        self.reason = reason
        self.until = until
        self.scope = scope
        self.limit = limit
        self.used = used
        lifts = f"until {until.isoformat()}" if until else "until lifted"
        where = f" for {scope}" if scope else ""
        super().__init__(f"model calls{where} are blocked by rule `{rule}` ({reason}) {lifts}")

    def __reduce__(self) -> Any:
        # Pickled as the public class (`guard`'s SDK-specific subclasses are
        # made at run time and cannot be found by name).
        cls = CollectorUnreachable if isinstance(self, CollectorUnreachable) else Blocked
        return (_rebuild, (cls, self.rule, self.reason, self.until, self.scope, self.limit, self.used))


def _rebuild(cls: Type[Blocked], rule: str, reason: str, until: Any, scope: str, limit: Any, used: Any) -> Blocked:
    return cls(rule, reason, until, scope=scope, limit=limit, used=used)


class CollectorUnreachable(Blocked):
    """Raised instead of calling the provider when the collector cannot be
    asked and `on_unreachable="closed"`."""

    def __init__(self, rule: str = "tollgate", reason: str = "collector_unreachable", until: Any = None, **kw: Any):
        super().__init__(rule, reason, until, **kw)


@dataclass(frozen=True)
class _Block:
    rule: str
    scope: str
    reason: str
    until_unix_nanos: int
    limit: Optional[float]
    used: Optional[float]

    @staticmethod
    def parse(raw: Dict[str, Any]) -> "_Block":
        return _Block(
            rule=str(raw.get("rule_id", "")),
            scope=str(raw.get("scope", "")),
            reason=str(raw.get("reason", "")),
            until_unix_nanos=int(raw.get("until_unix_nanos") or 0),
            limit=raw.get("limit"),
            used=raw.get("used"),
        )

    def live(self, now_ns: int) -> bool:
        return self.until_unix_nanos == 0 or self.until_unix_nanos > now_ns

    def error(self, cls: Callable[..., Blocked]) -> Blocked:
        until = (
            datetime.datetime.fromtimestamp(self.until_unix_nanos / 1e9, tz=datetime.timezone.utc)
            if self.until_unix_nanos
            else None
        )
        return cls(self.rule, self.reason, until, scope=self.scope, limit=self.limit, used=self.used)


def _parse_state(answer: Dict[str, Any]) -> List[_Block]:
    blocks = answer.get("blocks")
    if not isinstance(blocks, list):
        raise _http.CollectorError("an enforcement state without `blocks`")
    return [_Block.parse(b) for b in blocks if isinstance(b, dict)]


class _Entry:
    """What the collector last said for one query."""

    def __init__(self) -> None:
        self.blocks: List[_Block] = []
        self.answered = threading.Event()
        self.ok_at = 0.0
        self.used_at = time.monotonic()


class Watcher:
    """Keeps the enforcement state of the process's scopes current."""

    def __init__(self, settings: Settings, app: Optional[str], on_tick: Optional[Callable[[], None]] = None):
        self._settings = settings
        base = dict(settings.base_scope)
        if app:
            base["app"] = app
        self._base_query: Query = tuple(sorted(base.items()))
        self._base = _Entry()
        self._scopes: Dict[Query, _Entry] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stream_up = False
        self._refused_logged = False
        self._on_tick = on_tick
        self._threads: List[threading.Thread] = []

    # -- reading ---------------------------------------------------------

    def query_for(self, call_scope: Dict[str, str]) -> Query:
        q = dict(self._base_query)
        q.update(call_scope)
        return tuple(sorted(q.items()))

    def reachable(self) -> bool:
        return self._stream_up or (
            self._base.answered.is_set() and time.monotonic() - self._base.ok_at <= self._settings.stale_after
        )

    def wait_first_state(self, timeout: float) -> bool:
        return self._base.answered.wait(timeout)

    def needs_fetch(self, call_scope: Dict[str, str]) -> bool:
        """Whether `blocks_for` would first ask the collector (blocking)."""
        if not call_scope:
            return False
        with self._lock:
            return self.query_for(call_scope) not in self._scopes

    def blocks_for(self, call_scope: Dict[str, str]) -> Tuple[List[_Block], bool]:
        """The live blocks covering a call with this per-call scope, and
        whether the collector's answer is current."""
        entries = [self._base]
        if call_scope:
            entries.append(self._entry_for(self.query_for(call_scope)))
        now = time.time_ns()
        seen = set()
        blocks = []
        for e in entries:
            for b in e.blocks:
                if b.live(now) and (b.rule, b.scope) not in seen:
                    seen.add((b.rule, b.scope))
                    blocks.append(b)
        return blocks, self.reachable()

    def _entry_for(self, query: Query) -> _Entry:
        with self._lock:
            entry = self._scopes.get(query)
            if entry is not None:
                entry.used_at = time.monotonic()
                return entry
            entry = _Entry()
            self._scopes[query] = entry
            if len(self._scopes) > _MAX_SCOPES:
                oldest = min(self._scopes, key=lambda q: self._scopes[q].used_at)
                del self._scopes[oldest]
        # First sight of this scope: ask once, so a block set before this
        # process started is obeyed from its first call.
        self._poll(query, entry)
        return entry

    # -- the collector ---------------------------------------------------

    def _note_refusal(self, err: _http.CollectorError) -> None:
        if isinstance(err, _http.KeyRefused):
            if not self._refused_logged:
                log.warning("tollgate: the collector refused the kill-switch request (%s); calls are %s meanwhile",
                            err, "refused" if self._settings.fail_closed else "allowed")
                self._refused_logged = True
        else:
            log.debug("tollgate: %s", err)

    def _poll(self, query: Query, entry: _Entry) -> bool:
        target = _http.url(self._settings.api, _wire.ENFORCEMENT, dict(query))
        try:
            blocks = _parse_state(_http.get_json(target, self._settings.key, self._settings.request_timeout))
        except _http.CollectorError as err:
            self._note_refusal(err)
            return False
        self._set(entry, blocks)
        return True

    def _set(self, entry: _Entry, blocks: List[_Block]) -> None:
        if entry is self._base and [b.rule for b in blocks] != [b.rule for b in entry.blocks]:
            log.info("tollgate: kill-switch state for %s: %s", dict(self._base_query),
                     ", ".join(f"{b.rule} ({b.reason})" for b in blocks) or "open")
        entry.blocks = blocks
        entry.ok_at = time.monotonic()
        entry.answered.set()
        self._refused_logged = False

    def _follow_stream(self) -> bool:
        """Follows the SSE stream until it ends; whether it gave a state."""
        target = _http.url(self._settings.api, _wire.ENFORCEMENT_STREAM, dict(self._base_query))
        got_state = False
        try:
            # Keep-alives come every 15 s; a silent minute means a dead link.
            for data in _http.sse_events(target, self._settings.key, self._settings.request_timeout, 60.0):
                if self._stop.is_set():
                    return got_state
                self._stream_up = True
                if data is None:
                    self._base.ok_at = time.monotonic()
                    continue
                try:
                    blocks = _parse_state(json.loads(data))
                except (ValueError, _http.CollectorError) as err:
                    log.debug("tollgate: unreadable enforcement event: %s", err)
                    continue
                self._set(self._base, blocks)
                got_state = True
        except _http.CollectorError as err:
            self._note_refusal(err)
        finally:
            self._stream_up = False
        return got_state

    def _run_stream(self) -> None:
        delay = self._settings.reconnect_min
        while not self._stop.is_set():
            if self._follow_stream():
                delay = self._settings.reconnect_min
            # The stream is down: poll until it is time to reopen it.
            reopen_at = time.monotonic() + delay
            while not self._stop.is_set():
                self._poll(self._base_query, self._base)
                left = reopen_at - time.monotonic()
                if left <= 0:
                    break
                self._stop.wait(min(left, self._settings.poll_interval))
            delay = min(delay * 2, self._settings.reconnect_max)

    def _run_poll(self) -> None:
        while not self._stop.wait(self._settings.poll_interval):
            now = time.monotonic()
            with self._lock:
                for q in [q for q, e in self._scopes.items() if now - e.used_at > _IDLE_SCOPE_S]:
                    del self._scopes[q]
                polled = list(self._scopes.items())
            for query, entry in polled:
                if self._stop.is_set():
                    return
                self._poll(query, entry)
            if self._on_tick is not None:
                self._on_tick()

    def start(self) -> None:
        for name, target in (("tollgate-enforcement-stream", self._run_stream), ("tollgate-enforcement-poll", self._run_poll)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stops polling; a stream read in progress ends with the process
        or at its next event (the threads are daemons)."""
        self._stop.set()
