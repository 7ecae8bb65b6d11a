"""The Stripe adapter against a real localstripe process, over HTTP.

Only what localstripe models faithfully is checked here (see /work/shared/notes/localstripe.md); the
rest of the contract is in tests/unit/test_stripe_gateway.py. Not here, because localstripe cannot:
idempotent replays (it ignores keys) and ``pm_card_chargeDeclined`` (unknown to it: 404; its
``pm_card_visa_chargeDeclined`` is the same card). Reconciliation and ``find_charge`` are here, through
the filters it lacks: it answers 400 to ``charges.list(created[gte], created[lt])`` and to
``payment_intents.list(customer)`` and 500 to ``refunds.list(created)``, so the adapter filters those
lists itself; and it does not copy a PaymentIntent's metadata onto its Charge as Stripe does.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
import stripe

from commands.gateways.stripe import StripeGateway
from ledger import events
from ledger.errors import InvalidState, PaymentDeclined, ValidationFailed
from ledger.reseller import CardOnFile
from ledger.subscription import Order
from service.bootstrap import Services, bootstrap
from service.settings import load_settings
from tests.api.conftest import ORG, assert_problem, pro_order, running_app
from tests.billing_support import PRO_ORDER
from tests.e2e import processes
from tests.support import ADMIN

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


def charge(gateway: StripeGateway, card: CardOnFile, amount_cents: int = 12_000,
           key: str = "ledger-invoice-1") -> str:
    return gateway.charge(customer=card.processor_customer, payment_method=card.processor_payment_method,
                          amount_cents=amount_cents, currency="EUR", idempotency_key=key, metadata=METADATA)


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
    assert intent.metadata.to_dict() == {**METADATA, "charge_key": "ledger-invoice-1"}


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


@pytest.mark.parametrize("payment_method", ["pm_no_such_method", "not-a-payment-method"])
def test_a_payment_method_that_localstripe_refuses_to_attach_is_a_validation_error(
        gateway: StripeGateway, payment_method: str) -> None:
    with pytest.raises(ValidationFailed) as failed:
        save(gateway, payment_method)
    assert failed.value.field == "payment_method"
    assert payment_method in failed.value.detail


def test_a_refund_of_an_unknown_payment_is_refused_as_invalid_state(gateway: StripeGateway) -> None:
    with pytest.raises(InvalidState):
        gateway.refund(payment_reference="pi_unknown", amount_cents=100, idempotency_key="r", metadata={})


def test_find_charge_finds_the_succeeded_charge_of_a_key_among_the_customers_payments(
        gateway: StripeGateway) -> None:
    card = save(gateway)
    other = save(gateway, key="ledger-customer-org_2-1")
    wanted = charge(gateway, card, key="ledger-invoice-1")
    charge(gateway, card, key="ledger-invoice-2")
    charge(gateway, other, key="ledger-invoice-3")
    failing = save(gateway, "pm_card_chargeCustomerFail", customer=card.processor_customer)
    with pytest.raises(PaymentDeclined):
        charge(gateway, failing, key="ledger-invoice-4")

    def find(key: str) -> str | None:
        return gateway.find_charge(customer=card.processor_customer, idempotency_key=key)

    assert find("ledger-invoice-1") == wanted
    assert find("ledger-invoice-3") is None  # another customer's
    assert find("ledger-invoice-4") is None  # declined
    assert find("ledger-invoice-5") is None  # never charged


# --- `ledger reconcile` with localstripe as the processor, the sandbox clock as the ledger's ---------------


@pytest.fixture
def deployment(localstripe_url: str, tmp_path: Path) -> dict[str, str]:
    return {"LEDGER_DATA_DIR": str(tmp_path / "data"), "LEDGER_CLOCK": "sandbox", "LEDGER_PAYMENTS": "stripe",
            "LEDGER_STRIPE_SECRET_KEY": "sk_test_localstripe", "LEDGER_STRIPE_API_BASE": localstripe_url,
            "LEDGER_SANDBOX_DATA": "false"}


def services_of(deployment: dict[str, str]) -> Services:
    return bootstrap(load_settings(**{name.removeprefix("LEDGER_").lower(): value
                                      for name, value in deployment.items()}))


def reconcile_days(deployment: dict[str, str], day: datetime) -> processes.subprocess.CompletedProcess[str]:
    """``ledger reconcile`` of the two days around ``day`` (on the ledger's clock), as a process."""
    return processes.run("reconcile", "--from", events.iso(day - timedelta(days=1)),
                         "--to", events.iso(day + timedelta(days=1)), env=deployment)


def test_reconcile_pairs_localstripes_charges_with_the_sandboxs_documents(deployment: dict[str, str]) -> None:
    services = services_of(deployment)
    try:
        ledger = services.ledger
        ledger.enable_reseller("org_1", name="Reseller", actor="support")
        ledger.set_billing_info("org_1", payment_method="pm_card_visa", billing_email="b@r.example", country="DE",
                                actor=ADMIN)
        created_at = services.clock.now()
        orders = [PRO_ORDER, Order("enterprise", "monthly", seats=5, organization_name="Globex",
                                   admin_email="admin@globex.example"),
                  Order("plus", "annual", end_user_email="someone@example.com")]
        first, *_ = [ledger.create_subscription("org_1", order, actor=ADMIN).aggregate.id for order in orders]
        ledger.change_seats("org_1", first, 7, actor=ADMIN)
    finally:
        services.close()

    created = reconcile_days(deployment, created_at)
    assert (created.returncode, created.stderr) == (0, "")
    assert "4 billing documents and 4 charges" in created.stdout and "The books match." in created.stdout

    # A month on, by the sandbox: the monthly subscriptions renew, charged (and dated by localstripe) today.
    services = services_of(deployment)
    try:
        ran = services.scheduler.advance(services.clock, created_at + timedelta(days=32),  # type: ignore[arg-type]
                                         actor="test")
        renewed_at = services.ledger.subscription("org_1", first).current_period_start
    finally:
        services.close()
    assert ran.changes == 2

    renewed = reconcile_days(deployment, renewed_at)
    assert (renewed.returncode, renewed.stderr) == (0, "")
    assert "2 billing documents and 2 charges" in renewed.stdout and "The books match." in renewed.stdout
    assert re.search(r"The ledger's clock is the sandbox's, 3[12] days, [0-9:]+ ahead of the processor's",
                     renewed.stdout)
    assert reconcile_days(deployment, created_at).returncode == 0  # today's renewal charges are not the creations'

    services = services_of(deployment)
    try:
        card = services.ledger.enabled_reseller("org_1").require_billing_info()
        stray = services.gateway.charge(customer=card.processor_customer, payment_method=card.processor_payment_method,
                                        amount_cents=4200, currency="USD", idempotency_key=f"stray-{uuid4()}",
                                        metadata={})
    finally:
        services.close()

    found = reconcile_days(deployment, created_at + timedelta(days=32))
    assert found.returncode == 1
    assert f"charge_without_document  {stray}" in found.stdout
    assert reconcile_days(deployment, created_at).returncode == 0  # the sandbox read next month when it was made


# --- the API over the Stripe adapter: every refusal a problem, never a 500 ---------------------------------


def test_the_api_answers_localstripes_refusals_with_problems(localstripe_url: str, tmp_path: Path) -> None:
    with running_app(tmp_path, payments="stripe", stripe_secret_key="sk_test_localstripe",
                     stripe_api_base=localstripe_url) as api:  # api.request fails the test on any 500
        api.enable_reseller(ORG)
        for unknown in ("pm_no_such_method", "not-a-payment-method"):
            assert_problem(api.put_billing(ORG, unknown), 422, "validation_error", field="payment_method")
        refused = assert_problem(api.put_billing(ORG, "pm_card_visa_chargeDeclined"), 402, "payment_declined")
        assert refused["decline_code"] == "card_declined"
        assert api.put_billing(ORG, "pm_card_chargeCustomerFail").status_code == 200

        declined = assert_problem(api.create(pro_order()), 402, "payment_declined")
        assert declined["decline_code"] == "card_declined"


def test_the_api_answers_an_unreachable_processor_with_503_and_retry_after(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with running_app(tmp_path, payments="stripe", stripe_secret_key="sk_test_localstripe",
                     stripe_api_base=nobody) as api:
        api.enable_reseller(ORG)
        response = api.put_billing(ORG)
        assert_problem(response, 503, "payment_unavailable")
        assert int(response.headers["Retry-After"]) > 0
