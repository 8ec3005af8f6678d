// The example agent (Vercel AI SDK) runs against the real collector with
// the example's budget and the mock provider: it is stopped by the budget
// without its refused call reaching the provider, and runs again once the
// block is lifted.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { Collector, startProvider } from "./servers.mjs";

const EXAMPLES = join(dirname(fileURLToPath(import.meta.url)), "..", "examples");
const RULE = "example-daily-tokens";
const LIMIT = 300;
let provider;
let c;

before(async () => {
  provider = await startProvider();
  c = await Collector.start(provider.url, { extra: readFileSync(join(EXAMPLES, "tollgate.toml"), "utf8") });
});
after(async () => {
  await c.stop();
  await provider.stop();
});

function run(project, turns) {
  const env = {
    ...process.env, OPENAI_BASE_URL: `${provider.url}/v1`, OPENAI_API_KEY: "sk-test-openai",
    OTEL_EXPORTER_OTLP_ENDPOINT: c.otlpHttp, TOLLGATE_API_URL: c.api, TOLLGATE_PROJECT: project,
    TOLLGATE_GATEWAY: "off", EXAMPLE_MAX_TURNS: String(turns),
  };
  return new Promise((resolve) => {
    execFile("node", ["ai_sdk_budget.mjs"], { cwd: EXAMPLES, env, timeout: 180_000 }, (err, stdout, stderr) => {
      const lines = stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
      resolve({ code: err ? err.code : 0, lines, stderr });
    });
  });
}

test("the AI SDK example agent is stopped by its budget and runs again when lifted", async () => {
  const project = "ai-sdk";
  let before = provider.count;
  const { code, lines, stderr } = await run(project, 40);
  const stop = lines.at(-1);
  assert.equal(code, 0, `${JSON.stringify(lines)}\n${stderr.slice(-3000)}`);
  assert.deepEqual([stop.stopped, stop.rule, stop.reason, stop.scope], [true, RULE, "budget_exceeded", `project=${project}`]);
  const turns = stop.turns;
  assert.ok(turns >= 2, JSON.stringify(lines));
  // One model call a turn; the refused turn reached nothing.
  assert.equal(provider.count - before, turns);
  const rows = (await c.waitCalls(turns, { project })).filter((r) => r.status === "ok");
  assert.equal(rows.length, turns);
  const used = rows.reduce((n, r) => n + r.input_tokens + r.output_tokens, 0);
  assert.ok(used >= LIMIT, `${used}`);
  assert.ok(used - (rows[0].input_tokens + rows[0].output_tokens) < LIMIT, "it ran on past the budget");
  assert.deepEqual(new Set(rows.map((r) => `${r.user}/${r.session}/${r.route}/${r.app}`)), new Set(["customer-42/chat-7/support/ai-sdk-support"]));

  await c.lift({ project });
  before = provider.count;
  const again = await run(project, 3);
  assert.equal(again.code, 1, again.stderr.slice(-2000));
  assert.deepEqual(again.lines.map((l) => l.turn ?? null), [0, 1, 2, null]);
  assert.equal(provider.count - before, 3);
});
