"""Following the event log into a projection: batches of events, each batch with the position it
brings the view to, in one transaction. Resumable: a restarted follower continues from the position
its view recorded."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from contextlib import nullcontext
from typing import Any, Protocol, TypeVar

import psycopg

from projections.log import EventLog, NewsWaiter, Recorded, UndecodableEvent
from projections.store import (
    Cursor,
    PositionConflict,
    ViewDatabase,
    advance_position,
    create_positions_table,
    note_stop,
    position_of,
    positions_of,
    stops_of,
)

log = logging.getLogger("ledger.projections")
T = TypeVar("T")

BATCH_SIZE = 2000
# Failures of the database itself are not the event's fault: they are retried, never blamed on it.
DATABASE_UNAVAILABLE = (sqlite3.OperationalError, psycopg.OperationalError)


class Projection(Protocol):
    """A read model: its tables, and how a batch of events changes them."""

    name: str
    streams: frozenset[str] | None
    """The kinds of stream whose events it reads (the log decodes no others for it), or None for every kind."""

    def create_tables(self, cursor: Cursor) -> None:
        """Its tables, and the indexes its own writes and the pollers of its rows (senders, the scheduler) read."""

    def create_indexes(self, cursor: Cursor) -> None:
        """The indexes only its readers' queries use. A view filled from the start of the log gets them once it
        reaches the head (see ``Follower``)."""

    def apply(self, cursor: Cursor, batch: list[Recorded]) -> None:
        """Change the rows for these events. Raise ``UnhandledEvent`` for an event it cannot handle."""

    def rows(self, cursor: Cursor) -> Iterable[tuple[Any, ...]]:
        """Every row it holds, in a stable order (auditors compare them with a replay)."""


class UnhandledEvent(Exception):
    """A projection met an event it does not know how to handle: it must stop rather than skip it."""


class ProjectionStopped(Exception):
    def __init__(self, projection: str, recorded: Recorded | None, position: int, reason: str) -> None:
        where = recorded.describe() if recorded else f"#{position}"
        super().__init__(f"projection {projection} stopped at event {where}: {reason}. "
                         f"It resumes from there once the cause is fixed.")
        self.projection = projection
        self.position = position


class Follower:
    def __init__(self, log_: EventLog, projection: Projection, db: ViewDatabase, *,
                 batch_size: int = BATCH_SIZE) -> None:
        self.log = log_
        self.projection = projection
        self.db = db
        self.batch_size = batch_size
        with db.schema_change() as cursor:
            create_positions_table(cursor)
            projection.create_tables(cursor)
            # An empty view (a new deployment, a rebuild) is filled without the indexes of its queries, which
            # are then built once, at the head of the log: kept up row by row they made a rebuild of every view
            # take 1.4 times as long. A replay's fresh views, compared and dropped, never need them.
            self.indexed = position_of(cursor, self.name) > 0
            if self.indexed:
                projection.create_indexes(cursor)

    @property
    def name(self) -> str:
        return self.projection.name

    def position(self) -> int:
        with self.db.read() as cursor:
            return position_of(cursor, self.name)

    def catch_up(self, until: int | None = None, progress: Callable[[int], None] | None = None) -> int:
        """Process every event recorded so far (or up to ``until``); returns how many were processed."""
        processed = 0
        while True:
            done = self.process_batch(until)
            if done:
                processed += done
                if progress:
                    progress(done)
                continue
            # Nothing applied: caught up, or another follower of this view got there first (a
            # position conflict), in which case read on from where it left the view.
            target = until if until is not None else self.log.head()
            if self.position() >= target:
                if until is None:  # at the head of the log, not at an ``until`` short of it
                    self.index_if_caught_up(target)
                return processed

    def index_if_caught_up(self, head: int) -> None:
        """Build the indexes of the view's queries if they wait for it to reach ``head`` (within a batch) and it has."""
        if not self.indexed and self.position() >= head - self.batch_size:
            with self.db.schema_change() as cursor:
                self.projection.create_indexes(cursor)
            self.indexed = True

    def process_batch(self, until: int | None = None) -> int:
        before = self.position()
        limit = self.batch_size if until is None else min(self.batch_size, until - before)
        if limit <= 0:
            return 0
        try:
            batch, last = self.log.read_streams(before, limit, self.streams)
        except UndecodableEvent as error:
            # Everything up to the undecodable event is processed first, so the stop is exact.
            if error.position - 1 > before:
                return self.process_batch(error.position - 1)
            raise ProjectionStopped(self.name, None, error.position, str(error)) from error
        return self.take(before, batch, last)

    @property
    def streams(self) -> frozenset[str] | None:
        return self.projection.streams

    def take(self, before: int, batch: list[Recorded], last: int | None = None) -> int:
        """Apply events that follow position ``before`` (read here or by someone reading for several
        followers), and move to ``last`` (the last position read, when events of other streams were skipped);
        returns how many events were applied."""
        last = last if last is not None else batch[-1].position if batch else before
        if last <= before:
            return 0
        try:
            self._apply(before, batch, last)
        except PositionConflict:
            return 0
        except DATABASE_UNAVAILABLE:
            raise
        except Exception:
            self._apply_one_by_one(before, batch)
        return len(batch)

    def _apply(self, before: int, batch: list[Recorded], last: int) -> None:
        with self.db.transaction(rebuildable=True) as cursor:
            advance_position(cursor, self.name, before, last)
            if batch:
                self.projection.apply(cursor, batch)

    def _apply_one_by_one(self, before: int, batch: list[Recorded]) -> None:
        """A batch failed: commit the events before the culprit (and the other streams' events between them,
        which it skips), then stop at it, naming it."""
        for recorded in batch:
            try:
                if recorded.position - 1 > before:
                    self._apply(before, [], recorded.position - 1)
                    before = recorded.position - 1
                self._apply(before, [recorded], recorded.position)
            except PositionConflict:
                return
            except DATABASE_UNAVAILABLE:
                raise
            except Exception as error:
                raise ProjectionStopped(self.name, recorded, recorded.position,
                                        f"{type(error).__name__}: {error}") from error
            before = recorded.position

    def wait_for(self, position: int, timeout: float) -> bool:
        """Whether the view reached ``position`` within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while self.position() < position:
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        return True


def positions_of_followers(followers: list[Follower]) -> dict[str, int]:
    """Every follower's position, with one query per view database (on PostgreSQL all views share one)."""
    return _read_per_database(followers, positions_of)


def stops_of_followers(followers: list[Follower]) -> dict[str, str]:
    """The followers whose views stopped on an event, and why, as noted in their databases."""
    return _read_per_database(followers, stops_of)


def _read_per_database(followers: list[Follower], read: Callable[[Cursor, list[str]], dict[str, T]]) -> dict[str, T]:
    found: dict[str, T] = {}
    for db, names in _by_database(followers):
        with db.read() as cursor:
            found.update(read(cursor, names))
    return found


def _by_database(followers: list[Follower]) -> list[tuple[ViewDatabase, list[str]]]:
    """The followers' names by the database of their views (on PostgreSQL, and on SQLite since one file, one)."""
    databases: dict[int, tuple[ViewDatabase, list[str]]] = {}
    for follower in followers:
        databases.setdefault(id(follower.db), (follower.db, []))[1].append(follower.name)
    return list(databases.values())


def feed(log_: EventLog, followers: list[Follower], batch_size: int, *, until: Mapping[str, int] | None = None,
         guard: Callable[[Follower, Callable[[], int]], int] = lambda follower, work: work(),
         pool: Executor | None = None) -> dict[str, int]:
    """One round for several followers: read the next batch of the log once, from the least advanced of
    them, and give each the events it has not seen yet (up to its ``until``). Returns how many each applied;
    ``guard`` runs each follower's share (to contain a projection that stops), in the ``pool``'s threads if
    there is one: each view's transaction is its own, so one view's statements run in PostgreSQL while the
    next view's rows are computed here, and the views with nothing to apply share one that only moves them.
    Without a pool, views that share a database share its ``batch``."""
    positions = positions_of_followers(followers)
    targets = {f.name: (until or {}).get(f.name) for f in followers}
    wanting = [f for f in followers if targets[f.name] is None or positions[f.name] < targets[f.name]]
    if not wanting:
        return {}
    kinds = [f.streams for f in wanting]
    streams = None if None in kinds else frozenset().union(*kinds)  # type: ignore[arg-type]
    try:
        batch, last_read = log_.read_streams(min(positions[f.name] for f in wanting), batch_size, streams)
    except UndecodableEvent:
        # Each follower reads up to the unreadable event on its own, and stops exactly there.
        return {f.name: guard(f, lambda f=f: f.process_batch(targets[f.name])) for f in wanting}

    def unseen(f: Follower) -> tuple[list[Recorded], int]:
        last = last_read if targets[f.name] is None else min(last_read, targets[f.name])  # type: ignore[type-var]
        wanted = f.streams
        return [r for r in batch if positions[f.name] < r.position <= last
                and (wanted is None or r.stream_type in wanted)], last

    portions = {f.name: unseen(f) for f in wanting}

    def share(f: Follower) -> int:
        return guard(f, lambda: f.take(positions[f.name], *portions[f.name]))

    if pool is None or len(wanting) == 1:
        databases = {id(f.db): f.db for f in wanting}
        with next(iter(databases.values())).batch() if len(databases) == 1 else nullcontext():
            return {f.name: share(f) for f in wanting}
    moved = _move_together([f for f in wanting if not portions[f.name][0]], positions,
                           {name: last for name, (_, last) in portions.items()})
    shares = {f.name: pool.submit(share, f) for f in wanting if f not in moved}
    return {**{f.name: guard(f, lambda: 0) for f in moved},  # a move is a success: a stop noted before is cleared
            **{name: applied.result() for name, applied in shares.items()}}


def _move_together(idle: list[Follower], positions: Mapping[str, int], last: Mapping[str, int]) -> list[Follower]:
    """Moves the views that have nothing to apply in a round (none of its events are of their streams) to its end,
    those of one database in one transaction, and returns them: a transaction each (the only kind there was) cost
    each view four round trips per round, and a create's first save (its charge intent) concerns one view of
    eight. If one of them is no longer where it was (another follower moved it), none is moved here."""
    moved = []
    for db, names in _by_database([f for f in idle if last[f.name] > positions[f.name]]):
        together = [f for f in idle if f.name in names]
        if len(together) < 2:
            continue
        try:
            with db.transaction(rebuildable=True) as cursor:
                for follower in together:
                    advance_position(cursor, follower.name, positions[follower.name], last[follower.name])
        except PositionConflict:
            continue  # each is taken alone, which tells the one that conflicts from the others
        moved += together
    return moved


class FollowersThread(threading.Thread):
    """Keeps several followers caught up, reading each batch of the log once for all of them. A
    projection that stops is logged and retried after a pause, so that once its cause is fixed (a
    deployment) it resumes by itself; the others go on meanwhile."""

    def __init__(self, log_: EventLog, followers: list[Follower], waiter: NewsWaiter, *, batch_size: int = BATCH_SIZE,
                 poll_seconds: float = 0.25, retry_seconds: float = 30.0, pool: Executor | None = None) -> None:
        super().__init__(name="projections", daemon=True)
        self.log = log_
        self.followers = followers
        self.waiter = waiter
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self.pool = pool
        self.stopping = threading.Event()
        self.errors: dict[str, ProjectionStopped] = {}
        self._paused_until: dict[str, float] = {}

    def run(self) -> None:
        self.waiter.listen()
        # A stop noted by an earlier run is retried now: noted again if the event still stops the view.
        for db, names in _by_database(self.followers):
            with db.transaction() as cursor:
                for name in names:
                    note_stop(cursor, name, None)
        while not self.stopping.is_set():
            try:
                if self._round() == 0:
                    self.waiter.wait(self.poll_seconds)
            except Exception:
                log.exception("the projections failed; retrying")
                self.stopping.wait(self.retry_seconds)
        self.waiter.close()

    def stop(self) -> None:
        self.stopping.set()

    def _round(self) -> int:
        now = time.monotonic()
        active = [f for f in self.followers if self._paused_until.get(f.name, 0.0) <= now]
        done = sum(feed(self.log, active, self.batch_size, guard=self._guarded, pool=self.pool).values())
        if unindexed := [f for f in active if not f.indexed]:
            head = self.log.head()
            for follower in unindexed:
                follower.index_if_caught_up(head)
        return done

    def _guarded(self, follower: Follower, work: Callable[[], int]) -> int:
        try:
            done = work()
        except ProjectionStopped as stopped:
            if str(self.errors.get(follower.name)) != str(stopped):
                log.error("%s", stopped)
                with follower.db.transaction() as cursor:
                    note_stop(cursor, follower.name, str(stopped))
            self.errors[follower.name] = stopped
            self._paused_until[follower.name] = time.monotonic() + self.retry_seconds
            return 0
        if self.errors.pop(follower.name, None) is not None:
            with follower.db.transaction() as cursor:
                note_stop(cursor, follower.name, None)
        return done
