// The page's only way to the server: the public /v1 API with the signed-in token. Errors become
// Problem objects (RFC 9457 bodies), turned into plain words by words.js.
import { session } from "./session.js";

export class Problem extends Error {
  constructor(status, body) {
    super(body?.detail || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code || (status === 0 ? "network" : "http_error");
    this.body = body || {};
  }
}

let position = null; // X-Ledger-Position of our last change: reads wait until they include it

/** The `after` parameter that makes a read include our last change. */
export const fresh = () => (position ? { after: position } : {});

// The first GETs, started by index.html's inline script while the modules loaded (window.portalEarly):
// each answers the identical request with the same token, once; the first request that is not one of
// them ends the early start.
let early = window.portalEarly ? { ...window.portalEarly, used: new Set() } : null;

async function startedEarly(url) {
  if (!early || early.token !== session.token) { early = null; return null; }
  const key = url.pathname + url.search;
  const response = early.requests[key] || (await early.later)[key];
  if (!response || !early || early.used.has(key)) { early = null; return null; }
  early.used.add(key);
  return response;
}

let onUnauthenticated = () => {};
export function whenUnauthenticated(handler) { onUnauthenticated = handler; }

export async function api(method, path, { body, query, idempotencyKey, ifMatch, signal } = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const headers = { Authorization: `Bearer ${session.token}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
  if (ifMatch !== undefined && ifMatch !== null) headers["If-Match"] = `"${ifMatch}"`;
  let response;
  try {
    const started = method === "GET" ? await startedEarly(url) : null;
    response = await (started || fetch(url, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) }));
    signal?.throwIfAborted();
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new Problem(0, { detail: "the server could not be reached", code: "network" });
  }
  const changed = response.headers.get("X-Ledger-Position");
  if (changed && method !== "GET") position = changed;
  let data = null;
  const text = await response.text();
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const problem = new Problem(response.status, data);
    if (problem.code === "unauthenticated") onUnauthenticated(problem);
    throw problem;
  }
  return data;
}

export const isAbort = (error) => error?.name === "AbortError";
