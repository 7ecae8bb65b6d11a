"""The auditor's replay: rebuild every projection from the event log into fresh tables and compare
them, row by row, with the live ones at the head of the log. A view behind the head (its follower
stopped on an event, or is not running) fails the audit even when its rows equal a replay up to its own
position: the customers see those rows as current."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from projections.deployment import ReadSide, ViewLocation, views_pool
from projections.runner import BATCH_SIZE, Follower, ProjectionStopped, feed
from projections.store import position_of

MAX_REPORTED_DIFFERENCES = 20


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
           progress: Callable[[str, int, int], None] | None = None) -> list[Verdict]:
    """One verdict per projection. Followers running elsewhere get the moment they need to reach the head
    of the log (as long as they keep moving, ``patience`` seconds at a time), so a busy ledger can be
    audited while it runs. Each live view is then read in one snapshot together with its position, and
    rebuilt up to the head (or further, if it has gone further since). The rebuilds share one reading of
    the log; one that stops on an event is reported, not raised."""
    head = live.log.head()
    _wait_for(live, head, patience)
    positions, live_rows = {}, {}
    for name, follower in live.followers.items():
        with follower.db.snapshot() as cursor:
            positions[name] = position_of(cursor, name)
            live_rows[name] = list(follower.projection.rows(cursor))
    rebuilt = {name: Follower(live.log, type(follower.projection)(), fresh.open(name), batch_size=batch_size)
               for name, follower in live.followers.items()}
    targets = {name: max(head, position) for name, position in positions.items()}
    stops: dict[str, ProjectionStopped] = {}

    def contained(follower: Follower, work: Callable[[], int]) -> int:
        try:
            return work()
        except ProjectionStopped as stopped:
            stops[follower.name] = stopped
            targets[follower.name] = follower.position()
            return 0

    target = max(targets.values(), default=0)
    pool = views_pool(fresh)
    try:
        while any(feed(live.log, list(rebuilt.values()), batch_size, until=targets, guard=contained,
                       pool=pool).values()):
            if progress:
                progress("read models", min(min(f.position(), targets[f.name]) for f in rebuilt.values()), target)
    finally:
        if pool is not None:
            pool.shutdown()
    verdicts = []
    for name, follower in rebuilt.items():
        with follower.db.snapshot() as cursor:
            verdict = _compare(Verdict(name, positions[name], head), live_rows[name],
                               list(follower.projection.rows(cursor)))
        if name in stops:
            verdict.stopped = str(stops[name])
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
