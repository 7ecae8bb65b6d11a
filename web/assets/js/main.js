// The portal's entry point: sign-in, the organization selector, and the screens by address
// (#customers, #invoices, #invoices/<id>, #billing). Each screen's code is in its own module.
import { resetCustomers, showCustomers } from "./customers/screen.js";
import { session } from "./lib/session.js";
import { clearNotice, closeDialog } from "./lib/ui.js";
import { showSignIn, signIn, wireSignIn } from "./signin.js";

const $ = (id) => document.getElementById(id);
const SCREENS = {
  customers: { title: "Customers", show: showCustomers },
  // Loaded when first opened: the home screen does not wait for them.
  invoices: { title: "Invoices", show: async (id) => { const m = await import("./invoices.js"); return id ? m.showInvoice(id) : m.showInvoices(); } },
  billing: { title: "Billing", show: async () => (await import("./billing/screen.js")).showBilling() },
};

function tokenInAddress() {
  const hash = location.hash.slice(1);
  if (!hash.includes("token=")) return null;
  const token = new URLSearchParams(hash).get("token");
  history.replaceState(null, "", `${location.pathname}#customers`); // the token leaves the address at once
  return token || "";
}

async function route() {
  closeDialog(); // a dialog belongs to the screen it was opened on (e.g. Back while one is open)
  const token = tokenInAddress();
  if (token !== null) {
    clearNotice();
    if (!(await signIn(token))) return;
  }
  if (!session.token) { showSignIn(); return; }
  if (!session.orgs.length && !(await signIn(session.token))) return;
  const [name, id] = location.hash.slice(1).split("/");
  const screen = SCREENS[name] ? name : "customers";
  for (const element of document.querySelectorAll("[data-screen]")) element.hidden = element.id !== `screen-${screen}`;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === `#${screen}`) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  document.title = `${SCREENS[screen].title} · Reseller portal`;
  await SCREENS[screen].show(id ? decodeURIComponent(id) : undefined);
}

let previous = null;
window.addEventListener("hashchange", () => {
  const now = location.hash;
  if (now !== previous) { previous = now; route(); }
});
$("org").addEventListener("change", () => {
  session.selectOrg($("org").value);
  resetCustomers();
  clearNotice();
  route();
});
wireSignIn(() => { if (!location.hash || location.hash === "#") history.replaceState(null, "", "#customers"); route(); });
$("notices").hidden = true;
previous = location.hash;
route();
