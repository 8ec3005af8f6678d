//! Who a model call is for, taken from context.
//!
//! `scope({user, session, route}, fn)` runs `fn` with that scope: it lives in
//! an `AsyncLocalStorage`, so every promise chain started inside `fn` sees it
//! and concurrent requests never see each other's. Nested scopes inherit the
//! fields they do not set.

import { AsyncLocalStorage } from "node:async_hooks";

import * as wire from "./wire.js";

/** The per-call part of a call's scope. Org, project, app and environment
 * are the process's, given to `init`. */
export interface Scope {
  readonly user?: string | undefined;
  readonly session?: string | undefined;
  readonly route?: string | undefined;
}

const FIELDS = ["user", "session", "route"] as const;
const EMPTY: Scope = Object.freeze({});
const storage = new AsyncLocalStorage<Scope>();

/** The scope of the calling context (empty outside any `scope`). */
export function currentScope(): Scope {
  return storage.getStore() ?? EMPTY;
}

function checked(name: string, value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string" || value.trim() === "") {
    throw new TypeError(`tollgate.scope: ${name} must be a non-empty string, not ${JSON.stringify(value)}`);
  }
  if (value.length > 256) {
    // The gateway keeps at most 256 bytes of a metadata header.
    throw new RangeError(`tollgate.scope: ${name} is ${value.length} characters long; at most 256 are kept`);
  }
  return value;
}

/** Runs `fn` with the model calls made inside it (and in every promise it
 * starts) counted for this scope; returns what `fn` returns.
 *
 *     await tollgate.scope({ user: "u-17", session: "s-9", route: "support" }, () => agent.run(q));
 */
export function scope<T>(fields: Scope, fn: () => T): T {
  const outer = currentScope();
  const merged: Record<string, string> = {};
  for (const name of FIELDS) {
    const value = checked(name, fields[name]) ?? outer[name];
    if (value !== undefined) merged[name] = value;
  }
  return storage.run(Object.freeze(merged), fn);
}

/** The present fields of `s`, by dimension name (`user`, `session`, `route`). */
export function scopeEntries(s: Scope): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of FIELDS) {
    const value = s[name];
    if (value !== undefined) out[name] = value;
  }
  return out;
}

const ATTRIBUTES = { user: wire.USER, session: wire.SESSION, route: wire.ROUTE } as const;
const HEADERS = { user: wire.HEADER_USER, session: wire.HEADER_SESSION, route: wire.HEADER_ROUTE } as const;

/** The span attributes the collector reads for the fields of `s`. */
export function spanAttributes(s: Scope): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of FIELDS) {
    const value = s[name];
    if (value !== undefined) out[ATTRIBUTES[name]] = value;
  }
  return out;
}

/** The `x-tollgate-*` headers the gateway reads for the fields of `s`. */
export function scopeHeaders(s: Scope): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of FIELDS) {
    const value = s[name];
    if (value !== undefined) out[HEADERS[name]] = value;
  }
  return out;
}
