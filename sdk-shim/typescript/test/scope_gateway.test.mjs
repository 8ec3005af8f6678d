// Scope on the rows of the Vercel AI SDK's spans and the Anthropic SDK's
// own spans, with no leaks between concurrent promises; the gateway flip
// (same rows apart from `mode`); and the AI SDK middleware refusing while
// blocked.

import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { createAnthropic } from "@ai-sdk/anthropic";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText, wrapLanguageModel } from "ai";
import * as tollgate from "tollgate";
import { tollgateMiddleware } from "tollgate/ai";

import { anthropicClient, message } from "./clients.mjs";
import { Collector, msUntil, startProvider } from "./servers.mjs";

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

function models() {
  const middleware = tollgateMiddleware();
  const openai = createOpenAI({ apiKey: "sk-test-openai", baseURL: `${provider.url}/v1` });
  const anthropic = createAnthropic({ apiKey: "sk-ant-test", baseURL: `${provider.url}/v1` });
  return {
    gpt: wrapLanguageModel({ model: openai.chat("gpt-4o-mini"), middleware }),
    claude: wrapLanguageModel({ model: anthropic("claude-haiku-4-5"), middleware }),
  };
}

const telemetry = { isEnabled: true };

async function ask(model, stream = false) {
  if (stream) {
    // streamText reports a failed call to `onError` (its text then rejects
    // with NoOutputGeneratedError): the agent sees the refusal there.
    let failure;
    const result = streamText({
      model, prompt: "What is the capital of France?", maxOutputTokens: 16, maxRetries: 0, experimental_telemetry: telemetry,
      onError: ({ error }) => {
        failure = error;
      },
    });
    try {
      return await result.text;
    } catch (err) {
      throw failure ?? err;
    }
  }
  const result = await generateText({ model, prompt: "What is the capital of France?", maxOutputTokens: 16, maxRetries: 0, experimental_telemetry: telemetry });
  return result.text;
}

test("scope lands on the rows of AI SDK spans of concurrent promises, without leaks", async () => {
  const c = await collector();
  const project = "scope-concurrent";
  tollgate.init({ endpoint: c.otlpHttp, api: c.api, org: "acme", project, environment: "test", app: "shim-test", gateway: "off" });
  const { gpt } = models();
  const seen = [];
  await tollgate.scope({ route: "batch" }, () =>
    Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        tollgate.scope({ user: `u-${i}`, session: `s-${i}` }, async () => {
          for (let turn = 0; turn < 2; turn++) {
            await new Promise((r) => setTimeout(r, Math.random() * 20));
            assert.ok(await ask(gpt, turn === 1));
            const now = tollgate.currentScope();
            seen.push([i, now.user, now.session, now.route]);
          }
        }),
      ),
    ),
  );
  assert.deepEqual(tollgate.currentScope(), {});
  assert.equal(seen.length, 16);
  for (const [i, user, session, route] of seen) assert.deepEqual([user, session, route], [`u-${i}`, `s-${i}`, "batch"]);
  await tollgate.flush();
  const rows = await c.waitCalls(16, { project });
  assert.equal(rows.length, 16, JSON.stringify(rows));
  for (const row of rows) {
    assert.match(row.user, /^u-\d$/);
    assert.equal(row.session, `s-${row.user.slice(2)}`, JSON.stringify(row));
    assert.deepEqual([row.route, row.org, row.app, row.environment, row.provider, row.mode], ["batch", "acme", "shim-test", "test", "openai", "observe"]);
    assert.ok(row.input_tokens > 0 && row.output_tokens > 0, JSON.stringify(row));
  }
  const perUser = new Map();
  for (const row of rows) perUser.set(row.user, (perUser.get(row.user) ?? 0) + 1);
  assert.deepEqual([...perUser.values()], Array(8).fill(2));
  assert.equal(rows.filter((r) => r.stream).length, 8);
});

test("scope lands on the Anthropic SDK's own spans", async () => {
  const c = await collector();
  const project = "scope-anthropic";
  tollgate.init({ endpoint: c.otlpHttp, api: c.api, org: "acme", project, environment: "test", app: "shim-test", gateway: "off" });
  const client = anthropicClient(provider.url);
  await tollgate.scope({ user: "u-5", session: "s-5", route: "billing" }, async () => {
    await message(client);
    await message(client, true);
  });
  await tollgate.flush();
  const rows = await c.waitCalls(2, { project });
  assert.deepEqual(
    rows.map((r) => [r.user, r.session, r.route, r.provider, r.stream]).sort(),
    [["u-5", "s-5", "billing", "anthropic", false], ["u-5", "s-5", "billing", "anthropic", true]],
  );
});

const COMPARED = [
  "org", "project", "app", "environment", "user", "session", "route", "provider", "operation",
  "request_model", "input_tokens", "output_tokens", "cost_usd", "status", "stream",
];
const compared = (row) => JSON.stringify(COMPARED.map((k) => row[k] ?? null));

test("the same agent with the gateway off and on gives the same rows apart from mode", async () => {
  const c = await collector({ gateway: true });
  const project = "flip";
  const key = await c.createKey({ name: "flip agent", org: "acme", project });
  const common = { endpoint: c.otlpHttp, api: c.api, org: "acme", project, environment: "test", app: "flip-agent", gatewayKey: key };
  const agent = async () => {
    const { gpt, claude } = models();
    await tollgate.scope({ user: "u-7", session: "s-7", route: "support" }, async () => {
      assert.ok(await ask(gpt));
      assert.ok(await ask(gpt, true));
      assert.ok(await ask(claude));
      assert.ok(await ask(claude, true));
    });
  };
  const CALLS = 4;

  tollgate.init({ ...common, gateway: "off" });
  let before = provider.count;
  await agent();
  assert.equal(provider.count, before + CALLS);
  await tollgate.flush();
  const observed = await c.waitCalls(CALLS, { project });
  assert.deepEqual(observed.map((r) => r.mode), Array(CALLS).fill("observe"));

  tollgate.init({ ...common, gateway: "auto" }); // the collector says its gateway runs
  before = provider.count;
  await agent();
  assert.equal(provider.count, before + CALLS, "each call reached the provider once, through the gateway");
  await tollgate.flush();
  await c.waitCalls(2 * CALLS, { project });
  await new Promise((r) => setTimeout(r, 1000)); // spans of gateway calls must not come as extra rows
  const rows = await c.calls({ project });
  assert.deepEqual(rows.map((r) => r.mode).sort(), [...Array(CALLS).fill("gateway"), ...Array(CALLS).fill("observe")]);
  const observe = rows.filter((r) => r.mode === "observe").map(compared).sort();
  const gateway = rows.filter((r) => r.mode === "gateway").map(compared).sort();
  assert.deepEqual(gateway, observe);
  assert.deepEqual(new Set(rows.map((r) => r.user)), new Set(["u-7"]));
});

test("the AI SDK middleware refuses while blocked, without reaching the provider, and resumes after", async () => {
  const c = await collector();
  const project = "middleware";
  tollgate.init({ endpoint: c.otlpHttp, api: c.api, org: "acme", project, environment: "test", app: "shim-test", gateway: "off" });
  const { gpt, claude } = models();
  assert.ok(await ask(gpt));
  await c.block({ project }, "over budget");
  assert.ok((await msUntil(async () => (await tollgate.check().then(() => false, (e) => e instanceof tollgate.Blocked)), 1000)) < 1000);
  const before = provider.count;
  for (const [name, call] of [["generate", () => ask(gpt)], ["stream", () => ask(gpt, true)], ["anthropic", () => ask(claude)]]) {
    const err = await call().then(() => undefined, (e) => e);
    const blocked = err instanceof tollgate.Blocked ? err : err?.cause;
    assert.ok(blocked instanceof tollgate.Blocked, `${name}: ${err}`);
    assert.deepEqual([blocked.rule, blocked.reason, blocked.scope], ["admin", "over budget", `project=${project}`], name);
  }
  assert.equal(provider.count, before);
  await c.lift({ project });
  await msUntil(async () => tollgate.check().then(() => true, () => false), 1000);
  assert.ok(await ask(gpt, true));
  assert.equal(provider.count, before + 1);
});
