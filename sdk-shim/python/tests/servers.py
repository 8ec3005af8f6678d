"""The real processes the tests run against: the `tollgate` binary and the
shared mock provider (`mock-provider`, built from tests/mock-provider),
with a counting proxy in front of the mock so a test can tell whether a
request reached the provider at all."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[3]
ADMIN_TOKEN = "admin-token-for-the-python-shim-tests"


def binary(env_name: str, name: str) -> Path:
    """A binary of the workspace: `$env_name`, else the cargo target dir's."""
    path = os.environ.get(env_name)
    if not path:
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        if not target.is_absolute():
            target = REPO / target
        path = str(target / "debug" / name)
    p = Path(path)
    if not p.is_file():
        raise RuntimeError(
            f"{p} does not exist: build it with `cargo build -p tollgate-collector --bin tollgate "
            f"-p tollgate-mock-provider --bin mock-provider`, or set {env_name}"
        )
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MockProvider:
    """`mock-provider` on a free port."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [str(binary("TOLLGATE_MOCK_PROVIDER_BIN", "mock-provider"))],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"mock-provider did not start: {line!r}")
        self.url = line[len("listening on "):]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class CountingProxy:
    """Forwards every request to `upstream` (streams included, relayed as
    they come) and counts them by path: the provider's request count."""

    def __init__(self, upstream: str):
        target = urllib.parse.urlsplit(upstream)
        self._lock = threading.Lock()
        self.paths: List[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    proxy.paths.append(self.path)
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                self.send_header("Connection", "close")
                self.end_headers()
                while True:
                    chunk = resp.read1(65536)
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    self.wfile.flush()
                conn.close()

            do_GET = do_POST = _relay

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.paths)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _addr(line: str, key: str) -> Optional[str]:
    for word in line.split():
        if word.startswith(f"{key}="):
            value = word[len(key) + 1:]
            if value == "off":
                return None
            return value if value.startswith("http") else f"http://{value}"
    return None


class Collector:
    """`tollgate serve` on free loopback ports, an SQLite store in `dir`,
    the admin API on, and (when `gateway`) the inline gateway in front of
    `provider`."""

    def __init__(self, dir: Path, provider: str, *, gateway: bool = False, extra: str = "", ports: Optional[Dict[str, int]] = None):
        self.dir = dir
        self.ports = ports or {"grpc": 0, "http": 0, "api": 0, "gateway": 0}
        gateway_section = ""
        if gateway:
            gateway_section = f"""
[gateway]
enabled = true
listen = "127.0.0.1:{self.ports['gateway']}"

[[gateway.providers]]
name = "openai"
kind = "openai"
base_url = "{provider}/v1"
api_key_env = "SHIM_TEST_OPENAI_KEY"

[[gateway.providers]]
name = "anthropic"
kind = "anthropic"
base_url = "{provider}"
api_key_env = "SHIM_TEST_ANTHROPIC_KEY"
"""
        self.config = dir / "tollgate.toml"
        self.config.write_text(
            f"""
[receivers.otlp]
grpc_listen = "127.0.0.1:{self.ports['grpc']}"
http_listen = "127.0.0.1:{self.ports['http']}"

[api]
listen = "127.0.0.1:{self.ports['api']}"

[storage]
type = "sqlite"
path = "{dir / 'data'}"

[admin]
token = "{ADMIN_TOKEN}"
{gateway_section}
{extra}
"""
        )
        self.start()

    def start(self) -> None:
        env = dict(os.environ, RUST_LOG="info", SHIM_TEST_OPENAI_KEY="sk-test-openai", SHIM_TEST_ANTHROPIC_KEY="sk-ant-test")
        self.stderr = open(self.dir / "stderr.log", "ab")
        self.proc = subprocess.Popen(
            [str(binary("TOLLGATE_BIN", "tollgate")), "serve", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while True:
            line = self.proc.stdout.readline()
            if line.startswith("tollgate listening:"):
                break
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tollgate did not start: {self.log()[-2000:]}")
        self.api = _addr(line, "api")
        self.otlp_http = _addr(line, "otlp_http")
        self.otlp_grpc = _addr(line, "otlp_grpc")
        self.gateway = _addr(line, "gateway")
        # Drain stdout so the process never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def log(self) -> str:
        return (self.dir / "stderr.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()

    # -- API -------------------------------------------------------------

    def request(self, method: str, path: str, body: Optional[dict] = None, token: Optional[str] = ADMIN_TOKEN) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.api}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{method} {path}: {err.code} {err.read()[:500]!r}") from None
        return json.loads(raw) if raw else None

    def block(self, scope: Dict[str, str], reason: str = "over budget", for_s: int = 3600) -> Any:
        return self.request("POST", "/admin/v1/enforcement", {"scope": scope, "reason": reason, "for_s": for_s})

    def lift(self, scope: Dict[str, str]) -> Any:
        return self.request("DELETE", "/admin/v1/enforcement?" + urllib.parse.urlencode(scope))

    def create_key(self, **body: Any) -> str:
        return self.request("POST", "/admin/v1/keys", body)["key"]

    def calls(self, **filters: str) -> List[Dict[str, Any]]:
        q = urllib.parse.urlencode(dict(filters, limit="1000"))
        return self.request("GET", f"/v1/calls?{q}")["rows"]

    def wait_calls(self, n: int, timeout: float = 20.0, **filters: str) -> List[Dict[str, Any]]:
        """The stored calls matching `filters` once there are at least `n`."""
        deadline = time.monotonic() + timeout
        rows = self.calls(**filters)
        while len(rows) < n and time.monotonic() < deadline:
            time.sleep(0.2)
            rows = self.calls(**filters)
        assert len(rows) >= n, f"{len(rows)} calls stored for {filters}, expected {n}: {rows}"
        return rows
