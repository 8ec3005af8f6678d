"""Recording reverse proxy between a dialect's SDK and the mock provider, for
scripts/capture-fixtures.

Forwards every request to the mock unchanged and appends one JSON line per
exchange to the log: when it arrived (unix ns, the SDKs' clock), method,
path, the request's x-mock-* headers and JSON body, and the mock's status and
answer (the JSON body, or the decoded server-sent events of a stream). Agent
frameworks make several model calls per run; this log is what the mock really
returned for each of them, independent of the instrumentation under test.
Answers are relayed whole once the mock has finished (streams included),
which the SDKs cannot tell apart from a fast stream. Prints
``listening on http://127.0.0.1:PORT`` as its first stdout line.

Usage: python wire_recorder.py <mock-base-url> <log.jsonl>
"""

import http.client
import http.server
import json
import sys
import threading
import time
import urllib.parse

_lock = threading.Lock()
# Hop-by-hop headers, and those the relay recomputes.
_SKIP_REQUEST = {"host", "connection", "accept-encoding", "content-length", "keep-alive", "transfer-encoding"}
_SKIP_RESPONSE = {"connection", "content-length", "keep-alive", "transfer-encoding", "content-encoding"}


def _json_or_text(raw: bytes):
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _sse_events(raw: bytes) -> list:
    """Each event as {"event": name?, "data": parsed JSON or text}."""
    events = []
    for block in raw.decode("utf-8", errors="replace").replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[len("event:"):].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:"):].lstrip())
        if name is None and not data:
            continue
        event = {"data": _json_or_text("\n".join(data).encode())}
        if name is not None:
            event = {"event": name, **event}
        events.append(event)
    return events


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: urllib.parse.SplitResult
    log_path: str

    def _relay(self) -> None:
        arrived = time.time_ns()
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _SKIP_REQUEST}
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        conn.request(self.command, self.path, body=body or None, headers=headers)
        answer = conn.getresponse()
        raw = answer.read()
        content_type = answer.getheader("content-type", "")
        reply_headers = [(k, v) for k, v in answer.getheaders() if k.lower() not in _SKIP_RESPONSE]
        conn.close()

        record = {
            "arrived_unix_nano": arrived,
            "method": self.command,
            "path": self.path,
            "mock_headers": {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-mock-")},
            "request": _json_or_text(body) if body else None,
            "status": answer.status,
            "content_type": content_type,
        }
        if content_type.startswith("text/event-stream"):
            record["events"] = _sse_events(raw)
        else:
            record["response"] = _json_or_text(raw)
        with _lock, open(self.log_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

        self.send_response(answer.status)
        for key, value in reply_headers:
            self.send_header(key, value)
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = _relay  # noqa: N815 (http.server naming)

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write("wire-recorder: " + (fmt % args) + "\n")


def main() -> None:
    upstream, log_path = sys.argv[1:3]
    _Handler.upstream = urllib.parse.urlsplit(upstream)
    _Handler.log_path = log_path
    open(log_path, "w").close()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
