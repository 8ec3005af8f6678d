// The real processes the tests run against: the `tollgate` binary and the
// shared mock provider (`mock-provider`, built from tests/mock-provider),
// with a counting proxy in front of the mock so a test can tell whether a
// request reached the provider at all. The same set-up as the Python
// shim's tests (sdk-shim/python/tests/servers.py).

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync, openSync, closeSync } from "node:fs";
import * as http from "node:http";
import { tmpdir } from "node:os";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const ADMIN_TOKEN = "admin-token-for-the-typescript-shim-tests";

/** A binary of the workspace: `$envName`, else the cargo target dir's. */
export function binary(envName, name) {
  let path = process.env[envName];
  if (!path) {
    let target = process.env.CARGO_TARGET_DIR || join(REPO, "target");
    if (!isAbsolute(target)) target = join(REPO, target);
    path = join(target, "debug", name);
  }
  if (!existsSync(path)) {
    throw new Error(
      `${path} does not exist: build it with \`cargo build -p tollgate-collector --bin tollgate ` +
        `-p tollgate-mock-provider --bin mock-provider\`, or set ${envName}`,
    );
  }
  return path;
}

/** A free loopback port. */
export function freePort() {
  return new Promise((res, rej) => {
    const s = http.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
    s.on("error", rej);
  });
}

function firstLine(proc, matches, timeoutMs) {
  return new Promise((res, rej) => {
    const lines = createInterface({ input: proc.stdout });
    const timer = setTimeout(() => rej(new Error("no start-up line in time")), timeoutMs);
    lines.on("line", (line) => {
      if (matches(line)) {
        clearTimeout(timer);
        res(line);
      }
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      rej(new Error(`exited with ${code} before starting`));
    });
  });
}

function stopProcess(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((res) => {
    const kill = setTimeout(() => proc.kill("SIGKILL"), 30_000);
    proc.once("exit", () => {
      clearTimeout(kill);
      res();
    });
    proc.kill("SIGTERM");
  });
}

/** `mock-provider` on a free port. */
export async function startMockProvider() {
  const proc = spawn(binary("TOLLGATE_MOCK_PROVIDER_BIN", "mock-provider"), [], { stdio: ["ignore", "pipe", "ignore"] });
  const line = await firstLine(proc, (l) => l.startsWith("listening on "), 30_000);
  return { url: line.slice("listening on ".length).trim(), stop: () => stopProcess(proc) };
}

/** Forwards every request to `upstream` (streams relayed as they come) and
 * counts them: the provider's request count. */
export async function startCountingProxy(upstream) {
  const target = new URL(upstream);
  const proxy = { paths: [], get count() { return this.paths.length; } };
  const server = http.createServer((req, res) => {
    proxy.paths.push(req.url);
    const headers = { ...req.headers };
    delete headers.host;
    delete headers.connection;
    const out = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers },
      (up) => {
        const h = { ...up.headers, connection: "close" };
        res.writeHead(up.statusCode ?? 502, h);
        up.pipe(res);
      },
    );
    out.on("error", () => res.destroy());
    req.pipe(out);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  proxy.url = `http://127.0.0.1:${server.address().port}`;
  proxy.stop = () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); });
  return proxy;
}

function addr(line, key) {
  for (const word of line.split(/\s+/)) {
    if (word.startsWith(`${key}=`)) {
      const value = word.slice(key.length + 1);
      if (value === "off") return undefined;
      return value.startsWith("http") ? value : `http://${value}`;
    }
  }
  return undefined;
}

/** `tollgate serve` on free loopback ports, an SQLite store in a temporary
 * folder, the admin API on, and (when `gateway`) the inline gateway in
 * front of `provider`. */
export class Collector {
  constructor(provider, { gateway = false, extra = "", ports } = {}) {
    this.dir = mkdtempSync(join(tmpdir(), "tollgate-ts-shim-"));
    this.ports = ports ?? { grpc: 0, http: 0, api: 0, gateway: 0 };
    const gatewaySection = gateway
      ? `
[gateway]
enabled = true
listen = "127.0.0.1:${this.ports.gateway}"

[[gateway.providers]]
name = "openai"
kind = "openai"
base_url = "${provider}/v1"
api_key_env = "SHIM_TEST_OPENAI_KEY"

[[gateway.providers]]
name = "anthropic"
kind = "anthropic"
base_url = "${provider}"
api_key_env = "SHIM_TEST_ANTHROPIC_KEY"
`
      : "";
    this.config = join(this.dir, "tollgate.toml");
    writeFileSync(
      this.config,
      `
[receivers.otlp]
grpc_listen = "127.0.0.1:${this.ports.grpc}"
http_listen = "127.0.0.1:${this.ports.http}"

[api]
listen = "127.0.0.1:${this.ports.api}"

[storage]
type = "sqlite"
path = "${join(this.dir, "data")}"

[admin]
token = "${ADMIN_TOKEN}"
${gatewaySection}
${extra}
`,
    );
  }

  static async start(provider, options) {
    const c = new Collector(provider, options);
    await c.start();
    return c;
  }

  async start() {
    const env = { ...process.env, RUST_LOG: "info", SHIM_TEST_OPENAI_KEY: "sk-test-openai", SHIM_TEST_ANTHROPIC_KEY: "sk-ant-test" };
    const stderr = openSync(join(this.dir, "stderr.log"), "a");
    this.proc = spawn(binary("TOLLGATE_BIN", "tollgate"), ["serve", "--config", this.config], {
      stdio: ["ignore", "pipe", stderr],
      env,
    });
    closeSync(stderr);
    let line;
    try {
      line = await firstLine(this.proc, (l) => l.startsWith("tollgate listening:"), 60_000);
    } catch (err) {
      await this.stop();
      throw new Error(`tollgate did not start (${err.message}): ${this.log().slice(-2000)}`);
    }
    this.proc.stdout.resume();
    this.api = addr(line, "api");
    this.otlpHttp = addr(line, "otlp_http");
    this.gateway = addr(line, "gateway");
  }

  log() {
    return readFileSync(join(this.dir, "stderr.log"), "utf8");
  }

  stop() {
    return stopProcess(this.proc);
  }

  async request(method, path, body, token = ADMIN_TOKEN) {
    const headers = { "content-type": "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch(`${this.api}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 500)}`);
    return text ? JSON.parse(text) : undefined;
  }

  block(scope, reason = "over budget", forS = 3600) {
    return this.request("POST", "/admin/v1/enforcement", { scope, reason, for_s: forS });
  }

  lift(scope) {
    return this.request("DELETE", `/admin/v1/enforcement?${new URLSearchParams(scope)}`);
  }

  async createKey(body) {
    return (await this.request("POST", "/admin/v1/keys", body)).key;
  }

  async calls(filters) {
    const q = new URLSearchParams({ ...filters, limit: "1000" });
    return (await this.request("GET", `/v1/calls?${q}`)).rows;
  }

  /** The stored calls matching `filters` once there are at least `n`. */
  async waitCalls(n, filters, timeoutMs = 20_000) {
    const deadline = Date.now() + timeoutMs;
    let rows = await this.calls(filters);
    while (rows.length < n && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      rows = await this.calls(filters);
    }
    if (rows.length < n) throw new Error(`${rows.length} calls stored for ${JSON.stringify(filters)}, expected ${n}: ${JSON.stringify(rows)}`);
    return rows;
  }
}

/** The mock provider behind its counting proxy, for one test file. */
export async function startProvider() {
  const mock = await startMockProvider();
  const proxy = await startCountingProxy(mock.url);
  const stop = proxy.stop;
  proxy.stop = async () => {
    await stop();
    await mock.stop();
  };
  return proxy;
}

/** How long until `condition()` holds, checked every 10 ms; throws past `limitMs`. */
export async function msUntil(condition, limitMs) {
  const start = performance.now();
  while (!(await condition())) {
    if (performance.now() - start > limitMs) throw new Error(`not within ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return performance.now() - start;
}
