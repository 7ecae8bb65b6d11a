"""The read side of a deployment: every projection, where its view lives, and its follower."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from commands.application import LedgerApplication
from projections.as_of import AsOf
from projections.billing_documents import BillingDocuments
from projections.customer_table import CustomerTable
from projections.due_dates import DueDates
from projections.invitations import Invitations
from projections.log import EventLog, NewsWaiter
from projections.reseller_events import ResellerEvents
from projections.runner import (
    BATCH_SIZE,
    DATABASE_UNAVAILABLE,
    Follower,
    FollowersThread,
    Projection,
    feed,
    stops_of_followers,
)
from projections.store import PostgresViews, SQLiteViews, ViewDatabase
from projections.summary import Summary
from projections.webhooks import Webhooks


def all_projections() -> list[Projection]:
    return [CustomerTable(), Summary(), DueDates(), Invitations(), BillingDocuments(), AsOf(), ResellerEvents(),
            Webhooks()]


VIEWS_FILE = "views.sqlite"


class ViewLocation:
    """Where views are kept: one SQLite file in a folder (a round of the followers commits once for all of
    them), or one PostgreSQL schema. It owns the connections it opens."""

    def __init__(self, *, folder: Path | None = None, conninfo: str | None = None, schema: str = "public") -> None:
        if (folder is None) == (conninfo is None):
            raise ValueError("views live either in a folder or in PostgreSQL")
        self.folder, self.conninfo, self.schema = folder, conninfo, schema
        self._server: PostgresViews | None = None
        self._file: SQLiteViews | None = None

    def open(self, projection_name: str) -> ViewDatabase:
        if self.folder is None:
            if self._server is None:
                self._server = PostgresViews(self.conninfo or "", self.schema)
            return self._server
        if self._file is None:
            self._file = SQLiteViews(self.folder / VIEWS_FILE)
        self._file.take_in(self.folder / f"{projection_name}.sqlite")  # the file of its own it had before
        return self._file

    def close(self) -> None:
        for db in (self._server, self._file):
            if db is not None:
                db.close()
        self._server = self._file = None


def views_pool(location: ViewLocation) -> ThreadPoolExecutor | None:
    """Threads to apply a batch to several views at once, where that pays: on PostgreSQL, whose server works
    on one view's statements while this process computes another's rows (a replay ran about a quarter
    faster with two); on SQLite each view's work holds the interpreter, and two threads were no faster."""
    return ThreadPoolExecutor(2, thread_name_prefix="views") if location.conninfo is not None else None


class ReadSide:
    def __init__(self, app: LedgerApplication, location: ViewLocation,
                 projections: Sequence[Projection] | None = None, *, batch_size: int = BATCH_SIZE) -> None:
        self.app = app
        self.log = EventLog(app)
        self.location = location
        self.followers = {
            p.name: Follower(self.log, p, location.open(p.name), batch_size=batch_size)
            for p in (projections if projections is not None else all_projections())
        }
        self._thread: FollowersThread | None = None
        self.batch_size = batch_size
        self._pool = views_pool(location)

    def db(self, name: str) -> ViewDatabase:
        return self.followers[name].db

    def catch_up(self) -> None:
        """Bring every view to the head of the log, reading and decoding each batch once for all of them."""
        followers = list(self.followers.values())
        while True:
            head = self.log.head()
            if not feed(self.log, followers, self.batch_size, until={f.name: head for f in followers}, pool=self._pool):
                for follower in followers:
                    follower.index_if_caught_up(head)
                return

    def start(self, *, poll_seconds: float = 0.25, news_fd: int | None = None) -> None:
        """Follow the log in a background thread, which reads each batch once for every projection (woken by
        ``news_fd`` too, if given: see ``NewsWaiter``)."""
        if self._thread is None:
            self._thread = FollowersThread(self.log, list(self.followers.values()),
                                           NewsWaiter(self.app, self.location.conninfo, news_fd),
                                           batch_size=self.batch_size, poll_seconds=poll_seconds, pool=self._pool)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread.join(timeout=30)
            self._thread = None

    def stopped_projections(self) -> dict[str, str]:
        """The projections that met an event they cannot handle, and why: as this process's followers found, or
        as followers in another process noted (`ledger projections`, or the one `ledger serve` starts on SQLite)."""
        if self._thread is not None:
            return {name: str(error) for name, error in self._thread.errors.items()}
        try:
            return stops_of_followers(list(self.followers.values()))
        except DATABASE_UNAVAILABLE as error:  # a health check answers, whatever the database does
            return {"read_models": f"their database cannot be read: {' '.join(str(error).split())[:300]}"}

    def wait_for(self, position: int, names: Sequence[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(self.followers[name].wait_for(position, max(0.0, deadline - time.monotonic())) for name in names)

    def close(self) -> None:
        self.stop()
        if self._pool is not None:
            self._pool.shutdown()
        self.location.close()
