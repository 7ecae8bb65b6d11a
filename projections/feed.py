"""The event feed: one reseller's events after a position, in the export's format (docs/event-export.md),
found through the ``reseller_events`` index and read from the log itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from projections import reseller_events
from projections.export import _hashes, _stored
from projections.log import EventLog, Recorded
from projections.store import ViewDatabase
from projections.verify import RawLog

LONGEST_RUN = 256
"""Positions this close together are read from the log in one range rather than one by one."""


@dataclass(frozen=True)
class FeedPage:
    items: list[dict[str, Any]]
    next_after: int
    """Where to continue: the position of the last item, or ``after`` itself when there is none."""
    has_more: bool


def page(log: EventLog, index: ViewDatabase, org_id: str, *, after: int, limit: int,
         types: list[str] | None = None) -> FeedPage:
    with index.snapshot() as cursor:
        found = reseller_events.positions(cursor, org_id, after=after, limit=limit + 1, types=types)
    has_more = len(found) > limit
    found = found[:limit]
    recorded = read_positions(log, found)
    try:
        raw: RawLog | None = RawLog(log.app.recorder)
    except TypeError:
        raw = None
    stored = _stored(raw, found)
    items = []
    for event in recorded:
        record = event.as_record()
        if raw is not None:
            record.update(_hashes(stored.get(event.position)))
        items.append(record)
    return FeedPage(items, items[-1]["position"] if items else after, has_more)


def read_positions(log: EventLog, positions: list[int]) -> list[Recorded]:
    """The events at these positions (ascending), reading close ones as one range."""
    wanted, out = set(positions), []
    runs: list[list[int]] = []
    for position in positions:
        if runs and position - runs[-1][0] < LONGEST_RUN:
            runs[-1].append(position)
        else:
            runs.append([position])
    for run in runs:
        out.extend(r for r in log.read(run[0] - 1, run[-1] - run[0] + 1) if r.position in wanted)
    return out
