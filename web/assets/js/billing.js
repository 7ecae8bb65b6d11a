// Billing: the card and country on file, and the form to change them. With simulated payments the
// card form takes Stripe's published test card numbers and sends only the matching test payment
// method id (pm_card_…); no card number ever leaves the browser.
import { api } from "./lib/api.js";
import { countryName, html, percent, uuid } from "./lib/format.js";
import { session } from "./lib/session.js";
import { announce, reportError } from "./lib/ui.js";
import { plainWords } from "./lib/words.js";

// https://docs.stripe.com/testing#cards and #declined-payments
const TEST_CARDS = {
  4242424242424242: "pm_card_visa",
  4000056655665556: "pm_card_visa_debit",
  5555555555554444: "pm_card_mastercard",
  5200828282828210: "pm_card_mastercard_debit",
  378282246310005: "pm_card_amex",
  6011111111111117: "pm_card_discover",
  4000000000000002: "pm_card_chargeDeclined",
  4000000000009995: "pm_card_chargeDeclinedInsufficientFunds",
  4000000000009987: "pm_card_chargeDeclinedLostCard",
  4000000000009979: "pm_card_chargeDeclinedStolenCard",
  4000000000000069: "pm_card_chargeDeclinedExpiredCard",
  4000000000000119: "pm_card_chargeDeclinedProcessingError",
  4000000000000341: "pm_card_chargeCustomerFail",
};

const $ = (id) => document.getElementById(id);
let wired = false;

export async function showBilling() {
  if (!wired) wire();
  fillCountries();
  $("billing-error").textContent = "";
  try {
    const b = await api("GET", `/v1/resellers/${session.org}/billing`);
    $("billing-current").innerHTML = b.on_file
      ? html`<p><b class="card-brand">${b.card.brand}</b> ending in <b>${b.card.last4}</b>, expires ${String(b.card.exp_month).padStart(2, "0")}/${b.card.exp_year}</p>
         <p>Invoices go to ${b.billing_email}. Country: ${countryName(b.country)} (${b.country}); tax ${b.tax_exempt ? "exempt" : percent(b.tax_rate_bps ?? 0)}.</p>`.toString()
      : `<p>No billing information on file yet. Add a card to buy subscriptions for your customers.</p>`;
    if (b.billing_email && !$("billing-email").value) $("billing-email").value = b.billing_email;
    if (b.country && [...$("billing-country").options].some((o) => o.value === b.country)) $("billing-country").value = b.country;
  } catch (error) {
    reportError(error);
  }
}

function fillCountries() {
  const select = $("billing-country");
  if (select.options.length > 1) return;
  const codes = Object.keys(session.taxRates).sort((a, b) => countryName(a).localeCompare(countryName(b)));
  select.innerHTML = html`<option value="">Choose a country</option>${codes.map((code) => html`<option value="${code}">${countryName(code)} — tax ${percent(session.taxRates[code])}</option>`)}`.toString();
}

function cardProblem(digits, expiry, cvc) {
  if (!/^\d{13,19}$/.test(digits)) return "Enter the card number: 13 to 19 digits.";
  if (!(digits in TEST_CARDS)) return "This sandbox takes Stripe's test card numbers only, such as 4242 4242 4242 4242.";
  const m = /^(\d{2})\s*\/\s*(\d{2})$/.exec(expiry);
  if (!m || Number(m[1]) < 1 || Number(m[1]) > 12) return "Enter the expiry date as MM/YY.";
  const end = new Date(Date.UTC(2000 + Number(m[2]), Number(m[1]), 1));
  if (end < new Date()) return "The card has expired: enter a card with a future expiry date.";
  if (!/^\d{3,4}$/.test(cvc)) return "Enter the 3 or 4 digit security code (CVC).";
  return null;
}

async function save(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const digits = $("billing-card").value.replace(/[\s-]/g, "");
  const problem = !$("billing-email").checkValidity() || !$("billing-email").value.trim()
    ? "Enter the billing email address where invoices go."
    : !$("billing-country").value ? "Choose the billing country."
      : cardProblem(digits, $("billing-expiry").value.trim(), $("billing-cvc").value.trim());
  if (problem) { $("billing-error").textContent = problem; return; }
  $("billing-error").textContent = "";
  const button = form.querySelector("[type=submit]");
  button.disabled = true;
  try {
    const b = await api("PUT", `/v1/resellers/${session.org}/billing`, { idempotencyKey: uuid(),
      body: { payment_method: TEST_CARDS[digits], billing_email: $("billing-email").value.trim(), country: $("billing-country").value } });
    for (const id of ["billing-card", "billing-expiry", "billing-cvc"]) $(id).value = "";
    announce(`Billing updated: ${b.card.brand} ending in ${b.card.last4} is now on file; tax ${b.tax_exempt ? "exempt" : percent(b.tax_rate_bps ?? 0)}.`);
    await showBilling();
  } catch (error) {
    $("billing-error").textContent = error.code === "payment_declined"
      ? "The card was declined when saving it, so it was not put on file. Use another card."
      : plainWords(error).text;
  } finally {
    button.disabled = false;
  }
}

function wire() {
  wired = true;
  $("billing-form").addEventListener("submit", save);
  $("billing-card").addEventListener("input", (event) => {
    const input = event.target;
    const digits = input.value.replace(/\D/g, "").slice(0, 19);
    const spaced = digits.replace(/(\d{4})(?=\d)/g, "$1 ");
    if (spaced !== input.value) input.value = spaced;
  });
}
