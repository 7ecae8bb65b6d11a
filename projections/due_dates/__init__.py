"""When each subscription next needs the clock: its period end, or its next renewal retry. The
scheduler reads this instead of scanning aggregates."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from ledger import events
from projections.log import Recorded
from projections.runner import UnhandledEvent
from projections.store import Cursor, ViewDatabase, row_values, select_by_keys

NAME = "due_dates"
NO_EFFECT = frozenset({"SeatsIncreased", "SeatDecreaseScheduled", "SeatDecreaseWithdrawn"})


@dataclass(frozen=True)
class Due:
    subscription_id: str
    period_end: str
    next_retry_at: str | None
    canceled: int
    due_at: str

    def settled(self, **changes: Any) -> Due:
        due = replace(self, **changes)
        # A canceled subscription expires at its period end, even while a renewal was being retried.
        return replace(due, due_at=due.period_end if due.canceled else due.next_retry_at or due.period_end)


class DueDates:
    name = NAME
    streams = frozenset({"Subscription"})

    def create_tables(self, cursor: Cursor) -> None:
        cursor.execute("""CREATE TABLE IF NOT EXISTS due_dates (
            subscription_id TEXT PRIMARY KEY, period_end TEXT NOT NULL, next_retry_at TEXT,
            canceled INTEGER NOT NULL, due_at TEXT NOT NULL)""")
        cursor.execute("CREATE INDEX IF NOT EXISTS due_dates_by_due_at ON due_dates (due_at, subscription_id)")

    def create_indexes(self, cursor: Cursor) -> None:
        """None to wait for: the scheduler polls by due date even while the view is rebuilt."""

    def apply(self, cursor: Cursor, batch: list[Recorded]) -> None:
        mine = [r for r in batch if r.stream_type == "Subscription" and r.type not in NO_EFFECT]
        if not mine:
            return
        found = select_by_keys(cursor, "SELECT subscription_id, period_end, next_retry_at, canceled, due_at "
                                       "FROM due_dates WHERE subscription_id IN", {r.stream_key for r in mine})
        dues: dict[str, Due | None] = {row[0]: Due(*row) for row in found}
        for recorded in mine:
            key, e = recorded.stream_key, recorded.event
            due = dues.get(key)
            if recorded.type == "SubscriptionCreated":
                dues[key] = Due(key, events.iso(e.period_end), None, 0, "").settled()
                continue
            if due is None:
                raise UnhandledEvent(f"no due date for subscription {key}: its creation was never seen")
            if recorded.type == "Canceled":
                dues[key] = due.settled(canceled=1)
            elif recorded.type == "Resumed":
                dues[key] = due.settled(canceled=0)
            elif recorded.type == "Renewed":
                dues[key] = due.settled(period_end=events.iso(e.period_end), next_retry_at=None)
            elif recorded.type == "RenewalPaymentFailed":
                retry = events.iso(e.next_retry_at) if e.next_retry_at else None
                dues[key] = due.settled(next_retry_at=retry)
            elif recorded.type == "Expired":
                dues[key] = None
            else:
                raise UnhandledEvent(f"the due dates do not know {recorded.type} events")
        gone = [(key,) for key, due in dues.items() if due is None]
        kept = [row_values(due) for due in dues.values() if due is not None]
        if gone:
            cursor.executemany("DELETE FROM due_dates WHERE subscription_id = ?", gone)
        if kept:
            cursor.executemany("INSERT INTO due_dates VALUES (?, ?, ?, ?, ?) ON CONFLICT (subscription_id) DO UPDATE "
                               "SET period_end = excluded.period_end, next_retry_at = excluded.next_retry_at, "
                               "canceled = excluded.canceled, due_at = excluded.due_at", kept)

    def rows(self, cursor: Cursor) -> Iterable[tuple[Any, ...]]:
        cursor.execute("SELECT subscription_id, period_end, next_retry_at, canceled, due_at FROM due_dates "
                       "ORDER BY subscription_id")
        return [tuple(row) for row in cursor.fetchall()]


def due_by(db: ViewDatabase, at: datetime, limit: int,
           after: tuple[UUID, datetime] | None = None) -> list[tuple[UUID, datetime]]:
    """Subscriptions due at or before ``at``, earliest first (then by id); with ``after``, those that come after
    that one in this order, for the next page."""
    with db.snapshot() as cursor:
        if after is None:
            cursor.execute("SELECT subscription_id, due_at FROM due_dates WHERE due_at <= ? "
                           "ORDER BY due_at, subscription_id LIMIT ?", (events.iso(at), limit))
        else:
            cursor.execute("SELECT subscription_id, due_at FROM due_dates WHERE due_at <= ? "
                           "AND (due_at, subscription_id) > (?, ?) ORDER BY due_at, subscription_id LIMIT ?",
                           (events.iso(at), events.iso(after[1]), str(after[0]), limit))
        return [(UUID(key), _instant(due_at)) for key, due_at in cursor.fetchall()]


def count_due(db: ViewDatabase, at: datetime) -> int:
    """How many subscriptions are due at or before ``at`` (the scheduler's backlog)."""
    with db.snapshot() as cursor:
        cursor.execute("SELECT COUNT(*) FROM due_dates WHERE due_at <= ?", (events.iso(at),))
        return int(cursor.fetchone()[0])


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
