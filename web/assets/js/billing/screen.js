// Billing: the card and country on file, and the form to change them. The card is collected by
// test-cards.js with simulated payments, or by Stripe.js Elements (stripe.js) with LEDGER_PAYMENTS=stripe,
// as GET /v1/payment-config says; either way only a payment method id (pm_…) is sent to the API.
import { api } from "../lib/api.js";
import { countryName, html, percent, uuid } from "../lib/format.js";
import { session } from "../lib/session.js";
import { announce, reportError } from "../lib/ui.js";
import { plainWords, Said } from "../lib/words.js";
import { testCards } from "./test-cards.js";

const $ = (id) => document.getElementById(id);
let wired = false;
let payments = null; // GET /v1/payment-config, asked once
let card = null; // the card collector: {problem(), paymentMethod(email), clear()}

export async function showBilling() {
  if (!wired) wire();
  fillCountries();
  $("billing-error").textContent = "";
  try {
    const [b] = await Promise.all([api("GET", `/v1/resellers/${session.org}/billing`), chooseCardForm()]);
    $("billing-current").innerHTML = b.on_file
      ? html`<p><b class="card-brand">${b.card.brand}</b> ending in <b>${b.card.last4}</b>, expires ${String(b.card.exp_month).padStart(2, "0")}/${b.card.exp_year}</p>
         <p>Invoices go to ${b.billing_email}. Country: ${countryName(b.country)} (${b.country}); tax ${b.tax_exempt ? "exempt" : percent(b.tax_rate_bps ?? 0)}.</p>`.toString()
      : `<p>No billing information on file yet. Add a card to buy subscriptions for your customers.</p>`;
    if (b.billing_email && !$("billing-email").value) $("billing-email").value = b.billing_email;
    if (b.country && [...$("billing-country").options].some((o) => o.value === b.country)) $("billing-country").value = b.country;
  } catch (error) {
    if (error.code === "said") $("billing-error").textContent = error.message;
    else reportError(error);
  }
}

async function chooseCardForm() {
  payments ??= await api("GET", "/v1/payment-config");
  if (payments.processor !== "stripe") { card = testCards(); return; }
  card = null;
  $("billing-submit").disabled = true;
  if (!payments.stripe_publishable_key) {
    $("card-test").hidden = true;
    throw new Said("Cards cannot be added here yet: this service takes payments with Stripe but has no Stripe publishable key (LEDGER_STRIPE_PUBLISHABLE_KEY). Ask the service's operator.");
  }
  const { stripeCard } = await import("./stripe.js");
  card = await stripeCard(payments.stripe_publishable_key, (message) => { $("billing-error").textContent = message; });
  $("billing-submit").disabled = false;
}

function fillCountries() {
  const select = $("billing-country");
  if (select.options.length > 1) return;
  const codes = Object.keys(session.taxRates).sort((a, b) => countryName(a).localeCompare(countryName(b)));
  select.innerHTML = html`<option value="">Choose a country</option>${codes.map((code) => html`<option value="${code}">${countryName(code)} — tax ${percent(session.taxRates[code])}</option>`)}`.toString();
}

async function save(event) {
  event.preventDefault();
  if (!card) return;
  const email = $("billing-email").value.trim();
  const problem = !$("billing-email").checkValidity() || !email ? "Enter the billing email address where invoices go."
    : !$("billing-country").value ? "Choose the billing country." : card.problem();
  if (problem) { $("billing-error").textContent = problem; return; }
  $("billing-error").textContent = "";
  $("billing-submit").disabled = true;
  try {
    const paymentMethod = await card.paymentMethod(email);
    const b = await api("PUT", `/v1/resellers/${session.org}/billing`, { idempotencyKey: uuid(),
      body: { payment_method: paymentMethod, billing_email: email, country: $("billing-country").value } });
    card.clear();
    announce(`Billing updated: ${b.card.brand} ending in ${b.card.last4} is now on file; tax ${b.tax_exempt ? "exempt" : percent(b.tax_rate_bps ?? 0)}.`);
    await showBilling();
  } catch (error) {
    $("billing-error").textContent = error.code === "payment_declined"
      ? "The card was declined when saving it, so it was not put on file. Use another card."
      : plainWords(error).text;
  } finally {
    $("billing-submit").disabled = false;
  }
}

function wire() {
  wired = true;
  $("billing-form").addEventListener("submit", save);
}
