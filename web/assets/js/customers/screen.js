// The home screen: summary cards, the customer table (sort by header, search, status filter,
// previous/next pages) and each row's actions menu. The dialogs live beside it in this folder.
import { api, fresh, isAbort } from "../lib/api.js";
import { day, html, plural, raw, STATUS_WORDS } from "../lib/format.js";
import { session } from "../lib/session.js";
import { debounce, latest, loadingDialog, reportError, wireMenus } from "../lib/ui.js";

const PAGE = 20;
const COLUMNS = [
  { key: "customer", label: "Customer" },
  { key: "plan", label: "Plan" },
  { key: "status", label: "Status" },
  { key: "seats", label: "Seats" },
  { key: "current_period_end", label: "Current period" },
];
const $ = (id) => document.getElementById(id);

const state = { sort: "customer", descending: false, q: "", status: "", cursors: [null], page: 0, rows: [], wired: false };
const nextRequest = latest();
let firstRender = true;

export function showCustomers() {
  if (!state.wired) wire();
  return reload();
}

/** Reloads the cards and the current page (after a change: they wait until they include it). */
export async function reload({ toFirstPage = false } = {}) {
  if (toFirstPage) { state.cursors = [null]; state.page = 0; }
  const signal = nextRequest();
  const org = session.org;
  const query = { sort: `${state.descending ? "-" : ""}${state.sort}`, limit: PAGE, q: state.q, status: state.status,
    cursor: state.cursors[state.page], ...fresh() };
  $("customers-table").setAttribute("aria-busy", "true");
  try {
    const [cards, table] = await Promise.all([
      api("GET", `/v1/resellers/${org}/summary`, { query: fresh(), signal }),
      api("GET", `/v1/resellers/${org}/subscriptions`, { query, signal }),
    ]);
    renderCards(cards);
    renderTable(table);
  } catch (error) {
    if (!isAbort(error)) reportError(error);
  } finally {
    if (!signal.aborted) $("customers-table").removeAttribute("aria-busy");
  }
}

function renderCards(cards) {
  $("card-total").textContent = cards.total_customers;
  $("card-active").textContent = cards.active;
  $("card-canceled").textContent = cards.canceled;
  $("card-seats").textContent = cards.total_seats;
}

function renderHeader() {
  $("customers-head").innerHTML = html`<tr>${COLUMNS.map((c) => {
    const sorted = state.sort === c.key;
    const direction = sorted ? (state.descending ? "descending" : "ascending") : null;
    return html`<th scope="col" ${raw(direction ? `aria-sort="${direction}"` : "")}>
      <button type="button" class="sort" data-sort="${c.key}">${c.label}<span class="arrow" aria-hidden="true">${sorted ? (state.descending ? "▼" : "▲") : "↕"}</span></button></th>`;
  })}<th scope="col"><span class="visually-hidden">Actions</span></th></tr>`.toString();
}

function statusCell(r) {
  const pending = r.pending_seats !== null && r.pending_seats !== undefined
    ? html`<span class="change">${r.seats} → ${r.pending_seats} seats from ${day(r.current_period_end)}</span>` : "";
  const ends = r.status === "canceled" ? html`<span class="change">ends ${day(r.current_period_end)}</span>` : "";
  return html`<span class="status ${r.status}">${STATUS_WORDS[r.status] || r.status}</span>${pending}${ends}`;
}

function menu(r, i) {
  const items = [];
  if (r.type === "organization" && r.status !== "canceled") items.push(["seats", "Modify Seats"]);
  items.push(r.status === "canceled" ? ["resume", "Resume Subscription"] : ["cancel", "Cancel Subscription"]);
  items.push(["history", "View history"]);
  return html`<div class="menu">
    <button type="button" class="menu-button" data-menu-button aria-haspopup="menu" aria-expanded="false"
      aria-controls="row-menu-${i}" aria-label="Actions for ${r.customer}">Actions <span aria-hidden="true">▾</span></button>
    <ul role="menu" id="row-menu-${i}" hidden aria-label="Actions for ${r.customer}">
      ${items.map(([action, label]) => html`<li role="none"><button type="button" role="menuitem" tabindex="-1"
        data-action="${action}" data-id="${r.subscription_id}">${label}</button></li>`)}
    </ul></div>`;
}

function renderTable(table) {
  state.rows = table.items;
  state.cursors[state.page + 1] = table.next_cursor;
  renderHeader();
  $("customers-rows").innerHTML = table.items.length
    ? table.items.map((r, i) => html`<tr data-id="${r.subscription_id}">
        <td data-label="Customer"><div><span class="customer">${r.customer}</span>
          <span class="muted">${r.type === "organization" ? "Organization" : "Single user"}</span></div></td>
        <td data-label="Plan"><div>${r.plan_name}<span class="muted">${r.billing_cycle === "annual" ? "Annual" : "Monthly"}</span></div></td>
        <td data-label="Status"><div>${statusCell(r)}</div></td>
        <td data-label="Seats" class="number"><div>${r.seats}</div></td>
        <td data-label="Current period"><div><span class="nowrap">${day(r.current_period_start)}</span> – <span class="nowrap">${day(r.current_period_end)}</span></div></td>
        <td data-label="Actions" class="actions">${menu(r, i)}</td></tr>`).join("")
    : html`<tr><td colspan="6" class="empty">${state.q || state.status ? "No subscription matches these filters." : "No customer subscriptions yet. Select Create Subscription to buy the first one."}</td></tr>`.toString();
  const from = table.total ? state.page * PAGE + 1 : 0;
  const to = state.page * PAGE + table.items.length;
  $("customers-count").textContent = `${from}–${to} of ${plural(table.total, "subscription")}`;
  $("customers-prev").disabled = state.page === 0;
  $("customers-next").disabled = !table.next_cursor;
  if (firstRender) { firstRender = false; markPainted("portal:first-table"); }
}

/**
 * For bench/portal.py and real-user timing: `name` once the rows are in the document, `name:painted` once the
 * frame that shows them has been painted (a task queued from that frame's animation callback runs after its
 * paint).
 */
function markPainted(name) {
  performance.mark(name);
  requestAnimationFrame(() => setTimeout(() => performance.mark(`${name}:painted`)));
}

const rowOf = (id) => state.rows.find((r) => r.subscription_id === id);

function wire() {
  state.wired = true;
  $("customers-head").addEventListener("click", (event) => {
    const button = event.target.closest("[data-sort]");
    if (!button) return;
    const key = button.dataset.sort;
    state.descending = state.sort === key ? !state.descending : false;
    state.sort = key;
    reload({ toFirstPage: true }).then(() => $("customers-head").querySelector(`[data-sort="${key}"]`)?.focus());
  });
  const search = debounce(() => { state.q = $("customers-q").value.trim(); reload({ toFirstPage: true }); }, 300);
  $("customers-q").addEventListener("input", () => {
    if ($("customers-q").value.trim() === state.q) { search.cancel(); return; }
    search();
  });
  $("customers-status").addEventListener("change", () => { state.status = $("customers-status").value; reload({ toFirstPage: true }); });
  $("customers-prev").addEventListener("click", () => { if (state.page > 0) { state.page -= 1; reload(); } });
  $("customers-next").addEventListener("click", () => { if (state.cursors[state.page + 1]) { state.page += 1; reload(); } });
  // The dialogs are modules of their own, loaded when first used. The dialog opens at once (loading)
  // and is filled once its module (and data) arrive, unless it was closed meanwhile: a slow response
  // never opens a dialog the reseller already dismissed, or over another screen.
  $("customers-create").addEventListener("click", async () => {
    const pending = loadingDialog("Create Subscription", { wide: true });
    const { createDialog } = await import("./create.js");
    if (pending.isOpen()) createDialog(() => reload());
  });
  wireMenus($("customers-rows"), async (action, id) => {
    const row = rowOf(id);
    if (!row) return;
    if (action === "resume") { (await import("./cancel.js")).resume(row, () => reload()); return; }
    const title = { seats: `Modify Seats: ${row.customer}`, cancel: `Cancel the subscription of ${row.customer}?`,
      history: `History: ${row.customer}` }[action];
    if (!title) return;
    const pending = loadingDialog(title, { wide: action !== "cancel" });
    if (action === "seats") { const m = await import("./seats.js"); if (pending.isOpen()) m.seatsDialog(row, pending, () => reload()); }
    else if (action === "cancel") { const m = await import("./cancel.js"); if (pending.isOpen()) m.cancelDialog(row, () => reload()); }
    else { const m = await import("./history.js"); if (pending.isOpen()) m.historyDialog(row, pending); }
  });
}

/** Forget paging and filters (another organization was selected, or someone signed out). */
export function resetCustomers() {
  Object.assign(state, { q: "", status: "", cursors: [null], page: 0, rows: [] });
  if ($("customers-q")) { $("customers-q").value = ""; $("customers-status").value = ""; }
}
