"""The lifecycle in time: renewals, scheduled decreases, dunning and expiry, driven by the scheduler."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands.errors import PaymentUnavailable
from commands.handlers import Ledger
from commands.locks import ThreadLocks
from ledger.errors import DomainError
from ledger.subscription import RENEWAL_RETRY_DELAYS, Order
from projections import summary
from projections.deployment import ViewLocation
from projections.due_dates import due_by
from projections.replay import replay
from service import scheduler as scheduler_module
from service.scheduler import Scheduler
from tests.support import ADMIN, SandboxWorld, reseller_with_card, sandbox_world

EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.fixture
def world(tmp_path: Path) -> Any:
    world = sandbox_world(tmp_path / "views", utc(2028, 1, 31, 9, 30))
    reseller_with_card(world, "org_1")  # type: ignore[arg-type]
    yield world
    world.close()


def create(world: SandboxWorld, seats: int = 3, cycle: str = "monthly") -> Any:
    order = Order("pro", cycle, seats=seats, organization_name="C", admin_email="a@c.example")
    return world.ledger.create_subscription("org_1", order, actor=ADMIN).aggregate.id


def renewals(world: SandboxWorld, sub_id: Any) -> list[Any]:
    return [e for e in world.ledger.history(sub_id) if type(e).__name__ == "Renewed"]


def charged(world: SandboxWorld) -> list[int]:
    return [c.amount_cents for c in world.gateway.list_charges(created_from=EVER[0], created_to=EVER[1])]


def test_a_year_of_a_jan_31_anchor_in_a_leap_year(world: SandboxWorld) -> None:
    sub_id = create(world)
    assert world.advance(days=366) == 12
    ends = [(e.period_end.month, e.period_end.day) for e in renewals(world, sub_id)]
    assert ends == [(3, 31), (4, 30), (5, 31), (6, 30), (7, 31), (8, 31), (9, 30), (10, 31), (11, 30), (12, 31),
                    (1, 31), (2, 28)]
    assert [e.timestamp for e in renewals(world, sub_id)] == [e.period_start for e in renewals(world, sub_id)]
    assert len(charged(world)) == 13
    subscription = world.ledger.subscription("org_1", sub_id)
    assert (subscription.current_period_start, subscription.current_period_end) == (utc(2029, 1, 31, 9, 30),
                                                                                   utc(2029, 2, 28, 9, 30))


def test_an_annual_feb_29_anchor(tmp_path: Path) -> None:
    world = sandbox_world(tmp_path / "views", utc(2028, 2, 29, 12))
    reseller_with_card(world, "org_1")  # type: ignore[arg-type]
    sub_id = create(world, cycle="annual")
    world.advance(days=4 * 366)
    assert [e.period_end.date().isoformat() for e in renewals(world, sub_id)] == [
        "2030-02-28", "2031-02-28", "2032-02-29", "2033-02-28"]
    world.close()


def test_a_scheduled_decrease_takes_effect_at_renewal(world: SandboxWorld) -> None:
    sub_id = create(world, seats=10)
    world.ledger.change_seats("org_1", sub_id, 4, actor=ADMIN)
    world.advance(days=29)
    subscription = world.ledger.subscription("org_1", sub_id)
    assert (subscription.seats, subscription.pending_seats, subscription.status) == (4, None, "active")
    assert charged(world)[-1] == 4 * 3000


def test_a_canceled_subscription_expires_and_leaves_the_table_but_not_the_history(world: SandboxWorld) -> None:
    sub_id = create(world)
    world.ledger.cancel("org_1", sub_id, actor=ADMIN)
    world.advance(days=40)
    assert world.types_of(sub_id) == ["SubscriptionCreated", "Canceled", "Expired"]
    assert world.ledger.subscription("org_1", sub_id).status == "expired"
    world.read_side.catch_up()
    assert summary.cards(world.read_side.db(summary.NAME), "org_1") == summary.Cards(0, 0, 0, 0)
    assert len(charged(world)) == 1


def test_dunning_retries_then_expires(world: SandboxWorld) -> None:
    sub_id = create(world)
    world.ledger.set_billing_info("org_1", payment_method="pm_card_chargeCustomerFail", billing_email="b@r.example",
                                  country="US", actor=ADMIN)
    world.advance(days=29)
    assert world.ledger.subscription("org_1", sub_id).status == "past_due"
    world.advance(days=10)
    history = world.types_of(sub_id)
    assert history == ["SubscriptionCreated"] + ["RenewalPaymentFailed"] * 4 + ["Expired"]
    failures = [e for e in world.ledger.history(sub_id) if type(e).__name__ == "RenewalPaymentFailed"]
    end = failures[0].period_start
    # The product's schedule, spelled out: retries 1, 3 and 7 days after the period ended.
    assert [e.timestamp for e in failures] == [end, end + timedelta(days=1), end + timedelta(days=3),
                                               end + timedelta(days=7)]
    assert list(world.ledger.history(sub_id))[-1].reason == "payment_failed"


def test_a_successful_retry_renews_the_due_period(world: SandboxWorld) -> None:
    sub_id = create(world)
    world.ledger.set_billing_info("org_1", payment_method="pm_card_chargeCustomerFail", billing_email="b@r.example",
                                  country="US", actor=ADMIN)
    world.advance(days=29, hours=12)
    world.ledger.set_billing_info("org_1", payment_method="pm_card_visa", billing_email="b@r.example", country="US",
                                  actor=ADMIN)
    world.advance(days=2)
    subscription = world.ledger.subscription("org_1", sub_id)
    assert subscription.status == "active" and renewals(world, sub_id)[0].attempt == 2
    assert renewals(world, sub_id)[0].period_start == subscription.anchor.replace(month=2, day=29)


def test_a_ledger_down_for_two_periods_catches_up_period_by_period(world: SandboxWorld) -> None:
    sub_id = create(world)
    world.clock.set(world.clock.now() + timedelta(days=62), actor="outage")  # nothing ran meanwhile
    ran = world.scheduler.run_due()
    assert ran.changes == 2
    assert [(e.period_start.month, e.period_end.month) for e in renewals(world, sub_id)] == [(2, 3), (3, 4)]
    assert len(charged(world)) == 3


def test_a_run_pages_through_more_due_subscriptions_than_a_page_holds_renewing_each_period_once(
        world: SandboxWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduler_module, "SCAN", 4)
    subscriptions = [create(world, seats=1 + n % 3) for n in range(11)]
    world.clock.set(world.clock.now() + timedelta(days=62), actor="outage")  # two periods fell due for each
    scheduler = Scheduler(world.ledger, world.scheduler.due_dates, world.clock, batch=3)

    ran = scheduler.run_due()

    assert (ran.changes, ran.failures) == (22, 0)
    for sub_id in subscriptions:
        assert [(e.period_start.month, e.period_end.month) for e in renewals(world, sub_id)] == [(2, 3), (3, 4)]
    assert len(charged(world)) == 11 + 22


def test_the_due_dates_page_by_page_are_every_due_subscription_in_order(world: SandboxWorld) -> None:
    for n in range(7):
        create(world, seats=1 + n % 3)
        world.clock.set(world.clock.now() + timedelta(hours=n % 2), actor="tester")  # some due at the same instant
    world.scheduler.due_dates.catch_up()
    at = world.clock.now() + timedelta(days=40)
    pages, after = [], None
    while page := due_by(world.scheduler.due_dates.db, at, 3, after):
        pages.append(page)
        after = page[-1]
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [due for page in pages for due in page] == due_by(world.scheduler.due_dates.db, at, 100)



class SlowProcessor:
    """The simulated processor with a little latency, so that two schedulers really overlap."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def charge(self, **kwargs: Any) -> str:
        time.sleep(0.002)
        return self._inner.charge(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class OutageProcessor:
    """The simulated processor, unreachable while ``down``: the charge may or may not have been made."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.down = True

    def charge(self, **kwargs: Any) -> str:
        if self.down:
            raise PaymentUnavailable("the processor does not answer", retry_after_seconds=30)
        return self._inner.charge(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_processor_outage_at_renewal_leaves_the_subscription_due_and_the_next_run_renews_it_once(
        world: SandboxWorld) -> None:
    sub_id = create(world)
    processor = OutageProcessor(world.gateway)
    world.ledger.gateway = processor
    end = world.ledger.subscription("org_1", sub_id).current_period_end

    world.clock.set(end, actor="tester")
    down = world.scheduler.run_due()
    processor.down = False
    world.clock.set(end + timedelta(minutes=5), actor="tester")
    up = world.scheduler.run_due()

    assert (down.changes, down.failures) == (0, 1)
    assert world.types_of(sub_id) == ["SubscriptionCreated", "Renewed"]
    assert (up.changes, up.failures) == (1, 0)
    assert len(charged(world)) == 2


def test_moving_the_sandbox_clock_during_a_processor_outage_tells_the_mover_and_a_later_move_renews_once(
        world: SandboxWorld) -> None:
    sub_id = create(world)
    processor = OutageProcessor(world.gateway)
    world.ledger.gateway = processor

    with pytest.raises(PaymentUnavailable):
        world.advance(days=31)
    processor.down = False
    world.advance(days=1)

    assert world.types_of(sub_id) == ["SubscriptionCreated", "Renewed"]
    assert len(charged(world)) == 2


def test_two_schedulers_at_once_never_renew_or_charge_a_period_twice(world: SandboxWorld) -> None:
    subscriptions = [create(world, seats=1 + n % 5) for n in range(120)]
    world.clock.set(world.clock.now() + timedelta(days=29), actor="tester")
    # Two schedulers as two processes would be: their own handlers, their own locks, one event store; in
    # small batches, so that each takes its share.
    rivals = [Scheduler(Ledger(world.ledger.app, catalog=world.ledger.catalog, clock=world.clock,
                               gateway=SlowProcessor(world.gateway), locks=ThreadLocks(), quotes=world.ledger._quotes),
                        world.scheduler.due_dates, world.clock, batch=10) for _ in range(2)]
    results: list[Any] = []
    threads = [threading.Thread(target=lambda rival=rival: results.append(rival.run_due())) for rival in rivals]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(ran.changes > 0 for ran in results), "both schedulers should have done some of the work"
    assert sum(ran.changes for ran in results) == len(subscriptions)
    for sub_id in subscriptions:
        assert len(renewals(world, sub_id)) == 1
    assert len(charged(world)) == 2 * len(subscriptions)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["create", "increase", "decrease", "cancel", "resume", "card", "time"]),
                          st.integers(0, 50), st.integers(1, 60)), min_size=1, max_size=25))
def test_time_and_commands_never_charge_a_period_twice_nor_leave_one_unpaid(tmp_path_factory: Any,
                                                                           steps: list[Any]) -> None:
    world = sandbox_world(tmp_path_factory.mktemp("views"), utc(2027, 1, 31, 8))
    reseller_with_card(world, "org_1")  # type: ignore[arg-type]
    subscriptions: list[Any] = []
    failing = False
    for action, pick, number in steps:
        target = subscriptions[pick % len(subscriptions)] if subscriptions else None
        try:
            if action == "create" or target is None:
                subscriptions.append(create(world, seats=1 + number % 9))
            elif action == "increase":
                current = world.ledger.subscription("org_1", target).seats
                world.ledger.change_seats("org_1", target, current + number % 5 + 1, actor=ADMIN)
            elif action == "decrease":
                world.ledger.change_seats("org_1", target, 1 + number % 3, actor=ADMIN)
            elif action == "card":
                failing = not failing
                world.ledger.set_billing_info(
                    "org_1", payment_method="pm_card_chargeCustomerFail" if failing else "pm_card_visa",
                    billing_email="b@r.example", country="DE", actor=ADMIN)
            elif action == "time":
                world.advance(days=number)
            else:
                getattr(world.ledger, action)("org_1", target, actor=ADMIN)
        except DomainError:
            pass
    # A command after the last move of the clock may have made something due at once (a past-due subscription
    # canceled: its period ended before the cancel). The scheduler's next pass does it; run that pass.
    world.advance(seconds=0)
    now = world.clock.now()
    for sub_id in subscriptions:
        history = list(world.ledger.history(sub_id))
        created, renewed = history[0], [e for e in history if type(e).__name__ == "Renewed"]
        periods = [(created.period_start, created.period_end)] + [(e.period_start, e.period_end) for e in renewed]
        assert len(set(periods)) == len(periods), "a period was charged twice"
        assert all(a[1] == b[0] for a, b in zip(periods, periods[1:])), "a period went unpaid between renewals"
        subscription = world.ledger.subscription("org_1", sub_id)
        if subscription.status == "expired":
            assert subscription.expired_reason in ("canceled", "payment_failed")
            fails = [e for e in history if type(e).__name__ == "RenewalPaymentFailed"]
            if subscription.expired_reason == "payment_failed":
                assert len(fails) >= len(RENEWAL_RETRY_DELAYS) + 1 and fails[-1].next_retry_at is None
            else:
                assert any(type(e).__name__ == "Canceled" for e in history)
        else:
            assert subscription.due_at is not None and subscription.due_at > now, "something due was left undone"
            if subscription.status != "past_due":
                assert subscription.current_period_end > now, "an active subscription was left unrenewed"
        recorded = sorted(e.bill.total_cents for e in history if getattr(e, "payment", None))
        processor = sorted(c.amount_cents for c in world.gateway.list_charges(created_from=EVER[0],
                                                                               created_to=EVER[1])
                           if c.metadata["subscription_id"] == str(sub_id))
        assert recorded == processor
    world.read_side.catch_up()
    folder = tmp_path_factory.mktemp("replay")
    assert all(v.equal for v in replay(world.read_side, ViewLocation(folder=folder)))
    world.close()
