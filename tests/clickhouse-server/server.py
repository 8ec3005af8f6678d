#!/usr/bin/env python3
"""A test server for the ClickHouse HTTP interface over the real ClickHouse
engine (chdb, PyPI package `chdb-core`).

chdb runs ClickHouse in-process and cannot listen by itself. This server
speaks the subset of the HTTP interface that the Rust `clickhouse` crate and
curl users need, and runs every statement in one persistent
`chdb.session.Session` whose data lives in `--data-dir`. Queries are served
one at a time (one lock around the session). It listens on 127.0.0.1 only.

See README.md next to this file for what is supported.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

HOST = "127.0.0.1"
DISPLAY_NAME = "tollgate-test-clickhouse"

# URL parameters that belong to the HTTP protocol rather than the engine.
# Those in HTTP_ONLY_SKIP are never sent to the engine (it does not know
# them); the rest of HTTP_ONLY_PARAMS are tried with SET and ignored only when
# the engine answers UNKNOWN_SETTING. `compress` / `decompress` with a true
# value are refused (no compression support here).
HTTP_ONLY_SKIP = {
    "compress",
    "decompress",
    "session_id",
    "session_timeout",
    "session_check",
    "query_id",
    "default_format",
    "user",
    "password",
    "quota_key",
    "wait_end_of_query",
    "buffer_size",
    "role",
    "client_protocol_version",
}
HTTP_ONLY_PARAMS = HTTP_ONLY_SKIP | {
    "enable_http_compression",
    "http_zlib_compression_level",
    "http_native_compression_disable_checksumming_on_decompress",
    "send_progress_in_http_headers",
    "http_headers_progress_interval_ms",
    "add_http_cors_header",
}

# Settings that would change the one shared engine session for good; they are
# handled by the server (readonly) or refused.
GUARDED_SETTINGS = {"readonly"}

# Exception names and the HTTP status real ClickHouse answers with
# (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp). Codes are looked up by
# name in the engine's system.errors at start-up.
STATUS_BY_NAME = {
    401: ["REQUIRED_PASSWORD"],
    403: ["UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED",
          "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"],
    400: ["BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT",
          "CANNOT_PARSE_ESCAPE_SEQUENCE", "CANNOT_PARSE_QUOTED_STRING",
          "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
          "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4",
          "CANNOT_PARSE_IPV6", "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
          "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN",
          "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE",
          "THERE_IS_NO_COLUMN", "TOO_DEEP_AST", "TOO_BIG_AST",
          "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA",
          "TYPE_MISMATCH", "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"],
    404: ["UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER",
          "UNKNOWN_TYPE", "UNKNOWN_STORAGE", "UNKNOWN_DATABASE",
          "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING",
          "UNKNOWN_AGGREGATE_FUNCTION", "UNKNOWN_FORMAT",
          "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE"],
    413: ["QUERY_IS_TOO_LARGE"],
    501: ["NOT_IMPLEMENTED"],
    503: ["SOCKET_TIMEOUT", "CANNOT_OPEN_FILE", "CANNOT_SCHEDULE_TASK"],
    411: ["HTTP_LENGTH_REQUIRED"],
    408: ["TIMEOUT_EXCEEDED"],
    415: ["UNSUPPORTED_MEDIA_TYPE"],
}

# Codes the server itself raises (stable ClickHouse error codes).
SYNTAX_ERROR = 62
NOT_IMPLEMENTED = 48
UNKNOWN_SETTING = 115
READONLY = 164
AUTHENTICATION_FAILED = 516
BAD_ARGUMENTS = 36
STD_EXCEPTION = 1001

READ_ONLY_KEYWORDS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"}

IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CODE_RE = re.compile(r"Code: (\d+)\. ")
LEADING_JUNK_RE = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|#[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.S)
FIRST_WORD_RE = re.compile(r"[A-Za-z_]+")
# `INSERT INTO ... FORMAT Name`, as the whole `query` parameter.
INSERT_FORMAT_RE = re.compile(
    r"^\s*(INSERT\s+INTO\s+.*?)\s+FORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.S | re.I)
# The same at the start of a body that carries the data after it.
INSERT_FORMAT_HEAD_RE = re.compile(
    rb"^\s*(INSERT\s+INTO\s+.*?)\s+FORMAT\s+([A-Za-z0-9_]+)[ \t]*(?:\r?\n)?", re.S | re.I)
HEAD_NOT_INSERT_DATA_RE = re.compile(r"\b(VALUES|SELECT|WITH)\b", re.I)
TRAILING_FORMAT_RE = re.compile(
    r"\bFORMAT\s+([A-Za-z0-9_]+)(?:\s+SETTINGS\s+[^;]*)?\s*;?\s*$", re.S | re.I)
SESSION_CHANGING_RE = re.compile(r"(?:^|;)\s*(SET|USE)\b", re.I)
SET_READONLY_RE = re.compile(r"(?:^|;|,)\s*(?:SET\s+)?readonly\s*=", re.I)


class QueryError(Exception):
    """An error answered to the client as a ClickHouse exception."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def error_from_engine(exc: BaseException) -> QueryError:
    text = str(exc)
    match = CODE_RE.search(text)
    if match:
        return QueryError(int(match.group(1)), text[match.start():].strip())
    return QueryError(STD_EXCEPTION, f"Code: {STD_EXCEPTION}. DB::Exception: {text.strip()} (STD_EXCEPTION)")


def server_error(code: int, name: str, message: str) -> QueryError:
    return QueryError(code, f"Code: {code}. DB::Exception: {message} ({name})")


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def first_keyword(sql: str) -> str:
    rest = LEADING_JUNK_RE.sub("", sql, count=1)
    match = FIRST_WORD_RE.match(rest)
    return match.group(0).upper() if match else ""


def content_type_for(fmt: str) -> str:
    f = fmt.lower()
    if f.startswith("tabseparated") or f.startswith("tsv"):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("csv"):
        header = "present" if "withnames" in f else "absent"
        return f"text/csv; charset=UTF-8; header={header}"
    if f.startswith("jsoneachrow") or f.startswith("jsonlines") or f.startswith("ndjson") \
            or f.startswith("jsoncompacteachrow") or f.startswith("jsonstringseachrow"):
        return "application/x-ndjson; charset=UTF-8"
    if f.startswith("json"):
        return "application/json; charset=UTF-8"
    if f.startswith("rowbinary") or f in ("native", "parquet", "arrow", "arrowstream", "orc",
                                         "avro", "msgpack", "protobuf", "capnproto"):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, str]]:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise server_error(BAD_ARGUMENTS, "BAD_ARGUMENTS", "multipart/form-data without boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    fields = []
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        part = part[2:] if part.startswith(b"\r\n") else part
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep:
            raise server_error(BAD_ARGUMENTS, "BAD_ARGUMENTS", "malformed multipart/form-data body")
        if value.endswith(b"\r\n"):
            value = value[:-2]
        headers = head.decode("utf-8", "replace")
        name_match = re.search(r'name="([^"]*)"', headers)
        if not name_match:
            raise server_error(BAD_ARGUMENTS, "BAD_ARGUMENTS", "multipart field without a name")
        if "filename=" in headers:
            raise server_error(NOT_IMPLEMENTED, "NOT_IMPLEMENTED",
                               "external tables (multipart file uploads) are not supported by this test server")
        fields.append((name_match.group(1), value.decode("utf-8")))
    return fields


class Engine:
    """One chdb session, used by one request at a time."""

    def __init__(self, data_dir: str):
        import chdb  # noqa: F401  (imported here so --help works without it)
        from chdb.session import Session

        os.makedirs(data_dir, exist_ok=True)
        self.lock = threading.Lock()
        self.session = Session(data_dir)
        self.chdb_version = getattr(chdb, "__version__", "?")
        self.version = self._scalar("SELECT version()")
        self.timezone = self._scalar("SELECT timezone()")
        self.baseline = self._changed_settings()
        self.current_db: str | None = self._scalar("SELECT currentDatabase()")
        self.dirty = False  # a reset failed: do a full one before the next request
        self.status_by_code: dict[int, int] = {}
        rows = self._raw("SELECT DISTINCT name, code FROM system.errors "
                         "SETTINGS system_events_show_zero_values = 1")
        codes = dict(line.split("\t") for line in rows.splitlines() if line)
        for status, names in STATUS_BY_NAME.items():
            for name in names:
                if name in codes:
                    self.status_by_code[int(codes[name])] = status

    # -- helpers (lock held) -------------------------------------------------

    def _raw(self, sql: str) -> str:
        return self.session.query(sql, "TabSeparated").bytes().decode("utf-8")

    def _scalar(self, sql: str) -> str:
        return self._raw(sql).strip()

    def _changed_settings(self) -> dict[str, str]:
        rows = self._raw("SELECT name, value FROM system.settings WHERE changed")
        out = {}
        for line in rows.splitlines():
            name, _, value = line.partition("\t")
            if name != "database":
                out[name] = value
        return out

    def _restore(self, names) -> None:
        for name in names:
            if name in self.baseline:
                self._raw(f"SET {name} = {quote_string(self.baseline[name])}")
            else:
                self._raw(f"SET {name} = DEFAULT")

    def _full_reset(self) -> None:
        now = self._changed_settings()
        stale = [n for n, v in now.items() if self.baseline.get(n) != v]
        stale += [n for n in self.baseline if n not in now]
        self._restore(stale)
        self.current_db = None

    def status_for(self, code: int) -> int:
        return self.status_by_code.get(code, 500)

    # -- one request ---------------------------------------------------------

    def run(self, *, sql: str, data: bytes | None, insert_format: str | None,
            database: str, settings: list[tuple[str, str]], params: dict[str, str],
            default_format: str) -> tuple[bytes, dict]:
        """Runs one statement; returns (body, summary). Raises QueryError."""
        with self.lock:
            applied: list[str] = []
            touches_session = bool(SESSION_CHANGING_RE.search(sql))
            if self.dirty:
                self._full_reset()
                self.dirty = False
            try:
                if self.current_db != database:
                    try:
                        self._raw(f"USE {quote_identifier(database)}")
                    except Exception as exc:  # unknown database
                        self.current_db = None
                        raise error_from_engine(exc) from None
                    self.current_db = database
                for name, value in settings:
                    try:
                        self._raw(f"SET {name} = {quote_string(value)}")
                    except Exception as exc:
                        err = error_from_engine(exc)
                        if err.code == UNKNOWN_SETTING and name in HTTP_ONLY_PARAMS:
                            continue
                        raise err from None
                    applied.append(name)
                started = time.monotonic_ns()
                if data is not None:
                    body, summary = self._insert(sql, insert_format or "", data)
                else:
                    body, summary = self._query(sql, default_format, params)
                summary["elapsed_ns"] = str(time.monotonic_ns() - started)
                return body, summary
            finally:
                try:
                    if touches_session:
                        self._full_reset()
                    else:
                        self._restore(applied)
                except Exception as exc:  # keep serving; the next request resets
                    print(f"settings restore failed: {exc}", file=sys.stderr, flush=True)
                    self.current_db = None
                    self.dirty = True

    def _query(self, sql: str, fmt: str, params: dict[str, str]) -> tuple[bytes, dict]:
        try:
            result = self.session.query(sql, fmt, params=params or None)
        except Exception as exc:
            raise error_from_engine(exc) from None
        body = result.bytes() or b""
        summary = {
            "read_rows": str(result.rows_read()),
            "read_bytes": str(result.bytes_read()),
            "written_rows": str(result.rows_written()),
            "written_bytes": str(result.bytes_written()),
            "total_rows_to_read": str(result.rows_read()),
            "result_bytes": str(len(body)),
        }
        return body, summary

    def _insert(self, head: str, fmt: str, data: bytes) -> tuple[bytes, dict]:
        try:
            inserter = self.session.send_insert(head, fmt)
        except Exception as exc:
            raise error_from_engine(exc) from None
        try:
            if data:
                inserter.append(data)
            result = inserter.finish()
        except Exception as exc:
            try:
                inserter.cancel()
            except Exception:
                pass
            raise error_from_engine(exc) from None
        summary = {
            "read_rows": "0",
            "read_bytes": "0",
            "written_rows": str(result.rows_written),
            "written_bytes": str(result.bytes_written),
            "total_rows_to_read": "0",
            "result_bytes": "0",
        }
        return b"", summary

    def close(self) -> None:
        with self.lock:
            try:
                self.session.close()
            except Exception:
                pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse-test-server"

    def version_string(self):
        return self.server_version

    engine: Engine
    expected_user: str | None
    expected_password: str
    verbose: bool

    # -- plumbing ------------------------------------------------------------

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("%s %s\n" % (self.log_date_time_string(), fmt % args))

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_text(self, status: int, text: str) -> None:
        self._send(status, text.encode("utf-8"), {"Content-Type": "text/plain; charset=UTF-8"})

    def _send_error(self, err: QueryError, query_id: str) -> None:
        status = self.engine.status_for(err.code)
        message = err.message
        # Errors are always logged (one line); successes only with --verbose.
        sys.stderr.write(f"{self.log_date_time_string()} {self.command} -> {status}: {message[:500]}\n")
        if "(version " not in message:
            message += f" (version {self.engine.version})"
        self._send(status, (message + "\n").encode("utf-8"), {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(err.code),
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Server-Display-Name": DISPLAY_NAME,
            "X-ClickHouse-Timezone": self.engine.timezone,
        })

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("connection closed inside a chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        trailer = self.rfile.readline(65537)
                        if trailer in (b"\r\n", b"\n", b""):
                            break
                    break
                chunk = self.rfile.read(size)
                if len(chunk) != size:
                    raise ConnectionError("connection closed inside a chunk")
                chunks.append(chunk)
                self.rfile.readline(3)  # CRLF after the chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return b""
        body = self.rfile.read(length)
        if len(body) != length:
            raise ConnectionError("connection closed inside the body")
        return body

    # -- methods -------------------------------------------------------------

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self._handle(read_only=True)

    def do_POST(self):
        self._handle(read_only=False)

    def _handle(self, read_only: bool) -> None:
        url = urlsplit(self.path)
        try:
            body = self._read_body()
        except (ConnectionError, ValueError):
            self.close_connection = True
            return
        pairs = parse_qsl(url.query, keep_blank_values=True)
        query_id = next((v for k, v in pairs if k == "query_id" and v), "") or str(uuid.uuid4())

        if url.path in ("/ping", "/replicas_status"):
            self._send_text(200, "Ok.\n")
            return
        if url.path != "/":
            self._send_text(404, f"There is no handle {url.path}\n\nUse / or /ping for health checks.\n")
            return
        if self.command in ("GET", "HEAD") and not any(k == "query" for k, _ in pairs):
            self._send_text(200, "Ok.\n")
            return

        try:
            body_out, headers = self._execute(pairs, body, read_only, query_id)
        except QueryError as err:
            self._send_error(err, query_id)
            return
        except Exception as exc:  # a bug here must still answer as an exception
            self._send_error(error_from_engine(exc), query_id)
            return
        self._send(200, body_out, headers)

    def _check_auth(self, pairs) -> None:
        user, password = None, None
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:].strip()).decode("utf-8")
            except Exception:
                raise server_error(AUTHENTICATION_FAILED, "AUTHENTICATION_FAILED",
                                   "malformed Basic authorization header") from None
            user, _, password = decoded.partition(":")
        if self.headers.get("X-ClickHouse-User") is not None:
            user = self.headers.get("X-ClickHouse-User")
            password = self.headers.get("X-ClickHouse-Key", "")
        for key, value in pairs:
            if key == "user":
                user = value
            elif key == "password":
                password = value
        if self.expected_user is None:
            return
        if (user or "default") != self.expected_user or (password or "") != self.expected_password:
            raise server_error(AUTHENTICATION_FAILED, "AUTHENTICATION_FAILED",
                               f"{user or 'default'}: Authentication failed: password is incorrect, "
                               "or there is no user with such name")

    def _execute(self, pairs, body: bytes, read_only: bool, query_id: str):
        self._check_auth(pairs)

        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding and encoding != "identity":
            raise server_error(NOT_IMPLEMENTED, "NOT_IMPLEMENTED",
                               f"this test server does not support compressed request bodies "
                               f"(Content-Encoding: {encoding}); use Compression::None in the client")

        content_type = self.headers.get("Content-Type", "")
        if body and content_type.lower().startswith("multipart/form-data"):
            pairs = list(pairs) + parse_multipart(body, content_type)
            body = b""

        query = ""
        database = "default"
        default_format = "TabSeparated"
        params: dict[str, str] = {}
        settings: list[tuple[str, str]] = []
        for key, value in pairs:
            if key == "query":
                query = value
            elif key == "database":
                database = value or "default"
            elif key == "default_format":
                default_format = value or "TabSeparated"
            elif key.startswith("param_"):
                params[key[len("param_"):]] = value
            elif key in ("compress", "decompress"):
                if value.strip().lower() not in ("", "0", "false"):
                    what = "compressed responses" if key == "compress" else "compressed request bodies"
                    raise server_error(NOT_IMPLEMENTED, "NOT_IMPLEMENTED",
                                       f"{key}={value}: this test server does not support {what} "
                                       "(ClickHouse native LZ4/ZSTD); use Compression::None in the client")
            elif key in ("user", "password", "query_id"):
                continue
            elif key == "readonly":
                if value.strip() not in ("", "0"):
                    read_only = True
            elif key in GUARDED_SETTINGS:
                continue
            else:
                if not IDENT_RE.match(key):
                    raise server_error(UNKNOWN_SETTING, "UNKNOWN_SETTING", f"Unknown setting '{key}'")
                if key in HTTP_ONLY_SKIP:
                    continue
                settings.append((key, value))

        data: bytes | None = None
        insert_format: str | None = None
        sql = query
        if body:
            match = INSERT_FORMAT_RE.match(query) if query else None
            if match:
                sql, insert_format, data = match.group(1), match.group(2), body
            elif query:
                sql = query + "\n" + body.decode("utf-8")
            else:
                head = INSERT_FORMAT_HEAD_RE.match(body)
                if head and not HEAD_NOT_INSERT_DATA_RE.search(head.group(1).decode("utf-8", "replace")):
                    sql = head.group(1).decode("utf-8")
                    insert_format = head.group(2).decode("ascii")
                    data = body[head.end():]
                else:
                    sql = body.decode("utf-8")
        elif query:
            match = INSERT_FORMAT_RE.match(query)
            if match:  # INSERT ... FORMAT X with no data: inserts nothing
                sql, insert_format, data = match.group(1), match.group(2), b""

        if not sql.strip():
            raise server_error(SYNTAX_ERROR, "SYNTAX_ERROR", "Empty query")
        if read_only and first_keyword(sql) not in READ_ONLY_KEYWORDS | {"SET", "USE"}:
            hint = (" For queries over HTTP, method GET implies readonly. You should use method POST "
                    "for modifying queries" if self.command in ("GET", "HEAD") else "")
            raise server_error(READONLY, "READONLY", "Cannot execute query in readonly mode." + hint)
        if SET_READONLY_RE.search(sql) and first_keyword(sql) == "SET":
            raise server_error(NOT_IMPLEMENTED, "NOT_IMPLEMENTED",
                               "this test server shares one engine session; SET readonly is not supported")
        if data is not None and params:
            raise server_error(NOT_IMPLEMENTED, "NOT_IMPLEMENTED",
                               "query parameters (param_*) are not supported with INSERT data by this test server")

        out_format = default_format
        if data is None:
            trailing = TRAILING_FORMAT_RE.search(sql)
            if trailing:
                out_format = trailing.group(1)

        body_out, summary = self.engine.run(
            sql=sql, data=data, insert_format=insert_format, database=database,
            settings=settings, params=params, default_format=default_format)
        headers = {
            "Content-Type": content_type_for(out_format),
            "X-ClickHouse-Format": out_format,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Server-Display-Name": DISPLAY_NAME,
            "X-ClickHouse-Timezone": self.engine.timezone,
            "X-ClickHouse-Summary": json.dumps(summary, separators=(",", ":")),
        }
        return body_out, headers


class Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="directory of the engine's data (kept across restarts)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = a free one)")
    parser.add_argument("--port-file", help="file to write the port to once listening")
    parser.add_argument("--user", help="if given, require this user (Basic auth, X-ClickHouse-User or ?user=)")
    parser.add_argument("--password", default="", help="password for --user")
    parser.add_argument("--timezone", default="UTC",
                        help="server time zone (default UTC; 'system' keeps the machine's)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    if args.timezone != "system":
        os.environ["TZ"] = args.timezone  # read by the engine when it starts
        time.tzset()

    try:
        engine = Engine(os.path.abspath(args.data_dir))
    except Exception as exc:
        print(f"server.py: cannot open the ClickHouse engine on {args.data_dir}: {exc}".replace("\n", " "),
              file=sys.stderr, flush=True)
        return 2
    Handler.engine = engine
    Handler.expected_user = args.user
    Handler.expected_password = args.password
    Handler.verbose = args.verbose

    try:
        server = Server((HOST, args.port), Handler)
    except OSError as exc:
        print(f"server.py: cannot listen on {HOST}:{args.port}: {exc}", file=sys.stderr, flush=True)
        engine.close()
        return 2
    port = server.server_address[1]
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(f"listening on http://{HOST}:{port} (ClickHouse {engine.version}, chdb {engine.chdb_version}, "
          f"data {os.path.abspath(args.data_dir)})", file=sys.stderr, flush=True)

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
