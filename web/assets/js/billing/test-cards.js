// With simulated payments (the embedded default): a card form that takes Stripe's published test card
// numbers and sends only the matching test payment method id (pm_card_…); no card number leaves the browser.
const $ = (id) => document.getElementById(id);

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

const digits = () => $("billing-card").value.replace(/[\s-]/g, "");

let wired = false;

/** The card collector of simulated payments: {problem(), paymentMethod(), clear()}. */
export function testCards() {
  $("card-test").hidden = false;
  $("card-stripe").hidden = true;
  if (!wired) {
    wired = true;
    $("billing-card").addEventListener("input", (event) => {
      const input = event.target;
      const spaced = input.value.replace(/\D/g, "").slice(0, 19).replace(/(\d{4})(?=\d)/g, "$1 ");
      if (spaced !== input.value) input.value = spaced;
    });
  }
  return {
    problem() {
      const number = digits();
      if (!/^\d{13,19}$/.test(number)) return "Enter the card number: 13 to 19 digits.";
      if (!(number in TEST_CARDS)) return "This sandbox takes Stripe's test card numbers only, such as 4242 4242 4242 4242.";
      const m = /^(\d{2})\s*\/\s*(\d{2})$/.exec($("billing-expiry").value.trim());
      if (!m || Number(m[1]) < 1 || Number(m[1]) > 12) return "Enter the expiry date as MM/YY.";
      if (new Date(Date.UTC(2000 + Number(m[2]), Number(m[1]), 1)) < new Date()) return "The card has expired: enter a card with a future expiry date.";
      if (!/^\d{3,4}$/.test($("billing-cvc").value.trim())) return "Enter the 3 or 4 digit security code (CVC).";
      return null;
    },
    async paymentMethod() { return TEST_CARDS[digits()]; },
    clear() { for (const id of ["billing-card", "billing-expiry", "billing-cvc"]) $(id).value = ""; },
  };
}
