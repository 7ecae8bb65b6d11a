// With LEDGER_PAYMENTS=stripe and a publishable key: Stripe.js Elements collects the card in Stripe's own
// frame, Stripe.js turns it into a PaymentMethod, and only its id (pm_…) is sent to our API: card data never
// reaches this service. Stripe.js must be loaded from js.stripe.com (Stripe's terms); it is the page's only
// other host, and it is loaded in this mode only, when the Billing screen first opens.
import { Said } from "../lib/words.js";

const STRIPE_JS = "https://js.stripe.com/v3/";

let loading = null;
function loadStripeJs() {
  loading ??= new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = STRIPE_JS;
    script.onload = () => (window.Stripe ? resolve(window.Stripe) : reject(new Error("no Stripe")));
    script.onerror = () => { script.remove(); loading = null; reject(new Error("unreachable")); };
    document.head.append(script);
  });
  return loading;
}

let collector = null;

/** The card collector of the Stripe mode: {problem(), paymentMethod(email), clear()}; mounted once. */
export async function stripeCard(publishableKey, onMessage) {
  document.getElementById("card-test").hidden = true;
  document.getElementById("card-stripe").hidden = false;
  if (collector) return collector;
  let Stripe;
  try {
    Stripe = await loadStripeJs();
  } catch {
    throw new Said("The card form could not be loaded from Stripe (js.stripe.com). Check your connection, then open Billing again.");
  }
  const stripe = Stripe(publishableKey);
  const card = stripe.elements().create("card", { hidePostalCode: true });
  let state = { complete: false, message: "" };
  card.on("change", (event) => { state = { complete: event.complete, message: event.error?.message || "" }; onMessage(state.message); });
  card.mount("#billing-card-element");
  collector = {
    problem() {
      return state.message || (state.complete ? null : "Enter the card details: number, expiry date and security code.");
    },
    async paymentMethod(email) {
      const { paymentMethod, error } = await stripe.createPaymentMethod({ type: "card", card, billing_details: { email } });
      if (error) throw new Said(error.message || "Stripe could not read this card. Check its details.");
      return paymentMethod.id;
    },
    clear() { card.clear(); },
  };
  return collector;
}
