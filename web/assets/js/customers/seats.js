// Modify Seats (organization plans): the new count, a preview of its cost impact, then confirm.
// An increase is charged now, prorated (a credit for the unused time, a charge for the new count);
// a decrease is scheduled for the next period, at that period's price.
import { api } from "../lib/api.js";
import { cycleWord, day, html, money, percent, plural, taxOf, uuid } from "../lib/format.js";
import { session } from "../lib/session.js";
import { announce, debounce, latest, openDialog, reportError } from "../lib/ui.js";
import { previewTable } from "./preview.js";

/** Fills `pending` (a loading dialog, see loadingDialog) once the subscription arrives, if it is still open. */
export async function seatsDialog(row, pending, afterChange) {
  let subscription;
  try {
    subscription = await api("GET", `/v1/resellers/${session.org}/subscriptions/${row.subscription_id}`,
      { signal: pending.signal });
  } catch (error) {
    if (!pending.isOpen()) return;
    pending.close();
    reportError(error);
    return;
  }
  if (!pending.isOpen()) return; // closed while loading: it stays closed
  const s = subscription;
  const plan = session.plan(s.plan) || { min_seats: 1, max_seats: 10000 };
  const dialog = openDialog({
    title: `Modify Seats: ${s.customer}`,
    wide: true,
    confirmLabel: "Confirm",
    body: html`
      <p>${s.plan_name}, ${s.billing_cycle}: <b>${plural(s.seats, "seat")}</b> now${s.pending_seats !== null
        ? html`, decreasing to <b>${s.pending_seats}</b> on ${day(s.current_period_end)}` : ""}. The current period ends on ${day(s.current_period_end)}.</p>
      <label for="seats-count">New seat count</label>
      <input id="seats-count" name="seats" type="number" inputmode="numeric" min="${plan.min_seats}" max="${plan.max_seats}" step="1" required
        aria-describedby="seats-help">
      <p id="seats-help" class="help">More seats apply at once and are charged for the rest of the period; fewer seats apply from the next period.</p>
      <section class="preview" aria-live="polite" data-preview><p class="muted">Enter a seat count to see the cost impact.</p></section>`,
    onConfirm: async () => {
      if (!quote) return;
      let changed;
      try {
        changed = await api("POST", `/v1/resellers/${session.org}/subscriptions/${s.id}/seats`,
          { body: { seats: quote.seats, quote_id: quote.preview.quote_id }, idempotencyKey: quote.key, ifMatch: s.version });
      } catch (error) {
        if (error.code === "quote_stale") refreshPreview();
        throw error;
      }
      dialog.close();
      const p = quote.preview;
      if (p.kind === "increase") {
        announce(`${s.customer} now has ${plural(changed.seats, "seat")}; ${money(p.total_cents, p.currency)} was charged for the rest of the period.`);
      } else if (p.kind === "decrease") {
        announce(`${s.customer} goes from ${s.seats} to ${plural(quote.seats, "seat")} on ${day(p.effective_at)}; nothing was charged now.`);
      } else {
        announce(`The scheduled decrease for ${s.customer} was withdrawn; it keeps ${plural(changed.seats, "seat")}.`);
      }
      afterChange(changed);
    },
  });
  const { form, confirm } = dialog;
  const input = form.elements.seats;
  const box = form.querySelector("[data-preview]");
  let quote = null;
  const nextRequest = latest();

  function explain(p, seats) {
    const c = p.currency;
    if (p.kind === "increase") {
      return html`<p><b>${s.seats} → ${plural(seats, "seat")}</b>, from now. You get credit for the unused time on the current seats and pay for the remaining time on the new count:</p>
        ${previewTable(p, { caption: "Charged now" })}
        <p class="muted">From ${day(s.current_period_end)}, each ${cycleWord(s.billing_cycle)} costs ${money(p.unit_price_cents * seats, c)} plus tax at today's price.</p>`;
    }
    if (p.kind === "decrease") {
      const subtotal = p.unit_price_cents * seats;
      const tax = taxOf(subtotal, p.tax_rate_bps);
      return html`<p class="change-summary"><b>${s.seats} → ${plural(seats, "seat")} from ${day(p.effective_at)}</b></p>
        <p>Nothing is charged or refunded now; the customer keeps ${plural(s.seats, "seat")} until then.</p>
        <table class="preview-table"><caption>Next ${cycleWord(s.billing_cycle)}'s price, from ${day(p.effective_at)}</caption><tbody>
          <tr><th scope="row">${plural(seats, "seat")} × ${money(p.unit_price_cents, c)}</th><td class="number">${money(subtotal, c)}</td></tr>
          <tr><th scope="row">Tax (${percent(p.tax_rate_bps)})</th><td class="number">${money(tax, c)}</td></tr>
          <tr class="total"><th scope="row">Total per ${cycleWord(s.billing_cycle)}</th><td class="number">${money(subtotal + tax, c)}</td></tr>
        </tbody></table><p class="muted">At today's catalog price; the renewal is priced when it happens.</p>`;
    }
    return html`<p><b>Keeps ${plural(s.seats, "seat")}.</b> The decrease to ${s.pending_seats} scheduled for ${day(s.current_period_end)} is withdrawn. Nothing is charged.</p>`;
  }

  async function refreshPreview() {
    const seats = Number(input.value);
    const signal = nextRequest();
    try {
      const preview = await api("POST", `/v1/resellers/${session.org}/subscriptions/${s.id}/seats/preview`, { body: { seats }, signal });
      quote = { seats, preview, key: uuid() };
      box.innerHTML = explain(preview, seats).toString();
      confirm.disabled = false;
      confirm.textContent = preview.kind === "increase" ? `Add seats and pay ${money(preview.total_cents, preview.currency)}`
        : preview.kind === "decrease" ? `Schedule decrease to ${seats}` : "Withdraw the decrease";
    } catch (error) {
      if (error.name === "AbortError") return;
      box.innerHTML = "";
      dialog.setError(error);
    }
  }
  const later = debounce(refreshPreview, 300);
  function changed() {
    quote = null;
    confirm.disabled = true;
    confirm.textContent = "Confirm";
    dialog.setError(null);
    nextRequest();
    later.cancel();
    const value = input.value.trim();
    const seats = Number(value);
    let problem = null;
    if (!value) problem = "Enter a seat count to see the cost impact.";
    else if (!Number.isInteger(seats) || seats < plan.min_seats || seats > plan.max_seats) {
      problem = `Enter a whole number of seats from ${plan.min_seats} to ${plan.max_seats.toLocaleString("en-US")}.`;
    } else if (seats === s.seats && s.pending_seats === null) problem = `${s.customer} already has ${plural(seats, "seat")}.`;
    if (problem) { box.innerHTML = html`<p class="muted">${problem}</p>`.toString(); return; }
    box.innerHTML = `<p class="muted">Updating the price…</p>`;
    later();
  }
  input.addEventListener("input", changed);
  changed();
}
