//! The kill-switch as the agent sees it: which of its scopes the collector
//! blocks, kept current by a background watcher, and the `Blocked` error
//! guarded clients throw.
//!
//! The watcher follows `/v1/enforcement/stream` (server-sent events) for the
//! process's own scope (org, project, app, environment), so a block on any of
//! those is known within the stream's latency; while the stream is down it
//! polls `/v1/enforcement` and reopens the stream with exponential backoff.
//! Per-call scopes (user, session, route) are asked for once when first seen
//! and then polled while in use, since a block may name one user only.

import * as api from "./http.js";
import { baseScope, type Settings } from "./settings.js";
import * as wire from "./wire.js";

// A per-call scope unused this long is no longer polled, and forgotten.
const IDLE_SCOPE_MS = 120_000;
// At most this many per-call scopes are polled; the least recently used go.
const MAX_SCOPES = 256;
// Keep-alives come every 15 s; a silent minute means a dead link.
const STREAM_SILENCE_MS = 60_000;

const KIND = Symbol.for("tollgate.blocked");
type Branded = { [KIND]?: string };

export interface BlockedDetails {
  /** The scope the block names, e.g. `project=support,user=u-17`. */
  scope?: string;
  limit?: number | undefined;
  used?: number | undefined;
}

/** A model call refused before it left the process, because the collector
 * (or the gateway) blocks its scope.
 *
 * `rule` is the rule that tripped (`admin` for a block set by hand),
 * `reason` why (`budget_exceeded`, `rate_limited`, ...), `until` when the
 * block lifts by itself (`undefined`: until lifted). */
export class Blocked extends Error {
  // `guard` throws copies that extend the SDK's own error class (so its
  // stream helpers pass them on unwrapped); the brand keeps `instanceof
  // Blocked` true for them.
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null && (value as Branded)[KIND] !== undefined;
  }

  override name = "Blocked";
  readonly [KIND]: "blocked" | "unreachable" = "blocked";
  readonly scope: string;
  readonly limit: number | undefined;
  readonly used: number | undefined;

  constructor(
    readonly rule: string,
    readonly reason: string,
    readonly until: Date | undefined,
    details: BlockedDetails = {},
  ) {
    const lifts = until ? `until ${until.toISOString()}` : "until lifted";
    const where = details.scope ? ` for ${details.scope}` : "";
    super(`model calls${where} are blocked by rule \`${rule}\` (${reason}) ${lifts}`);
    this.scope = details.scope ?? "";
    this.limit = details.limit;
    this.used = details.used;
  }
}

/** Thrown instead of calling the provider when the collector cannot be
 * asked and `onUnreachable: "closed"`. */
export class CollectorUnreachable extends Blocked {
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null && (value as Branded)[KIND] === "unreachable";
  }

  override name = "CollectorUnreachable";
  override readonly [KIND] = "unreachable" as const;

  constructor() {
    super("tollgate", "collector_unreachable", undefined);
  }
}

/** `err` (a `Blocked`) as an instance of `base` too, with the same fields. */
export function blockedAs(base: new (message: string) => Error, err: Blocked): Blocked {
  const copy = new base(err.message) as unknown as Record<string | symbol, unknown>;
  for (const field of ["name", "rule", "reason", "until", "scope", "limit", "used"] as const) copy[field] = err[field];
  copy[KIND] = err[KIND];
  copy.stack = err.stack;
  return copy as unknown as Blocked;
}

interface Block {
  rule: string;
  scope: string;
  reason: string;
  untilUnixNanos: bigint;
  limit: number | undefined;
  used: number | undefined;
}

function num(v: unknown): number | undefined {
  return typeof v === "number" ? v : undefined;
}

function parseBlock(raw: Record<string, unknown>): Block {
  const until = raw.until_unix_nanos;
  return {
    rule: String(raw.rule_id ?? ""),
    scope: String(raw.scope ?? ""),
    reason: String(raw.reason ?? ""),
    untilUnixNanos: typeof until === "number" || typeof until === "string" ? BigInt(Math.trunc(Number(until))) : 0n,
    limit: num(raw.limit),
    used: num(raw.used),
  };
}

function live(b: Block, nowNanos: bigint): boolean {
  return b.untilUnixNanos === 0n || b.untilUnixNanos > nowNanos;
}

export function blockError(b: Block): Blocked {
  const until = b.untilUnixNanos === 0n ? undefined : new Date(Number(b.untilUnixNanos / 1_000_000n));
  return new Blocked(b.rule, b.reason, until, { scope: b.scope, limit: b.limit, used: b.used });
}

function parseState(answer: unknown): Block[] {
  const blocks = (answer as { blocks?: unknown } | null)?.blocks;
  if (!Array.isArray(blocks)) throw new api.CollectorError("an enforcement state without `blocks`");
  return blocks.filter((b): b is Record<string, unknown> => b !== null && typeof b === "object").map(parseBlock);
}

function nowNanos(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

/** What the collector last said for one query. */
class Entry {
  blocks: Block[] = [];
  answered = false;
  okAt = 0;
  usedAt = performance.now();
  first: Promise<void> | undefined;
  private waiters: Array<() => void> = [];

  settle(blocks: Block[]): void {
    this.blocks = blocks;
    this.okAt = performance.now();
    if (!this.answered) {
      this.answered = true;
      for (const wake of this.waiters.splice(0)) wake();
    }
  }

  /** Resolves with whether an answer came within `ms`. */
  waitAnswered(ms: number): Promise<boolean> {
    if (this.answered) return Promise.resolve(true);
    return new Promise((resolve) => {
      // Held: the first call waits here, and the process must not end meanwhile.
      const timer = setTimeout(() => resolve(this.answered), ms);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }
}

function sleep(ms: number, stop: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (stop.aborted) return resolve();
    const timer = setTimeout(done, ms);
    timer.unref();
    stop.addEventListener("abort", done, { once: true });
    function done(): void {
      clearTimeout(timer);
      stop.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** Keeps the enforcement state of the process's scopes current. */
export class Watcher {
  private readonly baseQuery: Record<string, string>;
  private readonly base = new Entry();
  private readonly scopes = new Map<string, { query: Record<string, string>; entry: Entry }>();
  private readonly stopper = new AbortController();
  private streamUp = false;
  private stream: api.EventStream | undefined;
  private refusedLogged = false;

  constructor(
    private readonly settings: Settings,
    app: string | undefined,
    private readonly onTick?: () => void,
  ) {
    const base = baseScope(settings);
    if (app) base.app = app;
    this.baseQuery = base;
  }

  // -- reading -----------------------------------------------------------

  private queryFor(callScope: Record<string, string>): Record<string, string> {
    return { ...this.baseQuery, ...callScope };
  }

  reachable(): boolean {
    return this.streamUp || (this.base.answered && performance.now() - this.base.okAt <= this.settings.staleAfterMs);
  }

  hasFirstState(): boolean {
    return this.base.answered;
  }

  waitFirstState(ms: number): Promise<boolean> {
    return this.base.waitAnswered(ms);
  }

  /** The live blocks covering a call with this per-call scope, and whether
   * the collector's answer is current. A per-call scope seen for the first
   * time is asked for at once, so a block set before this process started
   * is obeyed from its first call. */
  async blocksFor(callScope: Record<string, string>): Promise<{ blocks: Block[]; known: boolean }> {
    const entries = [this.base];
    if (Object.keys(callScope).length > 0) {
      const entry = this.entryFor(this.queryFor(callScope));
      if (entry.first !== undefined) await entry.first;
      entries.push(entry);
    }
    const now = nowNanos();
    const seen = new Set<string>();
    const blocks: Block[] = [];
    for (const e of entries) {
      for (const b of e.blocks) {
        const id = `${b.rule}\u0000${b.scope}`;
        if (live(b, now) && !seen.has(id)) {
          seen.add(id);
          blocks.push(b);
        }
      }
    }
    return { blocks, known: this.reachable() };
  }

  private entryFor(query: Record<string, string>): Entry {
    const id = api.url("", "", query);
    const found = this.scopes.get(id);
    if (found !== undefined) {
      found.entry.usedAt = performance.now();
      return found.entry;
    }
    const entry = new Entry();
    this.scopes.set(id, { query, entry });
    if (this.scopes.size > MAX_SCOPES) {
      let oldest: string | undefined;
      let oldestAt = Infinity;
      for (const [q, { entry: e }] of this.scopes) {
        if (e.usedAt < oldestAt) {
          oldestAt = e.usedAt;
          oldest = q;
        }
      }
      if (oldest !== undefined) this.scopes.delete(oldest);
    }
    entry.first = this.poll(query, entry, true).then(() => {
      entry.first = undefined;
    });
    return entry;
  }

  // -- the collector -----------------------------------------------------

  private noteRefusal(err: unknown): void {
    if (err instanceof api.KeyRefused) {
      if (!this.refusedLogged) {
        const meanwhile = this.settings.failClosed ? "refused" : "allowed";
        console.warn(`tollgate: the collector refused the kill-switch request (${err.message}); calls are ${meanwhile} meanwhile`);
        this.refusedLogged = true;
      }
    }
  }

  private async poll(query: Record<string, string>, entry: Entry, held = false): Promise<boolean> {
    const target = api.url(this.settings.api, wire.ENFORCEMENT, query);
    try {
      const state = parseState(await api.getJson(target, this.settings.key, this.settings.requestTimeoutMs, held));
      this.set(entry, state);
      return true;
    } catch (err) {
      this.noteRefusal(err);
      return false;
    }
  }

  private set(entry: Entry, blocks: Block[]): void {
    entry.settle(blocks);
    this.refusedLogged = false;
  }

  /** Follows the SSE stream until it ends; whether it gave a state. */
  private async followStream(): Promise<boolean> {
    const target = api.url(this.settings.api, wire.ENFORCEMENT_STREAM, this.baseQuery);
    let gotState = false;
    try {
      this.stream = await api.openEvents(target, this.settings.key, this.settings.requestTimeoutMs, STREAM_SILENCE_MS);
      if (this.stopper.signal.aborted) return false;
      for await (const data of this.stream.events) {
        if (this.stopper.signal.aborted) break;
        this.streamUp = true;
        if (data === null) {
          this.base.okAt = performance.now();
          continue;
        }
        let blocks: Block[];
        try {
          blocks = parseState(JSON.parse(data));
        } catch {
          continue;
        }
        this.set(this.base, blocks);
        gotState = true;
      }
    } catch (err) {
      this.noteRefusal(err);
    } finally {
      this.streamUp = false;
      this.stream = undefined;
    }
    return gotState;
  }

  private async runStream(): Promise<void> {
    const stop = this.stopper.signal;
    let delay = this.settings.reconnectMinMs;
    while (!stop.aborted) {
      if (await this.followStream()) delay = this.settings.reconnectMinMs;
      // The stream is down: poll until it is time to reopen it.
      const reopenAt = performance.now() + delay;
      while (!stop.aborted) {
        await this.poll(this.baseQuery, this.base);
        const left = reopenAt - performance.now();
        if (left <= 0) break;
        await sleep(Math.min(left, this.settings.pollIntervalMs), stop);
      }
      delay = Math.min(delay * 2, this.settings.reconnectMaxMs);
    }
  }

  private async runPoll(): Promise<void> {
    const stop = this.stopper.signal;
    while (!stop.aborted) {
      await sleep(this.settings.pollIntervalMs, stop);
      if (stop.aborted) return;
      const now = performance.now();
      for (const [id, { entry }] of this.scopes) {
        if (now - entry.usedAt > IDLE_SCOPE_MS) this.scopes.delete(id);
      }
      await Promise.all([...this.scopes.values()].map(({ query, entry }) => this.poll(query, entry)));
      this.onTick?.();
    }
  }

  start(): void {
    // Both loops only ever wait on unref'd timers and sockets: they end
    // with `stop()`, and never keep the process alive.
    void this.runStream();
    void this.runPoll();
  }

  stop(): void {
    this.stopper.abort();
    this.stream?.close();
  }
}
