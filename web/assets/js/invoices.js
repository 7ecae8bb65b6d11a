// Invoices: the billing documents (date, customer, purpose, total, paid/refunded) with paging and a
// CSV download, and one invoice's view (lines, tax, processor reference), printable.
import { api, fresh, isAbort } from "./lib/api.js";
import { day, html, money, percent, plural, PURPOSE_WORDS } from "./lib/format.js";
import { session } from "./lib/session.js";
import { announce, latest, reportError } from "./lib/ui.js";

const PAGE = 20;
const $ = (id) => document.getElementById(id);
const state = { cursors: [null], page: 0, wired: false, org: "" };
const customers = new Map(); // subscription id → customer name
const nextRequest = latest();
const STATE_WORDS = { paid: "paid", partially_refunded: "partly refunded", refunded: "refunded" };

async function customerNames(items, signal) {
  const missing = [...new Set(items.map((i) => i.subscription_id))].filter((id) => !customers.has(id));
  await Promise.all(missing.map(async (id) => {
    try {
      const s = await api("GET", `/v1/resellers/${session.org}/subscriptions/${id}`, { signal });
      customers.set(id, s.customer);
    } catch (error) {
      if (isAbort(error)) throw error;
      customers.set(id, "—");
    }
  }));
}

export async function showInvoices() {
  if (!state.wired) wire();
  if (state.org !== session.org) { state.org = session.org; state.cursors = [null]; state.page = 0; customers.clear(); }
  $("invoice-list").hidden = false;
  $("invoice-view").hidden = true;
  const signal = nextRequest();
  $("invoices-table").setAttribute("aria-busy", "true");
  try {
    const page = await api("GET", `/v1/resellers/${session.org}/invoices`,
      { query: { limit: PAGE, cursor: state.cursors[state.page], ...fresh() }, signal });
    await customerNames(page.items, signal);
    state.cursors[state.page + 1] = page.next_cursor;
    $("invoices-rows").innerHTML = page.items.length ? page.items.map((i) => html`<tr>
        <td data-label="Date"><div><a href="#invoices/${i.id}">${day(i.issued_at)}</a></div></td>
        <td data-label="Customer"><div>${customers.get(i.subscription_id)}</div></td>
        <td data-label="Purpose"><div>${PURPOSE_WORDS[i.purpose] || i.purpose}</div></td>
        <td data-label="Total" class="number"><div>${money(i.total_cents, i.currency)}</div></td>
        <td data-label="Status"><div><span class="status ${i.state}">${STATE_WORDS[i.state] || i.state}</span></div></td>
        <td data-label="Invoice"><div><a href="#invoices/${i.id}" aria-label="View invoice of ${day(i.issued_at)} for ${customers.get(i.subscription_id)}">View</a></div></td>
      </tr>`).join("")
      : `<tr><td colspan="6" class="empty">No invoices yet: they appear when a subscription is bought, grows or renews.</td></tr>`;
    const from = page.total ? state.page * PAGE + 1 : 0;
    $("invoices-count").textContent = `${from}–${state.page * PAGE + page.items.length} of ${plural(page.total, "invoice")}`;
    $("invoices-prev").disabled = state.page === 0;
    $("invoices-next").disabled = !page.next_cursor;
  } catch (error) {
    if (!isAbort(error)) reportError(error);
  } finally {
    if (!signal.aborted) $("invoices-table").removeAttribute("aria-busy");
  }
}

export async function showInvoice(id) {
  if (!state.wired) wire();
  $("invoice-list").hidden = true;
  const view = $("invoice-view");
  view.hidden = false;
  view.innerHTML = `<p class="muted">Loading the invoice…</p>`;
  try {
    const i = await api("GET", `/v1/resellers/${session.org}/invoices/${encodeURIComponent(id)}`, { query: fresh() });
    await customerNames([i]);
    const c = i.currency;
    const reseller = session.orgs.find((o) => o.id === i.reseller_id);
    view.innerHTML = html`
      <div class="toolbar no-print"><a href="#invoices" class="button secondary">← All invoices</a>
        <button type="button" class="secondary" data-print>Print</button></div>
      <article class="invoice" aria-labelledby="invoice-title">
        <header><h2 id="invoice-title">Invoice</h2><span class="status ${i.state}">${STATE_WORDS[i.state] || i.state}</span></header>
        <dl class="facts">
          <div><dt>Invoice</dt><dd class="mono">${i.id}</dd></div>
          <div><dt>Issued</dt><dd>${day(i.issued_at)}</dd></div>
          <div><dt>Billed to</dt><dd>${reseller?.name || i.reseller_id}</dd></div>
          <div><dt>Customer</dt><dd>${customers.get(i.subscription_id)}</dd></div>
          <div><dt>For</dt><dd>${PURPOSE_WORDS[i.purpose] || i.purpose}${i.period_start ? `, ${day(i.period_start)} – ${day(i.period_end)}` : ""}</dd></div>
          <div><dt>Payment reference</dt><dd class="mono">${i.payment_reference}</dd></div>
        </dl>
        <table class="lines"><caption class="visually-hidden">Invoice lines</caption>
          <thead><tr><th scope="col">Description</th><th scope="col">Period</th><th scope="col" class="number">Qty</th>
            <th scope="col" class="number">Unit price</th><th scope="col" class="number">Amount</th></tr></thead>
          <tbody>${i.lines.map((l) => html`<tr><td>${l.description}</td><td>${day(l.period_start)} – ${day(l.period_end)}</td>
            <td class="number">${l.quantity}</td><td class="number">${money(l.unit_amount_cents, c)}</td><td class="number">${money(l.amount_cents, c)}</td></tr>`)}</tbody>
          <tfoot>
            <tr><th scope="row" colspan="4">Subtotal</th><td class="number">${money(i.subtotal_cents, c)}</td></tr>
            <tr><th scope="row" colspan="4">Tax (${percent(i.tax_rate_bps)})</th><td class="number">${money(i.tax_cents, c)}</td></tr>
            <tr class="total"><th scope="row" colspan="4">Total</th><td class="number" data-testid="invoice-total">${money(i.total_cents, c)}</td></tr>
            ${i.refunded_cents ? html`<tr><th scope="row" colspan="4">Refunded</th><td class="number">−${money(i.refunded_cents, c)}</td></tr>` : ""}
          </tfoot></table>
        ${i.refunds.length ? html`<h3>Refunds</h3><ul>${i.refunds.map((r) => html`<li>${day(r.refunded_at)}: ${money(r.amount_cents, c)}, ${r.reason} <span class="mono">(${r.refund_reference})</span></li>`)}</ul>` : ""}
      </article>`.toString();
    view.querySelector("[data-print]").onclick = () => window.print();
    view.querySelector("h2").focus?.();
  } catch (error) {
    view.innerHTML = `<p><a href="#invoices" class="button secondary">← All invoices</a></p>`;
    reportError(error);
  }
}

const CSV_COLUMNS = ["invoice_id", "issued_at", "customer", "purpose", "period_start", "period_end", "currency",
  "subtotal", "tax_rate_percent", "tax", "total", "state", "refunded", "payment_reference"];
const cell = (v) => (/[",\n]/.test(String(v ?? "")) ? `"${String(v).replace(/"/g, '""')}"` : String(v ?? ""));
const decimal = (cents) => (cents / 100).toFixed(2);

async function downloadCsv() {
  const button = $("invoices-csv");
  button.disabled = true;
  try {
    const all = [];
    let cursor = null;
    do {
      const page = await api("GET", `/v1/resellers/${session.org}/invoices`, { query: { limit: 200, cursor, ...fresh() } });
      all.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor);
    await customerNames(all);
    const lines = [CSV_COLUMNS.join(","), ...all.map((i) => [i.id, i.issued_at, customers.get(i.subscription_id), i.purpose,
      i.period_start, i.period_end, i.currency, decimal(i.subtotal_cents), (i.tax_rate_bps / 100).toFixed(2), decimal(i.tax_cents),
      decimal(i.total_cents), i.state, decimal(i.refunded_cents), i.payment_reference].map(cell).join(","))];
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([`${lines.join("\r\n")}\r\n`], { type: "text/csv" }));
    link.download = `invoices-${session.org}-${new Date().toISOString().slice(0, 10)}.csv`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
    announce(`Downloaded ${plural(all.length, "invoice")} as CSV.`);
  } catch (error) {
    reportError(error);
  } finally {
    button.disabled = false;
  }
}

function wire() {
  state.wired = true;
  $("invoices-prev").addEventListener("click", () => { if (state.page > 0) { state.page -= 1; showInvoices(); } });
  $("invoices-next").addEventListener("click", () => { if (state.cursors[state.page + 1]) { state.page += 1; showInvoices(); } });
  $("invoices-csv").addEventListener("click", downloadCsv);
}
