// A subscription's history as a timeline: when, who, what happened, and the amount charged.
import { api } from "../lib/api.js";
import { day, html, moment, money, plural } from "../lib/format.js";
import { session } from "../lib/session.js";
import { openDialog, reportError } from "../lib/ui.js";

const REASONS = { canceled: "it was canceled", payment_failed: "its renewal payment failed" };

function story(e) {
  const d = e.data;
  switch (e.type) {
    case "SubscriptionCreated":
      return [`Subscription created: ${d.plan_name}, ${d.billing_cycle}, ${plural(d.seats, "seat")}`, d.bill];
    case "SeatsIncreased":
      return [`Seats increased from ${d.seats_before} to ${d.seats_after} (prorated)`, d.bill];
    case "SeatDecreaseScheduled":
      return [`Decrease from ${d.seats} to ${plural(d.pending_seats, "seat")} scheduled for ${day(d.effective_at)}`];
    case "SeatDecreaseWithdrawn":
      return [`Scheduled decrease to ${d.withdrawn_pending_seats} withdrawn${d.reason === "seats_increased" ? " (seats were increased)" : ""}`];
    case "Canceled":
      return [`Canceled: usable until ${day(d.effective_at)}, not renewed`];
    case "Resumed":
      return ["Resumed: renews as normal"];
    case "Renewed":
      return [`Renewed for ${day(d.period_start)} – ${day(d.period_end)}, ${plural(d.seats_after, "seat")}`, d.bill];
    case "RenewalPaymentFailed":
      return [`Renewal payment declined (${d.decline_code})${d.next_retry_at ? `; next try on ${day(d.next_retry_at)}` : "; no more tries"}`, d.bill, true];
    case "Expired":
      return [`Expired because ${REASONS[d.reason] || d.reason}`];
    default:
      return [e.type.replace(/([a-z])([A-Z])/g, "$1 $2")];
  }
}

const actorName = (actor) => (actor?.startsWith("system:") ? "the ledger (automatic)" : actor || "unknown");

/** Fills `pending` (a loading dialog, see loadingDialog) once the events arrive, if it is still open. */
export async function historyDialog(row, pending) {
  let events;
  try {
    events = await api("GET", `/v1/resellers/${session.org}/subscriptions/${row.subscription_id}/events`,
      { signal: pending.signal });
  } catch (error) {
    if (!pending.isOpen()) return;
    pending.close();
    reportError(error);
    return;
  }
  if (!pending.isOpen()) return; // closed while loading: it stays closed
  openDialog({
    title: `History: ${row.customer}`,
    wide: true,
    body: html`<ol class="timeline">${events.items.map((e) => {
      const [what, bill, unpaid] = story(e);
      return html`<li class="event ${e.type}">
        <p class="what">${what}</p>
        <p class="meta"><time datetime="${e.occurred_at}">${moment(e.occurred_at)}</time> · by ${actorName(e.actor)}</p>
        ${bill ? html`<p class="amount">${unpaid ? "Not charged: " : "Charged: "}${money(bill.total_cents, bill.currency)}
          <span class="muted">(${money(bill.subtotal_cents, bill.currency)} + tax ${money(bill.tax_cents, bill.currency)})</span></p>` : ""}
      </li>`;
    })}</ol>`,
  });
}
