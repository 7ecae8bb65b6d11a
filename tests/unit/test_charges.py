"""Money across crashes: a charge is made only after its intent is recorded, every intent ends with an
outcome, and every cent the processor took has exactly one billing document.

A "death" here is an exception that no handler catches (``Died`` is a BaseException raised by a port at a
chosen step), so the command stops where it is, as a killed process would, and leaves what it had committed.
The tests with real processes killed with SIGKILL are in tests/e2e/test_charge_crashes.py."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from commands.errors import ConcurrentChange, PaymentUnavailable
from commands.idempotency import IdempotencyKey
from commands.recovery import ChargeRecovery
from ledger.charge import Charge
from ledger.errors import InvalidState, PaymentDeclined
from ledger.invoice import Invoice
from ledger.subscription import Order, Subscription
from tests.support import ADMIN, T0, InMemoryLedger, in_memory_ledger, reseller_with_card

PRO = Order("pro", "monthly", seats=3, organization_name="Initech", admin_email="admin@initech.example")
EVER = {"created_from": datetime(2000, 1, 1, tzinfo=T0.tzinfo), "created_to": datetime(2100, 1, 1, tzinfo=T0.tzinfo)}
NO_GRACE = timedelta(0)


class Died(BaseException):
    """The process stopped here: nothing after this line of the command runs."""


class FaultyGateway:
    """The simulated processor, with a death planted before or after its next charge."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.die_before_charge = False
        self.die_after_charge = False
        self.unavailable = False
        self.on_charge: Callable[[], None] | None = None
        self.charges_asked = 0

    def charge(self, **kwargs: Any) -> str:
        self.charges_asked += 1
        if self.die_before_charge:
            self.die_before_charge = False
            raise Died
        reference = self._inner.charge(**kwargs)
        if self.on_charge:
            self.on_charge()
        if self.die_after_charge:
            self.die_after_charge = False
            raise Died
        return reference

    def find_charge(self, **kwargs: Any) -> str | None:
        if self.unavailable:
            raise PaymentUnavailable("the processor does not answer")
        return self._inner.find_charge(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
def world() -> InMemoryLedger:
    world = in_memory_ledger()
    reseller_with_card(world, "org_1", country="DE")
    world.ledger.gateway = FaultyGateway(world.gateway)
    return world


def faults(world: InMemoryLedger) -> FaultyGateway:
    assert isinstance(world.ledger.gateway, FaultyGateway)
    return world.ledger.gateway


def key(name: str, body: Mapping[str, Any] | None = None) -> IdempotencyKey:
    return IdempotencyKey.for_request("org_1", name, "POST", "/v1/resellers/org_1/subscriptions", body or {"o": 1})


def aggregates(world: InMemoryLedger, kind: type) -> list[Any]:
    ids = {n.originator_id for n in world.app.recorder.select_notifications(start=None, limit=10_000)}
    found = [world.app.repository.get(i) for i in ids]
    return [a for a in found if isinstance(a, kind)]


def books_balance(world: InMemoryLedger) -> None:
    """What reconciliation checks, on the event store itself: each processor charge has exactly one
    billing document for its amount, each refund is recorded on it, and no charge intent is left open."""
    charges = {c.reference: c for c in world.gateway.list_charges(**EVER)}
    refunds = {r.reference: r for r in world.gateway.list_refunds(**EVER)}
    invoices = aggregates(world, Invoice)
    documented = [i.payment_reference for i in invoices]
    assert sorted(documented) == sorted(charges), "each charge has exactly one billing document"
    for invoice in invoices:
        charge = charges[invoice.payment_reference]
        assert invoice.bill.total_cents == charge.amount_cents
        assert invoice.refunded_cents == charge.refunded_cents
        assert invoice.refund_references == {r.reference for r in refunds.values()
                                             if r.charge_reference == invoice.payment_reference}
    assert [c.id for c in aggregates(world, Charge) if c.is_open] == []


def create(world: InMemoryLedger, idempotency: IdempotencyKey | None = None) -> Subscription:
    return world.ledger.create_subscription("org_1", PRO, actor=ADMIN, idempotency=idempotency).aggregate


def recover(world: InMemoryLedger, **kwargs: Any) -> Any:
    return ChargeRecovery(world.ledger, grace=NO_GRACE, **kwargs).run()


# --- the intent comes first ------------------------------------------------------------------------


def test_the_intent_is_committed_before_the_processor_is_asked(world: InMemoryLedger) -> None:
    seen: list[list[str]] = []
    inner_charge = world.gateway.charge

    def watching(**kwargs: Any) -> str:
        seen.append([n.topic for n in world.app.recorder.select_notifications(start=None, limit=100)])
        assert kwargs["idempotency_key"].startswith("ledger-charge-")
        return inner_charge(**kwargs)

    world.gateway.charge = watching  # type: ignore[method-assign]
    create(world)

    assert seen[0][-2:] == ["ledger:Charge.ChargeOpened", "ledger:Charge.ChargeIntended"]
    [charge] = aggregates(world, Charge)
    assert charge.state == "completed" and charge.attempt == 1
    books_balance(world)


def test_the_outcome_is_saved_with_the_change_and_its_document(world: InMemoryLedger) -> None:
    create(world)
    topics = [n.topic for n in world.app.recorder.select_notifications(start=None, limit=100)]
    # One transaction for the change: these follow each other in the log.
    last = topics[-4:]
    assert set(last) == {"ledger:Subscription.SubscriptionCreated", "ledger:CustomerAccount.CustomerAccountOpened",
                         "ledger:Charge.ChargeCompleted", "ledger:Invoice.InvoiceIssued"}


# --- a death between the intent and the outcome ---------------------------------------------------


def test_a_create_retried_with_its_key_after_dying_after_the_charge_takes_that_charge(world: InMemoryLedger) -> None:
    faults(world).die_after_charge = True
    with pytest.raises(Died):
        create(world, key("k1"))
    assert len(world.gateway.list_charges(**EVER)) == 1 and aggregates(world, Subscription) == []

    subscription = create(world, key("k1"))

    assert [c.amount_cents for c in world.gateway.list_charges(**EVER)] == [10710]
    assert faults(world).charges_asked == 1  # the retry found the charge instead of asking again
    assert [s.id for s in aggregates(world, Subscription)] == [subscription.id]
    books_balance(world)


def test_a_create_retried_after_dying_before_the_charge_charges_once(world: InMemoryLedger) -> None:
    faults(world).die_before_charge = True
    with pytest.raises(Died):
        create(world, key("k1"))

    create(world, key("k1"))

    assert len(world.gateway.list_charges(**EVER)) == 1
    books_balance(world)


def test_recovery_refunds_and_documents_a_charge_whose_change_was_never_recorded(world: InMemoryLedger) -> None:
    faults(world).die_after_charge = True
    with pytest.raises(Died):
        create(world, key("k1"))

    settled = recover(world)

    assert (settled.reversed, settled.abandoned) == (1, 0)
    [invoice] = aggregates(world, Invoice)
    assert invoice.state == "refunded" and invoice.purpose == "subscription_created"
    [charge] = aggregates(world, Charge)
    assert charge.state == "reversed"
    assert world.types_of(charge.id)[-1] == "ChargeReversed"
    assert list(world.ledger.history(charge.id))[-1].actor == "system:recovery"
    books_balance(world)


def test_a_retry_after_recovery_charges_anew_with_a_new_key(world: InMemoryLedger) -> None:
    faults(world).die_after_charge = True
    with pytest.raises(Died):
        create(world, key("k1"))
    recover(world)

    create(world, key("k1"))

    charges = world.gateway.list_charges(**EVER)
    assert len(charges) == 2 and len({c.metadata["invoice_id"] for c in charges}) == 2
    assert len(aggregates(world, Subscription)) == 1
    books_balance(world)


def test_recovery_closes_an_intent_the_processor_never_charged(world: InMemoryLedger) -> None:
    faults(world).die_before_charge = True
    with pytest.raises(Died):
        create(world, key("k1"))

    settled = recover(world)

    assert (settled.reversed, settled.abandoned) == (0, 1)
    assert world.gateway.list_charges(**EVER) == [] and aggregates(world, Invoice) == []
    books_balance(world)


def test_recovery_leaves_a_young_intent_to_the_command_that_may_still_be_working_on_it(
        world: InMemoryLedger) -> None:
    faults(world).die_after_charge = True
    with pytest.raises(Died):
        create(world, key("k1"))
    recovery = ChargeRecovery(world.ledger, grace=timedelta(seconds=60), monotonic=lambda: 0.0)

    young = recovery.run()
    world.clock.set(world.clock.now() + timedelta(seconds=61))
    old = recovery.run()

    assert (len(young.left_open), young.reversed) == (1, 0)
    assert (old.left_open, old.reversed) == ([], 1)
    books_balance(world)


def test_recovery_leaves_the_intent_open_while_the_processor_cannot_answer(world: InMemoryLedger) -> None:
    faults(world).die_after_charge = True
    with pytest.raises(Died):
        create(world, key("k1"))
    recovery = ChargeRecovery(world.ledger, grace=NO_GRACE)
    faults(world).unavailable = True

    unanswered = recovery.run()
    faults(world).unavailable = False
    answered = recovery.run()

    assert len(unanswered.left_open) == 1 and unanswered.reversed == 0
    assert answered.reversed == 1
    books_balance(world)


def test_two_recoveries_at_once_settle_a_charge_once(world: InMemoryLedger) -> None:
    for name in ("k1", "k2", "k3"):
        faults(world).die_after_charge = True
        with pytest.raises(Died):
            world.ledger.create_subscription("org_1", PRO, actor=ADMIN, idempotency=key(name))
    results: list[Any] = []
    start = threading.Barrier(2)

    def run() -> None:
        recovery = ChargeRecovery(world.ledger, grace=NO_GRACE)
        start.wait()
        results.append(recovery.run())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(r.reversed for r in results) == 3
    assert len(world.gateway.list_refunds(**EVER)) == 3
    books_balance(world)


# --- seat increases and renewals ------------------------------------------------------------------


def test_an_increase_retried_at_another_price_settles_the_dead_attempt_first(world: InMemoryLedger) -> None:
    subscription = create(world)
    faults(world).die_after_charge = True
    with pytest.raises(Died):
        world.ledger.change_seats("org_1", subscription.id, 5, actor=ADMIN)
    world.clock.set(world.clock.now() + timedelta(days=3))  # a later instant: less time left, another prorated amount

    changed = world.ledger.change_seats("org_1", subscription.id, 5, actor=ADMIN).aggregate

    assert changed.seats == 5
    charges = world.gateway.list_charges(**EVER)
    assert len(charges) == 3 and charges[1].amount_cents != charges[2].amount_cents
    assert [r.charge_reference for r in world.gateway.list_refunds(**EVER)] == [charges[1].reference]
    [charge] = [c for c in aggregates(world, Charge) if c.purpose == "seats_increased"]
    assert (charge.attempt, charge.state) == (2, "completed")
    books_balance(world)


def test_a_renewal_that_died_after_its_charge_is_renewed_once_by_the_next_run(world: InMemoryLedger) -> None:
    subscription = create(world)
    world.clock.set(subscription.current_period_end)
    faults(world).die_after_charge = True
    with pytest.raises(Died):
        world.ledger.run_due(subscription.id)

    renewed = world.ledger.run_due(subscription.id).aggregate

    assert renewed.period_index == 1
    assert len(world.gateway.list_charges(**EVER)) == 2
    books_balance(world)


def test_declined_then_a_new_card_then_the_same_change_charges_the_new_card(world: InMemoryLedger) -> None:
    """The processor replays a declined key's decline: the retry after a new card needs a new key."""
    subscription = create(world)
    world.ledger.set_billing_info("org_1", payment_method="pm_card_chargeCustomerFail",
                                  billing_email="b@reseller.example", country="DE", actor=ADMIN)
    with pytest.raises(PaymentDeclined):
        world.ledger.change_seats("org_1", subscription.id, 5, actor=ADMIN)
    world.ledger.set_billing_info("org_1", payment_method="pm_card_visa", billing_email="b@reseller.example",
                                  country="DE", actor=ADMIN)

    changed = world.ledger.change_seats("org_1", subscription.id, 5, actor=ADMIN).aggregate

    assert changed.seats == 5
    [charge] = [c for c in aggregates(world, Charge) if c.purpose == "seats_increased"]
    assert (charge.attempt, charge.state) == (2, "completed")
    books_balance(world)


def test_a_renewal_declined_twice_ends_each_attempt_declined_and_keys_each_retry_anew(world: InMemoryLedger) -> None:
    subscription = create(world)
    world.ledger.set_billing_info("org_1", payment_method="pm_card_chargeCustomerFail",
                                  billing_email="b@reseller.example", country="DE", actor=ADMIN)
    world.clock.set(subscription.current_period_end)
    world.ledger.run_due(subscription.id)
    world.clock.set(world.clock.now() + timedelta(days=1))
    world.ledger.run_due(subscription.id)

    renewals = [c for c in aggregates(world, Charge) if c.purpose == "renewal"]
    assert sorted(c.state for c in renewals) == ["declined", "declined"]
    assert len({c.idempotency_key for c in renewals}) == 2
    books_balance(world)


# --- a change that loses a race after its charge ----------------------------------------------------


def _cancel_behind_the_commands_back(world: InMemoryLedger, subscription_id: UUID) -> Callable[[], None]:
    """A rival writer: records a change of the subscription while the command is at the processor."""

    def rival() -> None:
        current = world.app.repository.get(subscription_id)
        if current.cancel_at_period_end:
            current.resume(at=world.clock.now(), actor="rival")
        else:
            current.cancel(at=world.clock.now(), actor="rival")
        world.app.save(current)

    return rival


def test_a_charge_whose_change_lost_the_race_is_refunded_and_documented(world: InMemoryLedger) -> None:
    subscription = create(world)
    faults(world).on_charge = _cancel_behind_the_commands_back(world, subscription.id)

    with pytest.raises(InvalidState):  # the retry, on the new basis, finds the subscription canceled
        world.ledger.change_seats("org_1", subscription.id, 5, actor=ADMIN)

    assert world.app.repository.get(subscription.id).seats == 3
    [increase] = [i for i in aggregates(world, Invoice) if i.purpose == "seats_increased"]
    assert increase.state == "refunded"
    [refund] = world.gateway.list_refunds(**EVER)
    assert refund.metadata["reason"] == "change_not_recorded"
    books_balance(world)


def test_a_change_that_loses_every_race_gives_up_with_concurrent_change_and_gives_every_charge_back(
        world: InMemoryLedger) -> None:
    subscription = create(world)
    targets = iter([2, 1, 2])

    def rival() -> None:  # schedules another decrease each time: a change that leaves the increase possible
        current = world.app.repository.get(subscription.id)
        current.change_seats(next(targets), plan=world.ledger.catalog.plan("pro"), at=world.clock.now(),
                             priced_at=world.clock.now(), tax_rate_bps=0, actor="rival", pay=lambda bill: None)
        world.app.save(current)

    faults(world).on_charge = rival

    with pytest.raises(ConcurrentChange):
        world.ledger.change_seats("org_1", subscription.id, 5, actor=ADMIN)

    increases = [i for i in aggregates(world, Invoice) if i.purpose == "seats_increased"]
    assert len(increases) == 3 and {i.state for i in increases} == {"refunded"}
    books_balance(world)


def test_the_ledger_refuses_to_settle_a_charge_that_is_not_open(world: InMemoryLedger) -> None:
    create(world)
    [charge] = aggregates(world, Charge)
    assert world.ledger.settle_charge(charge.id) is None
    with pytest.raises(InvalidState):
        charge.abandon("no", at=T0, actor="x")

