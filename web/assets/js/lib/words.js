// Every problem code of the API in plain words, with the one action that helps, if any.
import { session } from "./session.js";

const FIELDS = {
  end_user_email: "end-user email", admin_email: "administrator email", organization_name: "organization name",
  display_name: "display name", seats: "seat count", billing_email: "billing email", country: "country",
  payment_method: "card",
};

const DECLINES = {
  insufficient_funds: "the card has insufficient funds",
  lost_card: "the card was reported lost",
  stolen_card: "the card was reported stolen",
  expired_card: "the card has expired",
  processing_error: "the bank could not process it",
  generic_decline: "the bank declined it",
};

/** An error whose message is already a sentence for the reseller (such as Stripe's words about a card). */
export class Said extends Error { code = "said"; }

/** {text, action?: {label, href}} for a Problem (or any error). */
export function plainWords(problem) {
  const detail = problem?.body?.detail || problem?.message || "";
  switch (problem?.code) {
    case "payment_declined": {
      const why = DECLINES[problem.body.decline_code] || "the bank declined it";
      return { text: `The payment was not made: ${why}. Nothing was charged. Update the card on file and try again.`,
        action: { label: "Update billing", href: "#billing" } };
    }
    case "billing_info_required":
      return { text: "Add a card under Billing before buying subscriptions for customers.",
        action: { label: "Update billing", href: "#billing" } };
    case "quote_stale":
      return { text: "The price changed since the preview (the subscription changed or the quote is older than 15 minutes). Review the new price and confirm again." };
    case "invalid_state":
      return { text: "This subscription cannot be changed that way any more: it is canceled, or it has expired. The table shows its current state." };
    case "version_mismatch":
      return { text: "Someone else changed this subscription a moment ago. Review its current state and try again." };
    case "seats_fixed":
      return { text: "Lens Plus subscriptions always have exactly one seat." };
    case "no_change":
      return { text: "That is already the seat count. Enter a different number." };
    case "validation_error": {
      const field = problem.body.field || "";
      const name = FIELDS[field.split(".").pop()] || field.replace(/_/g, " ") || "form";
      return { text: `Check the ${name}: ${problem.body.errors?.[0]?.message || detail}.` };
    }
    case "forbidden":
      return { text: "Your account is not an administrator of this reseller organization, or the organization is no longer enabled as a reseller. Contact support if this is unexpected." };
    case "not_found":
      return { text: "That item does not exist, or it belongs to another organization." };
    case "unauthenticated":
      return { text: /expired/i.test(detail)
        ? "Your sign-in has expired. Open a new sign-in link to continue."
        : "Your sign-in is not valid any more. Open a new sign-in link to continue." };
    case "payment_unavailable":
      return { text: "The payment processor is not answering right now. Nothing was charged; try again in a minute." };
    case "projection_lagging":
      return { text: "The table is taking longer than usual to catch up with your change. Refresh in a moment." };
    case "idempotency_conflict":
      return { text: "This request was already sent with different details. Close the form and start again." };
    case "payload_too_large":
      return { text: "That is more text than the form accepts. Shorten it and try again." };
    case "said":
      return { text: problem.message };
    case "network":
      return { text: "The server could not be reached. Check your connection and try again." };
    default:
      return { text: `Something went wrong (${problem?.code || "error"}${session.org ? "" : ""}). Try again; if it keeps happening, contact support.` };
  }
}
