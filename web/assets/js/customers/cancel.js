// Cancel Subscription (after a confirmation that says until when it stays usable) and
// Resume Subscription (while canceled, before its period ends).
import { api } from "../lib/api.js";
import { day, html, uuid } from "../lib/format.js";
import { session } from "../lib/session.js";
import { announce, openDialog, reportError } from "../lib/ui.js";

export function cancelDialog(row, afterChange) {
  const key = uuid();
  const dialog = openDialog({
    title: `Cancel the subscription of ${row.customer}?`,
    cancelLabel: "Keep subscription",
    confirmLabel: "Cancel Subscription",
    danger: true,
    body: html`<p>${row.plan_name} for ${row.customer} stays usable until <b>${day(row.current_period_end)}</b>
      and is not renewed after that. Nothing is refunded.</p>
      <p class="muted">You can resume it until ${day(row.current_period_end)}.</p>`,
    onConfirm: async () => {
      const canceled = await api("POST", `/v1/resellers/${session.org}/subscriptions/${row.subscription_id}/cancel`,
        { idempotencyKey: key });
      dialog.close();
      announce(`The subscription of ${canceled.customer} is canceled. It stays usable until ${day(canceled.current_period_end)}.`);
      afterChange(canceled);
    },
  });
}

export async function resume(row, afterChange) {
  try {
    const resumed = await api("POST", `/v1/resellers/${session.org}/subscriptions/${row.subscription_id}/resume`,
      { idempotencyKey: uuid() });
    announce(`The subscription of ${resumed.customer} is resumed and renews on ${day(resumed.current_period_end)}.`);
    afterChange(resumed);
  } catch (error) {
    reportError(error);
  }
}
