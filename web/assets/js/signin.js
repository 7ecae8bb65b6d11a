// Sign-in: a `#token=` link (same tab or new), or a pasted token; the token is never displayed.
// A bad or expired token is said in a sentence. Sign-out forgets it.
import { api, whenUnauthenticated } from "./lib/api.js";
import { session } from "./lib/session.js";
import { clearNotice } from "./lib/ui.js";
import { plainWords } from "./lib/words.js";

const $ = (id) => document.getElementById(id);

/** Signs in with `token`; resolves true when the reseller organizations are loaded. */
export async function signIn(token) {
  const early = session.problemWithToken(token);
  if (early) { showSignIn(early); return false; }
  session.remember(token);
  try {
    const [ids, catalog] = await Promise.all([api("GET", "/v1/me/business-ids"), api("GET", "/v1/plans")]);
    session.orgs = ids.items;
    session.plans = catalog.plans;
    session.taxRates = catalog.tax_rates_bps;
    session.currency = catalog.currency;
  } catch (error) {
    session.forget();
    showSignIn(plainWords(error).text);
    return false;
  }
  if (!session.orgs.length) {
    session.forget();
    showSignIn("This account is not an administrator of any organization enabled as a reseller. Ask the Lens team (support) to enable your organization, or sign in with another account.");
    return false;
  }
  const preferred = session.preferredOrg();
  session.selectOrg(session.orgs.some((o) => o.id === preferred) ? preferred : session.orgs[0].id);
  $("org").innerHTML = "";
  for (const o of session.orgs) $("org").add(new Option(o.name, o.id, false, o.id === session.org));
  $("who").textContent = `Signed in as ${session.who}`;
  $("account").hidden = false;
  $("nav").hidden = false;
  return true;
}

export function showSignIn(sentence = "") {
  for (const screen of document.querySelectorAll("[data-screen]")) screen.hidden = screen.id !== "screen-signin";
  $("account").hidden = true;
  $("nav").hidden = true;
  $("signin-error").textContent = sentence;
  $("signin-error").hidden = !sentence;
  document.title = "Sign in · Reseller portal";
  $("signin-token").value = "";
}

export function signOut(sentence = "You are signed out.") {
  session.forget();
  clearNotice();
  history.replaceState(null, "", location.pathname);
  showSignIn("");
  $("signin-info").textContent = sentence;
}

export function wireSignIn(onSignedIn) {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("signin-token").value.trim();
    $("signin-info").textContent = "";
    if (!token) { showSignIn("Paste the access token from your sign-in link, or open the link itself."); return; }
    if (await signIn(token)) onSignedIn();
  });
  $("sign-out").addEventListener("click", () => signOut());
  // A token that stops working while the page is open (it expired): back to the sign-in screen.
  whenUnauthenticated((problem) => { session.forget(); showSignIn(plainWords(problem).text); });
}
