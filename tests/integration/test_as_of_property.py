"""The as-of view against a fold of the log: for random command histories on the sandbox clock, the
customer table, the summary cards and the invoices it answers at every event's instant (and the second
before) equal what replaying each aggregate's events recorded by then gives."""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import events
from ledger.errors import DomainError
from ledger.subscription import EXPIRED, Order
from projections import as_of
from projections.as_of import queries
from projections.cursors import CursorSigner
from tests.support import ADMIN, T0, SandboxWorld, reseller_with_card, sandbox_world

ORGS = ("org_1", "org_2")
SIGNER = CursorSigner(b"test cursors")

create = st.tuples(st.just("create"), st.sampled_from(ORGS), st.sampled_from(["plus", "pro", "enterprise"]),
                   st.sampled_from(["monthly", "annual"]), st.integers(1, 12))
on_one = st.tuples(st.sampled_from(["seats", "cancel", "resume"]), st.integers(0, 20), st.integers(1, 12))
advance = st.tuples(st.just("advance"), st.sampled_from([0, 1, 60, 3600, 86_400 * 3, 86_400 * 20, 86_400 * 40]))
card = st.tuples(st.just("card"), st.sampled_from(ORGS), st.sampled_from(["pm_card_visa",
                                                                          "pm_card_chargeCustomerFail"]))
histories = st.lists(st.one_of(create, create, on_one, on_one, on_one, advance, advance, card), min_size=1,
                     max_size=30)


def run(world: SandboxWorld, steps: list[tuple[Any, ...]]) -> None:
    made: list[tuple[str, UUID]] = []
    for step in steps:
        kind = step[0]
        try:
            if kind == "create":
                _, org, plan, cycle, seats = step
                order = (Order(plan, cycle, end_user_email=f"u{len(made)}@c.example") if plan == "plus" else
                         Order(plan, cycle, seats=seats, organization_name=f"Customer {len(made) % 4}",
                               admin_email="a@c.example"))
                made.append((org, world.ledger.create_subscription(org, order, actor=ADMIN).aggregate.id))
            elif kind == "advance":
                world.advance(seconds=step[1])
            elif kind == "card":
                world.ledger.set_billing_info(step[1], payment_method=step[2], billing_email="b@r.example",
                                              country="DE", actor=ADMIN)
            elif made:
                org, sub_id = made[step[1] % len(made)]
                if kind == "seats":
                    world.ledger.change_seats(org, sub_id, step[2], actor=ADMIN)
                elif kind == "cancel":
                    world.ledger.cancel(org, sub_id, actor=ADMIN)
                else:
                    world.ledger.resume(org, sub_id, actor=ADMIN)
        except DomainError:
            pass  # refused commands record nothing


def row_of(sub: Any) -> dict[str, Any]:
    return {"subscription_id": str(sub.id), "customer": sub.customer, "type": sub.subscription_type,
            "plan": sub.plan, "plan_name": sub.plan_name, "billing_cycle": sub.billing_cycle, "status": sub.status,
            "seats": sub.seats, "pending_seats": sub.pending_seats,
            "current_period_start": events.iso(sub.current_period_start),
            "current_period_end": events.iso(sub.current_period_end)}


def fold(world: SandboxWorld, streams: dict[UUID, list[Any]], at: datetime) -> dict[UUID, Any]:
    """Each aggregate at the last version recorded by ``at`` (its events' times, never going back)."""
    found = {}
    for stream_id, stream in streams.items():
        version, latest = None, None
        for e in stream:
            latest = e.timestamp if latest is None else max(latest, e.timestamp)
            if latest > at:
                break
            version = e.originator_version
        if version is not None:
            found[stream_id] = world.ledger.app.repository.get(stream_id, version=version)
    return found


def walk(db: Any, org: str, at: datetime, small_answer: int, **asked: str) -> list[dict[str, Any]]:
    """Every page of the listing, two rows at a time; each page tells the same total, the rows walked."""
    walked: list[dict[str, Any]] = []
    cursor, totals = None, set()
    while True:
        page = queries.page(db, SIGNER, reseller_org_id=org, as_of=at, limit=2, cursor=cursor,
                            small_answer=small_answer, **asked)
        walked += page.items
        totals.add(page.total)
        if (cursor := page.next_cursor) is None:
            break
    assert totals == {len(walked)}
    return walked


def check_instant(world: SandboxWorld, subscriptions: dict[UUID, list[Any]], invoices: dict[UUID, list[Any]],
                  at: datetime) -> None:
    db = world.read_side.db(as_of.NAME)
    listed = [s for s in fold(world, subscriptions, at).values() if s.status != EXPIRED]
    issued = list(fold(world, invoices, at).values())
    for org in ORGS:
        mine = [s for s in listed if s.reseller_org_id == org]
        expected = sorted((row_of(s) for s in mine), key=lambda r: (r["customer"].lower(), r["subscription_id"]))
        assert queries.every_row(db, org, at) == expected, at
        by_period_end = sorted(expected, key=lambda r: (r["current_period_end"], r["subscription_id"]),
                               reverse=True)
        # Both ways of reading a page: walking the sort's index, and gathering a small answer then sorting it.
        for small_answer in (0, 10**9):
            assert walk(db, org, at, small_answer, sort="-current_period_end") == by_period_end
            for status in ("active", "pending", "canceled"):
                assert walk(db, org, at, small_answer, status=status) == [
                    r for r in expected if r["status"] == status]
            for q in {r["customer"][1:3] for r in expected[:2]}:
                assert walk(db, org, at, small_answer, q=q, sort="-seats") == sorted(
                    (r for r in expected if q.lower() in r["customer"].lower()),
                    key=lambda r: (r["seats"], r["subscription_id"]), reverse=True)
        canceled = sum(s.cancel_at_period_end for s in mine)
        assert vars(queries.cards(db, org, at)) == {"total_customers": len(mine), "active": len(mine) - canceled,
                                                    "canceled": canceled, "total_seats": sum(s.seats for s in mine)}
        documents = queries.documents(db, SIGNER, reseller_org_id=org, as_of=at, limit=200)
        assert sorted((d["invoice_id"], d["total_cents"], d["state"]) for d in documents.items) == sorted(
            (str(i.id), i.bill.total_cents, i.state) for i in issued if i.reseller_org_id == org)
        assert documents.total == len(documents.items)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories)
def test_as_of_at_every_instant_equals_a_fold_of_the_log(steps: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as views:
        world = sandbox_world(Path(views), T0)
        try:
            for org in ORGS:
                reseller_with_card(world, org)  # type: ignore[arg-type]
            run(world, steps)
            world.read_side.catch_up()
            log = world.read_side.log.read(0, 100_000)
            subscriptions: dict[UUID, list[Any]] = {}
            invoices: dict[UUID, list[Any]] = {}
            for recorded in log:
                streams = {"Subscription": subscriptions, "Invoice": invoices}.get(recorded.stream_type)
                if streams is not None:
                    streams.setdefault(recorded.stream_id, []).append(recorded.event)
            instants = {e.timestamp for stream in [*subscriptions.values(), *invoices.values()] for e in stream}
            instants |= {t - timedelta(seconds=1) for t in instants} | {T0 - timedelta(days=1)}
            for at in sorted(instants):
                check_instant(world, subscriptions, invoices, at)
        finally:
            world.close()
