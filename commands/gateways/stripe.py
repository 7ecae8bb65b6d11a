"""The payment gateway on Stripe, through the official SDK (``stripe.StripeClient``).

A Customer per reseller with a default card PaymentMethod, and one off-session PaymentIntent per charge,
keyed by the ledger's idempotency key, with the ledger's ids and that key (``charge_key``) in its
metadata: Stripe copies them onto the Charge, which reconciliation lists, and crash recovery finds a
charge by its key. No card data is kept: only brand, last4 and expiry come back.

Every refusal of the processor leaves as a domain error (PaymentDeclined, ValidationFailed, InvalidState,
IdempotencyConflict) and every outage as PaymentUnavailable, so none reaches a caller as a crash.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import stripe

from commands.errors import IdempotencyConflict, PaymentUnavailable
from commands.ports import ProcessorCharge, ProcessorRefund
from ledger.errors import DomainError, InvalidState, PaymentDeclined, ValidationFailed
from ledger.reseller import CardOnFile

# The SDK retries connection errors, 409 and 5xx, resending the same Idempotency-Key: Stripe then
# replays the first answer instead of charging again, so retrying is safe.
MAX_NETWORK_RETRIES = 2
TIMEOUT_SECONDS = 30
CHARGE_KEY = "charge_key"
# A PaymentIntent in these states may still take the money.
IN_PROGRESS = frozenset({"processing", "requires_confirmation"})

Refusal = Callable[[stripe.InvalidRequestError], DomainError]


class StripeGateway:
    name = "stripe"

    def __init__(self, client: stripe.StripeClient, *, http_client: stripe.HTTPClient | None = None) -> None:
        """``http_client``, if given, is the client's transport, closed by ``close()``."""
        self._v1 = client.v1
        self._http_client = http_client
        # List filters the processor refused: it is not asked them again, they are applied here.
        self._refused_filters: set[str] = set()

    @classmethod
    def from_settings(cls, secret_key: str, *, api_base: str | None = None,
                      http_client: stripe.HTTPClient | None = None) -> StripeGateway:
        http_client = http_client or stripe.RequestsClient(timeout=TIMEOUT_SECONDS)
        client = stripe.StripeClient(secret_key, base_addresses={"api": api_base} if api_base else None,
                                     max_network_retries=MAX_NETWORK_RETRIES, http_client=http_client)
        return cls(client, http_client=http_client)

    def save_card(self, *, reseller_org_id: str, payment_method: str, billing_email: str,
                  customer: str | None, idempotency_key: str) -> CardOnFile:
        refused = _refused_billing_info(payment_method)
        if customer is None:
            with _port_errors(refused):
                customer = self._v1.customers.create(
                    params={"email": billing_email, "metadata": {"reseller_org_id": reseller_org_id}},
                    options={"idempotency_key": idempotency_key}).id
        with _port_errors(refused):
            # Stripe may refuse the card here (402), before it becomes the default.
            method = self._v1.payment_methods.attach(payment_method, params={"customer": customer})
        if method.type != "card":
            raise ValidationFailed("payment_method", f"{payment_method} is a {method.type}, not a card")
        with _port_errors(refused):
            self._v1.customers.update(customer, params={
                "email": billing_email, "invoice_settings": {"default_payment_method": method.id}})
        card = method.card
        return CardOnFile(customer, method.id, card.brand, card.last4, card.exp_month, card.exp_year)

    def charge(self, *, customer: str, payment_method: str, amount_cents: int, currency: str,
               idempotency_key: str, metadata: Mapping[str, str]) -> str:
        with _port_errors(_refused_charge):
            intent = self._v1.payment_intents.create(
                params={"amount": amount_cents, "currency": currency.lower(), "customer": customer,
                        "payment_method": payment_method, "confirm": True, "off_session": True,
                        # Cards only: with Stripe's default automatic payment methods, a server-side
                        # confirm would ask for a return_url (for redirecting methods).
                        "payment_method_types": ["card"],
                        "metadata": {**metadata, CHARGE_KEY: idempotency_key}},
                options={"idempotency_key": idempotency_key})
            if intent.status in IN_PROGRESS:
                # A retry with the same key gets the first answer replayed: ask for the state now.
                intent = self._v1.payment_intents.retrieve(intent.id)
        if intent.status == "succeeded":
            return intent.id
        if intent.status == "requires_action":
            raise PaymentDeclined("The card needs the cardholder's authentication, which an off-session "
                                  "charge cannot ask for.", "authentication_required")
        if intent.status in IN_PROGRESS:
            raise PaymentUnavailable(f"the payment {intent.id} is still {intent.status}; retry later")
        # Stripe answers a decline with a card error; a PaymentIntent that comes back failed all the same
        # (requires_payment_method, canceled) took nothing either.
        failure = intent.to_dict().get("last_payment_error") or {}
        raise PaymentDeclined(failure.get("message") or f"The payment was not made: it is {intent.status}.",
                              failure.get("decline_code") or failure.get("code") or intent.status)

    def find_charge(self, *, customer: str, idempotency_key: str) -> str | None:
        """Lists the customer's PaymentIntents (Stripe's search is eventually consistent, so not used) and
        looks for the key in their metadata."""
        with _port_errors():
            intents = self._list(self._v1.payment_intents, {"customer": customer},
                                 lambda intent: intent.customer == customer)
        keyed = [intent for intent in intents if intent.metadata.to_dict().get(CHARGE_KEY) == idempotency_key]
        succeeded = [intent.id for intent in keyed if intent.status == "succeeded"]
        if succeeded:
            return succeeded[0]
        pending = [intent for intent in keyed if intent.status in IN_PROGRESS]
        if pending:
            raise PaymentUnavailable(f"the payment {pending[0].id} is still {pending[0].status}; ask again later")
        return None

    def refund(self, *, payment_reference: str, amount_cents: int, idempotency_key: str,
               metadata: Mapping[str, str]) -> str:
        with _port_errors(_refused_refund):
            return self._v1.refunds.create(
                params={"payment_intent": payment_reference, "amount": amount_cents, "metadata": dict(metadata)},
                options={"idempotency_key": idempotency_key}).id

    def list_charges(self, *, created_from: datetime, created_to: datetime) -> list[ProcessorCharge]:
        window = _range(created_from, created_to)
        with _port_errors():
            charges = self._list(self._v1.charges, {"created": window}, _created_in(window))
        return sorted((
            ProcessorCharge(c.payment_intent or c.id, c.amount, c.currency.upper(), c.status,
                            _instant(c.created), c.metadata.to_dict(), c.amount_refunded)
            for c in charges if c.status == "succeeded"
        ), key=_oldest_first)

    def list_refunds(self, *, created_from: datetime, created_to: datetime) -> list[ProcessorRefund]:
        window = _range(created_from, created_to)
        with _port_errors():
            refunds = self._list(self._v1.refunds, {"created": window}, _created_in(window))
        return sorted((
            ProcessorRefund(r.id, r.payment_intent or r.charge, r.amount, r.currency.upper(),
                            _instant(r.created), r.metadata.to_dict())
            # Only a succeeded refund gave money back (a pending one may still fail).
            for r in refunds if r.status == "succeeded"
        ), key=_oldest_first)

    def close(self) -> None:
        if self._http_client is not None:
            self._http_client.close()

    def _list(self, resource: Any, filters: dict[str, Any], keep: Callable[[Any], bool]) -> list[Any]:
        """Every object of a list that ``keep`` (the filters, as a test) keeps, through every page. When
        the processor refuses a filter (localstripe: ``created`` on charges, ``customer`` on PaymentIntents;
        and a 500 for ``created`` on refunds, hence remembering), the list is read whole and kept here."""
        if not self._refused_filters & filters.keys():
            try:
                return [o for o in resource.list(params={**filters, "limit": 100}).auto_paging_iter() if keep(o)]
            except stripe.InvalidRequestError:
                self._refused_filters |= filters.keys()
        return [o for o in resource.list(params={"limit": 100}).auto_paging_iter() if keep(o)]


@contextmanager
def _port_errors(refused: Refusal | None = None) -> Iterator[None]:
    """The SDK's errors as the port's. ``refused`` says what a request refused as invalid means for this
    call (by default: the processor could not be read)."""
    try:
        yield
    except stripe.CardError as error:
        decline_code = getattr(error.error, "decline_code", None) or error.code or "card_declined"
        raise PaymentDeclined(_message(error), decline_code) from error
    except stripe.InvalidRequestError as error:
        raise (refused or _unreadable)(error) from error
    except stripe.IdempotencyError as error:
        raise IdempotencyConflict(f"the payment processor refused an idempotency key reused with other "
                                  f"parameters: {_message(error)}") from error
    # PaymentUnavailable asks the client to retry. That cannot charge twice: the ledger derives the
    # idempotency key from the change being paid for, so a retry of the same change sends the same
    # key and Stripe answers with the first PaymentIntent.
    except stripe.RateLimitError as error:  # Stripe's rate limits are per second
        raise PaymentUnavailable("the payment processor asks us to slow down", 2) from error
    except (stripe.AuthenticationError, stripe.PermissionError) as error:
        raise PaymentUnavailable(f"the payment processor refused the ledger's API key "
                                 f"({type(error).__name__})") from error
    except stripe.StripeError as error:  # connection errors, timeouts, 5xx and 409 after the SDK's retries
        raise PaymentUnavailable(f"the payment processor is unavailable ({type(error).__name__}); "
                                 f"retry later") from error


def _refused_billing_info(payment_method: str) -> Refusal:
    """What the reseller gave is at fault: the billing email, or the payment method (unknown, already
    attached elsewhere, used once and detached, of a kind the account does not take...)."""
    def refused(error: stripe.InvalidRequestError) -> DomainError:
        if error.param == "email":
            return ValidationFailed("billing_email", f"the payment processor refused the billing email: "
                                                     f"{_message(error)}")
        return ValidationFailed("payment_method", f"the payment processor refused the payment method "
                                                  f"{payment_method}: {_message(error)}")
    return refused


def _refused_charge(error: stripe.InvalidRequestError) -> DomainError:
    """The processor will not charge the card on file (detached, expired, an amount under its minimum):
    for the ledger a declined payment, recorded as one, that another card settles."""
    return PaymentDeclined(_message(error), error.code or "invalid_request")


def _refused_refund(error: stripe.InvalidRequestError) -> DomainError:
    """Already refunded, more than is left, no such payment: as the simulated gateway says it."""
    return InvalidState(_message(error))


def _unreadable(error: stripe.InvalidRequestError) -> DomainError:
    return PaymentUnavailable(f"the payment processor refused to answer: {_message(error)}")


def _message(error: stripe.StripeError) -> str:
    return error.user_message or type(error).__name__


def _range(created_from: datetime, created_to: datetime) -> dict[str, int]:
    # Stripe's times are whole seconds: t >= from and t < to for an integer t.
    return {"gte": math.ceil(created_from.timestamp()), "lt": math.ceil(created_to.timestamp())}


def _created_in(window: Mapping[str, int]) -> Callable[[Any], bool]:
    return lambda listed: window["gte"] <= listed.created < window["lt"]


def _oldest_first(listed: ProcessorCharge | ProcessorRefund) -> datetime:
    # Stripe lists newest first; the simulated gateway, oldest first.
    return listed.created


def _instant(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)
