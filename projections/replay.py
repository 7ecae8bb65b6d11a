"""The auditor's replay: rebuild every projection from the event log into fresh tables and compare
them, row by row, with the live ones at the head of the log. A view behind the head (its follower
stopped on an event, or is not running) fails the audit even when its rows equal a replay up to its own
position: the customers see those rows as current."""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, cast

from commands.application import LedgerApplication
from projections.deployment import ReadSide, ViewLocation, views_pool
from projections.log import EventLog
from projections.runner import BATCH_SIZE, Follower, Projection, ProjectionStopped, feed
from projections.store import position_of

MAX_REPORTED_DIFFERENCES = 20
PROGRESS_SECONDS = 0.5

REBUILD_WEIGHTS = {"as_of": 3.0, "invitations": 3.0, "reseller_events": 2.8, "customer_table": 2.5,
                   "billing_documents": 2.5, "due_dates": 1.9, "summary": 1.5, "webhooks": 1.3}
"""What each view's share of a rebuild costs, relatively (CPU seconds of each rebuilt alone, less the reading of
the log, at 50,000 subscriptions; billing documents guessed as the customer table's): the parts of a replay in
several processes are balanced by them."""


@dataclass
class Verdict:
    projection: str
    position: int
    """Where the live view was in the log when its rows were read."""
    head: int
    """The head of the log the view is compared at."""
    live_rows: int = 0
    rebuilt_rows: int = 0
    differences: list[str] = field(default_factory=list)
    different_rows: int = 0
    stopped: str | None = None
    """Why the rebuild itself stopped at an event, if it did."""

    @property
    def behind(self) -> bool:
        return self.position < self.head

    @property
    def equal(self) -> bool:
        """Whether the view equals a replay of the whole log."""
        return not self.behind and self.stopped is None and self.different_rows == 0

    @property
    def state(self) -> str:
        if self.behind:
            return (f"EMPTY (none of {self.head} events)" if self.position == 0
                    else f"BEHIND ({self.head - self.position} events)")
        if self.stopped is not None:
            return "REPLAY STOPPED"
        return "EQUAL" if self.equal else f"DIFFERENT ({self.different_rows} rows)"


def replay(live: ReadSide, fresh: ViewLocation, *, batch_size: int = BATCH_SIZE, patience: float = 1.0,
           progress: Callable[[str, int, int], None] | None = None, processes: int = 1,
           open_store: Callable[[], LedgerApplication] | None = None) -> list[Verdict]:
    """One verdict per projection. Followers running elsewhere get the moment they need to reach the head
    of the log (as long as they keep moving, ``patience`` seconds at a time), so a busy ledger can be
    audited while it runs. Each live view is then read in one snapshot together with its position, and
    rebuilt up to the head (or further, if it has gone further since). The rebuilds share one reading of
    the log; one that stops on an event is reported, not raised.

    With ``processes`` above 1 and ``open_store`` (which opens the same event store in another process), the
    views are rebuilt in that many processes, each reading the log for its part of them (balanced by
    ``REBUILD_WEIGHTS``): the interpreter, not the database, bounds one process's rebuild."""
    head = live.log.head()
    _wait_for(live, head, patience)
    positions, live_rows = {}, {}
    for name, follower in live.followers.items():
        with follower.db.snapshot() as cursor:
            positions[name] = position_of(cursor, name)
            live_rows[name] = list(follower.projection.rows(cursor))
    targets = {name: max(head, position) for name, position in positions.items()}
    parts = balanced_parts([follower.projection for follower in live.followers.values()],
                           processes if open_store is not None else 1)
    locations = [_location_of_part(fresh, index) for index in range(len(parts))] if len(parts) > 1 else [fresh]
    try:
        location_of = {projection.name: location
                       for part, location in zip(parts, locations, strict=True) for projection in part}
        rebuilt = {name: Follower(live.log, type(follower.projection)(), location_of[name].open(name),
                                  batch_size=batch_size)
                   for name, follower in live.followers.items()}
        if len(parts) > 1 and open_store is not None:
            stops = _rebuild_in_processes(open_store, parts, locations, targets, batch_size, rebuilt, progress)
        else:
            stops = _rebuild(live.log, list(rebuilt.values()), targets, batch_size, views_pool(fresh), progress)
        return _verdicts(rebuilt, positions, live_rows, head, stops)
    finally:
        for location in locations:
            if location is not fresh:
                location.close()


def balanced_parts(projections: list[Projection], processes: int) -> list[list[Projection]]:
    """The projections in at most ``processes`` parts of about equal weight, heaviest first to the lightest part."""
    parts: list[list[Projection]] = [[] for _ in range(max(1, min(processes, len(projections))))]
    weights = [0.0] * len(parts)
    for projection in sorted(projections, key=lambda p: -REBUILD_WEIGHTS.get(p.name, 1.0)):
        lightest = weights.index(min(weights))
        parts[lightest].append(projection)
        weights[lightest] += REBUILD_WEIGHTS.get(projection.name, 1.0)
    return [part for part in parts if part]


def _location_of_part(fresh: ViewLocation, index: int) -> ViewLocation:
    """Where a part of the views is rebuilt: on PostgreSQL the same schema (its writers do not wait for each other);
    on SQLite a file of its own (one file admits one writer at a time)."""
    if fresh.folder is None:
        return ViewLocation(conninfo=fresh.conninfo, schema=fresh.schema)
    folder = fresh.folder / f"part-{index}"
    folder.mkdir(parents=True, exist_ok=True)
    return ViewLocation(folder=folder)


def _rebuild(log: EventLog, rebuilt: list[Follower], targets: Mapping[str, int], batch_size: int,
             pool: Executor | None,
             progress: Callable[[str, int, int], None] | None) -> dict[str, str]:
    """Rebuild the views up to their targets from one reading of the log; returns why each view that stopped on
    an event stopped."""
    targets = dict(targets)
    stops: dict[str, str] = {}

    def contained(follower: Follower, work: Callable[[], int]) -> int:
        try:
            return work()
        except ProjectionStopped as stopped:
            stops[follower.name] = str(stopped)
            targets[follower.name] = follower.position()
            return 0

    target = max(targets.values(), default=0)
    try:
        # Until no view wants more: a batch may hold nothing for these views (it applies none) and still move them.
        while feed(log, rebuilt, batch_size, until=targets, guard=contained, pool=pool):
            if progress:
                progress("read models", _least_done(rebuilt, targets), target)
    finally:
        if pool is not None:
            pool.shutdown()
    return stops


def _least_done(rebuilt: list[Follower], targets: Mapping[str, int]) -> int:
    """How far the rebuild has come: the least advanced view's position (counting a view at its target as done)."""
    return min(min(f.position(), targets[f.name]) for f in rebuilt)


def _rebuild_part(open_store: Callable[[], LedgerApplication], location: dict[str, Any], kinds: list[type],
                  targets: dict[str, int], batch_size: int) -> dict[str, str]:
    """A part of the views rebuilt in a process of its own (see ``_rebuild_in_processes``)."""
    app = open_store()
    fresh = ViewLocation(**location)
    try:
        log = EventLog(app)
        followers = [Follower(log, kind(), fresh.open(kind.name), batch_size=batch_size) for kind in kinds]
        return _rebuild(log, followers, targets, batch_size, views_pool(fresh), None)
    finally:
        fresh.close()
        app.close()


def _run_part(results: Connection, open_store: Callable[[], LedgerApplication], location: dict[str, Any],
              kinds: list[type], targets: dict[str, int], batch_size: int) -> None:
    """A part's process: its rebuild's stops, or its error, sent back on ``results``."""
    # Ctrl-C in a terminal reaches the whole process group: the replay ends its processes itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        results.send(_rebuild_part(open_store, location, kinds, targets, batch_size))
    except Exception as error:  # sent as text: not every error can be rebuilt in another process
        results.send(PartFailed(f"{type(error).__name__}: {error}"))


class PartFailed(RuntimeError):
    """A part of a replay in several processes failed, or its process ended without an answer."""


def _rebuild_in_processes(open_store: Callable[[], LedgerApplication], parts: list[list[Projection]],
                          locations: list[ViewLocation], targets: Mapping[str, int], batch_size: int,
                          rebuilt: Mapping[str, Follower],
                          progress: Callable[[str, int, int], None] | None) -> dict[str, str]:
    """Each part rebuilt in a process of its own, their progress read from the rebuilt views' positions here. A
    part that fails, or whose process dies (kill -9), fails the replay at once; the other parts are ended."""
    target = max(targets.values(), default=0)
    context = multiprocessing.get_context("spawn")
    running: dict[Connection, BaseProcess] = {}
    try:
        for part, location in zip(parts, locations, strict=True):
            receiving, sending = context.Pipe(duplex=False)
            process = context.Process(target=_run_part, name="replay-part", daemon=True, args=(
                sending, open_store, _described(location), [type(projection) for projection in part],
                {projection.name: targets[projection.name] for projection in part}, batch_size))
            process.start()
            sending.close()
            running[receiving] = process
        stops: dict[str, str] = {}
        while running:
            for ready in wait(list(running), timeout=PROGRESS_SECONDS):
                connection = cast(Connection, ready)
                try:
                    answer = connection.recv()
                except EOFError:
                    answer = PartFailed(f"a replay process ended without an answer (exit code "
                                        f"{running[connection].join(5) or running[connection].exitcode})")
                running.pop(connection).join()
                if isinstance(answer, PartFailed):
                    raise answer
                stops.update(answer)
            if progress:
                progress("read models", _least_done(list(rebuilt.values()), targets), target)
        return stops
    finally:
        for process in running.values():  # on an error or an interrupt here, the other parts are not waited for
            process.terminate()
            process.join()


def _described(location: ViewLocation) -> dict[str, Any]:
    """What opens the same location in another process."""
    if location.folder is not None:
        return {"folder": location.folder}
    return {"conninfo": location.conninfo, "schema": location.schema}


def _verdicts(rebuilt: Mapping[str, Follower], positions: Mapping[str, int], live_rows: Mapping[str, list[Any]],
              head: int, stops: Mapping[str, str]) -> list[Verdict]:
    verdicts = []
    for name, follower in rebuilt.items():
        with follower.db.snapshot() as cursor:
            verdict = _compare(Verdict(name, positions[name], head), live_rows[name],
                               list(follower.projection.rows(cursor)))
        if name in stops:
            verdict.stopped = stops[name]
            verdict.differences.insert(0, f"the replay stopped: {verdict.stopped}")
        verdicts.append(verdict)
    return verdicts


def _wait_for(live: ReadSide, head: int, patience: float) -> None:
    """Until every view reaches ``head``, or none of those behind it has moved for ``patience`` seconds."""
    last, moved_at = None, time.monotonic()
    while True:
        behind = {name: p for name, f in live.followers.items() if (p := f.position()) < head}
        if not behind:
            return
        if behind != last:
            last, moved_at = behind, time.monotonic()
        elif time.monotonic() - moved_at >= patience:
            return
        time.sleep(0.05)


def _compare(verdict: Verdict, live: list[tuple[Any, ...]], rebuilt: list[tuple[Any, ...]]) -> Verdict:
    verdict.live_rows, verdict.rebuilt_rows = len(live), len(rebuilt)
    if live == rebuilt:  # both in the view's stable order: the usual verdict, without counting every row
        return verdict
    live_count, rebuilt_count = Counter(map(tuple, live)), Counter(map(tuple, rebuilt))
    only_live, only_rebuilt = live_count - rebuilt_count, rebuilt_count - live_count
    verdict.different_rows = sum(only_live.values()) + sum(only_rebuilt.values())
    for row in sorted(only_rebuilt, key=repr):
        verdict.differences.append(f"replayed but not live: {row}")
    for row in sorted(only_live, key=repr):
        verdict.differences.append(f"live but not replayed: {row}")
    del verdict.differences[MAX_REPORTED_DIFFERENCES:]
    return verdict
