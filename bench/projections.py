"""Read side: the rebuild rate of every projection, the lag from a command to its customer-table row,
and the latency of customer-table pages and summary cards, on a bulk-populated store.

    python bench/projections.py [--backend sqlite|postgres|both] [--quick] [--size SUBSCRIPTIONS]
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the project, not bench/ (bench/commands.py would shadow it)

import psycopg

from bench import common
from cli.audit import DEFAULT_REPLAY_PROCESSES
from projections import summary
from projections.customer_table import queries
from projections.deployment import ViewLocation
from projections.replay import replay
from service.bootstrap import Services, event_store

SUBSCRIPTIONS = 100_000  # about 205,000 events
QUICK_SUBSCRIPTIONS = 5_000
LAG_COMMANDS, QUICK_LAG_COMMANDS = 300, 30
QUERY_CALLS, QUICK_QUERY_CALLS = 200, 50
LATER_PAGE = 10
FILTER = "42"


def rebuild(services: Services, backend: str) -> None:
    """Every follower from position 0 into the deployment's views, still empty: a full rebuild."""
    head = services.read_side.log.head()
    total = 0.0
    for name, follower in services.read_side.followers.items():
        start = time.perf_counter()
        follower.catch_up()
        seconds = time.perf_counter() - start
        total += seconds
        # Per event of the log: a view decodes only its streams' events, and skips the others.
        common.show(common.rate(f"rebuild {name}", backend, "catch_up", head, seconds, "events/s"))
    common.show(common.rate("rebuild every projection", backend, "one after another", head, total, "events/s"))


def audit(services: Services, backend: str, processes: int = DEFAULT_REPLAY_PROCESSES) -> None:
    """`ledger replay`: every projection rebuilt into fresh tables, in ``processes`` processes (each reading the
    log once for its part of the views; by default as many as `ledger replay` takes), then compared row by row
    with the live views."""
    settings = services.settings
    with tempfile.TemporaryDirectory() as folder:
        fresh = (ViewLocation(conninfo=settings.database_url, schema=f"{settings.database_schema}_replay")
                 if settings.database_url else ViewLocation(folder=Path(folder)))
        start = time.perf_counter()
        verdicts = replay(services.read_side, fresh, processes=processes,
                          open_store=functools.partial(event_store, settings))
        seconds = time.perf_counter() - start
        fresh.close()
        if settings.database_url:
            with psycopg.connect(settings.database_url, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA "{settings.database_schema}_replay" CASCADE')
    equal = all(v.equal for v in verdicts)
    mode = "one reading of the log" if processes == 1 else f"in {processes} processes"
    common.show(common.rate("replay: rebuild all and compare", backend, mode,
                            services.read_side.log.head(), seconds, "events/s"))
    common.note(f"replay verdict: {'every read model equals the replay' if equal else 'DIFFERENCES'}")


def settle(services: Services) -> None:
    """On PostgreSQL, what autovacuum does within a minute or so of a bulk load: the planner's statistics
    (without them, right after a rebuild, a filtered page is about three times slower)."""
    if services.settings.database_url is None:
        return
    with psycopg.connect(services.settings.database_url, autocommit=True,
                         options=f"-c search_path={services.settings.database_schema}") as connection:
        for table in ("customer_table", "summary_cards"):
            connection.execute(f"VACUUM ANALYZE {table}")


def queries_at_scale(services: Services, backend: str, calls: int) -> None:
    table, signer = services.read_side.db("customer_table"), services.cursors

    def page(q: str | None, cursor: str | None = None) -> queries.Page:
        return queries.page(table, signer, reseller_org_id=common.ORG, q=q, limit=50, cursor=cursor)

    def later(q: str | None) -> tuple[int, str | None]:
        """Page LATER_PAGE (or the last, when there are fewer): its number and cursor."""
        number, cursor = 1, None
        while number < LATER_PAGE and (following := page(q, cursor).next_cursor) is not None:
            number, cursor = number + 1, following
        return number, cursor

    for q in (None, FILTER):
        first = page(q)
        number, cursor = later(q)
        mode = f"q={FILTER!r}, {first.total} rows" if q else f"no filter, {first.total} rows"
        common.show(common.latency("customer table: first page", backend, mode, common.time_each(calls, page, q)))
        common.show(common.latency(f"customer table: page {number} (cursor)", backend, mode,
                                   common.time_each(calls, page, q, cursor)))
    cards_db = services.read_side.db("summary")
    cards = summary.cards(cards_db, common.ORG)
    common.show(common.latency("summary cards", backend, f"{cards.total_customers} customers",
                               common.time_each(calls, summary.cards, cards_db, common.ORG)))


def live_lag(services: Services, backend: str, commands: int) -> None:
    """Create subscriptions one at a time, each timed from the command's return until the customer
    table's follower (in its background thread) has recorded the command's position. The first
    command only warms up: a follower starts listening for news after its first catch-up."""
    follower = services.read_side.followers["customer_table"]

    def lag(i: int) -> float:
        outcome = services.ledger.create_subscription(common.ORG, common.org_order(SUBSCRIPTIONS + i),
                                                      actor=common.ACTOR)
        assert outcome.position is not None
        returned = time.perf_counter()
        while follower.position() < outcome.position:
            if time.perf_counter() - returned > 30:
                raise TimeoutError(f"the customer table did not reach position {outcome.position} in 30 s")
            time.sleep(0.001)
        return time.perf_counter() - returned

    services.read_side.start()
    try:
        lags = [lag(i) for i in range(commands + 1)][1:]
    finally:
        services.read_side.stop()
    common.show(common.latency("command to customer-table row", backend, "followers in threads", lags))


def main() -> int:
    options = common.options(__doc__ or "")
    subscriptions = options.size or (QUICK_SUBSCRIPTIONS if options.quick else SUBSCRIPTIONS)
    common.header(f"read side over {subscriptions} subscriptions of one reseller"
                  f"{' (quick sizes)' if options.quick else ''}")
    for backend in options.backends:
        with common.deployment(backend) as services:
            start = time.perf_counter()
            saved = common.populate(services, subscriptions, at=services.clock.now())
            common.show(common.rate("populate (bulk save)", backend, f"{common.SAVE_BATCH} aggregates/tx",
                                    sum(saved.values()), time.perf_counter() - start, "events/s"))
            common.note(common.describe(saved))
            rebuild(services, backend)
            for processes in sorted({1, DEFAULT_REPLAY_PROCESSES}):
                audit(services, backend, processes)
            settle(services)
            queries_at_scale(services, backend, QUICK_QUERY_CALLS if options.quick else QUERY_CALLS)
            live_lag(services, backend, QUICK_LAG_COMMANDS if options.quick else LAG_COMMANDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
