// Formatting and safe HTML: every value shown on the page goes through html`` (escaped) or a formatter.

export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

class Raw { constructor(text) { this.text = text; } toString() { return this.text; } }
export const raw = (text) => new Raw(text);

function render(value) {
  if (value instanceof Raw) return value.text;
  if (Array.isArray(value)) return value.map(render).join("");
  if (value === null || value === undefined || value === false) return "";
  return esc(value);
}

/** A tagged template whose interpolated values are escaped (arrays and html`` results are not escaped twice). */
export function html(strings, ...values) {
  return raw(strings.reduce((out, part, i) => out + part + (i < values.length ? render(values[i]) : ""), ""));
}

const currencies = new Map();
export function money(cents, currency = "USD") {
  if (!currencies.has(currency)) {
    currencies.set(currency, new Intl.NumberFormat("en-US", { style: "currency", currency }));
  }
  return currencies.get(currency).format(cents / 100);
}

/** Tax as the ledger computes it: round half up, once. */
export function taxOf(subtotalCents, rateBps) {
  return Math.floor((subtotalCents * rateBps + 5000) / 10000);
}

export const percent = (bps) => `${(bps / 100).toLocaleString("en-US", { maximumFractionDigits: 2 })} %`;
export const day = (iso) => (iso ? String(iso).slice(0, 10) : "");
export const moment = (iso) => (iso ? `${String(iso).slice(0, 10)} ${String(iso).slice(11, 16)} UTC` : "");
export const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
export const cycleWord = (cycle) => (cycle === "annual" ? "year" : "month");

const regions = typeof Intl.DisplayNames === "function" ? new Intl.DisplayNames(["en"], { type: "region" }) : null;
export function countryName(code) {
  try { return regions?.of(code) || code; } catch { return code; }
}

export const STATUS_WORDS = {
  active: "active", pending: "pending", canceled: "canceled", past_due: "past due", expired: "expired",
};

export const PURPOSE_WORDS = {
  subscription_created: "New subscription", seats_increased: "Seat increase", renewal: "Renewal",
};

export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
