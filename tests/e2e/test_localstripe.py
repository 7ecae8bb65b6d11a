"""The Stripe adapter against a real localstripe process, over HTTP.

Only what localstripe models faithfully is checked here (see /work/shared/notes/localstripe.md); the
rest of the contract is in tests/unit/test_stripe_gateway.py. Not here, because localstripe cannot:
idempotent replays (it ignores keys), ``pm_card_chargeDeclined`` (unknown to it: 404; its
``pm_card_visa_chargeDeclined`` is the same card), and reconciliation: it answers 400 to
``charges.list(created[gte], created[lt])`` and 500 to ``refunds.list(created)``, and it does not copy
a PaymentIntent's metadata onto its Charge as Stripe does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe

from commands.gateways.stripe import StripeGateway
from ledger.errors import PaymentDeclined
from ledger.reseller import CardOnFile

pytestmark = pytest.mark.e2e

METADATA = {"reseller_org_id": "org_1", "subscription_id": "sub-1", "invoice_id": "inv-1", "purpose": "create"}


@pytest.fixture
def stripe_client(localstripe_url: str) -> stripe.StripeClient:
    # No retries: localstripe ignores idempotency keys, so a retried 500 would charge twice.
    return stripe.StripeClient("sk_test_localstripe", base_addresses={"api": localstripe_url}, max_network_retries=0)


@pytest.fixture
def gateway(stripe_client: stripe.StripeClient) -> Iterator[StripeGateway]:
    gateway = StripeGateway(stripe_client)
    yield gateway
    gateway.close()


def save(gateway: StripeGateway, payment_method: str = "pm_card_visa", customer: str | None = None,
         billing_email: str = "billing@org1.example", key: str = "ledger-customer-org_1-1") -> CardOnFile:
    return gateway.save_card(reseller_org_id="org_1", payment_method=payment_method, billing_email=billing_email,
                             customer=customer, idempotency_key=key)


def charge(gateway: StripeGateway, card: CardOnFile, amount_cents: int = 12_000) -> str:
    return gateway.charge(customer=card.processor_customer, payment_method=card.processor_payment_method,
                          amount_cents=amount_cents, currency="EUR", idempotency_key="ledger-invoice-1",
                          metadata=METADATA)


def test_a_card_saved_for_a_new_customer_then_another_for_the_same_one(
        gateway: StripeGateway, stripe_client: stripe.StripeClient) -> None:
    first = save(gateway)
    second = save(gateway, customer=first.processor_customer, billing_email="finance@org1.example")

    assert (first.brand, first.last4, first.exp_month, first.exp_year) == ("visa", "4242", 12, 2030)
    assert second.processor_customer == first.processor_customer
    assert second.processor_payment_method != first.processor_payment_method
    customer = stripe_client.v1.customers.retrieve(first.processor_customer)
    assert customer.email == "finance@org1.example"
    assert customer.metadata.to_dict() == {"reseller_org_id": "org_1"}
    assert customer.invoice_settings.default_payment_method == second.processor_payment_method
    assert len(stripe_client.v1.customers.list().data) == 1


def test_a_card_refused_when_saved(gateway: StripeGateway) -> None:
    with pytest.raises(PaymentDeclined) as declined:
        save(gateway, "pm_card_visa_chargeDeclined")
    assert declined.value.decline_code == "card_declined"


def test_a_successful_charge_carries_the_ledgers_metadata(
        gateway: StripeGateway, stripe_client: stripe.StripeClient) -> None:
    card = save(gateway)

    reference = charge(gateway, card, amount_cents=12_000)

    intent = stripe_client.v1.payment_intents.retrieve(reference)
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", 12_000, "eur")
    assert (intent.customer, intent.payment_method) == (card.processor_customer, card.processor_payment_method)
    assert intent.metadata.to_dict() == METADATA


def test_a_card_that_saves_but_is_declined_when_charged(gateway: StripeGateway) -> None:
    card = save(gateway, "pm_card_chargeCustomerFail")
    assert card.last4 == "0341"

    with pytest.raises(PaymentDeclined) as declined:
        charge(gateway, card)
    assert (declined.value.detail, declined.value.decline_code) == ("Your card was declined.", "card_declined")


def test_a_partial_refund(gateway: StripeGateway, stripe_client: stripe.StripeClient) -> None:
    reference = charge(gateway, save(gateway), amount_cents=12_000)

    refund = gateway.refund(payment_reference=reference, amount_cents=2_000, idempotency_key="ledger-undo-1",
                            metadata={"invoice_id": "inv-1", "reason": "change_not_recorded"})

    [listed] = stripe_client.v1.refunds.list(params={"payment_intent": reference}).data
    assert (listed.id, listed.amount, listed.status) == (refund, 2_000, "succeeded")
    assert listed.metadata.to_dict() == {"invoice_id": "inv-1", "reason": "change_not_recorded"}
    assert stripe_client.v1.charges.retrieve(listed.charge).amount_refunded == 2_000
