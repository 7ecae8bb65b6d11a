"""The read models, over SQLite files and PostgreSQL alike: rows from events, queries, faults."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.errors import DomainError, ValidationFailed
from ledger.subscription import Order, Subscription
from projections import customer_table, invitations, summary
from projections.cursors import CursorSigner
from projections.customer_table import CustomerTable, queries
from projections.deployment import ReadSide, ViewLocation, all_projections
from projections.log import EventLog, NewsWaiter
from projections.replay import REBUILD_WEIGHTS, PartFailed, balanced_parts, replay
from projections.runner import Follower, ProjectionStopped, _move_together, feed, positions_of_followers
from projections.store import SQLiteViews
from projections.summary import Summary
from tests.support import ADMIN, T0, InMemoryLedger, in_memory_ledger, reseller_with_card

SIGNER = CursorSigner(b"test cursors")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ViewLocation]:
    if request.param == "sqlite":
        yield ViewLocation(folder=tmp_path / "views")
    else:
        schema = request.getfixturevalue("postgres_schema")
        views = ViewLocation(conninfo=request.getfixturevalue("postgres_url"), schema=schema)
        yield views
        views.close()


def org(world: InMemoryLedger, name: str, seats: int = 3, plan: str = "pro") -> Any:
    order = Order(plan, "monthly", seats=seats, organization_name=name, admin_email=f"admin@{name.lower()}.example")
    return world.ledger.create_subscription("org_1", order, actor=ADMIN).aggregate.id


def single_user(world: InMemoryLedger, email: str) -> Any:
    return world.ledger.create_subscription("org_1", Order("plus", "annual", end_user_email=email),
                                            actor=ADMIN).aggregate.id


@pytest.fixture
def world() -> InMemoryLedger:
    world = in_memory_ledger()
    reseller_with_card(world, "org_1")
    reseller_with_card(world, "org_2")
    return world


def read_side(world: InMemoryLedger, location: ViewLocation) -> ReadSide:
    side = ReadSide(world.app, location, [CustomerTable(), Summary()], batch_size=7)
    side.catch_up()
    return side


def table(side: ReadSide, **query: Any) -> queries.Page:
    return queries.page(side.db(customer_table.NAME), SIGNER, **{"reseller_org_id": "org_1", **query})


def test_rows_follow_each_change_and_expired_ones_leave(world: InMemoryLedger, location: ViewLocation) -> None:
    initech, globex = org(world, "Initech", 5), org(world, "Globex", 2, "enterprise")
    ada = single_user(world, "Ada@Example.com")
    world.ledger.create_subscription("org_2", Order("pro", "monthly", seats=9, organization_name="Other",
                                                    admin_email="a@o.example"), actor=ADMIN)
    world.ledger.change_seats("org_1", initech, 8, actor=ADMIN)
    world.ledger.change_seats("org_1", initech, 4, actor=ADMIN)
    world.ledger.cancel("org_1", globex, actor=ADMIN)
    world.ledger.cancel("org_1", ada, actor=ADMIN)
    world.clock.set(T0 + timedelta(days=29))
    world.ledger.run_due(globex)
    side = read_side(world, location)
    rows = {row["customer"]: row for row in table(side).items}
    assert set(rows) == {"Initech", "Ada@Example.com"}
    assert (rows["Initech"]["status"], rows["Initech"]["seats"], rows["Initech"]["pending_seats"]) == ("pending", 8, 4)
    assert rows["Ada@Example.com"]["status"] == "canceled" and rows["Ada@Example.com"]["plan_name"] == "Lens Plus"
    assert summary.cards(side.db(summary.NAME), "org_1") == summary.Cards(2, 1, 1, 9)
    assert summary.cards(side.db(summary.NAME), "org_2") == summary.Cards(1, 1, 0, 9)
    side.close()


def test_filters_sorts_and_pages(world: InMemoryLedger, location: ViewLocation) -> None:
    names = ["Acme", "acme labs", "Beta", "Gamma_Co", "Delta 100%"]
    ids = {name: org(world, name, seats) for seats, name in enumerate(names, start=1)}
    world.ledger.cancel("org_1", ids["Beta"], actor=ADMIN)
    side = read_side(world, location)
    assert [r["customer"] for r in table(side, q="ACME").items] == ["Acme", "acme labs"]
    assert [r["customer"] for r in table(side, q="_").items] == ["Gamma_Co"]
    assert [r["customer"] for r in table(side, q="100%").items] == ["Delta 100%"]
    assert [r["customer"] for r in table(side, status="canceled").items] == ["Beta"]
    assert table(side, plan="enterprise").total == 0
    first = table(side, sort="-seats", limit=2)
    assert [r["seats"] for r in first.items] == [5, 4] and first.total == 5
    second = table(side, sort="-seats", limit=2, cursor=first.next_cursor)
    third = table(side, sort="-seats", limit=2, cursor=second.next_cursor)
    assert [r["seats"] for r in second.items + third.items] == [3, 2, 1] and third.next_cursor is None
    with pytest.raises(ValidationFailed) as stale:
        table(side, sort="seats", limit=2, cursor=first.next_cursor)
    assert stale.value.field == "cursor"
    with pytest.raises(ValidationFailed):
        table(side, cursor=first.next_cursor[:-2] + "xx")
    for bad in ({"sort": "price"}, {"status": "gone"}, {"limit": 0}, {"limit": 201}):
        with pytest.raises(ValidationFailed):
            table(side, **bad)
    side.close()


def test_a_customer_table_kept_before_its_counts_is_counted_once_when_its_follower_starts(
        world: InMemoryLedger, location: ViewLocation, tmp_path: Path) -> None:
    ids = [org(world, name, seats) for seats, name in enumerate(["Acme", "Beta", "Gamma"], start=1)]
    world.ledger.cancel("org_1", ids[1], actor=ADMIN)
    side = read_side(world, location)
    with side.db(customer_table.NAME).transaction() as cursor:
        cursor.execute("DROP TABLE customer_table_counts")  # as a deployment of the previous version has it
    side.close()

    upgraded = read_side(world, location)
    assert (table(upgraded).total, table(upgraded, status="canceled").total, table(upgraded, plan="pro").total) == (
        3, 1, 3)
    org(world, "Delta")
    world.ledger.cancel("org_1", ids[0], actor=ADMIN)
    upgraded.catch_up()
    assert (table(upgraded).total, table(upgraded, status="canceled").total, table(upgraded, status="active").total
            ) == (4, 2, 2)
    assert all(v.equal for v in replay(upgraded, ViewLocation(folder=tmp_path / "fresh")))
    upgraded.close()


class Fussy(CustomerTable):
    """A customer table that chokes on one subscription, like a bug in a projection would."""

    poisoned: set[str] = set()

    def apply(self, cursor: Any, batch: list[Any]) -> None:
        for recorded in batch:
            if str(recorded.stream_id) in self.poisoned and recorded.type == "SeatsIncreased":
                raise ValueError("cannot handle this one")
        super().apply(cursor, batch)


def test_a_projection_stops_at_the_event_it_cannot_handle_and_resumes_once_fixed(
        world: InMemoryLedger, location: ViewLocation) -> None:
    first, second = org(world, "First"), org(world, "Second")
    world.ledger.change_seats("org_1", first, 4, actor=ADMIN)
    world.ledger.change_seats("org_1", second, 6, actor=ADMIN)
    world.ledger.change_seats("org_1", first, 9, actor=ADMIN)
    Fussy.poisoned = {str(second)}
    side = ReadSide(world.app, location, [Fussy()], batch_size=500)
    with pytest.raises(ProjectionStopped) as stopped:
        side.catch_up()
    culprit = [e for e in world.ledger.history(second) if type(e).__name__ == "SeatsIncreased"][0]
    assert f"SeatsIncreased of Subscription {second} v2" in str(stopped.value)
    follower = side.followers[customer_table.NAME]
    assert follower.position() == stopped.value.position - 1  # everything before it was processed
    assert {r["customer"]: r["seats"] for r in table(side).items} == {"First": 4, "Second": 3}
    assert culprit is not None
    Fussy.poisoned = set()  # the fix is deployed
    side.catch_up()
    assert {r["customer"]: r["seats"] for r in table(side).items} == {"First": 9, "Second": 6}
    side.close()


def test_replay_finds_a_tampered_row_and_agrees_with_an_honest_view(
        world: InMemoryLedger, location: ViewLocation, tmp_path: Path) -> None:
    for name in ("One", "Two", "Three"):
        org(world, name)
    side = read_side(world, location)
    assert all(v.equal for v in replay(side, ViewLocation(folder=tmp_path / "fresh1")))
    with side.db(customer_table.NAME).transaction() as cursor:
        cursor.execute("UPDATE customer_table SET seats = 99 WHERE customer = 'Two'")
    verdicts = {v.projection: v for v in replay(side, ViewLocation(folder=tmp_path / "fresh2"))}
    assert verdicts["summary"].equal and not verdicts["customer_table"].equal
    assert verdicts["customer_table"].different_rows == 2
    assert any("99" in difference for difference in verdicts["customer_table"].differences)
    side.close()


def test_replay_fails_a_view_stopped_on_an_event_behind_the_head(world: InMemoryLedger, location: ViewLocation,
                                                                  tmp_path: Path) -> None:
    first, second = org(world, "First"), org(world, "Second")
    world.ledger.change_seats("org_1", second, 6, actor=ADMIN)
    world.ledger.change_seats("org_1", first, 9, actor=ADMIN)
    Fussy.poisoned = {str(second)}
    try:
        side = ReadSide(world.app, location, [Fussy(), Summary()])
        side.followers[summary.NAME].catch_up()
        with pytest.raises(ProjectionStopped):
            side.followers[customer_table.NAME].catch_up()
        verdicts = {v.projection: v for v in replay(side, ViewLocation(folder=tmp_path / "fresh"), patience=0.1)}
    finally:
        Fussy.poisoned = set()
    head = side.log.head()
    stuck = verdicts[customer_table.NAME]
    assert not stuck.equal and stuck.behind and stuck.state == f"BEHIND ({head - stuck.position} events)"
    assert stuck.differences[0].startswith("the replay stopped: projection customer_table stopped at event #")
    assert "SeatsIncreased" in stuck.differences[0]
    assert verdicts[summary.NAME].equal and verdicts[summary.NAME].state == "EQUAL"
    side.close()


def test_replay_fails_a_view_that_has_not_caught_up_and_one_that_is_empty(world: InMemoryLedger,
                                                                           location: ViewLocation,
                                                                           tmp_path: Path) -> None:
    org(world, "Early")
    side = read_side(world, location)
    org(world, "Late")
    side.followers[summary.NAME].catch_up()
    verdicts = {v.projection: v for v in replay(side, ViewLocation(folder=tmp_path / "fresh1"), patience=0.1)}
    behind = verdicts[customer_table.NAME]
    assert not behind.equal and behind.state.startswith("BEHIND (")
    assert any("replayed but not live" in d and "Late" in d for d in behind.differences)
    assert verdicts[summary.NAME].equal

    empty = ReadSide(world.app, ViewLocation(folder=tmp_path / "empty"), [CustomerTable(), Summary()])
    verdicts = {v.projection: v for v in replay(empty, ViewLocation(folder=tmp_path / "fresh2"), patience=0.1)}
    head = side.log.head()
    assert all(not v.equal and v.state == f"EMPTY (none of {head} events)" for v in verdicts.values())
    side.close()
    empty.close()


def test_replay_waits_for_followers_that_are_still_moving(world: InMemoryLedger, tmp_path: Path) -> None:
    for n in range(30):
        org(world, f"Customer {n}")
    side = ReadSide(world.app, ViewLocation(folder=tmp_path / "live"), [CustomerTable(), Summary()], batch_size=2)
    side.start(poll_seconds=0.01)  # following the log, as a projections process does beside the audit
    try:
        verdicts = replay(side, ViewLocation(folder=tmp_path / "fresh"), patience=0.5)
    finally:
        side.close()
    assert [v.state for v in verdicts] == ["EQUAL", "EQUAL"]
    assert all(v.position == v.head == side.log.head() for v in verdicts)


def test_replay_of_an_empty_log_passes(tmp_path: Path) -> None:
    empty = in_memory_ledger()
    side = ReadSide(empty.app, ViewLocation(folder=tmp_path / "live"), [CustomerTable(), Summary()])
    assert [v.state for v in replay(side, ViewLocation(folder=tmp_path / "fresh"))] == ["EQUAL", "EQUAL"]
    side.close()


def test_replay_reads_past_batches_that_hold_none_of_its_views_events(world: InMemoryLedger, tmp_path: Path) -> None:
    # The world's log begins with its two resellers' events: with batches of two, the customer table's and the
    # summary's first batches hold nothing for them, which must not end their rebuild.
    org(world, "One")
    org(world, "Two")
    side = ReadSide(world.app, ViewLocation(folder=tmp_path / "live"), [CustomerTable(), Summary()])
    side.catch_up()
    verdicts = replay(side, ViewLocation(folder=tmp_path / "fresh"), batch_size=2)
    assert [(v.state, v.rebuilt_rows) for v in verdicts] == [("EQUAL", v.live_rows) for v in verdicts]
    assert verdicts[0].live_rows > 0
    side.close()


def store_that_cannot_open() -> Any:
    raise RuntimeError("the store is out of reach")


def test_a_part_of_a_replay_that_fails_in_its_process_fails_the_replay(world: InMemoryLedger,
                                                                      tmp_path: Path) -> None:
    org(world, "One")
    side = ReadSide(world.app, ViewLocation(folder=tmp_path / "live"))
    side.catch_up()
    with pytest.raises(RuntimeError, match="the store is out of reach"):
        replay(side, ViewLocation(folder=tmp_path / "fresh"), processes=2, open_store=store_that_cannot_open)
    side.close()


def store_whose_process_dies() -> Any:
    os._exit(9)  # as a process killed mid-rebuild: no answer, no exception


def test_a_part_of_a_replay_whose_process_dies_fails_the_replay_instead_of_waiting(world: InMemoryLedger,
                                                                                  tmp_path: Path) -> None:
    org(world, "One")
    side = ReadSide(world.app, ViewLocation(folder=tmp_path / "live"))
    side.catch_up()
    with pytest.raises(PartFailed, match=r"ended without an answer \(exit code 9\)"):
        replay(side, ViewLocation(folder=tmp_path / "fresh"), processes=2, open_store=store_whose_process_dies)
    side.close()


@pytest.mark.parametrize("processes", [1, 2, 3, 8, 20])
def test_a_replay_in_processes_rebuilds_each_view_in_exactly_one_of_them(processes: int) -> None:
    projections = all_projections()
    parts = balanced_parts(projections, processes)
    assert len(parts) == min(processes, len(projections))
    assert sorted(p.name for part in parts for p in part) == sorted(p.name for p in projections)
    weights = [sum(REBUILD_WEIGHTS[p.name] for p in part) for part in parts]
    assert max(weights) - min(weights) <= max(REBUILD_WEIGHTS.values())  # no part waits on a much heavier one


commands = st.lists(st.tuples(st.sampled_from(["create", "increase", "decrease", "cancel", "resume", "time"]),
                              st.integers(0, 30), st.integers(1, 20)), min_size=1, max_size=30)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(commands)
def test_summary_cards_equal_an_aggregation_of_the_table_and_of_a_replay(tmp_path_factory: Any,
                                                                         steps: list[Any]) -> None:
    world = in_memory_ledger()
    reseller_with_card(world, "org_1")
    subscriptions: list[Any] = []
    for action, pick, number in steps:
        target = subscriptions[pick % len(subscriptions)] if subscriptions else None
        try:
            if action == "create" or target is None:
                subscriptions.append(org(world, f"Customer {len(subscriptions)}", number))
            elif action == "increase":
                world.ledger.change_seats("org_1", target, world.ledger.subscription("org_1", target).seats + number,
                                          actor=ADMIN)
            elif action == "decrease":
                world.ledger.change_seats("org_1", target, max(1, number // 4), actor=ADMIN)
            elif action == "time":
                world.clock.set(world.clock.now() + timedelta(days=number * 3))
                for sub_id in subscriptions:
                    while world.ledger.subscription("org_1", sub_id).is_due(world.clock.now()):
                        world.ledger.run_due(sub_id)
            else:
                getattr(world.ledger, action)("org_1", target, actor=ADMIN)
        except DomainError:
            pass
    folder = tmp_path_factory.mktemp("views")
    side = read_side(world, ViewLocation(folder=folder))
    rows = queries.page(side.db(customer_table.NAME), SIGNER, reseller_org_id="org_1", limit=200).items
    aggregated = summary.Cards(len(rows), sum(r["status"] != "canceled" for r in rows),
                               sum(r["status"] == "canceled" for r in rows), sum(r["seats"] for r in rows))
    assert summary.cards(side.db(summary.NAME), "org_1") == aggregated
    for status in (None, *queries.STATUSES):
        for plan in (None, "pro", "enterprise"):
            expected = sum((status is None or r["status"] == status) and (plan is None or r["plan"] == plan)
                           for r in rows)
            assert table(side, status=status, plan=plan).total == expected, (status, plan)
    live = [world.ledger.subscription("org_1", s) for s in subscriptions]
    alive = [s for s in live if s.status != "expired"]
    assert aggregated == summary.Cards(len(alive), sum(s.status != "canceled" for s in alive),
                                       sum(s.status == "canceled" for s in alive), sum(s.seats for s in alive))
    assert all(v.equal for v in replay(side, ViewLocation(folder=folder / "fresh")))
    assert isinstance(live[0], Subscription)
    side.close()


class RacedFollower(Follower):
    """A follower that reads its position, then loses the race to a rival that moves the view first."""

    rival: Follower | None = None

    def position(self) -> int:
        seen = super().position()
        if self.rival is not None:
            rival, self.rival = self.rival, None
            rival.catch_up(until=seen + 2)
        return seen


def test_a_follower_that_loses_a_race_for_its_view_still_catches_up(world: InMemoryLedger,
                                                                     location: ViewLocation) -> None:
    for name in ("One", "Two", "Three", "Four"):
        org(world, name)
    db = location.open(customer_table.NAME)
    log = EventLog(world.app)
    rival = Follower(log, CustomerTable(), db)
    raced = RacedFollower(log, CustomerTable(), db, batch_size=500)
    raced.rival = rival
    raced.catch_up()
    assert raced.position() == log.head()
    assert {r["customer"] for r in table_of(db)} == {"One", "Two", "Three", "Four"}


def test_a_follower_never_applies_a_batch_that_a_rival_has_applied_nor_moves_the_view_back(
        world: InMemoryLedger, location: ViewLocation, tmp_path: Path) -> None:
    """The position guard: a view moves from the position a batch was read at, or not at all."""
    log = EventLog(world.app)
    start = log.head()
    gone = org(world, "Gone")
    world.ledger.cancel("org_1", gone, actor=ADMIN)
    world.clock.set(T0 + timedelta(days=31))
    world.ledger.run_due(gone)  # Expired: applied twice, the summary would stop or count wrong
    org(world, "Staying", 4)
    side = ReadSide(world.app, location, [CustomerTable(), Summary()])
    for follower in side.followers.values():
        follower.catch_up(until=start)
    stale = log.read(start, 100)  # read by one follower of these views...
    side.catch_up()  # ...while a rival follower of the same views gets there first

    for follower in side.followers.values():
        assert follower.take(start, stale) == 0
        assert follower.position() == log.head()
    assert summary.cards(side.db(summary.NAME), "org_1") == summary.Cards(1, 1, 0, 4)
    assert all(v.equal for v in replay(side, ViewLocation(folder=tmp_path / "fresh")))
    side.close()


def table_of(db: Any) -> list[dict[str, Any]]:
    return queries.page(db, SIGNER, reseller_org_id="org_1", limit=200).items


def test_health_names_a_stopped_projection_and_why(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from service.bootstrap import bootstrap
    from service.settings import load_settings

    services = bootstrap(load_settings(data_dir=tmp_path / "data", sandbox_data=False))
    try:
        client = TestClient(create_app(services))
        assert client.get("/healthz").json() == {"status": "ok", "stopped_projections": {}}
        services.ledger.enable_reseller("org_h", name="H", actor="support")
        services.ledger.set_billing_info("org_h", payment_method="pm_card_visa", billing_email="b@h.example",
                                         country="US", actor="admin")
        sub_id = services.ledger.create_subscription("org_h", Order("pro", "monthly", seats=2, organization_name="X",
                                                                    admin_email="a@x.example"), actor="admin")
        services.ledger.change_seats("org_h", sub_id.aggregate.id, 3, actor="admin")
        Fussy.poisoned = {str(sub_id.aggregate.id)}
        side = ReadSide(services.app, ViewLocation(folder=tmp_path / "fussy"), [Fussy()])
        services.read_side = side
        side.start(poll_seconds=0.05)
        deadline = time.monotonic() + 10
        while not side.stopped_projections() and time.monotonic() < deadline:
            time.sleep(0.05)
        health = client.get("/healthz").json()
        assert health["status"] == "degraded"
        assert "SeatsIncreased" in health["stopped_projections"][customer_table.NAME]
        side.close()
    finally:
        Fussy.poisoned = set()
        services.close()


def test_a_stop_found_by_followers_in_another_process_is_named_by_this_one_until_it_is_fixed(
        world: InMemoryLedger, location: ViewLocation) -> None:
    poisoned = org(world, "Poisoned")
    world.ledger.change_seats("org_1", poisoned, 5, actor=ADMIN)
    Fussy.poisoned = {str(poisoned)}
    try:
        # The API's read side runs no followers: `ledger projections` (or the process `ledger serve` starts) does.
        api = ReadSide(world.app, location, [Fussy()])
        followers = ReadSide(world.app, location, [Fussy()])
        assert api.stopped_projections() == {}
        followers.start(poll_seconds=0.05)
        deadline = time.monotonic() + 10
        while not api.stopped_projections() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "SeatsIncreased" in api.stopped_projections()[customer_table.NAME]
        followers.stop()
        Fussy.poisoned = set()  # the fix is deployed, and the followers' process started again
        restarted = ReadSide(world.app, location, [Fussy()])
        restarted.start(poll_seconds=0.05)
        assert restarted.wait_for(restarted.log.head(), [customer_table.NAME], timeout=10)
        assert api.stopped_projections() == {}
        restarted.stop()
    finally:
        Fussy.poisoned = set()


def test_a_follower_decodes_only_its_streams_events_and_still_reaches_the_head(
        world: InMemoryLedger, location: ViewLocation) -> None:
    org(world, "One")
    org(world, "Two")
    world.ledger.set_tax_exemption("org_1", exempt=True, reason="charity", actor="support")  # the log ends elsewhere
    decoded: list[str] = []
    mapper = world.app.mapper
    decode = mapper.to_domain_event

    def counting(stored: Any) -> Any:
        decoded.append(stored.topic)
        return decode(stored)

    mapper.to_domain_event = counting  # type: ignore[method-assign]
    side = ReadSide(world.app, location, [CustomerTable()])
    side.catch_up()
    follower = side.followers[customer_table.NAME]
    assert follower.position() == EventLog(world.app).head()
    assert decoded and all(topic.startswith("ledger:Subscription.") for topic in decoded)
    assert {r["customer"] for r in table(side).items} == {"One", "Two"}
    side.close()


def query_indexes(db: Any) -> set[str]:
    """The customer table's indexes for its pages (not its primary key's)."""
    with db.snapshot() as cursor:
        if db.dialect == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'customer_table'")
        else:
            cursor.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                           "AND tablename = 'customer_table'")
        return {row[0] for row in cursor.fetchall() if row[0].startswith("customer_table_by_")}


def test_a_view_filled_from_the_start_gets_its_query_indexes_at_the_head_and_a_restarted_one_at_once(
        world: InMemoryLedger, location: ViewLocation) -> None:
    for i in range(30):
        org(world, f"Org{i:02}")
    side = ReadSide(world.app, location, [CustomerTable()], batch_size=7)
    follower = side.followers[customer_table.NAME]
    assert query_indexes(follower.db) == set()
    follower.process_batch()
    follower.index_if_caught_up(side.log.head())
    assert query_indexes(follower.db) == set(), "built before the view is near the head"
    unindexed = table(side, sort="-seats")
    side.catch_up()
    assert len(query_indexes(follower.db)) == 6
    assert 0 < unindexed.total < table(side, sort="-seats").total == 30
    built = query_indexes(follower.db)
    with follower.db.transaction() as cursor:
        for name in built:
            cursor.execute(f"DROP INDEX {name}")
    assert query_indexes(follower.db) == set()
    restarted = Follower(side.log, CustomerTable(), follower.db)
    assert restarted.indexed and len(query_indexes(follower.db)) == 6


def test_the_followers_thread_builds_the_query_indexes_once_its_views_reach_the_head(
        world: InMemoryLedger, location: ViewLocation) -> None:
    for i in range(20):
        org(world, f"Org{i:02}")
    side = ReadSide(world.app, location, [CustomerTable()], batch_size=7)
    db = side.followers[customer_table.NAME].db
    assert query_indexes(db) == set()
    side.start(poll_seconds=0.01)
    try:
        assert side.wait_for(side.log.head(), [customer_table.NAME], timeout=10)
        deadline = time.monotonic() + 10
        while len(query_indexes(db)) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(query_indexes(db)) == 6
    finally:
        side.stop()


def test_a_save_made_while_the_followers_were_busy_wakes_their_next_wait_at_once(world: InMemoryLedger) -> None:
    waiter = NewsWaiter(world.app)
    waiter.listen()
    started = time.monotonic()
    waiter.wait(0.2)
    assert time.monotonic() - started >= 0.2, "no save since it listened: it waits its whole timeout"
    org(world, "Saved while the followers were catching up")
    started = time.monotonic()
    waiter.wait(10)
    assert time.monotonic() - started < 1, "the save was missed: the waiter slept until its timeout"
    started = time.monotonic()
    waiter.wait(0.2)
    assert time.monotonic() - started >= 0.2, "that save, once seen, wakes it no more"


def test_views_kept_each_in_a_file_of_its_own_move_into_the_shared_file_with_their_rows_and_positions(
        world: InMemoryLedger, tmp_path: Path) -> None:
    """Before every view shared one SQLite file, each had its own. A deployment upgraded from then keeps its
    views, outboxes included (an invitation already sent must not go out again), and rebuilds none."""
    for name in ("One", "Two", "Three"):
        org(world, name)
    folder = tmp_path / "views"
    log = EventLog(world.app)
    before: dict[str, list[tuple[Any, ...]]] = {}
    for projection in all_projections():
        own = SQLiteViews(folder / f"{projection.name}.sqlite")
        Follower(log, projection, own).catch_up()
        with own.transaction() as cursor:
            if projection.name == invitations.NAME:
                cursor.execute("UPDATE invitation_outbox SET state = 'sent' WHERE recipient = 'admin@two.example'")
            before[projection.name] = list(projection.rows(cursor))
        own.close()
    kept = tmp_path / "invitations.sqlite.kept"
    shutil.copy(folder / "invitations.sqlite", kept)
    assert before[invitations.NAME] and before[customer_table.NAME]

    side = ReadSide(world.app, ViewLocation(folder=folder))
    head = log.head()
    assert sorted(path.name for path in folder.glob("*.sqlite")) == ["views.sqlite"]
    for name, follower in side.followers.items():
        assert follower.position() == head, f"{name} would be rebuilt"
        with follower.db.snapshot() as cursor:
            assert list(follower.projection.rows(cursor)) == before[name], name
    assert {name: follower.indexed for name, follower in side.followers.items()} == dict.fromkeys(side.followers, True)
    side.close()

    # A start that stopped after the move but before removing the old file moves nothing twice.
    shutil.copy(kept, folder / "invitations.sqlite")
    again = ReadSide(world.app, ViewLocation(folder=folder))
    assert not (folder / "invitations.sqlite").exists()
    with again.db(invitations.NAME).snapshot() as cursor:
        assert list(again.followers[invitations.NAME].projection.rows(cursor)) == before[invitations.NAME]
    again.close()


def test_a_round_of_the_followers_commits_once_for_every_view_of_the_shared_file(
        world: InMemoryLedger, tmp_path: Path) -> None:
    org(world, "One")
    side = ReadSide(world.app, ViewLocation(folder=tmp_path / "views"))
    commits: list[str] = []
    connection = side.db(customer_table.NAME)._connection()  # type: ignore[attr-defined]
    connection.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    side.catch_up()
    connection.set_trace_callback(None)
    assert len(side.followers) == 8 and all(f.position() == side.log.head() for f in side.followers.values())
    index_builds = sum(1 for f in side.followers.values() if f.indexed)
    assert len(commits) == 1 + index_builds, commits  # the round, then each view's page indexes once at the head
    side.close()


@pytest.mark.postgres
def test_views_with_nothing_to_apply_in_a_round_are_moved_to_its_end_in_one_transaction(
        world: InMemoryLedger, postgres_url: str, postgres_schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    org(world, "One")
    location = ViewLocation(conninfo=postgres_url, schema=postgres_schema)
    side = ReadSide(world.app, location)
    side.catch_up()
    world.ledger.set_billing_info("org_1", payment_method="pm_card_mastercard", billing_email="new@org1.example",
                                  country="DE", actor=ADMIN)  # an event of the reseller's stream: one view reads it
    db = side.db(customer_table.NAME)  # on PostgreSQL every view is in the deployment's schema
    transactions: list[str] = []
    opened = db.transaction

    def counted(**options: Any) -> Any:
        transactions.append(str(options))
        return opened(**options)

    monkeypatch.setattr(db, "transaction", counted)
    with ThreadPoolExecutor(2) as pool:
        applied = feed(side.log, list(side.followers.values()), 100, pool=pool)
    assert applied == {name: int(name == "reseller_events") for name in side.followers}
    assert len(transactions) == 2  # the reseller's events view, then the seven others together
    assert all(follower.position() == side.log.head() for follower in side.followers.values())
    side.close()


@pytest.mark.postgres
def test_views_moved_together_are_not_moved_when_one_of_them_was_moved_by_a_rival(
        world: InMemoryLedger, postgres_url: str, postgres_schema: str) -> None:
    location = ViewLocation(conninfo=postgres_url, schema=postgres_schema)
    side = ReadSide(world.app, location, [CustomerTable(), Summary()])
    side.catch_up()
    seen = side.log.head()
    followers = list(side.followers.values())
    read_at = positions_of_followers(followers)
    org(world, "One")
    Follower(side.log, CustomerTable(), side.db(customer_table.NAME)).catch_up()  # a rival moves one view on

    head = side.log.head()
    assert _move_together(followers, read_at, {name: head for name in read_at}) == []
    assert side.followers[customer_table.NAME].position() == head  # not moved back
    assert side.followers[summary.NAME].position() == seen  # its events were not applied: it is not moved past them
    side.catch_up()
    assert summary.cards(side.db(summary.NAME), "org_1").total_customers == 1
    side.close()
