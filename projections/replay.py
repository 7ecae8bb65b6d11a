"""The auditor's replay: rebuild every projection from the event log into fresh tables and compare
them, row by row, with the live ones at the same position of the log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from projections.deployment import ReadSide, ViewLocation
from projections.runner import Follower, feed
from projections.store import position_of

MAX_REPORTED_DIFFERENCES = 20


@dataclass
class Verdict:
    projection: str
    position: int
    live_rows: int = 0
    rebuilt_rows: int = 0
    differences: list[str] = field(default_factory=list)
    different_rows: int = 0

    @property
    def equal(self) -> bool:
        return self.different_rows == 0


def replay(live: ReadSide, fresh: ViewLocation, *, batch_size: int = 2000,
           progress: Callable[[str, int, int], None] | None = None) -> list[Verdict]:
    """One verdict per projection. Each live view is read in one snapshot together with its position,
    and its rebuild stops at that same position, so a busy ledger can be audited while it runs. The
    rebuilds share one reading of the log."""
    positions, live_rows = {}, {}
    for name, follower in live.followers.items():
        with follower.db.snapshot() as cursor:
            positions[name] = position_of(cursor, name)
            live_rows[name] = list(follower.projection.rows(cursor))
    rebuilt = {name: Follower(live.log, type(follower.projection)(), fresh.open(name), batch_size=batch_size)
               for name, follower in live.followers.items()}
    target = max(positions.values(), default=0)
    while any(feed(live.log, list(rebuilt.values()), batch_size, until=positions).values()):
        if progress:
            progress("read models", min(min(f.position(), positions[f.name]) for f in rebuilt.values()), target)
    verdicts = []
    for name, follower in rebuilt.items():
        with follower.db.snapshot() as cursor:
            verdicts.append(_compare(name, positions[name], live_rows[name], list(follower.projection.rows(cursor))))
    return verdicts


def _compare(name: str, position: int, live: list[tuple[Any, ...]], rebuilt: list[tuple[Any, ...]]) -> Verdict:
    verdict = Verdict(name, position, len(live), len(rebuilt))
    live_count, rebuilt_count = Counter(map(tuple, live)), Counter(map(tuple, rebuilt))
    only_live, only_rebuilt = live_count - rebuilt_count, rebuilt_count - live_count
    verdict.different_rows = sum(only_live.values()) + sum(only_rebuilt.values())
    for row in sorted(only_rebuilt, key=repr):
        verdict.differences.append(f"replayed but not live: {row}")
    for row in sorted(only_live, key=repr):
        verdict.differences.append(f"live but not replayed: {row}")
    del verdict.differences[MAX_REPORTED_DIFFERENCES:]
    return verdict
