// A price preview as the reseller reads it: lines (credits are negative), unit price, quantity,
// subtotal, tax and the total due now.
import { html, money, percent } from "../lib/format.js";

export function previewTable(p, { caption = "Price preview" } = {}) {
  const c = p.currency;
  return html`<table class="preview-table">
    <caption>${caption}</caption>
    <thead><tr><th scope="col">Item</th><th scope="col" class="number">Quantity</th><th scope="col" class="number">Unit price</th><th scope="col" class="number">Amount</th></tr></thead>
    <tbody>${p.lines.map((l) => html`<tr class="${l.amount_cents < 0 ? "credit" : ""}">
      <td>${l.description}</td><td class="number">${l.quantity}</td><td class="number">${money(l.unit_amount_cents, c)}</td>
      <td class="number">${money(l.amount_cents, c)}</td></tr>`)}</tbody>
    <tfoot>
      <tr><th scope="row" colspan="3">Subtotal</th><td class="number" data-testid="subtotal">${money(p.subtotal_cents, c)}</td></tr>
      <tr><th scope="row" colspan="3">Tax (${percent(p.tax_rate_bps)})</th><td class="number" data-testid="tax">${money(p.tax_cents, c)}</td></tr>
      <tr class="total"><th scope="row" colspan="3">Total due now</th><td class="number" data-testid="total">${money(p.total_cents, c)}</td></tr>
    </tfoot></table>`;
}
