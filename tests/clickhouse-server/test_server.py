"""Self-test of the ClickHouse test server (server.py).

Run with a python that has chdb-core:

    "$(tests/clickhouse-server/launch.sh python)" -m unittest tests/clickhouse-server/test_server.py

Only the standard library is used on the client side (urllib, http.client).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "server.py")


# -- RowBinary by hand --------------------------------------------------------

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def rb_string(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return varint(len(b)) + b


def rb_u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def rb_dt64(micros: int) -> bytes:
    return struct.pack("<q", micros)


def rb_nullable_string(s: str | None) -> bytes:
    return b"\x01" if s is None else b"\x00" + rb_string(s)


def rb_map(m: dict[str, str]) -> bytes:
    return varint(len(m)) + b"".join(rb_string(k) + rb_string(v) for k, v in m.items())


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        if len(chunk) != n:
            raise ValueError("truncated RowBinary")
        self.pos += n
        return chunk

    def varint(self) -> int:
        shift = result = 0
        while True:
            byte = self.take(1)[0]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    def string(self) -> str:
        return self.take(self.varint()).decode()

    def value(self, type_name: str):
        if type_name.startswith("Nullable("):
            return None if self.take(1)[0] else self.value(type_name[9:-1])
        if type_name.startswith("LowCardinality("):
            return self.value(type_name[15:-1])
        if type_name.startswith("Map(String, String)"):
            return {self.string(): self.string() for _ in range(self.varint())}
        if type_name.startswith("DateTime64("):
            return struct.unpack("<q", self.take(8))[0]
        fixed = {"UInt8": "<B", "UInt32": "<I", "UInt64": "<Q", "Int64": "<q", "Float64": "<d"}
        if type_name in fixed:
            fmt = fixed[type_name]
            return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        if type_name == "String":
            return self.string()
        raise ValueError(f"type not handled by this test: {type_name}")


def parse_rbwnat(data: bytes) -> tuple[list[str], list[str], list[tuple]]:
    r = Reader(data)
    n = r.varint()
    names = [r.string() for _ in range(n)]
    types = [r.string() for _ in range(n)]
    rows = []
    while not r.done():
        rows.append(tuple(r.value(t) for t in types))
    return names, types, rows


# -- the server under test ----------------------------------------------------

def read_file(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


class ServerProcess:
    def __init__(self, data_dir: str, port: int = 0, extra: list[str] | None = None):
        self.data_dir, self.extra = data_dir, extra or []
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(os.path.dirname(data_dir), f"server-{os.path.basename(data_dir)}.log")

    def start(self) -> None:
        port_file = self.data_dir + ".port"
        if os.path.exists(port_file):
            os.unlink(port_file)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, SERVER, "--data-dir", self.data_dir, "--port", str(self.port),
             "--port-file", port_file, *self.extra],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 60
        while not read_file(port_file).strip():
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {read_file(self.log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in 60 s")
            time.sleep(0.05)
        self.port = int(read_file(port_file))

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def terminate(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Answer:
    def __init__(self, status: int, headers, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def request(base: str, params: dict | list | None = None, body: bytes | str | None = None,
            method: str | None = None, headers: dict | None = None) -> Answer:
    url = base + "/"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return Answer(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as err:
        return Answer(err.code, err.headers, err.read())


class ServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ch-test-server-")
        cls.server = ServerProcess(os.path.join(cls.tmp, "data"))
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def sql(self, sql: str, **params) -> str:
        ans = request(self.server.url, params or None, sql)
        self.assertEqual(ans.status, 200, f"{sql}: {ans.status} {ans.text}")
        return ans.text

    # -- basics ---------------------------------------------------------------

    def test_ping_and_root(self):
        for path in ("/ping", "/"):
            with urllib.request.urlopen(self.server.url + path, timeout=10) as resp:
                self.assertEqual(resp.status, 200)
                self.assertEqual(resp.read(), b"Ok.\n")
                self.assertIsNotNone(resp.headers.get("Content-Length"))

    def test_unknown_path_is_404(self):
        try:
            urllib.request.urlopen(self.server.url + "/nope", timeout=10)
            self.fail("expected 404")
        except urllib.error.HTTPError as err:
            self.assertEqual(err.code, 404)

    def test_get_query_in_url(self):
        ans = request(self.server.url, {"query": "SELECT 1 + 1"})
        self.assertEqual((ans.status, ans.text), (200, "2\n"))
        self.assertEqual(ans.headers["X-ClickHouse-Format"], "TabSeparated")
        self.assertTrue(ans.headers["Content-Type"].startswith("text/tab-separated-values"))
        summary = json.loads(ans.headers["X-ClickHouse-Summary"])
        self.assertTrue(all(isinstance(v, str) for v in summary.values()))
        self.assertIn("elapsed_ns", summary)
        self.assertTrue(ans.headers["X-ClickHouse-Query-Id"])
        self.assertEqual(ans.headers["X-ClickHouse-Timezone"], "UTC")

    def test_concurrent_clients_are_served_one_at_a_time(self):
        self.sql("CREATE TABLE conc (t UInt64, i UInt64) ENGINE = MergeTree ORDER BY (t, i)")
        errors = []

        def worker(t: int) -> None:
            for i in range(20):
                ans = request(self.server.url, {"query": "INSERT INTO conc(t, i) FORMAT RowBinary",
                                                "max_threads": str(1 + t)}, rb_u64(t) + rb_u64(i))
                if ans.status != 200:
                    errors.append(ans.text)
                ans = request(self.server.url, {"query": "SELECT count() FROM conc WHERE t = %d" % t})
                if ans.text != f"{i + 1}\n":
                    errors.append(ans.text)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.assertEqual(errors, [])
        self.assertEqual(self.sql("SELECT count() FROM conc"), "120\n")

    def test_query_id_is_echoed(self):
        ans = request(self.server.url, {"query": "SELECT 1", "query_id": "my-query-1"})
        self.assertEqual(ans.headers["X-ClickHouse-Query-Id"], "my-query-1")

    def test_get_is_read_only(self):
        ans = request(self.server.url, {"query": "CREATE TABLE ro_t (a UInt8) ENGINE = Memory"})
        self.assertNotEqual(ans.status, 200)
        self.assertEqual(ans.headers["X-ClickHouse-Exception-Code"], "164")

    def test_url_query_plus_body(self):
        ans = request(self.server.url, {"query": "SELECT"}, "42 AS x FORMAT JSONEachRow")
        self.assertEqual(ans.status, 200, ans.text)
        self.assertEqual(json.loads(ans.text), {"x": 42})

    # -- the types the collector uses, in RowBinary ----------------------------

    def test_rowbinary_round_trip_modern_types(self):
        self.sql("""CREATE TABLE rb_calls (
                id UInt64,
                ts DateTime64(6, 'UTC'),
                model LowCardinality(String),
                attrs Map(String, String),
                user Nullable(String)
            ) ENGINE = MergeTree ORDER BY id""")
        rows = [
            (1, 1_767_225_600_123_456, "gpt-4o-mini", {"project": "search", "env": "prod"}, "user-1"),
            (2, 1_767_225_601_000_001, "claude-sonnet-4-5", {}, None),
            (3, 1_767_225_602_999_999, "gpt-4o-mini", {"ünïcode": "✓"}, ""),
        ]
        body = b"".join(rb_u64(i) + rb_dt64(ts) + rb_string(m) + rb_map(a) + rb_nullable_string(u)
                        for i, ts, m, a, u in rows)
        ans = request(self.server.url,
                      {"query": "INSERT INTO rb_calls(id, ts, model, attrs, user) FORMAT RowBinary"}, body)
        self.assertEqual(ans.status, 200, ans.text)
        self.assertEqual(ans.body, b"")
        self.assertEqual(json.loads(ans.headers["X-ClickHouse-Summary"])["written_rows"], "3")

        # The crate's fetch(): SQL in the body, format in default_format.
        ans = request(self.server.url, {"default_format": "RowBinaryWithNamesAndTypes"},
                      "SELECT id, ts, model, attrs, user FROM rb_calls ORDER BY id")
        self.assertEqual(ans.status, 200, ans.text)
        self.assertEqual(ans.headers["X-ClickHouse-Format"], "RowBinaryWithNamesAndTypes")
        self.assertEqual(ans.headers["Content-Type"], "application/octet-stream")
        names, types, got = parse_rbwnat(ans.body)
        self.assertEqual(names, ["id", "ts", "model", "attrs", "user"])
        self.assertEqual(types, ["UInt64", "DateTime64(6, 'UTC')", "LowCardinality(String)",
                                 "Map(String, String)", "Nullable(String)"])
        self.assertEqual(got, rows)

        # Older crates append the FORMAT clause to the SQL instead.
        ans = request(self.server.url, None,
                      "SELECT id, model FROM rb_calls ORDER BY id FORMAT RowBinary")
        self.assertEqual(ans.status, 200, ans.text)
        self.assertEqual(ans.headers["X-ClickHouse-Format"], "RowBinary")
        r = Reader(ans.body)
        self.assertEqual([(r.value("UInt64"), r.string()) for _ in range(3)],
                         [(i, m) for i, _, m, _, _ in rows])

        ans = request(self.server.url, None,
                      "SELECT id, toString(ts) AS ts, attrs, user FROM rb_calls ORDER BY id FORMAT JSONEachRow")
        self.assertEqual(ans.status, 200, ans.text)
        lines = [json.loads(line) for line in ans.text.splitlines()]
        self.assertEqual(lines[0], {"id": 1, "ts": "2026-01-01 00:00:00.123456",
                                    "attrs": {"project": "search", "env": "prod"}, "user": "user-1"})
        self.assertIsNone(lines[1]["user"])
        self.assertEqual(lines[2]["attrs"], {"ünïcode": "✓"})

    def test_insert_rowbinary_with_names_and_types_chunked(self):
        """As the crate sends it: header + rows, Transfer-Encoding: chunked."""
        self.sql("CREATE TABLE rbw (a UInt64, b String) ENGINE = MergeTree ORDER BY a")
        header = varint(2) + rb_string("a") + rb_string("b") + rb_string("UInt64") + rb_string("String")
        rows = [rb_u64(i) + rb_string(f"row-{i}") for i in range(1000)]
        chunks = [header] + [b"".join(rows[i:i + 100]) for i in range(0, 1000, 100)]
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
        try:
            query = urllib.parse.urlencode({"query": "INSERT INTO rbw(a, b) FORMAT RowBinaryWithNamesAndTypes",
                                            "database": "default"})
            conn.request("POST", "/?" + query, body=iter(chunks), encode_chunked=True)
            resp = conn.getresponse()
            self.assertEqual(resp.status, 200, resp.read())
            resp.read()
            # Same keep-alive connection for the next request.
            conn.request("POST", "/", body=b"SELECT count(), sum(a), max(b) FROM rbw")
            resp = conn.getresponse()
            self.assertEqual(resp.read(), b"1000\t499500\trow-999\n")
        finally:
            conn.close()

    def test_insert_data_in_body_after_format(self):
        self.sql("CREATE TABLE inline_t (a UInt64, b String) ENGINE = MergeTree ORDER BY a")
        self.sql('INSERT INTO inline_t FORMAT JSONEachRow\n{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n')
        self.sql("INSERT INTO inline_t VALUES (3, 'z')")
        ans = request(self.server.url, {"query": "INSERT INTO inline_t FORMAT TabSeparated"}, "4\tw\n")
        self.assertEqual(ans.status, 200, ans.text)
        self.assertEqual(self.sql("SELECT groupArray(b) FROM (SELECT b FROM inline_t ORDER BY a)"),
                         "['x','y','z','w']\n")

    # -- errors ---------------------------------------------------------------

    def test_errors_carry_exception_code(self):
        ans = request(self.server.url, None, "SELECT * FROM no_such_table")
        self.assertEqual(ans.status, 404)
        self.assertEqual(ans.headers["X-ClickHouse-Exception-Code"], "60")
        self.assertTrue(ans.text.startswith("Code: 60. DB::Exception: "), ans.text)

        ans = request(self.server.url, None, "SELEC 1")
        self.assertEqual(ans.status, 400)
        self.assertEqual(ans.headers["X-ClickHouse-Exception-Code"], "62")

        self.sql("CREATE TABLE err_t (a UInt64) ENGINE = MergeTree ORDER BY a")
        ans = request(self.server.url, {"query": "INSERT INTO err_t(a) FORMAT RowBinary"}, b"\x01\x02\x03")
        self.assertGreaterEqual(ans.status, 400)
        self.assertIn("X-ClickHouse-Exception-Code", ans.headers)
        # The failed insert left the engine usable and wrote nothing.
        self.assertEqual(self.sql("SELECT count() FROM err_t"), "0\n")

    def test_compression_is_refused_clearly(self):
        ans = request(self.server.url, {"query": "SELECT 1", "compress": "1"})
        self.assertEqual(ans.headers["X-ClickHouse-Exception-Code"], "48")
        self.assertIn("Compression::None", ans.text)
        ans = request(self.server.url, {"query": "INSERT INTO t FORMAT RowBinary", "decompress": "1"}, b"xx")
        self.assertEqual(ans.headers["X-ClickHouse-Exception-Code"], "48")
        ans = request(self.server.url, None, b"SELECT 1", headers={"Content-Encoding": "lz4"})
        self.assertEqual(ans.headers["X-ClickHouse-Exception-Code"], "48")
        # compress=0 / enable_http_compression=0 are fine (no compression anyway).
        ans = request(self.server.url, {"query": "SELECT 1", "compress": "0", "enable_http_compression": "0"})
        self.assertEqual((ans.status, ans.text), (200, "1\n"))

    # -- settings, database, parameters ---------------------------------------

    def test_settings_apply_to_one_request_only(self):
        ans = request(self.server.url, {"query": "SELECT getSetting('max_threads')", "max_threads": "3",
                                        "wait_end_of_query": "1", "session_id": "s1", "async_insert": "0",
                                        "output_format_json_quote_64bit_integers": "0"})
        self.assertEqual((ans.status, ans.text), (200, "3\n"), ans.text)
        self.assertNotEqual(self.sql("SELECT getSetting('max_threads')"), "3\n")
        ans = request(self.server.url, {"query": "SELECT 1", "no_such_setting_xyz": "1"})
        self.assertEqual(ans.headers["X-ClickHouse-Exception-Code"], "115")
        # SET in the SQL itself does not outlive the request either.
        self.sql("SET max_threads = 5")
        self.assertNotEqual(self.sql("SELECT getSetting('max_threads')"), "5\n")

    def test_database_param(self):
        self.sql("CREATE DATABASE IF NOT EXISTS other_db")
        self.sql("CREATE TABLE other_db.t (a UInt64) ENGINE = MergeTree ORDER BY a")
        ans = request(self.server.url, {"database": "other_db"}, "INSERT INTO t VALUES (7)")
        self.assertEqual(ans.status, 200, ans.text)
        ans = request(self.server.url, {"database": "other_db", "query": "SELECT currentDatabase(), sum(a) FROM t"})
        self.assertEqual(ans.text, "other_db\t7\n")
        # The next request without database= is back in `default`.
        self.assertEqual(self.sql("SELECT currentDatabase()"), "default\n")
        ans = request(self.server.url, {"database": "no_such_db", "query": "SELECT 1"})
        self.assertEqual(ans.headers["X-ClickHouse-Exception-Code"], "81")
        # A USE in the SQL does not stick.
        self.sql("USE other_db")
        self.assertEqual(self.sql("SELECT currentDatabase()"), "default\n")

    def test_query_parameters_in_url(self):
        ans = request(self.server.url, {"query": "SELECT {a:UInt32} + 1, {s:String}",
                                        "param_a": "41", "param_s": "it's"})
        self.assertEqual((ans.status, ans.text), (200, "42\tit\\'s\n"), ans.text)
        # They do not leak into the next query.
        ans = request(self.server.url, {"query": "SELECT {a:UInt32}"})
        self.assertEqual(ans.headers["X-ClickHouse-Exception-Code"], "456")

    def test_query_parameters_multipart_as_the_crate_sends(self):
        boundary = "clickhouse-rs-boundary-abcdef0123456789"
        fields = [("query", "SELECT {n:UInt64} * 2 AS x, {name:String} AS y"),
                  ("param_n", "21"), ("param_name", "tollgate")]
        body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                        for k, v in fields) + f"--{boundary}--\r\n".encode()
        ans = request(self.server.url, {"default_format": "RowBinaryWithNamesAndTypes"}, body,
                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        self.assertEqual(ans.status, 200, ans.text)
        self.assertEqual(parse_rbwnat(ans.body), (["x", "y"], ["UInt64", "String"], [(42, "tollgate")]))

    def test_describe_as_the_crate_does_before_insert(self):
        self.sql("CREATE TABLE desc_t (a UInt64, m Map(String, String)) ENGINE = MergeTree ORDER BY a")
        ans = request(self.server.url, {"default_format": "RowBinaryWithNamesAndTypes",
                                        "describe_include_subcolumns": "0"}, "DESCRIBE TABLE `desc_t`")
        self.assertEqual(ans.status, 200, ans.text)
        r = Reader(ans.body)
        names = [r.string() for _ in range(r.varint())]
        self.assertEqual(names[:2], ["name", "type"])

    # -- deduplication --------------------------------------------------------

    def test_insert_deduplication_token(self):
        self.sql("""CREATE TABLE dedup_t (id UInt64, v String) ENGINE = MergeTree ORDER BY id
                    SETTINGS non_replicated_deduplication_window = 1000""")
        body = rb_u64(1) + rb_string("a") + rb_u64(2) + rb_string("b")
        for token in ("batch-1", "batch-1", "batch-2"):
            ans = request(self.server.url, {"query": "INSERT INTO dedup_t(id, v) FORMAT RowBinary",
                                            "insert_deduplication_token": token}, body)
            self.assertEqual(ans.status, 200, ans.text)
        # batch-1 twice is stored once; batch-2 (same rows, new token) again.
        self.assertEqual(self.sql("SELECT count() FROM dedup_t"), "4\n")
        # The token did not stay set for later inserts.
        self.assertEqual(self.sql("SELECT getSetting('insert_deduplication_token')"), "\n")


class AuthTest(unittest.TestCase):
    def test_credentials_checked_when_configured(self):
        tmp = tempfile.mkdtemp(prefix="ch-test-auth-")
        server = ServerProcess(os.path.join(tmp, "data"), extra=["--user", "tg", "--password", "s3cret"])
        try:
            server.start()
            ans = request(server.url, {"query": "SELECT 1"})
            self.assertEqual(ans.status, 403)
            self.assertEqual(ans.headers["X-ClickHouse-Exception-Code"], "516")
            for headers in ({"X-ClickHouse-User": "tg", "X-ClickHouse-Key": "s3cret"},
                            {"Authorization": "Basic " + base64.b64encode(b"tg:s3cret").decode()}):
                ans = request(server.url, {"query": "SELECT 1"}, headers=headers)
                self.assertEqual((ans.status, ans.text), (200, "1\n"))
            ans = request(server.url, {"query": "SELECT 1"},
                          headers={"X-ClickHouse-User": "tg", "X-ClickHouse-Key": "wrong"})
            self.assertEqual(ans.status, 403)
            # /ping needs no credentials.
            with urllib.request.urlopen(server.url + "/ping", timeout=10) as resp:
                self.assertEqual(resp.read(), b"Ok.\n")
        finally:
            server.terminate()
            shutil.rmtree(tmp, ignore_errors=True)


class RestartTest(unittest.TestCase):
    def test_kill_and_restart_keeps_data_and_port(self):
        tmp = tempfile.mkdtemp(prefix="ch-test-restart-")
        server = ServerProcess(os.path.join(tmp, "data"))
        try:
            server.start()
            port = server.port
            self.assertEqual(request(server.url, None, "CREATE TABLE kept (a UInt64) ENGINE = MergeTree ORDER BY a").status, 200)
            self.assertEqual(request(server.url, None, "INSERT INTO kept VALUES (1), (2), (3)").status, 200)
            # Keep a client connection open across the kill, like a pooled client.
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/ping")
            conn.getresponse().read()
            server.kill()
            with self.assertRaises(OSError):
                urllib.request.urlopen(server.url + "/ping", timeout=5)
            server.start()  # same port, same data dir
            self.assertEqual(server.port, port)
            self.assertEqual(request(server.url, {"query": "SELECT sum(a) FROM kept"}).text, "6\n")
            conn.close()
        finally:
            server.terminate()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
