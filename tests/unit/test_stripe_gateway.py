"""Contract tests of the Stripe adapter through the real SDK.

The SDK builds and sends every request (form encoding, Idempotency-Key, retries) and parses every
answer into its objects and errors; only the transport is ours: an in-memory Stripe that answers with
Stripe-shaped JSON (https://docs.stripe.com/api) and records what it was sent. It can also answer
what localstripe cannot: card errors with decline codes, authentication_required, idempotency errors,
rate limits, 5xx and connection errors; and, like localstripe, refuse a list filter.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import stripe

from commands.errors import IdempotencyConflict, PaymentUnavailable
from commands.gateways.stripe import StripeGateway
from commands.ports import ProcessorCharge, ProcessorRefund
from ledger.errors import InvalidState, PaymentDeclined, ValidationFailed
from ledger.reseller import CardOnFile

START = 1_780_000_000  # 2026-05-28T20:26:40Z
METADATA = {"reseller_org_id": "org_1", "subscription_id": "sub-1", "invoice_id": "inv-1", "purpose": "create"}
Json = dict[str, Any]


@dataclass(frozen=True)
class FakeCard:
    brand: str
    last4: str
    refused_when_attached: str | None = None  # a decline code
    charge_error: tuple[str, str] | None = None  # (code, decline_code)


# Stripe's test PaymentMethod ids (https://docs.stripe.com/testing).
TEST_CARDS = {
    "pm_card_visa": FakeCard("visa", "4242"),
    "pm_card_mastercard": FakeCard("mastercard", "4444"),
    "pm_card_chargeDeclined": FakeCard("visa", "0002", refused_when_attached="generic_decline"),
    "pm_card_chargeCustomerFail": FakeCard("visa", "0341", charge_error=("card_declined", "generic_decline")),
    "pm_card_authenticationRequired": FakeCard(
        "visa", "3184", charge_error=("authentication_required", "authentication_required")),
}


@dataclass(frozen=True)
class Sent:
    method: str
    host: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]

    def nested(self, name: str) -> dict[str, str]:
        """``metadata[a]=1`` as ``{"a": "1"}``."""
        prefix = f"{name}["
        return {k[len(prefix):-1]: v for k, v in self.params.items() if k.startswith(prefix)}


class FakeStripe(stripe.HTTPClient):
    """Stripe's v1 API in memory, as the SDK's transport. Answers in ``scripted`` come first, in order."""

    name = "fake-stripe"

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Sent] = []
        self.objects: dict[str, Json] = {}
        self.scripted: list[tuple[int, Json] | stripe.APIConnectionError] = []
        self.sleeps: list[float] = []
        self.now = START
        self.page_size = 100
        self.refused_filters: set[str] = set()  # list filters answered 400, as localstripe does
        self.closed = False
        self._replays: dict[str, tuple[dict[str, str], str, int]] = {}
        self._cards: dict[str, FakeCard] = {}
        self._serial = itertools.count(1)

    def request(self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None, *,
                _usage: Any = None) -> tuple[str, int, Mapping[str, str]]:
        url_parts = urlsplit(url)
        sent = Sent(method, url_parts.netloc, url_parts.path, dict(parse_qsl(post_data or url_parts.query)),
                    dict(headers or {}))
        self.sent.append(sent)
        if self.scripted:
            answer = self.scripted.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return json.dumps(answer[1]), answer[0], {}
        key = sent.headers.get("Idempotency-Key")
        if key in self._replays:  # Stripe replays the first answer to a key, for the same parameters only
            params, body, status = self._replays[key]
            if params == sent.params:
                return body, status, {"Idempotent-Replayed": "true"}
            status, error = _error(400, "idempotency_error", "Keys for idempotent requests can only be used "
                                   "with the same parameters they were first used with.")
            return json.dumps(error), status, {}
        status, answer = self._route(sent)
        if key:
            self._replays[key] = (sent.params, json.dumps(answer), status)
        return json.dumps(answer), status, {}

    def _sleep_time_seconds(self, num_retries: int) -> float:
        # The SDK's backoff between retries: recorded, not slept.
        self.sleeps.append(super()._sleep_time_seconds(num_retries))
        return 0.0

    def close(self) -> None:
        self.closed = True

    def count(self, kind: str) -> int:
        return sum(1 for o in self.objects.values() if o["object"] == kind)

    def _route(self, sent: Sent) -> tuple[int, Json]:
        p = sent.params
        match sent.method, sent.path.split("/")[2:]:
            case "post", ["customers"]:
                return 200, self._new("cus", "customer", email=p.get("email"), metadata=sent.nested("metadata"),
                                      invoice_settings={"default_payment_method": None})
            case "post", ["customers", customer_id]:
                if customer_id not in self.objects:
                    return _missing("id", f"No such customer: '{customer_id}'")
                customer = self.objects[customer_id]
                customer["email"] = p.get("email", customer["email"])
                default = p.get("invoice_settings[default_payment_method]")
                customer["invoice_settings"]["default_payment_method"] = default
                return 200, customer
            case "post", ["payment_methods", method_id, "attach"]:
                card = TEST_CARDS.get(method_id)
                if card is None:
                    return _missing("payment_method", f"No such PaymentMethod: '{method_id}'")
                if p["customer"] not in self.objects:
                    return _missing("customer", f"No such customer: '{p['customer']}'")
                if card.refused_when_attached:
                    return _error(402, "card_error", "Your card was declined.", code="card_declined",
                                  decline_code=card.refused_when_attached)
                method = self._new("pm", "payment_method", type="card", customer=p["customer"], metadata={},
                                   card={"brand": card.brand, "last4": card.last4, "exp_month": 12, "exp_year": 2034})
                self._cards[method["id"]] = card
                return 200, method
            case "post", ["payment_intents"]:
                return self._confirm(sent)
            case "get", ["payment_intents", intent_id]:
                return 200, self.objects[intent_id]
            case "post", ["refunds"]:
                if p["payment_intent"] not in self.objects:
                    return _missing("payment_intent", f"No such payment_intent: '{p['payment_intent']}'")
                intent = self.objects[p["payment_intent"]]
                charge = self.objects[intent["latest_charge"]]
                amount = int(p.get("amount", charge["amount"]))
                if amount > charge["amount"] - charge["amount_refunded"]:
                    return _error(400, "invalid_request_error", f"Refund amount ({amount}) is greater than "
                                  "unrefunded amount on charge.", param="amount")
                charge["amount_refunded"] += amount
                return 200, self._new("re", "refund", amount=amount, charge=charge["id"], payment_intent=intent["id"],
                                      currency=charge["currency"], status="succeeded", metadata=sent.nested("metadata"))
            case "get", ["charges" | "refunds" | "payment_intents" as kind]:
                refused = {k.split("[")[0] for k in sent.params} & self.refused_filters
                if refused:
                    return _error(400, "invalid_request_error", f"Received unknown parameter: {refused.pop()}",
                                  code="parameter_unknown")
                return 200, self._page(kind[:-1], sent)
        return _error(404, "invalid_request_error", f"Unrecognized request URL ({sent.method} {sent.path})")

    def _confirm(self, sent: Sent) -> tuple[int, Json]:
        p = sent.params
        method = self.objects.get(p["payment_method"])
        if method is None or method["customer"] != p["customer"]:
            return _error(400, "invalid_request_error", "The PaymentMethod is not attached to this customer.")
        card = self._cards[method["id"]]
        amount, currency, metadata = int(p["amount"]), p["currency"], sent.nested("metadata")
        intent = self._new("pi", "payment_intent", amount=amount, currency=currency, customer=p["customer"],
                           payment_method=method["id"], metadata=metadata, status="succeeded")
        # Stripe copies the PaymentIntent's metadata onto the Charge it creates.
        charge = self._new("ch", "charge", amount=amount, currency=currency, payment_intent=intent["id"],
                           amount_refunded=0, status="succeeded", metadata=dict(metadata))
        intent["latest_charge"] = charge["id"]
        if card.charge_error is None:
            return 200, intent
        intent["status"], charge["status"] = "requires_payment_method", "failed"
        code, decline_code = card.charge_error
        return _error(402, "card_error", "Your card was declined.", code=code, decline_code=decline_code,
                      charge=charge["id"], payment_intent=intent)

    def _page(self, kind: str, sent: Sent) -> Json:
        p = sent.params
        items = [o for o in self.objects.values() if o["object"] == kind
                 and int(p.get("created[gte]", 0)) <= o["created"] < int(p.get("created[lt]", 2**40))
                 and p.get("customer", o.get("customer")) == o.get("customer")]
        items.sort(key=lambda o: o["created"], reverse=True)  # newest first, as Stripe lists
        if "starting_after" in p:
            items = items[[o["id"] for o in items].index(p["starting_after"]) + 1:]
        limit = min(int(p.get("limit", 10)), self.page_size)
        return {"object": "list", "url": sent.path, "has_more": len(items) > limit, "data": items[:limit]}

    def _new(self, prefix: str, kind: str, **fields: Any) -> Json:
        obj = {"id": f"{prefix}_fake{next(self._serial)}", "object": kind, "created": self.now, "livemode": False,
               **fields}
        self.objects[obj["id"]] = obj
        return obj


def _error(status: int, kind: str, message: str, **fields: Any) -> tuple[int, Json]:
    return status, {"error": {"type": kind, "message": message, **fields}}


def _missing(param: str, message: str) -> tuple[int, Json]:
    return _error(404, "invalid_request_error", message, code="resource_missing", param=param)


def _intent(status: str) -> tuple[int, Json]:
    return 200, {"id": "pi_scripted", "object": "payment_intent", "amount": 1000, "currency": "eur",
                 "status": status, "metadata": {}}


def _at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


@pytest.fixture
def stripe_api() -> FakeStripe:
    return FakeStripe()


@pytest.fixture
def gateway(stripe_api: FakeStripe) -> Iterator[StripeGateway]:
    gateway = StripeGateway.from_settings("sk_test_contract", api_base="http://stripe.test", http_client=stripe_api)
    yield gateway
    gateway.close()


def save(gateway: StripeGateway, payment_method: str = "pm_card_visa", customer: str | None = None,
         billing_email: str = "billing@org1.example", key: str = "ledger-customer-org_1-1") -> CardOnFile:
    return gateway.save_card(reseller_org_id="org_1", payment_method=payment_method, billing_email=billing_email,
                             customer=customer, idempotency_key=key)


def charge(gateway: StripeGateway, card: CardOnFile, *, amount_cents: int = 11_880, currency: str = "EUR",
           key: str = "ledger-invoice-1", metadata: Mapping[str, str] = METADATA) -> str:
    return gateway.charge(customer=card.processor_customer, payment_method=card.processor_payment_method,
                          amount_cents=amount_cents, currency=currency, idempotency_key=key, metadata=metadata)


@pytest.fixture
def card(gateway: StripeGateway, stripe_api: FakeStripe) -> CardOnFile:
    card = save(gateway)
    stripe_api.sent.clear()
    return card


# --- saving a card -----------------------------------------------------------------------------------


def test_a_first_card_creates_the_resellers_customer_and_becomes_its_default(
        gateway: StripeGateway, stripe_api: FakeStripe) -> None:
    card = save(gateway)

    customer = stripe_api.objects[card.processor_customer]
    assert customer["email"] == "billing@org1.example"
    assert customer["metadata"] == {"reseller_org_id": "org_1"}
    assert customer["invoice_settings"]["default_payment_method"] == card.processor_payment_method
    assert stripe_api.objects[card.processor_payment_method]["customer"] == card.processor_customer
    # Attaching a test id makes a new PaymentMethod: the card on file is that one.
    assert card == CardOnFile(card.processor_customer, card.processor_payment_method, "visa", "4242", 12, 2034)
    assert card.processor_payment_method != "pm_card_visa"
    assert [(s.method, s.path) for s in stripe_api.sent] == [
        ("post", "/v1/customers"),
        ("post", "/v1/payment_methods/pm_card_visa/attach"),
        ("post", f"/v1/customers/{card.processor_customer}"),
    ]
    assert all(s.host == "stripe.test" for s in stripe_api.sent)
    assert stripe_api.sent[0].headers["Authorization"] == "Bearer sk_test_contract"


def test_another_card_reuses_the_customer_and_updates_its_email(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    second = save(gateway, "pm_card_mastercard", customer=card.processor_customer,
                  billing_email="finance@org1.example")

    assert second.processor_customer == card.processor_customer
    assert (second.brand, second.last4) == ("mastercard", "4444")
    customer = stripe_api.objects[card.processor_customer]
    assert customer["email"] == "finance@org1.example"
    assert customer["invoice_settings"]["default_payment_method"] == second.processor_payment_method
    assert stripe_api.count("customer") == 1
    assert ("post", "/v1/customers") not in [(s.method, s.path) for s in stripe_api.sent]


def test_a_card_refused_when_saved_is_declined_and_changes_nothing(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    with pytest.raises(PaymentDeclined) as declined:
        save(gateway, "pm_card_chargeDeclined", customer=card.processor_customer, billing_email="new@org1.example")

    assert (declined.value.detail, declined.value.decline_code) == ("Your card was declined.", "generic_decline")
    customer = stripe_api.objects[card.processor_customer]
    assert customer["invoice_settings"]["default_payment_method"] == card.processor_payment_method
    assert customer["email"] == "billing@org1.example"


def test_a_first_card_refused_leaves_one_customer_that_the_retry_reuses(
        gateway: StripeGateway, stripe_api: FakeStripe) -> None:
    with pytest.raises(PaymentDeclined):
        save(gateway, "pm_card_chargeDeclined", key="ledger-customer-org_1-1")
    card = save(gateway, "pm_card_visa", key="ledger-customer-org_1-1")

    assert stripe_api.count("customer") == 1
    creations = [s for s in stripe_api.sent if (s.method, s.path) == ("post", "/v1/customers")]
    assert [s.headers["Idempotency-Key"] for s in creations] == ["ledger-customer-org_1-1"] * 2
    assert stripe_api.objects[card.processor_customer]["invoice_settings"]["default_payment_method"] == \
        card.processor_payment_method


def test_an_unknown_payment_method_is_a_validation_error(gateway: StripeGateway) -> None:
    with pytest.raises(ValidationFailed) as failed:
        save(gateway, "pm_no_such_method")

    assert failed.value.field == "payment_method"
    assert "pm_no_such_method" in failed.value.detail


@pytest.mark.parametrize(("code", "message"), [
    ("payment_method_unexpected_state", "This PaymentMethod was previously used without being attached to a "
                                        "Customer or was detached from a Customer, and may not be used again."),
    (None, "The payment method you provided has already been attached to a customer."),
    ("payment_method_unactivated", "The operation cannot be performed as the payment method used has not been "
                                   "activated."),
])
def test_a_payment_method_the_processor_will_not_attach_is_a_validation_error_and_changes_nothing(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile, code: str | None, message: str) -> None:
    stripe_api.scripted.append(_error(400, "invalid_request_error", message, code=code, param="payment_method"))

    with pytest.raises(ValidationFailed) as failed:
        save(gateway, "pm_1Other", customer=card.processor_customer, billing_email="new@org1.example")

    assert (failed.value.field, failed.value.detail) == (
        "payment_method", f"the payment processor refused the payment method pm_1Other: {message}")
    assert [s.path for s in stripe_api.sent] == ["/v1/payment_methods/pm_1Other/attach"]
    assert stripe_api.objects[card.processor_customer]["invoice_settings"]["default_payment_method"] == \
        card.processor_payment_method


def test_a_payment_method_that_is_not_a_card_is_a_validation_error(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    stripe_api.scripted.append((200, {"id": "pm_sepa", "object": "payment_method", "type": "sepa_debit",
                                      "customer": card.processor_customer, "metadata": {}}))

    with pytest.raises(ValidationFailed) as failed:
        save(gateway, "pm_sepa", customer=card.processor_customer)

    assert failed.value.field == "payment_method"
    assert "not a card" in failed.value.detail


def test_a_billing_email_the_processor_refuses_is_a_validation_error_of_that_field(
        gateway: StripeGateway, stripe_api: FakeStripe) -> None:
    stripe_api.scripted.append(_error(400, "invalid_request_error", "Invalid email address: a@@b",
                                      code="email_invalid", param="email"))

    with pytest.raises(ValidationFailed) as failed:
        save(gateway, billing_email="a@@b")

    assert (failed.value.field, failed.value.detail) == (
        "billing_email", "the payment processor refused the billing email: Invalid email address: a@@b")
    assert stripe_api.count("customer") == 0


# --- charging --------------------------------------------------------------------------------------------


def test_a_charge_is_one_confirmed_off_session_payment_intent_with_the_ledgers_key_and_ids(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    reference = charge(gateway, card, amount_cents=11_880, currency="EUR")

    [sent] = stripe_api.sent
    assert (sent.method, sent.path) == ("post", "/v1/payment_intents")
    assert sent.headers["Idempotency-Key"] == "ledger-invoice-1"
    assert {k: sent.params[k] for k in ("amount", "currency", "customer", "payment_method", "confirm", "off_session")} \
        == {"amount": "11880", "currency": "eur", "customer": card.processor_customer,
            "payment_method": card.processor_payment_method, "confirm": "true", "off_session": "true"}
    assert sent.nested("payment_method_types") == {"0": "card"}
    # The key goes in the metadata too, so that crash recovery can find the charge (find_charge).
    assert sent.nested("metadata") == {**METADATA, "charge_key": "ledger-invoice-1"}
    assert stripe_api.objects[reference]["object"] == "payment_intent"
    assert stripe_api.objects[reference]["status"] == "succeeded"


def test_a_charge_retried_with_the_same_key_is_charged_once(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    assert charge(gateway, card) == charge(gateway, card)
    assert stripe_api.count("charge") == 1


def test_a_key_reused_for_another_amount_is_an_idempotency_conflict(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    charge(gateway, card, amount_cents=1_000)

    with pytest.raises(IdempotencyConflict, match="idempotency key reused"):
        charge(gateway, card, amount_cents=2_000)
    assert stripe_api.count("charge") == 1


def test_a_card_that_saves_but_fails_its_charges_is_declined_with_the_decline_code(gateway: StripeGateway) -> None:
    failing = save(gateway, "pm_card_chargeCustomerFail")

    with pytest.raises(PaymentDeclined) as declined:
        charge(gateway, failing)
    assert (declined.value.detail, declined.value.decline_code) == ("Your card was declined.", "generic_decline")


def test_a_card_asking_for_authentication_is_declined_off_session(gateway: StripeGateway) -> None:
    three_d_secure = save(gateway, "pm_card_authenticationRequired")

    with pytest.raises(PaymentDeclined) as declined:
        charge(gateway, three_d_secure)
    assert declined.value.decline_code == "authentication_required"


def test_a_payment_intent_left_requiring_action_is_declined_as_authentication_required(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    stripe_api.scripted.append(_intent("requires_action"))

    with pytest.raises(PaymentDeclined) as declined:
        charge(gateway, card)
    assert declined.value.decline_code == "authentication_required"


@pytest.mark.parametrize(("code", "message"), [
    ("payment_method_unexpected_state", "The PaymentMethod provided was detached from this Customer."),
    ("amount_too_small", "Amount must be at least €0.50 eur"),
    (None, "The PaymentMethod is not attached to this customer."),
])
def test_a_charge_the_processor_refuses_as_invalid_is_declined_with_its_code(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile, code: str | None, message: str) -> None:
    stripe_api.scripted.append(_error(400, "invalid_request_error", message, code=code))

    with pytest.raises(PaymentDeclined) as declined:
        charge(gateway, card)
    assert (declined.value.detail, declined.value.decline_code) == (message, code or "invalid_request")
    assert len(stripe_api.sent) == 1  # a refusal is not retried


def test_a_payment_intent_that_comes_back_failed_is_declined_with_its_last_error(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    status, failed = _intent("requires_payment_method")
    failed["last_payment_error"] = {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
                                    "message": "Your card has insufficient funds."}
    stripe_api.scripted.append((status, failed))

    with pytest.raises(PaymentDeclined) as declined:
        charge(gateway, card)
    assert (declined.value.detail, declined.value.decline_code) == (
        "Your card has insufficient funds.", "insufficient_funds")


def test_a_payment_still_processing_is_unavailable_for_now(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    stripe_api.scripted += [_intent("processing"), _intent("processing")]

    with pytest.raises(PaymentUnavailable):
        charge(gateway, card)
    assert [(s.method, s.path) for s in stripe_api.sent] == [
        ("post", "/v1/payment_intents"), ("get", "/v1/payment_intents/pi_scripted")]


def test_a_retry_of_a_processing_payment_sees_that_it_succeeded(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    # The replayed answer still says processing; the PaymentIntent itself has succeeded since.
    stripe_api.scripted += [_intent("processing"), _intent("succeeded")]

    assert charge(gateway, card) == "pi_scripted"


def test_a_rate_limit_is_unavailable_at_once(gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    stripe_api.scripted.append(_error(429, "invalid_request_error", "Too many requests.", code="rate_limit"))

    with pytest.raises(PaymentUnavailable) as unavailable:
        charge(gateway, card)
    assert unavailable.value.retry_after_seconds == 2
    assert len(stripe_api.sent) == 1


def test_server_errors_are_retried_with_the_same_key_then_unavailable(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    stripe_api.scripted += [_error(500, "api_error", "Something went wrong on Stripe's end.")] * 3

    with pytest.raises(PaymentUnavailable):
        charge(gateway, card)
    assert [s.headers["Idempotency-Key"] for s in stripe_api.sent] == ["ledger-invoice-1"] * 3
    assert len(stripe_api.sleeps) == 2
    assert stripe_api.count("charge") == 0


def test_a_transient_server_error_is_retried_and_the_charge_goes_through(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    stripe_api.scripted.append(_error(503, "api_error", "Stripe is temporarily unavailable."))

    reference = charge(gateway, card)
    assert stripe_api.objects[reference]["status"] == "succeeded"
    assert [s.headers["Idempotency-Key"] for s in stripe_api.sent] == ["ledger-invoice-1"] * 2


@pytest.mark.parametrize("message", ["Connection refused.", "Request timed out."])
def test_a_connection_error_or_timeout_is_unavailable_after_the_retries(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile, message: str) -> None:
    stripe_api.scripted += [stripe.APIConnectionError(message, should_retry=True)] * 3

    with pytest.raises(PaymentUnavailable):
        charge(gateway, card)
    assert len(stripe_api.sent) == 3


@pytest.mark.parametrize(("status", "kind"), [(401, "invalid_request_error"), (403, "invalid_request_error")])
def test_the_processor_refusing_the_ledgers_key_is_unavailable_not_declined(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile, status: int, kind: str) -> None:
    stripe_api.scripted.append(_error(status, kind, "Invalid API Key provided: sk_test_****ract"))

    with pytest.raises(PaymentUnavailable, match="API key"):
        charge(gateway, card)
    assert len(stripe_api.sent) == 1


# Every operation that the API or the scheduler reaches, with each kind of outage.
OPERATIONS: dict[str, Callable[[StripeGateway, CardOnFile], object]] = {
    "save_card": lambda gateway, card: save(gateway, customer=card.processor_customer),
    "save_card_new_customer": lambda gateway, card: save(gateway, key="other"),
    "charge": lambda gateway, card: charge(gateway, card),
    "refund": lambda gateway, card: gateway.refund(payment_reference="pi_x", amount_cents=1, idempotency_key="r",
                                                   metadata={}),
    "find_charge": lambda gateway, card: gateway.find_charge(customer=card.processor_customer,
                                                             idempotency_key="k"),
    "list_charges": lambda gateway, card: gateway.list_charges(created_from=_at(START), created_to=_at(START + 1)),
    "list_refunds": lambda gateway, card: gateway.list_refunds(created_from=_at(START), created_to=_at(START + 1)),
}
OUTAGES: dict[str, Callable[[], tuple[int, Json] | stripe.APIConnectionError]] = {
    "connection": lambda: stripe.APIConnectionError("Connection refused.", should_retry=True),
    "500": lambda: _error(500, "api_error", "Something went wrong on Stripe's end."),
    "502 not json": lambda: (502, {"not": "an error envelope"}),
    "409 lock timeout": lambda: _error(409, "invalid_request_error", "lock_timeout", code="lock_timeout"),
    "429": lambda: _error(429, "invalid_request_error", "Too many requests.", code="rate_limit"),
    "401": lambda: _error(401, "invalid_request_error", "Invalid API Key provided."),
}


@pytest.mark.parametrize("outage", OUTAGES)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_operation_answers_an_outage_with_payment_unavailable(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile, operation: str, outage: str) -> None:
    stripe_api.scripted += [OUTAGES[outage]() for _ in range(3)]

    with pytest.raises(PaymentUnavailable) as unavailable:
        OPERATIONS[operation](gateway, card)
    assert unavailable.value.retry_after_seconds > 0


# --- refunds and reconciliation --------------------------------------------------------------------------


def test_a_partial_refund_of_a_payment_intent(gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    reference = charge(gateway, card, amount_cents=11_880)
    stripe_api.sent.clear()

    refund = gateway.refund(payment_reference=reference, amount_cents=2_000, idempotency_key="ledger-undo-1",
                            metadata={"invoice_id": "inv-1", "reason": "change_not_recorded"})

    [sent] = stripe_api.sent
    assert (sent.method, sent.path, sent.headers["Idempotency-Key"]) == ("post", "/v1/refunds", "ledger-undo-1")
    assert {k: v for k, v in sent.params.items() if "[" not in k} == {"payment_intent": reference, "amount": "2000"}
    assert sent.nested("metadata") == {"invoice_id": "inv-1", "reason": "change_not_recorded"}
    assert stripe_api.objects[refund]["amount"] == 2_000
    assert stripe_api.objects[stripe_api.objects[reference]["latest_charge"]]["amount_refunded"] == 2_000


def test_a_refund_of_more_than_is_left_is_refused_as_invalid_state(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    reference = charge(gateway, card, amount_cents=1_000)
    gateway.refund(payment_reference=reference, amount_cents=800, idempotency_key="r1", metadata={})

    with pytest.raises(InvalidState, match="greater than unrefunded"):
        gateway.refund(payment_reference=reference, amount_cents=300, idempotency_key="r2", metadata={})
    assert stripe_api.count("refund") == 1


def test_a_refund_of_an_unknown_payment_is_refused_as_invalid_state(gateway: StripeGateway) -> None:
    with pytest.raises(InvalidState, match="pi_unknown"):
        gateway.refund(payment_reference="pi_unknown", amount_cents=100, idempotency_key="r", metadata={})


def test_listing_charges_pages_through_the_succeeded_charges_of_the_range(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    failing = save(gateway, "pm_card_chargeCustomerFail")
    stripe_api.now = START - 1
    charge(gateway, card, key="before")
    stripe_api.now = START
    first = charge(gateway, card, key="first", amount_cents=1_000)
    stripe_api.now = START + 10
    with pytest.raises(PaymentDeclined):
        charge(gateway, failing, key="declined")
    second = charge(gateway, card, key="second", amount_cents=2_000, currency="USD",
                    metadata={"invoice_id": "inv-2"})
    stripe_api.now = START + 20
    third = charge(gateway, card, key="third", amount_cents=3_000)
    gateway.refund(payment_reference=first, amount_cents=300, idempotency_key="refund", metadata={})
    stripe_api.now = START + 30
    charge(gateway, card, key="at-the-end")
    stripe_api.page_size = 2
    stripe_api.sent.clear()

    charges = gateway.list_charges(created_from=_at(START), created_to=_at(START + 30))

    assert charges == [
        ProcessorCharge(first, 1_000, "EUR", "succeeded", _at(START), {**METADATA, "charge_key": "first"}, 300),
        ProcessorCharge(second, 2_000, "USD", "succeeded", _at(START + 10),
                        {"invoice_id": "inv-2", "charge_key": "second"}, 0),
        ProcessorCharge(third, 3_000, "EUR", "succeeded", _at(START + 20), {**METADATA, "charge_key": "third"}, 0),
    ]
    first_page, second_page = stripe_api.sent
    assert first_page.params == {"created[gte]": str(START), "created[lt]": str(START + 30), "limit": "100"}
    assert second_page.params.pop("starting_after").startswith("ch_")
    assert second_page.params == first_page.params


def test_a_processor_that_refuses_the_created_filter_is_listed_whole_and_filtered_here(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    # localstripe answers 400 to created[...] on charges (and 500 on refunds: it is not asked again).
    stripe_api.refused_filters.add("created")
    stripe_api.now = START - 1
    before = charge(gateway, card, key="before")
    stripe_api.now = START
    inside = charge(gateway, card, key="inside")
    refund = gateway.refund(payment_reference=inside, amount_cents=100, idempotency_key="r", metadata={})
    stripe_api.now = START + 10
    gateway.refund(payment_reference=before, amount_cents=100, idempotency_key="r-after", metadata={})
    stripe_api.page_size = 1
    stripe_api.sent.clear()

    charges = gateway.list_charges(created_from=_at(START), created_to=_at(START + 10))
    refunds = gateway.list_refunds(created_from=_at(START), created_to=_at(START + 10))

    assert [c.reference for c in charges] == [inside]
    assert [r.reference for r in refunds] == [refund]
    refused, *pages = stripe_api.sent
    assert "created[gte]" in refused.params
    assert all(not any(k.startswith("created") for k in page.params) for page in pages)
    assert [page.path for page in pages] == ["/v1/charges"] * 2 + ["/v1/refunds"] * 2  # one item a page


def test_another_refusal_of_a_list_is_unavailable(gateway: StripeGateway, stripe_api: FakeStripe) -> None:
    stripe_api.scripted += [_error(400, "invalid_request_error", "Invalid limit: must be at most 100")] * 2

    with pytest.raises(PaymentUnavailable, match="Invalid limit"):
        gateway.list_charges(created_from=_at(START), created_to=_at(START + 10))


def test_a_charge_made_without_a_payment_intent_is_listed_by_its_own_id(
        gateway: StripeGateway, stripe_api: FakeStripe) -> None:
    stripe_api.objects["ch_legacy"] = {
        "id": "ch_legacy", "object": "charge", "created": START, "amount": 500, "amount_refunded": 0,
        "currency": "gbp", "status": "succeeded", "payment_intent": None, "metadata": {}}

    [listed] = gateway.list_charges(created_from=_at(START), created_to=_at(START + 1))
    assert (listed.reference, listed.currency) == ("ch_legacy", "GBP")


def test_listing_refunds_names_the_refunded_payment_intents(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    first = charge(gateway, card, key="first", amount_cents=1_000)
    second = charge(gateway, card, key="second", amount_cents=2_000, currency="USD")
    stripe_api.now = START + 5
    partial = gateway.refund(payment_reference=first, amount_cents=400, idempotency_key="r1",
                             metadata={"invoice_id": "inv-1"})
    stripe_api.now = START + 6
    whole = gateway.refund(payment_reference=second, amount_cents=2_000, idempotency_key="r2", metadata={})
    stripe_api.now = START + 10
    gateway.refund(payment_reference=first, amount_cents=100, idempotency_key="r3", metadata={})
    stripe_api.sent.clear()

    refunds = gateway.list_refunds(created_from=_at(START + 1), created_to=_at(START + 10))

    assert refunds == [
        ProcessorRefund(partial, first, 400, "EUR", _at(START + 5), {"invoice_id": "inv-1"}),
        ProcessorRefund(whole, second, 2_000, "USD", _at(START + 6), {}),
    ]
    [sent] = stripe_api.sent
    assert (sent.path, sent.params) == (
        "/v1/refunds", {"created[gte]": str(START + 1), "created[lt]": str(START + 10), "limit": "100"})


def test_closing_the_gateway_closes_its_transport(gateway: StripeGateway, stripe_api: FakeStripe) -> None:
    gateway.close()
    assert stripe_api.closed


# --- finding a charge by its key (crash recovery) -------------------------------------------------------


def intents_with_key(stripe_api: FakeStripe, key: str) -> list[Json]:
    return [o for o in stripe_api.objects.values()
            if o["object"] == "payment_intent" and o["metadata"].get("charge_key") == key]


def plant_at_another_customer(stripe_api: FakeStripe, reference: str) -> str:
    """A copy of the PaymentIntent, key included, at another customer (Stripe's keys are per account, so
    only a copy can share one)."""
    copy = dict(stripe_api.objects[reference], id=f"{reference}_elsewhere", customer="cus_elsewhere")
    stripe_api.objects[copy["id"]] = copy
    return copy["id"]


def test_find_charge_returns_the_succeeded_payment_intent_of_the_key_paging_through_the_customers(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    charge(gateway, card, key="ledger-invoice-6")
    wanted = charge(gateway, card, key="ledger-invoice-7")
    charge(gateway, card, key="ledger-invoice-8")
    elsewhere = plant_at_another_customer(stripe_api, wanted)
    stripe_api.page_size = 1
    stripe_api.sent.clear()

    assert gateway.find_charge(customer=card.processor_customer, idempotency_key="ledger-invoice-7") == wanted
    assert gateway.find_charge(customer="cus_elsewhere", idempotency_key="ledger-invoice-7") == elsewhere
    assert [s.params["customer"] for s in stripe_api.sent] == [card.processor_customer] * 3 + ["cus_elsewhere"]


def test_find_charge_is_none_when_the_key_never_charged(gateway: StripeGateway, card: CardOnFile) -> None:
    charge(gateway, card, key="ledger-invoice-1")

    assert gateway.find_charge(customer=card.processor_customer, idempotency_key="ledger-invoice-2") is None


def test_find_charge_is_none_when_the_keys_payment_was_declined(gateway: StripeGateway,
                                                               stripe_api: FakeStripe) -> None:
    failing = save(gateway, "pm_card_chargeCustomerFail")
    with pytest.raises(PaymentDeclined):
        charge(gateway, failing, key="ledger-invoice-1")
    [declined] = intents_with_key(stripe_api, "ledger-invoice-1")
    assert declined["status"] == "requires_payment_method"

    assert gateway.find_charge(customer=failing.processor_customer, idempotency_key="ledger-invoice-1") is None


def test_find_charge_prefers_the_succeeded_payment_of_the_key_to_a_failed_one(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    reference = charge(gateway, card, key="ledger-invoice-1")
    failed = dict(stripe_api.objects[reference], id="pi_failed", status="canceled", created=START - 5)
    stripe_api.objects["pi_failed"] = failed

    assert gateway.find_charge(customer=card.processor_customer, idempotency_key="ledger-invoice-1") == reference


@pytest.mark.parametrize("status", ["processing", "requires_confirmation"])
def test_find_charge_of_a_payment_still_in_progress_is_unavailable(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile, status: str) -> None:
    reference = charge(gateway, card, key="ledger-invoice-1")
    stripe_api.objects[reference]["status"] = status

    with pytest.raises(PaymentUnavailable, match=status):
        gateway.find_charge(customer=card.processor_customer, idempotency_key="ledger-invoice-1")


def test_find_charge_filters_by_customer_itself_when_the_processor_cannot(
        gateway: StripeGateway, stripe_api: FakeStripe, card: CardOnFile) -> None:
    # localstripe answers 400 "Unexpected customer" to payment_intents.list(customer=...).
    stripe_api.refused_filters.add("customer")
    elsewhere = plant_at_another_customer(stripe_api, charge(gateway, card, key="ledger-invoice-1"))
    del stripe_api.objects[elsewhere.removesuffix("_elsewhere")]
    stripe_api.sent.clear()

    assert gateway.find_charge(customer=card.processor_customer, idempotency_key="ledger-invoice-1") is None
    wanted = charge(gateway, card, key="ledger-invoice-2")
    assert gateway.find_charge(customer=card.processor_customer, idempotency_key="ledger-invoice-2") == wanted
    assert gateway.find_charge(customer="cus_elsewhere", idempotency_key="ledger-invoice-1") == elsewhere
    lists = [s for s in stripe_api.sent if (s.method, s.path) == ("get", "/v1/payment_intents")]
    assert ["customer" in s.params for s in lists] == [True, False, False, False]  # refused once, then not asked
