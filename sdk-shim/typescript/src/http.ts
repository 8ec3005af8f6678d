//! Requests to the collector's API with Node's own `http`/`https`, whose
//! sockets are unref'd: the watcher never keeps an agent's process alive.
//! One JSON GET, and a server-sent-events reader for `/v1/enforcement/stream`.

import { readFileSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";

import { VERSION } from "./version.js";

/** The collector could not be asked (or answered something unusable). */
export class CollectorError extends Error {
  override name = "CollectorError";
}

/** The collector refused the key (401) or what it asked for (403). */
export class KeyRefused extends CollectorError {
  override name = "KeyRefused";
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(`the collector answered ${status}: ${message}`);
  }
}

let caCache: { file: string; ca: Buffer } | undefined;

function ca(): Buffer | undefined {
  // The collector's CA, when private, is the one its OTLP exporter trusts.
  const file = process.env.OTEL_EXPORTER_OTLP_CERTIFICATE;
  if (!file) return undefined;
  if (caCache?.file !== file) caCache = { file, ca: readFileSync(file) };
  return caCache.ca;
}

export function url(api: string, path: string, query: Record<string, string> = {}): string {
  const params = new URLSearchParams(Object.entries(query).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const q = params.toString();
  return q ? `${api}${path}?${q}` : `${api}${path}`;
}

function withoutQuery(target: string): string {
  return target.split("?")[0] ?? target;
}

/** `held`: a caller waits for this answer, so its socket keeps the process
 * alive (the watcher's own requests never do). */
function open(target: string, key: string | undefined, accept: string, timeoutMs: number, held = false): Promise<http.IncomingMessage> {
  const headers: Record<string, string> = { accept, "user-agent": `tollgate-node/${VERSION}` };
  if (key) headers.authorization = `Bearer ${key}`;
  const u = new URL(target);
  const client = u.protocol === "https:" ? https : http;
  return new Promise((resolve, reject) => {
    const options: https.RequestOptions = { method: "GET", headers, timeout: timeoutMs, agent: false };
    const authority = ca();
    if (authority) options.ca = authority;
    const req = client.request(u, options, (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 200 && status < 300) {
        resolve(res);
        return;
      }
      readBody(res, 4096).then(
        (body) => reject(refusal(status, body)),
        () => reject(refusal(status, "")),
      );
    });
    if (!held) req.on("socket", (socket) => socket.unref());
    req.on("timeout", () => req.destroy(new CollectorError(`no answer from ${withoutQuery(target)} within ${timeoutMs} ms`)));
    req.on("error", (err) =>
      reject(err instanceof CollectorError ? err : new CollectorError(`cannot open ${withoutQuery(target)}: ${err.message}`)),
    );
    req.end();
  });
}

function refusal(status: number, body: string): CollectorError {
  let message = body;
  try {
    const parsed: unknown = JSON.parse(body);
    if (parsed && typeof parsed === "object" && typeof (parsed as { message?: unknown }).message === "string") {
      message = (parsed as { message: string }).message;
    }
  } catch {
    // Not JSON: the body itself says what went wrong.
  }
  return status === 401 || status === 403
    ? new KeyRefused(status, message)
    : new CollectorError(`the collector answered ${status}: ${message}`);
}

function readBody(res: http.IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        res.destroy(new CollectorError(`an answer longer than ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    res.on("error", reject);
  });
}

/** GETs `target` and decodes its JSON object. */
export async function getJson(target: string, key: string | undefined, timeoutMs: number, held = false): Promise<Record<string, unknown>> {
  const res = await open(target, key, "application/json", timeoutMs, held);
  let answer: unknown;
  try {
    answer = JSON.parse(await readBody(res, 1 << 20));
  } catch (err) {
    throw new CollectorError(`cannot read ${withoutQuery(target)}: ${(err as Error).message}`);
  }
  if (answer === null || typeof answer !== "object" || Array.isArray(answer)) {
    throw new CollectorError(`${withoutQuery(target)} answered something other than a JSON object`);
  }
  return answer as Record<string, unknown>;
}

/** An open server-sent-events stream. */
export interface EventStream {
  /** Each event's data, and `null` for every keep-alive comment (so the
   * caller knows the stream is alive). Ends when the server closes it;
   * throws `CollectorError` when a read waits longer than `readTimeoutMs`. */
  events: AsyncGenerator<string | null>;
  close(): void;
}

export async function openEvents(
  target: string,
  key: string | undefined,
  connectTimeoutMs: number,
  readTimeoutMs: number,
): Promise<EventStream> {
  const res = await open(target, key, "text/event-stream", connectTimeoutMs);
  // Reads wait for the next event or keep-alive, longer than a connect.
  res.socket.setTimeout(readTimeoutMs, () => res.destroy(new CollectorError("the enforcement stream went silent")));
  res.setEncoding("utf8");
  async function* events(): AsyncGenerator<string | null> {
    let buffer = "";
    let data: string[] = [];
    try {
      for await (const chunk of res as AsyncIterable<string>) {
        buffer += chunk;
        let newline: number;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline).replace(/\r$/, "");
          buffer = buffer.slice(newline + 1);
          if (line === "") {
            if (data.length > 0) {
              yield data.join("\n");
              data = [];
            }
          } else if (line.startsWith(":")) {
            yield null;
          } else if (line.startsWith("data:")) {
            const value = line.slice(5);
            data.push(value.startsWith(" ") ? value.slice(1) : value);
          }
        }
        if (buffer.length > 1 << 20) throw new CollectorError("an enforcement event longer than 1 MiB");
      }
    } catch (err) {
      throw err instanceof CollectorError ? err : new CollectorError(`the enforcement stream broke: ${(err as Error).message}`);
    } finally {
      res.destroy();
    }
  }
  return { events: events(), close: () => res.destroy() };
}
