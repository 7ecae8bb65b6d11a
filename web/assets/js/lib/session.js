// Who is signed in: the bearer token (kept in this tab's sessionStorage, never shown), its claims,
// the reseller organizations it administers, the selected one, and the catalog.

const KEY = "ledger-token";
const ORG_KEY = "ledger-org";

function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}

export const session = {
  token: sessionStorage.getItem(KEY) || "",
  orgs: [],
  org: "",
  plans: [],
  taxRates: {},
  currency: "USD",

  get claims() { return this.token ? claimsOf(this.token) : null; },
  get who() { const c = this.claims; return c?.email || c?.sub || "you"; },

  /** A sentence when the token cannot be used, before the server is asked; null when it looks usable. */
  problemWithToken(token) {
    const claims = claimsOf(token);
    if (!claims) return "That sign-in link or token is not valid. Ask your administrator for a new sign-in link.";
    if (claims.exp && claims.exp * 1000 < Date.now()) {
      return `Your sign-in expired on ${new Date(claims.exp * 1000).toISOString().slice(0, 16).replace("T", " ")} UTC. Ask for a new sign-in link.`;
    }
    return null;
  },

  remember(token) { this.token = token; sessionStorage.setItem(KEY, token); },
  selectOrg(id) { this.org = id; sessionStorage.setItem(ORG_KEY, id); },
  preferredOrg() { return sessionStorage.getItem(ORG_KEY); },
  plan(id) { return this.plans.find((p) => p.id === id); },

  forget() {
    this.token = ""; this.orgs = []; this.org = "";
    sessionStorage.removeItem(KEY); sessionStorage.removeItem(ORG_KEY);
  },
};
