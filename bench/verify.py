"""The hash chain: `ledger verify` (events/s) against `ledger replay` on the same store, and what chaining
costs the writes (bulk saves with and without the chain).

    python bench/verify.py [--backend sqlite|postgres|both] [--quick]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the project, not bench/

import psycopg

from bench import common
from projections.deployment import ViewLocation
from projections.replay import replay
from projections.verify import RawLog, verify
from service.bootstrap import Services

SUBSCRIPTIONS, QUICK_SUBSCRIPTIONS = 50_000, 2_000
WRITES, QUICK_WRITES = 10_000, 1_000
LIBRARY_RECORDERS = {"sqlite": "eventsourcing.sqlite:SQLiteApplicationRecorder",
                     "postgres": "eventsourcing.postgres:PostgresApplicationRecorder"}


def verify_and_replay(services: Services, backend: str) -> None:
    head = services.read_side.log.head()
    start = time.perf_counter()
    verdict = verify(RawLog(services.app.recorder))
    seconds = time.perf_counter() - start
    assert verdict.intact and verdict.events == head, verdict
    common.show(common.rate("ledger verify", backend, "both chains, batches", verdict.events, seconds, "events/s"))

    for follower in services.read_side.followers.values():  # the live views at the head, as in production
        follower.catch_up()
    settings = services.settings
    with tempfile.TemporaryDirectory() as folder:
        fresh = (ViewLocation(conninfo=settings.database_url, schema=f"{settings.database_schema}_replay")
                 if settings.database_url else ViewLocation(folder=Path(folder)))
        start = time.perf_counter()
        verdicts = replay(services.read_side, fresh)
        seconds = time.perf_counter() - start
        fresh.close()
        if settings.database_url:
            with psycopg.connect(settings.database_url, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA "{settings.database_schema}_replay" CASCADE')
    assert all(v.equal for v in verdicts)
    common.show(common.rate("ledger replay", backend, "rebuild all and compare", head, seconds, "events/s"))


def writes(backend: str, count: int) -> None:
    """Bulk saves (a few hundred aggregates a transaction) with the library's recorder, then with the chain."""
    for mode, topic in (("library recorder", LIBRARY_RECORDERS[backend]), ("chained recorder", None)):
        if topic:
            os.environ["APPLICATION_RECORDER_TOPIC"] = topic
        try:
            with common.deployment(backend) as services:
                start = time.perf_counter()
                saved = common.populate(services, count, at=datetime.now(UTC).replace(microsecond=0))
                seconds = time.perf_counter() - start
        finally:
            os.environ.pop("APPLICATION_RECORDER_TOPIC", None)
        common.show(common.rate("bulk save", backend, mode, sum(saved.values()), seconds, "events/s"))


def main() -> int:
    options = common.options(__doc__ or "")
    subscriptions = QUICK_SUBSCRIPTIONS if options.quick else SUBSCRIPTIONS
    common.header("hash chain: verify against replay, and the cost to writes")
    for backend in options.backends:
        with common.deployment(backend) as services:
            saved = common.populate(services, subscriptions, at=datetime.now(UTC).replace(microsecond=0))
            common.note(f"{backend}: {common.describe(saved)}")
            verify_and_replay(services, backend)
        writes(backend, QUICK_WRITES if options.quick else WRITES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
