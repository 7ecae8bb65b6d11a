// Create Subscription: plan, billing cycle, the recipient's details for the plan's type, a price
// preview (asked for once typing pauses, and only when the form is complete), then confirm.
import { api } from "../lib/api.js";
import { cycleWord, html, money, plural, uuid } from "../lib/format.js";
import { session } from "../lib/session.js";
import { announce, debounce, latest, openDialog } from "../lib/ui.js";
import { previewTable } from "./preview.js";

export function createDialog(afterCreate) {
  const plans = session.plans;
  const dialog = openDialog({
    title: "Create Subscription",
    wide: true,
    confirmLabel: "Confirm and pay",
    body: html`
      <fieldset class="choices"><legend>Plan</legend>
        ${plans.map((p, i) => html`<label class="choice"><input type="radio" name="plan" value="${p.id}" ${i === 0 ? html`checked` : ""}>
          <span><b>${p.name}</b> <span class="muted">${p.kind === "single_user" ? "one person, one seat" : "an organization, per seat"}
          · ${money(p.monthly_cents, session.currency)} a month or ${money(p.annual_cents, session.currency)} a year per seat</span></span></label>`)}
      </fieldset>
      <fieldset class="choices inline"><legend>Billing cycle</legend>
        <label class="choice"><input type="radio" name="cycle" value="monthly" checked> Monthly</label>
        <label class="choice"><input type="radio" name="cycle" value="annual"> Annual</label>
      </fieldset>
      <div data-for="single_user" class="fields">
        <label for="create-email">End-user email</label>
        <input id="create-email" name="end_user_email" type="email" required autocomplete="off" aria-describedby="create-email-help">
        <p id="create-email-help" class="help">They receive an invitation to activate the subscription under their Lens ID.</p>
        <label for="create-name">Display name <span class="muted">(optional)</span></label>
        <input id="create-name" name="display_name" autocomplete="off" maxlength="200">
      </div>
      <div data-for="organization" class="fields">
        <label for="create-org">Organization name</label>
        <input id="create-org" name="organization_name" required autocomplete="off" maxlength="200">
        <label for="create-admin">Administrator email</label>
        <input id="create-admin" name="admin_email" type="email" required autocomplete="off" aria-describedby="create-admin-help">
        <p id="create-admin-help" class="help">They are invited to manage the new customer account and assign its seats.</p>
        <label for="create-seats">Seats</label>
        <input id="create-seats" name="seats" type="number" inputmode="numeric" min="1" step="1" value="5" required>
      </div>
      <section class="preview" aria-live="polite" data-preview><p class="muted">Complete the details to see the price.</p></section>`,
    onConfirm: async () => {
      if (!quote) return;
      let created;
      try {
        created = await api("POST", `/v1/resellers/${session.org}/subscriptions`,
          { body: { ...quote.order, quote_id: quote.preview.quote_id }, idempotencyKey: quote.key });
      } catch (error) {
        if (error.code === "quote_stale") refreshPreview();
        throw error;
      }
      dialog.close();
      const invited = created.type === "organization" ? created.admin_email : created.end_user_email;
      announce(`Subscription created for ${created.customer}: ${created.plan_name}, ${plural(created.seats, "seat")}, `
        + `${quote.preview.total_cents ? `${money(quote.preview.total_cents, quote.preview.currency)} charged` : "nothing charged"}. `
        + `An invitation is on its way to ${invited}.`);
      afterCreate(created);
    },
  });
  const { form, confirm } = dialog;
  const box = form.querySelector("[data-preview]");
  let quote = null; // {order, preview, key} for the form as it is now
  const nextRequest = latest();

  const plan = () => session.plan(form.elements.plan.value);
  const visible = () => [...form.querySelectorAll(`[data-for="${plan().kind}"] input`)];
  function order() {
    const base = { plan: plan().id, billing_cycle: form.elements.cycle.value };
    const v = (name) => form.elements[name].value.trim();
    if (plan().kind === "single_user") return { ...base, end_user_email: v("end_user_email"), ...(v("display_name") ? { display_name: v("display_name") } : {}) };
    return { ...base, organization_name: v("organization_name"), admin_email: v("admin_email"), seats: Number(v("seats")) };
  }
  function incomplete() {
    const seats = form.elements.seats;
    if (plan().kind === "organization") {
      seats.min = plan().min_seats; seats.max = plan().max_seats;
    }
    const bad = visible().find((input) => !input.checkValidity() || (input.required && !input.value.trim()));
    if (!bad) return null;
    if (bad === seats) return `Seats must be a whole number from ${plan().min_seats} to ${plan().max_seats.toLocaleString("en-US")}.`;
    return null;
  }
  function toggle() {
    for (const group of form.querySelectorAll("[data-for]")) {
      const shown = group.dataset.for === plan().kind;
      group.hidden = !shown;
      for (const input of group.querySelectorAll("input")) input.disabled = !shown;
    }
  }
  async function refreshPreview() {
    const wanted = order();
    const signal = nextRequest();
    try {
      const preview = await api("POST", `/v1/resellers/${session.org}/subscriptions/preview`, { body: wanted, signal });
      quote = { order: wanted, preview, key: uuid() };
      box.innerHTML = html`${previewTable(preview)}
        <p class="muted">${plan().name}, ${wanted.billing_cycle}: the first ${cycleWord(wanted.billing_cycle)} is charged now to the card on file, then it renews each ${cycleWord(wanted.billing_cycle)}.</p>`.toString();
      confirm.disabled = false;
      confirm.textContent = `Confirm and pay ${money(preview.total_cents, preview.currency)}`;
    } catch (error) {
      if (error.name === "AbortError") return;
      box.innerHTML = "";
      dialog.setError(error);
    }
  }
  const later = debounce(refreshPreview, 300);
  function changed() {
    toggle();
    if (quote && JSON.stringify(quote.order) === JSON.stringify(order())) return; // nothing that prices changed
    quote = null;
    confirm.disabled = true;
    confirm.textContent = "Confirm and pay";
    dialog.setError(null);
    nextRequest();
    const problem = incomplete();
    const complete = !problem && visible().filter((i) => i.required).every((i) => i.value.trim() && i.checkValidity());
    if (!complete) {
      later.cancel();
      box.innerHTML = html`<p class="muted">${problem || "Complete the details to see the price."}</p>`.toString();
      return;
    }
    box.innerHTML = `<p class="muted">Updating the price…</p>`;
    later();
  }
  form.addEventListener("input", changed);
  changed();
}
