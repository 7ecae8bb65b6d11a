"""The command handlers, with every port in memory."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from commands.errors import Forbidden, IdempotencyConflict, NotFound, QuoteStale
from commands.handlers import Ledger
from commands.idempotency import IdempotencyKey
from commands.locks import ThreadLocks
from ledger import events, pricing
from ledger.errors import BillingInfoRequired, InvalidState, PaymentDeclined, ValidationFailed
from ledger.invoice import Invoice
from ledger.reseller import Reseller
from ledger.subscription import Order
from tests.support import ADMIN, T0, InMemoryLedger, in_memory_ledger, reseller_with_card

PRO_ORDER = Order("pro", "monthly", seats=3, organization_name="Initech", admin_email="admin@initech.example")
EVER = (datetime(2000, 1, 1, tzinfo=T0.tzinfo), datetime(2100, 1, 1, tzinfo=T0.tzinfo))


def charges(world: InMemoryLedger) -> list[int]:
    return [c.amount_cents for c in world.gateway.list_charges(created_from=EVER[0], created_to=EVER[1])]


def refunds(world: InMemoryLedger) -> list[int]:
    return [r.amount_cents for r in world.gateway.list_refunds(created_from=EVER[0], created_to=EVER[1])]


def create_pro(world: InMemoryLedger, **kwargs: Any) -> UUID:
    return world.ledger.create_subscription("org_1", PRO_ORDER, actor=ADMIN, **kwargs).aggregate.id


def test_create_charges_and_opens_a_customer_account(world: InMemoryLedger) -> None:
    outcome = world.ledger.create_subscription("org_1", PRO_ORDER, actor=ADMIN)
    subscription = outcome.aggregate
    assert outcome.created and outcome.position is not None
    assert charges(world) == [10710]
    account = world.app.repository.get(subscription.customer_account_id)
    assert (account.organization_name, account.admin_email, account.subscription_id) == (
        "Initech", "admin@initech.example", subscription.id)
    [created] = list(world.ledger.history(subscription.id))
    invoice = world.app.repository.get(created.payment.invoice_id)
    assert isinstance(invoice, Invoice) and invoice.bill == created.bill and invoice.state == "paid"


def test_a_reseller_needs_billing_info_before_buying() -> None:
    world = in_memory_ledger()
    world.ledger.enable_reseller("org_2", name="No card yet", actor="support")
    with pytest.raises(BillingInfoRequired):
        world.ledger.create_subscription("org_2", PRO_ORDER, actor=ADMIN)
    with pytest.raises(BillingInfoRequired):
        world.ledger.preview_create("org_2", PRO_ORDER)


def test_a_disabled_or_unknown_reseller_can_do_nothing(world: InMemoryLedger) -> None:
    sub_id = create_pro(world)
    world.ledger.disable_reseller("org_1", actor="support")
    with pytest.raises(Forbidden):
        world.ledger.cancel("org_1", sub_id, actor=ADMIN)
    with pytest.raises(Forbidden):
        world.ledger.create_subscription("org_nobody", PRO_ORDER, actor=ADMIN)


def test_another_resellers_subscription_is_not_found(world: InMemoryLedger) -> None:
    reseller_with_card(world, "org_2")
    sub_id = create_pro(world)
    with pytest.raises(NotFound):
        world.ledger.cancel("org_2", sub_id, actor=ADMIN)
    with pytest.raises(NotFound):
        world.ledger.subscription("org_2", sub_id)
    with pytest.raises(NotFound):  # the id of something that is not a subscription
        world.ledger.subscription("org_1", Reseller.id_for("org_1"))


def test_a_declined_create_records_the_failure_and_nothing_else() -> None:
    world = in_memory_ledger()
    reseller_with_card(world, "org_1", payment_method="pm_card_chargeCustomerFail")
    with pytest.raises(PaymentDeclined) as declined:
        world.ledger.create_subscription("org_1", PRO_ORDER, actor=ADMIN)
    assert declined.value.decline_code == "generic_decline"
    history = list(world.ledger.history(Reseller.id_for("org_1")))
    assert [events.type_name(e) for e in history] == ["ResellerEnabled", "BillingInfoUpdated", "ChargeDeclined"]
    assert (history[-1].amount_cents, history[-1].purpose) == (9000, "subscription_created")
    assert charges(world) == []
    # Beside the reseller's record, only the charge's intent and its declined end: no subscription, no invoice.
    notifications = world.app.recorder.select_notifications(start=None, limit=100)
    assert [n.topic for n in notifications[2:]] == [
        "ledger:Charge.ChargeOpened", "ledger:Charge.ChargeIntended", "ledger:Reseller.ChargeDeclined",
        "ledger:Charge.ChargeAttemptDeclined"]


def test_a_card_refused_when_saved_changes_nothing() -> None:
    world = in_memory_ledger()
    world.ledger.enable_reseller("org_1", name="R", actor="support")
    with pytest.raises(PaymentDeclined):
        world.ledger.set_billing_info("org_1", payment_method="pm_card_chargeDeclined", billing_email="b@r.example",
                                      country="US", actor=ADMIN)
    with pytest.raises(ValidationFailed) as invalid:
        world.ledger.set_billing_info("org_1", payment_method="pm_card_visa", billing_email="b@r.example",
                                      country="Germany", actor=ADMIN)
    assert invalid.value.field == "country"
    assert world.ledger.enabled_reseller("org_1").card is None


def test_the_same_idempotency_key_answers_the_first_response_and_charges_once(world: InMemoryLedger) -> None:
    key = IdempotencyKey.for_request("reseller:org_1", "k-1", "POST", "/subs", {"seats": 3})
    first = world.ledger.create_subscription("org_1", PRO_ORDER, actor=ADMIN, idempotency=key)
    again = world.ledger.create_subscription("org_1", PRO_ORDER, actor=ADMIN, idempotency=key)
    assert again.replayed and again.aggregate.id == first.aggregate.id and again.aggregate.version == 1
    assert charges(world) == [10710]
    other_body = IdempotencyKey.for_request("reseller:org_1", "k-1", "POST", "/subs", {"seats": 4})
    with pytest.raises(IdempotencyConflict):
        world.ledger.create_subscription("org_1", PRO_ORDER, actor=ADMIN, idempotency=other_body)


def test_a_replayed_change_answers_the_state_it_left_then(world: InMemoryLedger) -> None:
    sub_id = create_pro(world)
    key = IdempotencyKey.for_request("reseller:org_1", "inc", "POST", f"/{sub_id}/seats", {"seats": 5})
    world.ledger.change_seats("org_1", sub_id, 5, actor=ADMIN, idempotency=key)
    world.ledger.cancel("org_1", sub_id, actor=ADMIN)
    again = world.ledger.change_seats("org_1", sub_id, 5, actor=ADMIN, idempotency=key)
    assert again.replayed and (again.aggregate.seats, again.aggregate.status, again.aggregate.version) == (
        5, "active", 2)


def test_a_quote_fixes_the_instant_of_proration(world: InMemoryLedger) -> None:
    sub_id = create_pro(world)
    world.clock.set(T0 + timedelta(days=10))
    preview = world.ledger.preview_seat_change("org_1", sub_id, 7)
    world.clock.set(T0 + timedelta(days=10, minutes=14))
    world.ledger.change_seats("org_1", sub_id, 7, actor=ADMIN, quote_id=preview.quote_id)
    assert charges(world)[-1] == preview.bill.total_cents
    subscription = world.ledger.subscription("org_1", sub_id)
    at_the_command = pricing.seat_increase(
        unit_price_cents=3000, seats_before=3, seats_after=7, period_start=subscription.current_period_start,
        period_end=subscription.current_period_end, at=T0 + timedelta(days=10, minutes=14), currency="USD",
        tax_rate_bps=1900)
    assert at_the_command.total_cents < preview.bill.total_cents


def test_confirming_without_a_quote_prices_at_the_instant_of_the_command(world: InMemoryLedger) -> None:
    sub_id = create_pro(world)
    world.clock.set(T0 + timedelta(days=10))
    preview = world.ledger.preview_seat_change("org_1", sub_id, 7)
    world.clock.set(T0 + timedelta(days=20))
    world.ledger.change_seats("org_1", sub_id, 7, actor=ADMIN)
    assert 0 < charges(world)[-1] < preview.bill.total_cents


@pytest.mark.parametrize("what", ["expired", "changed", "other seats", "other subscription", "tax changed"])
def test_a_stale_quote_is_refused_and_charges_nothing(world: InMemoryLedger, what: str) -> None:
    sub_id = create_pro(world)
    other_id = create_pro(world)
    preview = world.ledger.preview_seat_change("org_1", sub_id, 7)
    seats, target = 7, sub_id
    if what == "expired":
        world.clock.set(T0 + timedelta(minutes=15, seconds=1))
    elif what == "changed":
        world.ledger.change_seats("org_1", sub_id, 2, actor=ADMIN)
    elif what == "other seats":
        seats = 8
    elif what == "other subscription":
        target = other_id
    else:
        world.ledger.set_billing_info("org_1", payment_method="pm_card_visa", billing_email="b@r.example",
                                      country="FR", actor=ADMIN)
    before = charges(world)
    with pytest.raises(QuoteStale):
        world.ledger.change_seats("org_1", target, seats, actor=ADMIN, quote_id=preview.quote_id)
    assert charges(world) == before


def test_a_forged_quote_is_invalid(world: InMemoryLedger) -> None:
    sub_id = create_pro(world)
    quote = world.ledger.preview_seat_change("org_1", sub_id, 7).quote_id
    forged = quote[:-3] + ("AAA" if not quote.endswith("AAA") else "BBB")
    for bad in (forged, "qt_nonsense", "not a quote"):
        with pytest.raises(ValidationFailed) as invalid:
            world.ledger.change_seats("org_1", sub_id, 7, actor=ADMIN, quote_id=bad)
        assert invalid.value.field == "quote_id"


def test_a_create_quote_holds_the_price_of_its_order(world: InMemoryLedger) -> None:
    preview = world.ledger.preview_create("org_1", PRO_ORDER)
    world.ledger.create_subscription("org_1", PRO_ORDER, actor=ADMIN, quote_id=preview.quote_id)
    assert charges(world) == [preview.bill.total_cents]
    bigger = Order("pro", "monthly", seats=4, organization_name="Initech", admin_email="admin@initech.example")
    with pytest.raises(QuoteStale):
        world.ledger.create_subscription("org_1", bigger, actor=ADMIN, quote_id=preview.quote_id)


def test_concurrent_increases_apply_one_after_the_other_and_each_is_charged(world: InMemoryLedger) -> None:
    sub_id = create_pro(world)
    targets = [4, 5, 6, 7, 8, 9]
    errors: list[Exception] = []

    def increase(seats: int) -> None:
        try:
            world.ledger.change_seats("org_1", sub_id, seats, actor=ADMIN)
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=increase, args=(n,)) for n in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history = list(world.ledger.history(sub_id))
    increases = [e for e in history if events.type_name(e) == "SeatsIncreased"]
    # A target below the seats reached meanwhile is a scheduled decrease or no change, never a second charge.
    assert all(e.seats_after > e.seats_before for e in increases)
    assert all(b.seats_before == a.seats_after for a, b in zip(increases, increases[1:]))
    charged_events = [e.bill.total_cents for e in history if getattr(e, "payment", None)]
    assert sorted(charges(world)) == sorted(charged_events)
    assert all(type(error).__name__ in ("NoChange",) for error in errors)


class RacingGateway:
    """A processor through which, while a charge is in flight, someone else changes the subscription."""

    def __init__(self, world: InMemoryLedger, race: Callable[[], None]) -> None:
        self._inner, self._race, self._raced = world.gateway, race, False
        self.name = "racing"

    def charge(self, **kwargs: Any) -> str:
        reference = self._inner.charge(**kwargs)
        if not self._raced:
            self._raced = True
            self._race()
        return reference

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_charge_whose_change_lost_a_race_is_refunded_and_documented(world: InMemoryLedger) -> None:
    sub_id = create_pro(world)
    # A second handler on the same store with its own locks: as if another process raced this one.
    rival = Ledger(world.app, catalog=world.ledger.catalog, clock=world.clock, gateway=world.gateway,
                   locks=ThreadLocks(), quotes=world.ledger._quotes)
    racing = Ledger(world.app, catalog=world.ledger.catalog, clock=world.clock,
                    gateway=RacingGateway(world, lambda: rival.change_seats("org_1", sub_id, 2, actor="rival")),
                    locks=ThreadLocks(), quotes=world.ledger._quotes)
    world.clock.set(T0 + timedelta(days=3))
    outcome = racing.change_seats("org_1", sub_id, 6, actor=ADMIN)
    assert outcome.aggregate.seats == 6
    assert [events.type_name(e) for e in world.ledger.history(sub_id)] == [
        "SubscriptionCreated", "SeatDecreaseScheduled", "SeatDecreaseWithdrawn", "SeatsIncreased"]
    assert len(charges(world)) == 3 and len(refunds(world)) == 1
    lost = charges(world)[1]
    assert refunds(world) == [lost]
    documents = [world.app.repository.get(e.originator_id) for e in _all_events(world)
                 if events.type_name(e) == "InvoiceIssued"]
    refunded = [d for d in documents if d.state == "refunded"]
    assert len(documents) == 3 and len(refunded) == 1 and refunded[0].bill.total_cents == lost
    net_documents = sum(d.bill.total_cents - d.refunded_cents for d in documents)
    assert net_documents == sum(charges(world)) - sum(refunds(world))


def _all_events(world: InMemoryLedger) -> list[Any]:
    notifications = world.app.recorder.select_notifications(start=None, limit=10_000)
    return [world.app.mapper.to_domain_event(n) for n in notifications]


def test_reenabling_renames_and_enables(world: InMemoryLedger) -> None:
    world.ledger.disable_reseller("org_1", actor="support")
    outcome = world.ledger.enable_reseller("org_1", name="New name", actor="support")
    assert not outcome.created and outcome.aggregate.enabled and outcome.aggregate.name == "New name"
    assert [events.type_name(e) for e in world.ledger.history(Reseller.id_for("org_1"))][-3:] == [
        "ResellerDisabled", "ResellerRenamed", "ResellerReenabled"]
    unchanged = world.ledger.enable_reseller("org_1", name=None, actor="support")
    assert unchanged.position is None


def test_tax_exemption_zeroes_the_tax(world: InMemoryLedger) -> None:
    world.ledger.set_tax_exemption("org_1", exempt=True, reason="VAT certificate 42", actor="support")
    assert world.ledger.preview_create("org_1", PRO_ORDER).bill.tax_cents == 0
    world.ledger.set_tax_exemption("org_1", exempt=False, reason="", actor="support")
    assert world.ledger.preview_create("org_1", PRO_ORDER).bill.tax_rate_bps == 1900


def test_unknown_plan_is_a_validation_error(world: InMemoryLedger) -> None:
    with pytest.raises(ValidationFailed) as invalid:
        world.ledger.create_subscription("org_1", Order("gold", "monthly", seats=1), actor=ADMIN)
    assert invalid.value.field == "plan"


def test_metadata_of_a_charge_names_the_ledger_ids(world: InMemoryLedger) -> None:
    sub_id = create_pro(world)
    [charge] = world.gateway.list_charges(created_from=EVER[0], created_to=EVER[1])
    metadata: Mapping[str, str] = charge.metadata
    [created] = list(world.ledger.history(sub_id))
    assert metadata == {"reseller_org_id": "org_1", "subscription_id": str(sub_id),
                        "invoice_id": str(created.payment.invoice_id), "purpose": "subscription_created"}


def test_an_invoice_refuses_the_same_refund_twice_and_more_than_was_paid(world: InMemoryLedger) -> None:
    sub_id = create_pro(world)
    [created] = list(world.ledger.history(sub_id))
    invoice = world.app.repository.get(created.payment.invoice_id)
    invoice.record_refund(amount_cents=1000, refund_reference="re_1", reason="goodwill", at=T0, actor="finance")
    with pytest.raises(InvalidState):
        invoice.record_refund(amount_cents=1000, refund_reference="re_1", reason="goodwill", at=T0, actor="finance")
    with pytest.raises(InvalidState):
        invoice.record_refund(amount_cents=invoice.bill.total_cents, refund_reference="re_2", reason="x", at=T0,
                              actor="finance")
    assert (invoice.refunded_cents, invoice.state) == (1000, "partially_refunded")
