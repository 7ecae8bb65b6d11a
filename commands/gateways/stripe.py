"""The payment gateway on Stripe, through the official SDK (``stripe.StripeClient``).

A Customer per reseller with a default card PaymentMethod, and one off-session PaymentIntent per charge,
keyed by the ledger's idempotency key, with the ledger's ids in its metadata (Stripe copies them onto the
Charge, which reconciliation lists). No card data is kept: only brand, last4 and expiry come back.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime

import stripe

from commands.errors import PaymentUnavailable
from commands.ports import ProcessorCharge, ProcessorRefund
from ledger.errors import PaymentDeclined, ValidationFailed
from ledger.reseller import CardOnFile

# The SDK retries connection errors, 409 and 5xx, resending the same Idempotency-Key: Stripe then
# replays the first answer instead of charging again, so retrying is safe.
MAX_NETWORK_RETRIES = 2
TIMEOUT_SECONDS = 30


class StripeGateway:
    name = "stripe"

    def __init__(self, client: stripe.StripeClient, *, http_client: stripe.HTTPClient | None = None) -> None:
        """``http_client``, if given, is the client's transport, closed by ``close()``."""
        self._v1 = client.v1
        self._http_client = http_client

    @classmethod
    def from_settings(cls, secret_key: str, *, api_base: str | None = None,
                      http_client: stripe.HTTPClient | None = None) -> StripeGateway:
        http_client = http_client or stripe.RequestsClient(timeout=TIMEOUT_SECONDS)
        client = stripe.StripeClient(secret_key, base_addresses={"api": api_base} if api_base else None,
                                     max_network_retries=MAX_NETWORK_RETRIES, http_client=http_client)
        return cls(client, http_client=http_client)

    def save_card(self, *, reseller_org_id: str, payment_method: str, billing_email: str,
                  customer: str | None, idempotency_key: str) -> CardOnFile:
        if customer is None:
            with _port_errors():
                customer = self._v1.customers.create(
                    params={"email": billing_email, "metadata": {"reseller_org_id": reseller_org_id}},
                    options={"idempotency_key": idempotency_key}).id
        with _port_errors(unknown="payment_method"):
            # Stripe may refuse the card here (402), before it becomes the default.
            method = self._v1.payment_methods.attach(payment_method, params={"customer": customer})
        if method.type != "card":
            raise ValidationFailed("payment_method", f"{payment_method} is a {method.type}, not a card")
        with _port_errors():
            self._v1.customers.update(customer, params={
                "email": billing_email, "invoice_settings": {"default_payment_method": method.id}})
        card = method.card
        return CardOnFile(customer, method.id, card.brand, card.last4, card.exp_month, card.exp_year)

    def charge(self, *, customer: str, payment_method: str, amount_cents: int, currency: str,
               idempotency_key: str, metadata: Mapping[str, str]) -> str:
        with _port_errors():
            intent = self._v1.payment_intents.create(
                params={"amount": amount_cents, "currency": currency.lower(), "customer": customer,
                        "payment_method": payment_method, "confirm": True, "off_session": True,
                        # Cards only: with Stripe's default automatic payment methods, a server-side
                        # confirm would ask for a return_url (for redirecting methods).
                        "payment_method_types": ["card"], "metadata": dict(metadata)},
                options={"idempotency_key": idempotency_key})
            if intent.status == "processing":
                # A retry with the same key gets the first answer replayed: ask for the state now.
                intent = self._v1.payment_intents.retrieve(intent.id)
        if intent.status == "succeeded":
            return intent.id
        if intent.status == "requires_action":
            raise PaymentDeclined("The card needs the cardholder's authentication, which an off-session "
                                  "charge cannot ask for.", "authentication_required")
        if intent.status == "processing":
            raise PaymentUnavailable(f"the payment {intent.id} is still processing; retry later")
        raise RuntimeError(f"PaymentIntent {intent.id} is {intent.status} after an off-session confirm")

    def refund(self, *, payment_reference: str, amount_cents: int, idempotency_key: str,
               metadata: Mapping[str, str]) -> str:
        with _port_errors():
            return self._v1.refunds.create(
                params={"payment_intent": payment_reference, "amount": amount_cents, "metadata": dict(metadata)},
                options={"idempotency_key": idempotency_key}).id

    def list_charges(self, *, created_from: datetime, created_to: datetime) -> list[ProcessorCharge]:
        with _port_errors():
            charges = self._v1.charges.list(params={"created": _range(created_from, created_to), "limit": 100})
            return sorted((
                ProcessorCharge(c.payment_intent or c.id, c.amount, c.currency.upper(), c.status,
                                _instant(c.created), c.metadata.to_dict(), c.amount_refunded)
                for c in charges.auto_paging_iter() if c.status == "succeeded"
            ), key=_oldest_first)

    def list_refunds(self, *, created_from: datetime, created_to: datetime) -> list[ProcessorRefund]:
        with _port_errors():
            refunds = self._v1.refunds.list(params={"created": _range(created_from, created_to), "limit": 100})
            return sorted((
                ProcessorRefund(r.id, r.payment_intent or r.charge, r.amount, r.currency.upper(),
                                _instant(r.created), r.metadata.to_dict())
                # Only a succeeded refund gave money back (a pending one may still fail).
                for r in refunds.auto_paging_iter() if r.status == "succeeded"
            ), key=_oldest_first)

    def close(self) -> None:
        if self._http_client is not None:
            self._http_client.close()


@contextmanager
def _port_errors(*, unknown: str | None = None) -> Iterator[None]:
    """The SDK's errors as the port's. Others (a bad key, a malformed request) are bugs and pass
    unchanged. ``unknown`` names the field at fault when Stripe says a resource does not exist."""
    try:
        yield
    except stripe.StripeError as error:
        message = error.user_message or type(error).__name__
        status = error.http_status
        if isinstance(error, stripe.CardError):
            decline_code = getattr(error.error, "decline_code", None) or error.code or "card_declined"
            raise PaymentDeclined(message, decline_code) from error
        if isinstance(error, stripe.IdempotencyError):
            raise RuntimeError(f"Stripe refused an idempotency key reused with other parameters: {message}") from error
        if (isinstance(error, stripe.InvalidRequestError) and unknown and error.code == "resource_missing"
                and error.param in (None, unknown)):
            raise ValidationFailed(unknown, message) from error
        # PaymentUnavailable asks the client to retry. That cannot charge twice: the ledger derives the
        # idempotency key from the change being paid for, so a retry of the same change sends the same
        # key and Stripe answers with the first PaymentIntent.
        if isinstance(error, stripe.RateLimitError):  # Stripe's rate limits are per second
            raise PaymentUnavailable("the payment processor asks us to slow down", 2) from error
        if isinstance(error, stripe.APIConnectionError) or (
                isinstance(error, stripe.APIError) and (status is None or status == 409 or status >= 500)):
            raise PaymentUnavailable(f"the payment processor is unavailable ({type(error).__name__}); "
                                     f"retry later") from error
        raise


def _range(created_from: datetime, created_to: datetime) -> dict[str, int]:
    # Stripe's times are whole seconds: t >= from and t < to for an integer t.
    return {"gte": math.ceil(created_from.timestamp()), "lt": math.ceil(created_to.timestamp())}


def _oldest_first(listed: ProcessorCharge | ProcessorRefund) -> datetime:
    # Stripe lists newest first; the simulated gateway, oldest first.
    return listed.created


def _instant(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)
