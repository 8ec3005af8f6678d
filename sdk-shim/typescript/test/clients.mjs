// Small agents the tests run: the official clients, guarded, pointed at the
// mock provider (through its counting proxy), and the shim imported by its
// package name, as an agent would (the built package, not the sources).

import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import * as tollgate from "tollgate";

export const MODEL = "gpt-4o-mini";
export const CLAUDE = "claude-haiku-4-5";
export const MESSAGES = [{ role: "user", content: "What is the capital of France?" }];

export function openaiClient(providerUrl) {
  return tollgate.guard(new OpenAI({ apiKey: "sk-test-openai", baseURL: `${providerUrl}/v1`, maxRetries: 0 }));
}

export function anthropicClient(providerUrl) {
  return tollgate.guard(new Anthropic({ apiKey: "sk-ant-test", baseURL: providerUrl, maxRetries: 0 }));
}

export async function chat(client, stream = false) {
  if (stream) {
    const parts = [];
    const chunks = await client.chat.completions.create({
      model: MODEL, messages: MESSAGES, max_tokens: 16, stream: true, stream_options: { include_usage: true },
    });
    for await (const chunk of chunks) {
      const text = chunk.choices[0]?.delta?.content;
      if (text) parts.push(text);
    }
    return parts.join("");
  }
  const answer = await client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 16 });
  return answer.choices[0].message.content ?? "";
}

export async function message(client, stream = false) {
  if (stream) {
    const s = client.messages.stream({ model: CLAUDE, max_tokens: 16, messages: MESSAGES });
    return (await s.finalMessage()).content[0].text;
  }
  const answer = await client.messages.create({ model: CLAUDE, max_tokens: 16, messages: MESSAGES });
  return answer.content[0].text;
}
