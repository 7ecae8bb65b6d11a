"""Renewals in batches: a batch records its charge intents in one transaction and its outcomes in another, yet
each subscription is charged and recorded exactly as it would be alone, and one subscription's decline, conflict
or busy lock never fails the others."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from commands.clocks import SandboxClock
from commands.handlers import Ledger
from commands.locks import ThreadLocks
from ledger import events
from ledger.charge import COMPLETED, REVERSED, Charge
from ledger.invoice import RENEWAL
from ledger.subscription import Order, Subscription
from service.bootstrap import Services, bootstrap
from service.settings import load_settings
from tests.support import ADMIN, SandboxWorld, reseller_with_card, sandbox_world

EVER = {"created_from": datetime(2000, 1, 1, tzinfo=UTC), "created_to": datetime(2200, 1, 1, tzinfo=UTC)}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[SandboxWorld]:
    world = sandbox_world(tmp_path / "views", datetime(2028, 3, 10, 9, 30, tzinfo=UTC))
    reseller_with_card(world, "org_1")  # type: ignore[arg-type]
    yield world
    world.close()


def create(ledger: Ledger, org_id: str = "org_1", seats: int = 3) -> UUID:
    order = Order("pro", "monthly", seats=seats, organization_name="C", admin_email="a@c.example")
    return ledger.create_subscription(org_id, order, actor=ADMIN).aggregate.id


def types(ledger: Ledger, sub_id: UUID) -> list[str]:
    return [events.type_name(e) for e in ledger.history(sub_id)]


def period_end(ledger: Ledger, sub_id: UUID) -> datetime:
    return ledger.app.repository.get(sub_id).current_period_end  # type: ignore[no-any-return]


def test_a_declined_card_is_its_own_subscriptions_outcome_and_the_rest_of_the_batch_renews(
        world: SandboxWorld) -> None:
    reseller_with_card(world, "org_2")  # type: ignore[arg-type]
    paying = [create(world.ledger) for _ in range(3)]
    declining = [create(world.ledger, "org_2") for _ in range(2)]
    world.ledger.set_billing_info("org_2", payment_method="pm_card_chargeCustomerFail",
                                  billing_email="b@two.example", country="US", actor=ADMIN)
    world.clock.set(period_end(world.ledger, paying[0]), actor="tester")

    batch = world.ledger.run_due_batch([*paying, *declining])

    assert sorted(batch.changed) == sorted([*paying, *declining])
    assert (batch.busy, batch.failed, batch.not_due) == ([], {}, [])
    for sub_id in paying:
        assert types(world.ledger, sub_id) == ["SubscriptionCreated", "Renewed"]
        charge = world.ledger.app.repository.get(Charge.id_for(sub_id, 1, RENEWAL))
        assert charge.state == COMPLETED
    for sub_id in declining:
        assert types(world.ledger, sub_id) == ["SubscriptionCreated", "RenewalPaymentFailed"]
    assert len(world.gateway.list_charges(**EVER)) == 5 + 3  # the creations, then the paid renewals


def test_a_subscription_changed_under_the_batch_has_its_charge_given_back_and_the_others_are_saved(
        world: SandboxWorld) -> None:
    subs = [create(world.ledger) for _ in range(3)]
    raced = subs[1]
    # A rival with its own locks (as a process ignoring ours would be) cancels one subscription while the batch
    # is charging it: the batch's save of its renewal conflicts.
    rival = Ledger(world.ledger.app, catalog=world.ledger.catalog, clock=world.clock, gateway=world.gateway,
                   locks=ThreadLocks(), quotes=world.ledger._quotes)

    class RacingProcessor:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def charge(self, **kwargs: Any) -> str:
            if kwargs["metadata"]["subscription_id"] == str(raced):
                rival.cancel("org_1", raced, actor=ADMIN)
            return self._inner.charge(**kwargs)  # type: ignore[no-any-return]

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    world.ledger.gateway = RacingProcessor(world.gateway)  # type: ignore[assignment]
    world.clock.set(period_end(world.ledger, subs[0]), actor="tester")

    batch = world.ledger.run_due_batch(subs)

    assert sorted(batch.changed) == sorted([subs[0], subs[2]])
    assert batch.busy == [raced] and batch.failed == {}
    for sub_id in (subs[0], subs[2]):
        assert types(world.ledger, sub_id) == ["SubscriptionCreated", "Renewed"]
    assert types(world.ledger, raced) == ["SubscriptionCreated", "Canceled"]
    charge = world.ledger.app.repository.get(Charge.id_for(raced, 1, RENEWAL))
    assert charge.state == REVERSED
    refunds = world.gateway.list_refunds(**EVER)
    assert [(r.charge_reference, r.amount_cents) for r in refunds] == [
        (c.reference, c.amount_cents) for c in world.gateway.list_charges(**EVER)
        if c.metadata.get("subscription_id") == str(raced) and c.metadata.get("purpose") == RENEWAL]
    # Alone, the busy one does what is due now: it was canceled, so it expires.
    assert world.ledger.run_due(raced).position is not None
    assert types(world.ledger, raced) == ["SubscriptionCreated", "Canceled", "Expired"]


def test_a_subscription_another_change_holds_is_left_to_run_alone_and_the_rest_of_the_batch_renews(
        world: SandboxWorld) -> None:
    subs = [create(world.ledger) for _ in range(3)]
    world.clock.set(period_end(world.ledger, subs[0]), actor="tester")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with world.ledger._locks.hold(f"subscription:{subs[2]}"):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    try:
        batch = world.ledger.run_due_batch(subs)
    finally:
        release.set()
        holder.join()

    assert sorted(batch.changed) == sorted(subs[:2]) and batch.busy == [subs[2]]
    assert types(world.ledger, subs[2]) == ["SubscriptionCreated"]
    assert world.scheduler.run_due().changes == 1  # the next run renews it
    assert types(world.ledger, subs[2]) == ["SubscriptionCreated", "Renewed"]


def test_an_intent_left_open_by_a_crash_is_resumed_by_the_next_batch_and_charged_once(world: SandboxWorld) -> None:
    subs = [create(world.ledger) for _ in range(2)]
    world.clock.set(period_end(world.ledger, subs[0]), actor="tester")

    class DiesAfterCharging:
        """The processor takes the money, then the process dies before anything else is recorded."""

        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def charge(self, **kwargs: Any) -> str:
            self._inner.charge(**kwargs)
            raise SystemExit("killed")

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    real = world.ledger.gateway
    world.ledger.gateway = DiesAfterCharging(real)  # type: ignore[assignment]
    with pytest.raises(SystemExit):
        world.ledger.run_due_batch(subs)
    world.ledger.gateway = real
    assert [types(world.ledger, sub_id) for sub_id in subs] == [["SubscriptionCreated"]] * 2
    # The batch's charges are in flight together: the one that died, and perhaps the other, were taken, not recorded.
    assert len(world.gateway.list_charges(**EVER)) - 2 in (1, 2)

    batch = world.ledger.run_due_batch(subs)

    assert sorted(batch.changed) == sorted(subs)
    assert len(world.gateway.list_charges(**EVER)) == 2 + 2  # what was taken was found, not taken again
    charges = [world.ledger.app.repository.get(Charge.id_for(sub_id, 1, RENEWAL)) for sub_id in subs]
    assert [(charge.attempt, charge.state) for charge in charges] == [(1, COMPLETED)] * 2  # resumed, not retried


@pytest.fixture
def sandboxed(service_env: dict[str, str]) -> Iterator[Services]:
    """A deployment on each backend, on a sandbox clock that the test moves."""
    overrides = {key.removeprefix("LEDGER_").lower(): value for key, value in service_env.items()}
    built = bootstrap(load_settings(**overrides, clock="sandbox"))
    yield built
    built.close()


def test_a_batch_loads_its_aggregates_at_once_and_renews_on_each_backend(sandboxed: Services) -> None:
    ledger = sandboxed.ledger
    ledger.enable_reseller("org_b", name="Batch Reseller", actor="support")
    ledger.set_billing_info("org_b", payment_method="pm_card_visa", billing_email="b@b.example", country="DE",
                            actor=ADMIN)
    subs = [create(ledger, "org_b", seats=1 + n) for n in range(6)]
    ledger.cancel("org_b", subs[5], actor=ADMIN)
    loaded = ledger.app.get_many([*subs, UUID(int=0)])
    assert set(loaded) == set(subs)
    for sub_id in subs:
        alone = ledger.app.repository.get(sub_id)
        assert isinstance(loaded[sub_id], Subscription)
        assert vars(loaded[sub_id]) == vars(alone)
    clock = sandboxed.clock
    assert isinstance(clock, SandboxClock)
    end = period_end(ledger, subs[0])
    clock.set(end + timedelta(seconds=1), actor="tester")

    batch = ledger.run_due_batch(subs)

    assert sorted(batch.changed) == sorted(subs) and (batch.busy, batch.failed) == ([], {})
    for n, sub_id in enumerate(subs[:5]):
        renewed = ledger.app.repository.get(sub_id)
        assert (types(ledger, sub_id), renewed.seats, renewed.current_period_start) == (
            ["SubscriptionCreated", "Renewed"], 1 + n, end)
    assert types(ledger, subs[5]) == ["SubscriptionCreated", "Canceled", "Expired"]
    assert ledger.run_due_batch(subs).not_due == subs  # renewed into their next period, or expired
