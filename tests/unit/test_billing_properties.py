"""A property of the books: whatever a reseller does (and whatever finance refunds in Stripe's dashboard),
for every subscription, what its billing documents say was paid (totals less refunds) is what the
processor actually kept (successful charges less refunds)."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands.webhooks import StripeWebhooks
from finance.reconcile import reconcile
from ledger.errors import DomainError
from ledger.subscription import Order
from tests.billing_support import (
    EVER,
    WEBHOOK_SECRET,
    all_entries,
    billing_view,
    charge_object,
    refund_object,
    sign,
    stripe_event,
)
from tests.support import ADMIN, InMemoryLedger, in_memory_ledger, reseller_with_card

ORG = "org_1"
SUBSCRIPTION = st.integers(min_value=0, max_value=5)
CREATE = st.tuples(st.just("create"), st.sampled_from(["plus", "pro", "enterprise"]),
                   st.sampled_from(["monthly", "annual"]), st.integers(min_value=1, max_value=20))
COMMAND = st.one_of(
    CREATE,
    st.tuples(st.just("increase"), SUBSCRIPTION, st.integers(min_value=1, max_value=5)),
    st.tuples(st.just("decrease"), SUBSCRIPTION, st.integers(min_value=1, max_value=5)),
    st.tuples(st.just("cancel"), SUBSCRIPTION),
    st.tuples(st.just("resume"), SUBSCRIPTION),
    st.tuples(st.just("card"), st.sampled_from(["pm_card_chargeCustomerFail", "pm_card_visa"])),
    st.tuples(st.just("advance"), st.integers(min_value=1, max_value=40)),
    # A refund made in the dashboard, whose webhook is delivered once or twice.
    st.tuples(st.just("refund"), st.integers(min_value=0, max_value=20), st.integers(min_value=1, max_value=50_000),
              st.integers(min_value=1, max_value=2)),
)


def order(plan: str, billing_cycle: str, seats: int) -> Order:
    if plan == "plus":
        return Order(plan, billing_cycle, end_user_email="ada@customer.example")
    return Order(plan, billing_cycle, seats=seats, organization_name="Initech", admin_email="admin@initech.example")


def refund_in_the_dashboard(world: InMemoryLedger, which: int, cents: int, deliveries: int) -> None:
    charges = world.gateway.list_charges(created_from=EVER[0], created_to=EVER[1])
    if not charges:
        return
    charge = charges[which % len(charges)]
    amount = min(cents, charge.amount_cents - charge.refunded_cents)
    if amount <= 0:
        return
    refund_id = world.gateway.refund(payment_reference=charge.reference, amount_cents=amount,
                                     idempotency_key=f"dashboard-{uuid4()}", metadata={})
    payload = stripe_event("charge.refunded", charge_object(
        charge.reference, charge.amount_cents, refunded_cents=charge.refunded_cents + amount,
        refunds=[refund_object(refund_id, charge.reference, amount)], metadata=dict(charge.metadata)))
    webhooks = StripeWebhooks(world.app, WEBHOOK_SECRET, clock=world.clock, invoice_paid_by=lambda _: None,
                              settle_seconds=0)
    for _ in range(deliveries):
        webhooks.receive(payload, sign(payload))


def run(world: InMemoryLedger, subscriptions: list[UUID], command: tuple[Any, ...], country: str) -> None:
    ledger, kind = world.ledger, command[0]
    if kind == "refund":
        refund_in_the_dashboard(world, *command[1:])
    elif kind == "create":
        subscriptions.append(ledger.create_subscription(ORG, order(*command[1:]), actor=ADMIN).aggregate.id)
    elif kind == "card":
        ledger.set_billing_info(ORG, payment_method=command[1], billing_email="billing@reseller.example",
                                country=country, actor=ADMIN)
    elif kind == "advance":
        world.clock.set(world.clock.now() + timedelta(days=command[1]))
        for sub_id in subscriptions:
            while world.app.repository.get(sub_id).is_due(world.clock.now()):
                ledger.run_due(sub_id)
    elif subscriptions:
        sub_id = subscriptions[command[1] % len(subscriptions)]
        if kind in ("increase", "decrease"):
            seats = world.app.repository.get(sub_id).seats
            ledger.change_seats(ORG, sub_id, seats + command[2] if kind == "increase" else seats - command[2],
                                actor=ADMIN)
        elif kind == "cancel":
            ledger.cancel(ORG, sub_id, actor=ADMIN)
        else:
            ledger.resume(ORG, sub_id, actor=ADMIN)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=CREATE, commands=st.lists(COMMAND, min_size=3, max_size=30), country=st.sampled_from(["US", "DE", "GB"]))
def test_documents_less_refunds_equal_charges_less_refunds_for_every_subscription(
        first: tuple[Any, ...], commands: list[tuple[Any, ...]], country: str) -> None:
    world = in_memory_ledger()
    reseller_with_card(world, ORG, country=country)
    subscriptions: list[UUID] = []
    for command in [first, *commands]:
        try:
            run(world, subscriptions, command, country)
        except DomainError:
            pass  # a command the rules refuse (a declined card, no change, an expired subscription) is part of the game

    processor: dict[str, int] = defaultdict(int)
    for charge in world.gateway.list_charges(created_from=EVER[0], created_to=EVER[1]):
        processor[charge.metadata["subscription_id"]] += charge.amount_cents - charge.refunded_cents
    with tempfile.TemporaryDirectory() as folder:
        view = billing_view(world, Path(folder))
        try:
            entries = all_entries(view)
        finally:
            view.close()
    documents: dict[str, int] = defaultdict(int)
    for document in (e for e in entries if e["record"] == "document"):
        documents[document["subscription_id"]] += document["total_cents"] - document["refunded_cents"]

    assert dict(documents) == dict(processor)
    assert set(documents) <= {str(s) for s in subscriptions}
    assert reconcile(entries, world.gateway, *EVER).matches
