"""The Subscription aggregate: given events, when a command, then events."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from ledger import events
from ledger.errors import InvalidState, NoChange, PaymentDeclined, SeatsFixed, ValidationFailed
from ledger.payments import Payment
from ledger.pricing import Bill
from ledger.subscription import Order, Subscription
from tests.support import ADMIN, CATALOG, T0, pending_types, replay

PRO, PLUS, ENTERPRISE = CATALOG.plan("pro"), CATALOG.plan("plus"), CATALOG.plan("enterprise")
DAY = timedelta(days=1)


class Till:
    """A Pay that accepts every bill and remembers what it charged."""

    def __init__(self) -> None:
        self.bills: list[Bill] = []

    def __call__(self, bill: Bill) -> Payment | None:
        self.bills.append(bill)
        return Payment(uuid4(), f"pi_{len(self.bills)}") if bill.total_cents else None


def declined(bill: Bill) -> Payment:
    raise PaymentDeclined("Your card was declined.", "insufficient_funds")


def created(plan: Any = PRO, *, seats: int | None = 3, cycle: str = "monthly", at: datetime = T0,
            tax_rate_bps: int = 0) -> list[Any]:
    order = Order(plan.id, cycle, seats=seats, organization_name="Initech", admin_email="admin@initech.example") \
        if plan.kind == "organization" else Order(plan.id, cycle, end_user_email="ada@example.com")
    subscription = Subscription.create(uuid4(), order, reseller_org_id="org_1", plan=plan, at=at, currency="USD",
                                       tax_rate_bps=tax_rate_bps, customer_account_id=uuid4(), actor=ADMIN,
                                       pay=Till())
    return list(subscription.collect_events())


def given(*histories: list[Any]) -> Subscription:
    return replay(Subscription, [e for history in histories for e in history])


def then(subscription: Subscription) -> list[Any]:
    return list(subscription.pending_events)


def history_of(subscription: Subscription) -> list[Any]:
    return list(subscription.collect_events())


def test_creating_charges_the_first_period_in_full_and_records_the_facts() -> None:
    till = Till()
    subscription = Subscription.create(
        uuid4(), Order("enterprise", "annual", seats=4, organization_name="Globex", admin_email="it@globex.example"),
        reseller_org_id="org_1", plan=ENTERPRISE, at=T0, currency="USD", tax_rate_bps=1900,
        customer_account_id=uuid4(), actor=ADMIN, pay=till)
    [event] = then(subscription)
    assert events.type_name(event) == "SubscriptionCreated"
    assert (event.seats, event.unit_price_cents, event.period_start, event.period_end) == (
        4, 60000, T0, T0.replace(year=2027))
    assert (event.bill.subtotal_cents, event.bill.tax_rate_bps, event.bill.tax_cents, event.bill.total_cents) == (
        240000, 1900, 45600, 285600)
    assert event.payment is not None and event.actor == ADMIN and event.timestamp == T0
    assert till.bills == [event.bill]
    assert subscription.status == "active"


@pytest.mark.parametrize(("order", "error", "field"), [
    (Order("plus", "monthly", seats=2, end_user_email="a@b.example"), SeatsFixed, None),
    (Order("plus", "monthly"), ValidationFailed, "end_user_email"),
    (Order("plus", "monthly", end_user_email="a@b.example", organization_name="X"), ValidationFailed,
     "organization_name"),
    (Order("pro", "monthly", seats=3, admin_email="a@b.example"), ValidationFailed, "organization_name"),
    (Order("pro", "monthly", seats=3, organization_name="X"), ValidationFailed, "admin_email"),
    (Order("pro", "monthly", organization_name="X", admin_email="a@b.example"), ValidationFailed, "seats"),
    (Order("pro", "monthly", seats=0, organization_name="X", admin_email="a@b.example"), ValidationFailed, "seats"),
    (Order("pro", "monthly", seats=10_001, organization_name="X", admin_email="a@b.example"), ValidationFailed,
     "seats"),
    (Order("pro", "weekly", seats=1, organization_name="X", admin_email="a@b.example"), ValidationFailed,
     "billing_cycle"),
])
def test_an_order_that_breaks_a_rule_charges_nothing(order: Order, error: type, field: str | None) -> None:
    till = Till()
    plan = CATALOG.plan(order.plan)
    with pytest.raises(error) as raised:
        Subscription.create(uuid4(), order, reseller_org_id="org_1", plan=plan, at=T0, currency="USD",
                            tax_rate_bps=0, customer_account_id=uuid4(), actor=ADMIN, pay=till)
    if field:
        assert raised.value.field == field
    assert till.bills == []


def test_an_increase_credits_the_unused_time_and_charges_the_remaining_time() -> None:
    subscription = given(created(seats=3))  # Jan 31 → Feb 28: 28 days
    halfway = T0 + 14 * DAY
    subscription.change_seats(5, plan=PRO, at=halfway, priced_at=halfway, tax_rate_bps=1900, actor=ADMIN,
                              pay=Till())
    [event] = then(subscription)
    assert events.type_name(event) == "SeatsIncreased"
    assert (event.seats_before, event.seats_after) == (3, 5)
    assert [(line.description, line.amount_cents) for line in event.bill.lines] == [
        ("Unused time on 3 seats", -4500), ("Remaining time on 5 seats", 7500)]
    assert (event.bill.subtotal_cents, event.bill.tax_cents, event.bill.total_cents) == (3000, 570, 3570)
    assert subscription.seats == 5 and subscription.status == "active"


def test_an_increase_withdraws_a_pending_decrease_first() -> None:
    subscription = given(created(seats=5))
    subscription.change_seats(2, plan=PRO, at=T0 + DAY, priced_at=T0 + DAY, tax_rate_bps=0, actor=ADMIN, pay=Till())
    history = history_of(subscription)
    subscription.change_seats(7, plan=PRO, at=T0 + 2 * DAY, priced_at=T0 + 2 * DAY, tax_rate_bps=0, actor=ADMIN,
                              pay=Till())
    assert [events.type_name(e) for e in history] == ["SeatDecreaseScheduled"]
    assert pending_types(subscription) == ["SeatDecreaseWithdrawn", "SeatsIncreased"]
    withdrawn, increased = then(subscription)
    assert (withdrawn.withdrawn_pending_seats, withdrawn.reason) == (2, "seats_increased")
    assert (increased.seats_before, increased.seats_after) == (5, 7)
    assert subscription.pending_seats is None and subscription.status == "active"


def test_a_decrease_waits_for_the_next_period_and_charges_nothing() -> None:
    till = Till()
    subscription = given(created(seats=5))
    subscription.change_seats(2, plan=PRO, at=T0 + DAY, priced_at=T0 + DAY, tax_rate_bps=0, actor=ADMIN, pay=till)
    [event] = then(subscription)
    assert events.type_name(event) == "SeatDecreaseScheduled"
    assert (event.seats, event.pending_seats_before, event.pending_seats, event.effective_at) == (
        5, None, 2, subscription.current_period_end)
    assert till.bills == [] and subscription.seats == 5 and subscription.status == "pending"


def test_a_new_decrease_replaces_the_pending_one() -> None:
    subscription = given(created(seats=8))
    subscription.change_seats(5, plan=PRO, at=T0 + DAY, priced_at=T0 + DAY, tax_rate_bps=0, actor=ADMIN, pay=Till())
    subscription.change_seats(3, plan=PRO, at=T0 + DAY, priced_at=T0 + DAY, tax_rate_bps=0, actor=ADMIN, pay=Till())
    second = then(subscription)[-1]
    assert (second.pending_seats_before, second.pending_seats) == (5, 3)
    assert subscription.pending_seats == 3


def test_asking_for_the_current_seats_withdraws_a_pending_decrease() -> None:
    subscription = given(created(seats=4))
    subscription.change_seats(2, plan=PRO, at=T0 + DAY, priced_at=T0 + DAY, tax_rate_bps=0, actor=ADMIN, pay=Till())
    subscription.change_seats(4, plan=PRO, at=T0 + DAY, priced_at=T0 + DAY, tax_rate_bps=0, actor=ADMIN, pay=Till())
    assert pending_types(subscription) == ["SeatDecreaseScheduled", "SeatDecreaseWithdrawn"]
    assert then(subscription)[-1].reason == "requested"
    assert subscription.status == "active"


@pytest.mark.parametrize("seats", [4, 2])
def test_a_change_to_what_is_already_so_is_no_change(seats: int) -> None:
    subscription = given(created(seats=4))
    if seats == 2:
        subscription.change_seats(2, plan=PRO, at=T0, priced_at=T0, tax_rate_bps=0, actor=ADMIN, pay=Till())
    before = len(then(subscription))
    with pytest.raises(NoChange):
        subscription.change_seats(seats, plan=PRO, at=T0, priced_at=T0, tax_rate_bps=0, actor=ADMIN, pay=Till())
    assert len(then(subscription)) == before


def test_single_user_seats_are_fixed() -> None:
    subscription = given(created(PLUS, seats=None))
    with pytest.raises(SeatsFixed):
        subscription.change_seats(2, plan=PLUS, at=T0, priced_at=T0, tax_rate_bps=0, actor=ADMIN, pay=Till())


def test_a_declined_increase_records_nothing() -> None:
    subscription = given(created(seats=3))
    with pytest.raises(PaymentDeclined):
        subscription.change_seats(9, plan=PRO, at=T0 + DAY, priced_at=T0 + DAY, tax_rate_bps=0, actor=ADMIN,
                                  pay=declined)
    assert then(subscription) == [] and subscription.seats == 3


def test_a_declined_increase_keeps_a_pending_decrease() -> None:
    subscription = given(created(seats=3))
    subscription.change_seats(2, plan=PRO, at=T0, priced_at=T0, tax_rate_bps=0, actor=ADMIN, pay=Till())
    with pytest.raises(PaymentDeclined):
        subscription.change_seats(9, plan=PRO, at=T0, priced_at=T0, tax_rate_bps=0, actor=ADMIN, pay=declined)
    assert pending_types(subscription) == ["SeatDecreaseScheduled"] and subscription.pending_seats == 2


def test_cancel_keeps_the_pending_decrease_and_resume_brings_it_back() -> None:
    subscription = given(created(seats=6))
    subscription.change_seats(4, plan=PRO, at=T0, priced_at=T0, tax_rate_bps=0, actor=ADMIN, pay=Till())
    subscription.cancel(at=T0 + DAY, actor=ADMIN)
    assert subscription.status == "canceled" and subscription.pending_seats == 4
    assert then(subscription)[-1].effective_at == subscription.current_period_end
    subscription.resume(at=T0 + 2 * DAY, actor=ADMIN)
    assert subscription.status == "pending"
    assert pending_types(subscription) == ["SeatDecreaseScheduled", "Canceled", "Resumed"]


def test_what_a_canceled_subscription_refuses() -> None:
    subscription = given(created(seats=3))
    subscription.cancel(at=T0, actor=ADMIN)
    with pytest.raises(InvalidState):
        subscription.cancel(at=T0, actor=ADMIN)
    with pytest.raises(InvalidState):
        subscription.change_seats(5, plan=PRO, at=T0, priced_at=T0, tax_rate_bps=0, actor=ADMIN, pay=Till())
    with pytest.raises(InvalidState):
        subscription.resume(at=subscription.current_period_end, actor=ADMIN)


def test_resume_needs_a_cancellation() -> None:
    subscription = given(created(seats=3))
    with pytest.raises(InvalidState):
        subscription.resume(at=T0, actor=ADMIN)


def test_seats_cannot_change_once_the_period_has_ended() -> None:
    subscription = given(created(seats=3))
    with pytest.raises(InvalidState):
        subscription.change_seats(5, plan=PRO, at=subscription.current_period_end,
                                  priced_at=subscription.current_period_end, tax_rate_bps=0, actor=ADMIN, pay=Till())


def test_at_period_end_a_canceled_subscription_expires() -> None:
    subscription = given(created(seats=3))
    subscription.cancel(at=T0, actor=ADMIN)
    end = subscription.current_period_end
    assert subscription.run_due(plan=PRO, at=end - timedelta(seconds=1), tax_rate_bps=0, pay=Till(),
                                actor="scheduler") is None
    assert subscription.run_due(plan=PRO, at=end, tax_rate_bps=0, pay=Till(), actor="scheduler") == "Expired"
    assert (then(subscription)[-1].reason, subscription.status, subscription.due_at) == ("canceled", "expired", None)


def test_renewal_charges_the_next_period_at_the_current_price_for_the_pending_seats() -> None:
    subscription = given(created(seats=6))  # Jan 31 anchor
    subscription.change_seats(4, plan=PRO, at=T0, priced_at=T0, tax_rate_bps=0, actor=ADMIN, pay=Till())
    dearer = type(PRO)(**{**vars(PRO), "monthly_cents": 3500})
    till = Till()
    assert subscription.run_due(plan=dearer, at=subscription.current_period_end, tax_rate_bps=2000, pay=till,
                                actor="scheduler") == "Renewed"
    renewed = then(subscription)[-1]
    assert (renewed.seats_before, renewed.seats_after, renewed.unit_price_cents) == (6, 4, 3500)
    assert (renewed.period_start.month, renewed.period_start.day) == (2, 28)
    assert (renewed.period_end.month, renewed.period_end.day) == (3, 31)
    assert till.bills[0].total_cents == 4 * 3500 * 12 // 10
    assert (subscription.seats, subscription.pending_seats, subscription.status) == (4, None, "active")


def test_a_declined_renewal_is_retried_after_1_3_and_7_days_then_expires() -> None:
    subscription = given(created(seats=2))
    end = subscription.current_period_end
    outcomes, retry_times = [], []
    at = end
    for _ in range(4):
        outcomes.append(subscription.run_due(plan=PRO, at=at, tax_rate_bps=0, pay=declined, actor="scheduler"))
        retry_times.append(subscription.next_retry_at)
        if subscription.next_retry_at:
            assert subscription.status == "past_due"
            assert subscription.run_due(plan=PRO, at=subscription.next_retry_at - timedelta(seconds=1),
                                        tax_rate_bps=0, pay=declined, actor="scheduler") is None
            at = subscription.next_retry_at
    assert outcomes == ["RenewalPaymentFailed"] * 3 + ["Expired"]
    assert retry_times == [end + timedelta(days=1), end + timedelta(days=3), end + timedelta(days=7), None]
    failures = [e for e in then(subscription) if events.type_name(e) == "RenewalPaymentFailed"]
    assert [f.attempt for f in failures] == [1, 2, 3, 4]
    assert failures[0].decline_code == "insufficient_funds"
    assert then(subscription)[-1].reason == "payment_failed" and subscription.status == "expired"


def test_a_successful_retry_renews_the_period_that_was_due() -> None:
    subscription = given(created(seats=2))
    end = subscription.current_period_end
    subscription.run_due(plan=PRO, at=end, tax_rate_bps=0, pay=declined, actor="scheduler")
    with pytest.raises(InvalidState):
        subscription.change_seats(3, plan=PRO, at=end, priced_at=end, tax_rate_bps=0, actor=ADMIN, pay=Till())
    assert subscription.run_due(plan=PRO, at=end + DAY, tax_rate_bps=0, pay=Till(), actor="scheduler") == "Renewed"
    renewed = then(subscription)[-1]
    assert (renewed.period_start, renewed.attempt) == (end, 2)
    assert subscription.status == "active" and subscription.next_retry_at is None


def test_replaying_the_events_gives_the_same_subscription() -> None:
    first = created(seats=6)
    subscription = given(first)
    subscription.change_seats(9, plan=PRO, at=T0 + DAY, priced_at=T0 + DAY, tax_rate_bps=0, actor=ADMIN, pay=Till())
    subscription.change_seats(4, plan=PRO, at=T0 + DAY, priced_at=T0 + DAY, tax_rate_bps=0, actor=ADMIN, pay=Till())
    subscription.cancel(at=T0 + DAY, actor=ADMIN)
    subscription.resume(at=T0 + DAY, actor=ADMIN)
    subscription.run_due(plan=PRO, at=subscription.current_period_end, tax_rate_bps=0, pay=Till(), actor="s")
    history = first + history_of(subscription)
    assert given(history) == subscription
    assert given(history).status == "active" and given(history).seats == 4
