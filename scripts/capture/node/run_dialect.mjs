// Node counterpart of scripts/capture/run_dialect.py: runs one dialect against
// the mock provider and exports its spans over OTLP/HTTP (protobuf).
//
// Usage: node run_dialect.mjs <dialect> <mock-base-url> <otlp-base-url> <result.json>
//
// Writes <result.json> in the shape run_dialect.py writes (merge.py reads
// both): the packages and versions used and, per call in order, what the
// framework reported and the call's time window. What the mock returned for
// each model request comes from the wire recorder's log, not from here.
//
// The AI SDK is the 6.x line: its telemetry is built in
// (experimental_telemetry, spans through @opentelemetry/api's global tracer
// provider) and it runs on Node 18+; ai 7 moved telemetry into @ai-sdk/otel
// and needs Node 22. The OpenTelemetry JS SDK is the 2.x line for the same
// reason (3.x needs Node 22.15).

import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

import { createOpenAI } from '@ai-sdk/openai';
import { trace } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { generateText, stepCountIs, streamText, tool } from 'ai';
import { z } from 'zod';

const API_KEY = 'sk-fixture-not-a-secret';
const OPENAI_MODEL = 'gpt-4o-mini';
const SYSTEM = 'You are a terse assistant.';
const HELLO = 'Say hello to the Tollgate fixtures.';
const WEATHER_QUESTION = 'What is the weather in Paris? Use the tool, then answer in one line.';

const DIALECTS = {
  vercel_ai_sdk: {
    instrumentation: 'ai',
    provider: '@ai-sdk/openai',
    support: [
      '@ai-sdk/provider',
      '@ai-sdk/provider-utils',
      '@opentelemetry/api',
      '@opentelemetry/sdk-trace-node',
      '@opentelemetry/sdk-trace-base',
      '@opentelemetry/exporter-trace-otlp-proto',
      '@opentelemetry/resources',
    ],
    family: 'Vercel AI SDK built-in OpenTelemetry telemetry (experimental_telemetry), Node',
    notes: [
      "generate_text_with_tool: one generateText call with a get_weather tool and stopWhen: stepCountIs(5); " +
        'the mock answers the first request with the tool call, the second (after the tool result) with ' +
        'text, so the ai.generateText span covers two model calls (ai.generateText.doGenerate spans)',
      'stream_text: one streamText call (the openai chat provider asks for stream usage itself)',
      'both use the chat-completions model (openai.chat)',
    ],
  },
};
// The same calls on the Responses model (openai.responses, the provider's
// default kind), now that the mock serves POST /v1/responses.
DIALECTS.vercel_ai_sdk_responses = {
  ...DIALECTS.vercel_ai_sdk,
  family: 'Vercel AI SDK built-in OpenTelemetry telemetry (experimental_telemetry), Node, OpenAI Responses API',
  notes: [
    DIALECTS.vercel_ai_sdk.notes[0],
    'stream_text: one streamText call (usage arrives in the response.completed event)',
    'both use the Responses model (openai.responses): POST /v1/responses',
  ],
};

const require = createRequire(import.meta.url);

function versions(spec) {
  const found = { node: process.versions.node };
  for (const name of [spec.instrumentation, spec.provider, ...spec.support]) {
    try {
      // Read the installed package.json (exports maps may hide it from require).
      const main = require.resolve(name);
      const root = main.slice(0, main.lastIndexOf(`node_modules/${name}/`) + `node_modules/${name}/`.length);
      found[name] = JSON.parse(readFileSync(`${root}package.json`, 'utf8')).version;
    } catch {
      // not installed
    }
  }
  return found;
}

function resourceAttributes(dialect) {
  return { 'service.name': `${dialect}-agent`, 'deployment.environment.name': 'test' };
}

// Wall-clock nanoseconds, the clock the spans and the wire recorder use; a
// millisecond of slack each side since Date.now() has millisecond resolution.
const nowNs = () => BigInt(Date.now()) * 1_000_000n;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function usageOf(usage) {
  return usage && {
    inputTokens: usage.inputTokens,
    outputTokens: usage.outputTokens,
    totalTokens: usage.totalTokens,
    cachedInputTokens: usage.cachedInputTokens,
    reasoningTokens: usage.reasoningTokens,
  };
}

function vercelCalls(mockBase, kind = 'chat') {
  const openai = createOpenAI({ baseURL: `${mockBase}/v1`, apiKey: API_KEY });
  const model = () => (kind === 'responses' ? openai.responses(OPENAI_MODEL) : openai.chat(OPENAI_MODEL));
  const api = kind === 'responses' ? 'openai_responses' : 'openai_chat';
  const telemetry = { isEnabled: true };
  const getWeather = tool({
    description: 'Current weather for a city.',
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => `Sunny and 21 C in ${city}.`,
  });

  return [
    {
      name: 'generate_text_with_tool',
      api,
      streamed: false,
      headers: {},
      run: async () => {
        const result = await generateText({
          model: model(),
          system: SYSTEM,
          prompt: WEATHER_QUESTION,
          tools: { get_weather: getWeather },
          stopWhen: stepCountIs(5),
          maxOutputTokens: 64,
          maxRetries: 0,
          experimental_telemetry: { ...telemetry, functionId: 'weather' },
        });
        return {
          status: 200,
          output_text: result.text,
          model_requests: result.steps.length,
          finish_reasons: result.steps.map((s) => s.finishReason),
          response_ids: result.steps.map((s) => s.response.id),
          step_usage: result.steps.map((s) => usageOf(s.usage)),
          framework_usage: usageOf(result.totalUsage),
        };
      },
    },
    {
      name: 'stream_text',
      api,
      streamed: true,
      headers: { 'x-mock-output-tokens': '7' },
      run: async () => {
        const result = streamText({
          model: model(),
          system: SYSTEM,
          prompt: HELLO,
          maxOutputTokens: 64,
          maxRetries: 0,
          headers: { 'x-mock-output-tokens': '7' },
          experimental_telemetry: { ...telemetry, functionId: 'hello' },
        });
        let chunks = 0;
        let text = '';
        for await (const delta of result.textStream) {
          chunks += 1;
          text += delta;
        }
        const response = await result.response;
        return {
          status: 200,
          response_id: response.id,
          response_model: response.modelId,
          finish_reason: await result.finishReason,
          chunks,
          output_text: text,
          framework_usage: usageOf(await result.usage),
        };
      },
    },
  ];
}

const SCENARIOS = {
  vercel_ai_sdk: (mockBase) => vercelCalls(mockBase, 'chat'),
  vercel_ai_sdk_responses: (mockBase) => vercelCalls(mockBase, 'responses'),
};

async function main() {
  const [dialect, mockBase, otlpBase, resultPath] = process.argv.slice(2);
  const spec = DIALECTS[dialect];
  if (!spec) throw new Error(`unknown dialect ${dialect}`);

  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes(resourceAttributes(dialect)),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: `${otlpBase}/v1/traces` }))],
  });
  provider.register(); // global tracer provider + AsyncLocalStorage context
  if (!trace.getTracerProvider()) throw new Error('no global tracer provider');

  const results = [];
  const mismatches = [];
  for (const call of SCENARIOS[dialect](mockBase)) {
    const started = nowNs() - 1_000_000n;
    let observed;
    try {
      observed = await call.run();
    } catch (err) {
      observed = { status: null, exception: String(err), stack: err?.stack };
    }
    const ended = nowNs() + 1_000_000n;
    if (observed.status !== 200) mismatches.push(call.name);
    results.push({
      name: call.name,
      api: call.api,
      request_model: OPENAI_MODEL,
      streamed: call.streamed,
      include_usage: call.streamed,
      mock_headers: call.headers,
      expected_status: 200,
      observed,
      window_unix_nano: [Number(started), Number(ended)],
    });
    await sleep(20); // keeps the windows apart
  }

  await provider.forceFlush();
  await provider.shutdown();

  const output = {
    dialect,
    library_family: spec.family,
    instrumentation_package: spec.instrumentation,
    versions: versions(spec),
    resource_attributes: resourceAttributes(dialect),
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('OTEL_'))),
    calls: results,
    notes: spec.notes,
    mismatches,
  };
  writeFileSync(resultPath, JSON.stringify(output, null, 2));
  if (mismatches.length) {
    console.error(`${dialect}: status mismatch for ${mismatches}`);
    process.exit(1);
  }
}

await main();
