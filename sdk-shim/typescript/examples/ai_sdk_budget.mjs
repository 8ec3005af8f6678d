// A Vercel AI SDK agent whose calls Tollgate can stop.
//
// The agent is unchanged AI SDK code; Tollgate adds three things:
// `tollgate.init`, the middleware around the model (`wrapLanguageModel`),
// and `tollgate.scope` around each turn. The AI SDK's telemetry records
// each model call as a span, which the collector counts against the budget
// of `tollgate.toml` beside this file; once the project passes it, the next
// turn throws `tollgate.Blocked` before any request leaves.
//
//   mock-provider --listen 127.0.0.1:8080 &              # or a real provider
//   tollgate serve --config sdk-shim/typescript/examples/tollgate.toml &
//   OPENAI_BASE_URL=http://127.0.0.1:8080/v1 node ai_sdk_budget.mjs
//
// Prints one JSON line a turn and one for the stop; exits 0 when a budget
// stopped it, 1 when it ran all its turns.

import { createOpenAI } from "@ai-sdk/openai";
import { generateText, wrapLanguageModel } from "ai";
import * as tollgate from "tollgate";
import { tollgateMiddleware } from "tollgate/ai";

const BASE_URL = process.env.OPENAI_BASE_URL ?? "http://127.0.0.1:8080/v1";
const MAX_TURNS = Number(process.env.EXAMPLE_MAX_TURNS ?? "50");
const QUESTIONS = ["Where is my parcel?", "Can I change the address?", "When will it arrive?", "Can I get a refund?"];

// OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318), TOLLGATE_API_URL
// (default http://127.0.0.1:7070), TOLLGATE_KEY and TOLLGATE_GATEWAY apply.
tollgate.init({
  org: process.env.TOLLGATE_ORG ?? "acme",
  project: process.env.TOLLGATE_PROJECT ?? "support-bot",
  environment: process.env.TOLLGATE_ENVIRONMENT ?? "dev",
  app: "ai-sdk-support",
});

const openai = createOpenAI({ baseURL: BASE_URL, apiKey: process.env.OPENAI_API_KEY ?? "sk-example" });
const model = wrapLanguageModel({ model: openai.chat(process.env.EXAMPLE_MODEL ?? "gpt-4o-mini"), middleware: tollgateMiddleware() });

async function turn(question) {
  const { text } = await generateText({
    model,
    system: "You answer customers' questions about their parcels in one sentence.",
    prompt: question,
    experimental_telemetry: { isEnabled: true },
  });
  return text;
}

let code = 1;
for (let i = 0; i < MAX_TURNS; i++) {
  const question = QUESTIONS[i % QUESTIONS.length];
  try {
    const answer = await tollgate.scope({ user: "customer-42", session: "chat-7", route: "support" }, () => turn(question));
    console.log(JSON.stringify({ turn: i, question, answer_chars: answer.length }));
  } catch (err) {
    if (!(err instanceof tollgate.Blocked)) throw err;
    console.log(JSON.stringify({ stopped: true, turns: i, rule: err.rule, reason: err.reason, scope: err.scope, until: err.until?.toISOString() ?? null }));
    code = 0;
    break;
  }
  // Spans are exported in batches; a demo sends each turn's at once so the
  // budget counts it before the next turn.
  await tollgate.flush();
  await new Promise((r) => setTimeout(r, 300));
}
if (code === 1) console.log(JSON.stringify({ stopped: false, turns: MAX_TURNS }));
await tollgate.shutdown();
process.exit(code);
