// The kill-switch: guarded clients refuse calls of a blocked scope before
// they leave the process, learn of a block within a second, resume when it
// is lifted, and fail open or closed as configured.

import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import * as tollgate from "tollgate";

import { anthropicClient, chat, message, openaiClient } from "./clients.mjs";
import { Collector, freePort, msUntil, startProvider } from "./servers.mjs";

const PROJECT = "support";
let provider;
const collectors = [];

before(async () => {
  provider = await startProvider();
});
afterEach(async () => {
  await tollgate.shutdown();
  await Promise.all(collectors.splice(0).map((c) => c.stop()));
});
after(() => provider.stop());

async function collector(options) {
  const c = await Collector.start(provider.url, options);
  collectors.push(c);
  return c;
}

function init(c, extra = {}) {
  tollgate.init({
    endpoint: c.otlpHttp, api: c.api, org: "acme", project: PROJECT, environment: "test",
    app: "shim-test", gateway: "off", ...extra,
  });
}

async function blockedNow() {
  try {
    await tollgate.check();
    return false;
  } catch (err) {
    if (err instanceof tollgate.Blocked) return true;
    throw err;
  }
}

test("a blocked project is refused within a second without reaching the provider", async () => {
  const c = await collector();
  init(c);
  const client = openaiClient(provider.url);
  assert.ok(await chat(client));
  const before = provider.count;

  await c.block({ project: PROJECT }, "over budget", 600);
  const latency = await msUntil(blockedNow, 1000);
  assert.ok(latency < 1000, `${latency} ms`);

  const err = await chat(client).then(() => undefined, (e) => e);
  assert.ok(err instanceof tollgate.Blocked, String(err));
  assert.ok(err instanceof OpenAI.OpenAIError, "the SDK must neither retry nor wrap it");
  assert.equal(err.rule, "admin");
  assert.equal(err.reason, "over budget");
  assert.equal(err.scope, `project=${PROJECT}`);
  assert.ok(err.until instanceof Date);
  assert.ok(Math.abs(err.until.getTime() - (Date.now() + 600_000)) < 5000, err.until.toISOString());
  await assert.rejects(chat(client, true), tollgate.Blocked);
  assert.equal(provider.count, before, "a refused call reached the provider");

  await c.lift({ project: PROJECT });
  assert.ok((await msUntil(async () => !(await blockedNow()), 1000)) < 1000);
  assert.ok(await chat(client));
  assert.equal(provider.count, before + 1);
});

test("every client kind, streaming too, is refused within a second of the block and served after the lift", async () => {
  const c = await collector();
  init(c);
  const oa = openaiClient(provider.url);
  const an = anthropicClient(provider.url);
  const calls = [
    ["openai", () => chat(oa), OpenAI.OpenAIError],
    ["openai stream", () => chat(oa, true), OpenAI.OpenAIError],
    ["openai withOptions", () => chat(oa.withOptions({ timeout: 5000 })), OpenAI.OpenAIError],
    ["anthropic", () => message(an), Anthropic.AnthropicError],
    ["anthropic stream", () => message(an, true), Anthropic.AnthropicError],
  ];
  for (const [, call] of calls) await call();
  await c.block({ project: PROJECT }, "over budget");
  const blockedAt = performance.now();
  // The next call of each client is refused within 1 s of the block.
  await msUntil(async () => {
    try {
      await calls[0][1]();
      return false;
    } catch (err) {
      if (err instanceof tollgate.Blocked) return true;
      throw err;
    }
  }, 1000);
  assert.ok(performance.now() - blockedAt < 1000);
  const before = provider.count;
  for (const [name, call, sdkError] of calls) {
    const err = await call().then(() => undefined, (e) => e);
    assert.ok(err instanceof tollgate.Blocked, `${name}: ${err}`);
    assert.ok(err instanceof sdkError, name);
    assert.equal(err.rule, "admin", name);
  }
  assert.equal(provider.count, before, "a refused call reached the provider");

  await c.lift({ project: PROJECT });
  await msUntil(async () => !(await blockedNow()), 1000);
  for (const [, call] of calls) assert.ok(await call());
  assert.equal(provider.count, before + calls.length);
});

test("a block on one user refuses only that user's calls", async () => {
  const c = await collector();
  init(c);
  const client = openaiClient(provider.url);
  await c.block({ project: PROJECT, user: "u-over" }, "user over budget");
  const before = provider.count;
  await tollgate.scope({ user: "u-over", session: "s-1" }, async () => {
    // Asked for at once on first sight of the scope.
    const err = await chat(client).then(() => undefined, (e) => e);
    assert.ok(err instanceof tollgate.Blocked, String(err));
    assert.equal(err.scope, `project=${PROJECT},user=u-over`);
  });
  assert.ok(await tollgate.scope({ user: "u-fine" }, () => chat(client)));
  assert.ok(await chat(client));
  assert.equal(provider.count, before + 2);

  // A block set while the user's scope is in use is polled within a second.
  await tollgate.scope({ user: "u-later" }, async () => {
    assert.ok(await chat(client));
    await c.block({ project: PROJECT, user: "u-later" });
    assert.ok((await msUntil(blockedNow, 1000)) < 1000);
    await assert.rejects(chat(client), tollgate.Blocked);
  });
  assert.equal(provider.count, before + 3);
});

for (const mode of ["open", "closed"]) {
  test(`an unreachable collector fails ${mode}`, async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    tollgate.init({ api: dead, project: PROJECT, gateway: "off", export: false, onUnreachable: mode, firstStateTimeoutMs: 500 });
    const client = openaiClient(provider.url);
    const before = provider.count;
    if (mode === "closed") {
      const err = await chat(client).then(() => undefined, (e) => e);
      assert.ok(err instanceof tollgate.CollectorUnreachable, String(err));
      assert.equal(err.reason, "collector_unreachable");
      assert.equal(provider.count, before);
    } else {
      assert.ok(await chat(client));
      // Only the first call waits for the collector's first answer.
      const start = performance.now();
      assert.ok(await chat(client));
      assert.ok(performance.now() - start < 250);
      assert.equal(provider.count, before + 2);
    }
  });
}

test("the watcher reconnects after the collector restarts", async () => {
  const ports = { grpc: await freePort(), http: await freePort(), api: await freePort(), gateway: 0 };
  const c = await collector({ ports });
  init(c, { reconnectMaxMs: 1000 });
  const client = openaiClient(provider.url);
  assert.ok(await chat(client));
  await c.stop();
  // Fail open while it is down.
  await new Promise((r) => setTimeout(r, 500));
  assert.ok(await chat(client));
  await c.start();
  await c.block({ project: PROJECT });
  // The stream is reopened (or the state polled meanwhile) within backoff + poll.
  assert.ok((await msUntil(blockedNow, 2000)) < 2000);
  await assert.rejects(chat(client), tollgate.Blocked);
});
