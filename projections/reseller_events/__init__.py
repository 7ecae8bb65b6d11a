"""An index of each reseller's events, for the event feed (``GET /v1/resellers/{org_id}/events``).

A row per event of a reseller's history: the same streams as ``ledger export-events --reseller`` (its
reseller stream, and every subscription, customer account and invoice created for it). The events
themselves stay in the log; the feed reads them from there by position. Disposable: a rebuild from the
log gives the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ledger.reseller import Reseller
from projections.export import RESELLER_STREAMS
from projections.log import Recorded
from projections.store import Cursor, select_by_keys

NAME = "reseller_events"


def stream_owner(recorded: Recorded) -> str | None:
    """The reseller a stream belongs to, told by its first event (or by being the reseller's own)."""
    if recorded.version != 1:
        return None
    if recorded.stream_type == "Reseller":
        return str(recorded.event.org_id)
    owner = getattr(recorded.event, "reseller_org_id", None)
    return str(owner) if owner is not None else None


class ResellerEvents:
    name = NAME
    streams = RESELLER_STREAMS

    def create_tables(self, cursor: Cursor) -> None:
        cursor.execute("""CREATE TABLE IF NOT EXISTS reseller_streams (
            stream_id TEXT PRIMARY KEY, reseller_org_id TEXT NOT NULL)""")
        cursor.execute("""CREATE TABLE IF NOT EXISTS reseller_events (
            position BIGINT PRIMARY KEY, reseller_org_id TEXT NOT NULL, stream_id TEXT NOT NULL,
            stream_type TEXT NOT NULL, type TEXT NOT NULL)""")

    def create_indexes(self, cursor: Cursor) -> None:
        cursor.execute("CREATE INDEX IF NOT EXISTS reseller_events_by_reseller "
                       "ON reseller_events (reseller_org_id, position)")
        cursor.execute("CREATE INDEX IF NOT EXISTS reseller_events_by_type "
                       "ON reseller_events (reseller_org_id, type, position)")

    def apply(self, cursor: Cursor, batch: list[Recorded]) -> None:
        mine = [r for r in batch if r.stream_type in RESELLER_STREAMS]
        if not mine:
            return
        owners = {values[0]: values[1] for values in select_by_keys(
            cursor, "SELECT stream_id, reseller_org_id FROM reseller_streams WHERE stream_id IN",
            {r.stream_key for r in mine})}
        new_streams, rows = [], []
        for recorded in mine:
            key = recorded.stream_key
            if key not in owners and (owner := stream_owner(recorded)) is not None:
                owners[key] = owner
                new_streams.append((key, owner))
            if key in owners:
                rows.append((recorded.position, owners[key], key, recorded.stream_type, recorded.type))
        if new_streams:
            cursor.executemany("INSERT INTO reseller_streams (stream_id, reseller_org_id) VALUES (?, ?) "
                               "ON CONFLICT (stream_id) DO NOTHING", new_streams)
        if rows:
            cursor.executemany("INSERT INTO reseller_events (position, reseller_org_id, stream_id, stream_type, type) "
                               "VALUES (?, ?, ?, ?, ?) ON CONFLICT (position) DO NOTHING", rows)

    def rows(self, cursor: Cursor) -> Iterable[tuple[Any, ...]]:
        cursor.execute("SELECT position, reseller_org_id, stream_id, stream_type, type FROM reseller_events "
                       "ORDER BY position")
        return [tuple(row) for row in cursor.fetchall()]


def positions(cursor: Cursor, org_id: str, *, after: int, limit: int, types: list[str] | None = None) -> list[int]:
    """The positions of the reseller's next events after ``after`` (of these types), oldest first."""
    if types:
        cursor.execute(f"SELECT position FROM reseller_events WHERE reseller_org_id = ? AND position > ? AND type IN "
                       f"({', '.join('?' * len(types))}) ORDER BY position LIMIT ?", (org_id, after, *types, limit))
    else:
        cursor.execute("SELECT position FROM reseller_events WHERE reseller_org_id = ? AND position > ? "
                       "ORDER BY position LIMIT ?", (org_id, after, limit))
    return [int(row[0]) for row in cursor.fetchall()]


def event_type_names() -> frozenset[str]:
    """Every type name an event of a reseller's history can have."""
    from ledger.customer_account import CustomerAccount
    from ledger.invoice import Invoice
    from ledger.subscription import Subscription

    names = set()
    for aggregate in (Reseller, Subscription, CustomerAccount, Invoice):
        for value in vars(aggregate).values():
            topic = getattr(value, "TOPIC", None)
            if isinstance(value, type) and isinstance(topic, str) and "." in topic:
                names.add(topic.rsplit(".", 1)[-1])
    return frozenset(names)
