"""Point-in-time queries: the as_of view's rebuild rate, and the latency of the customer table, its
later pages and the summary cards at random past instants, at 100,000 subscriptions with a history.

    python bench/as_of.py [--backend sqlite|postgres|both] [--quick]

The store is populated in time order (as a ledger records it): subscriptions created 26 s apart over
about 30 days; one in 4 organization subscriptions gets a seat increase 3 days after creation, one in 7 a
decrease scheduled 5 days after, one in 20 is canceled after 10 days; at the end of its first month each
one renews (or, canceled, expires). About 2.3 versions of a customer-table row per subscription.
"""

from __future__ import annotations

import heapq
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the project, not bench/

import psycopg
from eventsourcing.domain import Aggregate

from bench import common
from ledger import events
from ledger.subscription import Subscription
from projections import as_of, customer_table
from projections.as_of import AsOf, queries
from projections.customer_table import CustomerTable
from projections.customer_table import queries as live_queries
from projections.deployment import ReadSide, ViewLocation
from projections.replay import replay
from service.bootstrap import Services

SUBSCRIPTIONS, QUICK_SUBSCRIPTIONS = 100_000, 5_000
QUERY_CALLS, QUICK_QUERY_CALLS = 200, 50
SPACING = timedelta(seconds=26)
LATER_PAGE = 10


def populate(services: Services, count: int, start: datetime) -> tuple[int, datetime]:
    """Save the history in time order, a few hundred aggregates per transaction. Returns the events
    saved and the instant of the last one."""
    tax = services.ledger.tax_rate_of(services.ledger.enabled_reseller(common.ORG))
    catalog = services.catalog
    subscriptions: dict[int, Subscription] = {}
    due: list[tuple[datetime, int, int, str]] = []  # (when, order, subscription, what)
    order = 0
    saved, last = 0, start
    batch: dict[int, Aggregate] = {}

    def flush() -> None:
        nonlocal saved
        aggregates = list(batch.values())
        saved += sum(len(a.pending_events) for a in aggregates)
        services.app.save(*aggregates)
        batch.clear()

    def plan_of(sub: Subscription) -> object:
        return catalog.plan(sub.plan)

    i = 0
    while i < count or due:
        creation = start + SPACING * i if i < count else None
        if due and (creation is None or due[0][0] <= creation):
            when, _, index, what = heapq.heappop(due)
            sub = subscriptions[index]
            if what == "increase":
                sub.change_seats(sub.seats + 1, plan=plan_of(sub), at=when, priced_at=when, tax_rate_bps=tax,
                                 actor=common.ACTOR, pay=common._paid)
            elif what == "decrease":
                sub.change_seats(sub.seats - 1, plan=plan_of(sub), at=when, priced_at=when, tax_rate_bps=tax,
                                 actor=common.ACTOR, pay=common._paid)
            elif what == "cancel":
                sub.cancel(at=when, actor=common.ACTOR)
            else:  # the period's end: renew, or expire if canceled
                sub.run_due(plan=plan_of(sub), at=when, tax_rate_bps=tax, pay=common._paid, actor=common.ACTOR)
                del subscriptions[index]
            batch[id(sub)] = sub
            last = max(last, when)
        else:
            assert creation is not None
            sub, *account = common._subscription(services, i, creation, tax, common.ORG)
            assert isinstance(sub, Subscription)
            subscriptions[i] = sub
            batch[id(sub)] = sub
            for extra in account:
                batch[id(extra)] = extra
            plans = [(sub.current_period_end, "period_end")]
            if account and i % 4 == 1:
                plans.append((creation + timedelta(days=3), "increase"))
            if account and i % 7 == 2 and sub.seats > 1:
                plans.append((creation + timedelta(days=5), "decrease"))
            if i % 20 == 3:
                plans.append((creation + timedelta(days=10), "cancel"))
            for when, what in plans:
                order += 1
                heapq.heappush(due, (when, order, i, what))
            last = max(last, creation)
            i += 1
        if len(batch) >= common.SAVE_BATCH:
            flush()
    if batch:
        flush()
    return saved, last


def rebuild(services: Services, backend: str) -> None:
    for name in (customer_table.NAME, as_of.NAME):
        follower = services.read_side.followers[name]
        began = time.perf_counter()
        follower.catch_up()
        common.show(common.rate(f"rebuild {name}", backend, "catch_up", services.read_side.log.head(),
                                time.perf_counter() - began, "events/s"))  # per event of the log
    with services.read_side.db(as_of.NAME).snapshot() as cursor:
        cursor.execute("SELECT COUNT(*) FROM as_of_subscriptions")
        versions = cursor.fetchone()[0]
        cursor.execute("SELECT COUNT(*) FROM as_of_cards")
        steps = cursor.fetchone()[0]
    common.note(f"as_of view: {versions} row versions, {steps} steps of the cards")


def audit(services: Services, backend: str) -> None:
    """`ledger replay` restricted to the customer table and the as_of view: rebuilt from one reading of the
    log into fresh tables and compared row by row."""
    settings = services.settings
    live = ReadSide(services.app, services.read_side.location, [CustomerTable(), AsOf()])
    with tempfile.TemporaryDirectory() as folder:
        fresh = (ViewLocation(conninfo=settings.database_url, schema=f"{settings.database_schema}_replay")
                 if settings.database_url else ViewLocation(folder=Path(folder)))
        began = time.perf_counter()
        verdicts = replay(live, fresh)
        seconds = time.perf_counter() - began
        fresh.close()
        if settings.database_url:
            with psycopg.connect(settings.database_url, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA "{settings.database_schema}_replay" CASCADE')
    common.show(common.rate("replay customer_table + as_of", backend, "rebuild and compare",
                            services.read_side.log.head(), seconds, "events/s"))
    common.note("replay: " + ", ".join(f"{v.projection} {v.state}" for v in verdicts))


def settle(services: Services) -> None:
    if services.settings.database_url is None:
        return
    with psycopg.connect(services.settings.database_url, autocommit=True,
                         options=f"-c search_path={services.settings.database_schema}") as connection:
        for table in ("customer_table", "as_of_subscriptions", "as_of_cards"):
            connection.execute(f"VACUUM ANALYZE {table}")


def queries_at_scale(services: Services, backend: str, calls: int, start: datetime, end: datetime) -> None:
    db, signer = services.read_side.db(as_of.NAME), services.cursors
    rng = random.Random(7)
    span = (end - start).total_seconds()

    def instants(share: float = 1.0, offset: float = 0.0) -> list[datetime]:
        return [start + timedelta(seconds=span * (offset + share * rng.random())) for _ in range(calls)]

    def timed(at_list: list[datetime], call) -> list[float]:  # type: ignore[no-untyped-def]
        samples = []
        for at in at_list:
            began = time.perf_counter()
            call(at)
            samples.append(time.perf_counter() - began)
        return samples

    def first(at: datetime, **filters: str) -> queries.live_table.Page:
        return queries.page(db, signer, reseller_org_id=common.ORG, as_of=at, limit=50, **filters)

    for label, share, offset in (("random instants", 1.0, 0.0), ("first 2 % of the history", 0.02, 0.0),
                                 ("last 10 %", 0.1, 0.9)):
        at_list = instants(share, offset)
        sizes = sorted(first(at).total for at in at_list[:20])
        mode = f"{label}, {sizes[0]}-{sizes[-1]} rows"
        common.show(common.latency("as_of table: first page", backend, mode, timed(at_list, first)))
        cursors: dict[datetime, str | None] = {}
        for at in at_list:
            page, number = first(at), 1
            while number < LATER_PAGE and page.next_cursor:
                page = queries.page(db, signer, reseller_org_id=common.ORG, as_of=at, limit=50,
                                    cursor=page.next_cursor)
                number += 1
            cursors[at] = page.next_cursor

        def later(at: datetime, cursors: dict[datetime, str | None] = cursors) -> None:
            queries.page(db, signer, reseller_org_id=common.ORG, as_of=at, limit=50, cursor=cursors[at])
        common.show(common.latency(f"as_of table: page {LATER_PAGE + 1} (cursor)", backend, label,
                                   timed(at_list, later)))
        common.show(common.latency("as_of table: status=canceled", backend, label,
                                   timed(at_list, lambda at: first(at, status="canceled"))))
        common.show(common.latency("as_of table: q='42'", backend, label,
                                   timed(at_list, lambda at: first(at, q="42"))))
        common.show(common.latency("as_of table: sort -seats", backend, label,
                                   timed(at_list, lambda at: first(at, sort="-seats"))))
        common.show(common.latency("as_of summary cards", backend, label,
                                   timed(at_list, lambda at: queries.cards(db, common.ORG, at))))
    live = services.read_side.db(customer_table.NAME)
    for label, filters in (("first page", {}), ("status=canceled", {"status": "canceled"}), ("q='42'", {"q": "42"}),
                           ("sort -seats", {"sort": "-seats"})):
        common.show(common.latency(f"live table: {label} (reference)", backend, "now",
                                   common.time_each(calls, lambda f=filters: live_queries.page(
                                       live, signer, reseller_org_id=common.ORG, **f))))


def main() -> int:
    options = common.options(__doc__ or "")
    count = QUICK_SUBSCRIPTIONS if options.quick else SUBSCRIPTIONS
    common.header(f"as-of queries over {count} subscriptions of one reseller, with their history"
                  f"{' (quick sizes)' if options.quick else ''}")
    for backend in options.backends:
        with common.deployment(backend) as services:
            start = (datetime.now(UTC) - SPACING * count - timedelta(days=45)).replace(microsecond=0)
            began = time.perf_counter()
            saved, end = populate(services, count, start)
            common.show(common.rate("populate (bulk save, time order)", backend, f"{common.SAVE_BATCH} aggregates/tx",
                                    saved, time.perf_counter() - began, "events/s"))
            common.note(f"{saved} events from {events.iso(start)} to {events.iso(end)}")
            rebuild(services, backend)
            settle(services)
            queries_at_scale(services, backend, QUICK_QUERY_CALLS if options.quick else QUERY_CALLS, start, end)
            audit(services, backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
