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
    response = await fetch(url, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
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
