"""Tiny OTLP/HTTP trace receiver for scripts/capture-fixtures.

Stores the raw body of every ``POST /v1/traces`` as ``<dir>/<n>.pb`` (gzip
bodies are decompressed first) and answers with an empty
ExportTraceServiceResponse, exactly what an OTLP exporter expects. Prints
``listening on http://127.0.0.1:PORT`` as its first stdout line.

Usage: python otlp_sink.py <output-dir>
"""

import gzip
import http.server
import itertools
import pathlib
import sys
import threading

_counter = itertools.count(1)
_lock = threading.Lock()


class _Handler(http.server.BaseHTTPRequestHandler):
    out_dir: pathlib.Path

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked()  # the Node exporter streams its body
        else:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.headers.get("content-encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        if self.path.split("?")[0] != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        with _lock:
            n = next(_counter)
        (self.out_dir / f"{n:04d}.pb").write_bytes(body)
        # An empty ExportTraceServiceResponse encodes to zero bytes.
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return body
            body += self.rfile.read(size)
            self.rfile.readline()  # the CRLF after each chunk

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write("otlp-sink: " + (fmt % args) + "\n")


def main() -> None:
    out_dir = pathlib.Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    _Handler.out_dir = out_dir
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
