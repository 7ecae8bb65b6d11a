"""The customer table of the reseller portal: one row per subscription that has not expired, and how many
rows each reseller has by status and plan (the listing's total, without counting the rows)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

from ledger import events
from ledger.subscription import ACTIVE, CANCELED, PAST_DUE, PENDING
from projections.log import Recorded
from projections.runner import UnhandledEvent
from projections.store import Cursor, row_values, select_by_keys

NAME = "customer_table"


@dataclass(frozen=True)
class Row:
    subscription_id: str
    reseller_org_id: str
    customer: str
    customer_search: str
    type: str
    plan: str
    plan_name: str
    billing_cycle: str
    status: str
    seats: int
    pending_seats: int | None
    canceled: int
    past_due: int
    current_period_start: str
    current_period_end: str
    created_at: str

    def with_status(self, **changes: Any) -> Row:
        """The row with these changes and the status they make. (Built once, from its fields: two
        ``dataclasses.replace`` took three times as long, and a rebuild makes one per event.)"""
        values = {**vars(self), **changes}
        values["status"] = (CANCELED if values["canceled"] else PAST_DUE if values["past_due"]
                            else PENDING if values["pending_seats"] is not None else ACTIVE)
        return Row(**values)


COLUMNS = tuple(f.name for f in fields(Row))
COUNTED = ("reseller_org_id", "status", "plan")
"""What the counts are kept by: the listing's filters other than the search."""


def _counted(row: Row | None) -> tuple[str, str, str] | None:
    return None if row is None else (row.reseller_org_id, row.status, row.plan)


def _created(_: Row | None, e: Any) -> Row:
    customer = e.organization_name if e.subscription_type == "organization" else e.end_user_email
    return Row(str(e.originator_id), e.reseller_org_id, customer, customer.lower(), e.subscription_type, e.plan,
               e.plan_name, e.billing_cycle, ACTIVE, e.seats, None, 0, 0, events.iso(e.period_start),
               events.iso(e.period_end), events.iso(e.timestamp))


def _renewed(row: Row, e: Any) -> Row:
    return row.with_status(seats=e.seats_after, pending_seats=None, past_due=0,
                           current_period_start=events.iso(e.period_start), current_period_end=events.iso(e.period_end))


CHANGES: dict[str, Callable[[Any, Any], Row | None]] = {
    "SubscriptionCreated": _created,
    "SeatsIncreased": lambda row, e: row.with_status(seats=e.seats_after),
    "SeatDecreaseScheduled": lambda row, e: row.with_status(pending_seats=e.pending_seats),
    "SeatDecreaseWithdrawn": lambda row, e: row.with_status(pending_seats=None),
    "Canceled": lambda row, e: row.with_status(canceled=1),
    "Resumed": lambda row, e: row.with_status(canceled=0),
    "Renewed": _renewed,
    "RenewalPaymentFailed": lambda row, e: row.with_status(past_due=1),
    "Expired": lambda row, e: None,
}


class CustomerTable:
    name = NAME
    streams = frozenset({"Subscription"})

    def create_tables(self, cursor: Cursor) -> None:
        cursor.execute("""CREATE TABLE IF NOT EXISTS customer_table (
            subscription_id TEXT PRIMARY KEY, reseller_org_id TEXT NOT NULL, customer TEXT NOT NULL,
            customer_search TEXT NOT NULL, type TEXT NOT NULL, plan TEXT NOT NULL, plan_name TEXT NOT NULL,
            billing_cycle TEXT NOT NULL, status TEXT NOT NULL, seats INTEGER NOT NULL, pending_seats INTEGER,
            canceled INTEGER NOT NULL, past_due INTEGER NOT NULL, current_period_start TEXT NOT NULL,
            current_period_end TEXT NOT NULL, created_at TEXT NOT NULL)""")
        cursor.execute("""CREATE TABLE IF NOT EXISTS customer_table_counts (
            reseller_org_id TEXT NOT NULL, status TEXT NOT NULL, plan TEXT NOT NULL, subscriptions INTEGER NOT NULL,
            PRIMARY KEY (reseller_org_id, status, plan))""")
        # A customer table kept before the counts existed is counted once, here, under the schema lock. (Asked
        # first, on its own: SQLite would otherwise read the whole table at every start to find it has nothing to do.)
        cursor.execute("SELECT 1 FROM customer_table_counts LIMIT 1")
        if cursor.fetchone() is None:
            cursor.execute(f"INSERT INTO customer_table_counts ({', '.join(COUNTED)}, subscriptions) "
                           f"SELECT {', '.join(COUNTED)}, COUNT(*) FROM customer_table GROUP BY {', '.join(COUNTED)}")

    def create_indexes(self, cursor: Cursor) -> None:
        for column in ("customer_search", "created_at", "current_period_end", "seats", "status", "plan"):
            cursor.execute(f"CREATE INDEX IF NOT EXISTS customer_table_by_{column} "
                           f"ON customer_table (reseller_org_id, {column}, subscription_id)")

    def apply(self, cursor: Cursor, batch: list[Recorded]) -> None:
        mine = [r for r in batch if r.stream_type == "Subscription"]
        if not mine:
            return
        rows = self._load(cursor, {r.stream_key for r in mine})
        counted_before = {key: _counted(row) for key, row in rows.items()}
        for recorded in mine:
            change = CHANGES.get(recorded.type)
            if change is None:
                raise UnhandledEvent(f"the customer table does not know {recorded.type} events")
            key = recorded.stream_key
            if rows.get(key) is None and recorded.type != "SubscriptionCreated":
                raise UnhandledEvent(f"no row for subscription {key}: its creation was never seen")
            rows[key] = change(rows.get(key), recorded.event)
        gone = [(key,) for key, row in rows.items() if row is None]
        kept = [row_values(row) for row in rows.values() if row is not None]
        if gone:
            cursor.executemany("DELETE FROM customer_table WHERE subscription_id = ?", gone)
        if kept:
            assignments = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
            cursor.executemany(f"INSERT INTO customer_table ({', '.join(COLUMNS)}) VALUES "
                               f"({', '.join('?' * len(COLUMNS))}) ON CONFLICT (subscription_id) DO UPDATE SET "
                               f"{assignments}", kept)
        self._count(cursor, counted_before, rows)

    @staticmethod
    def _count(cursor: Cursor, before: dict[str, tuple[str, str, str] | None], rows: dict[str, Row | None]) -> None:
        deltas: Counter[tuple[str, str, str]] = Counter()
        for key, row in rows.items():
            was, now = before.get(key), _counted(row)
            if was != now:
                if was is not None:
                    deltas[was] -= 1
                if now is not None:
                    deltas[now] += 1
        changed = [(*counted, delta) for counted, delta in deltas.items() if delta]
        if changed:
            cursor.executemany(
                f"INSERT INTO customer_table_counts AS c ({', '.join(COUNTED)}, subscriptions) VALUES (?, ?, ?, ?) "
                f"ON CONFLICT ({', '.join(COUNTED)}) DO UPDATE SET "
                f"subscriptions = c.subscriptions + excluded.subscriptions", changed)

    def rows(self, cursor: Cursor) -> Iterable[tuple[Any, ...]]:
        cursor.execute(f"SELECT {', '.join(COLUMNS)} FROM customer_table ORDER BY subscription_id")
        found = [tuple(row) for row in cursor.fetchall()]
        cursor.execute(f"SELECT 'count', {', '.join(COUNTED)}, subscriptions FROM customer_table_counts "
                       f"WHERE subscriptions <> 0 ORDER BY {', '.join(COUNTED)}")
        return found + [tuple(row) for row in cursor.fetchall()]

    @staticmethod
    def _load(cursor: Cursor, keys: set[str]) -> dict[str, Row | None]:
        found = select_by_keys(cursor, f"SELECT {', '.join(COLUMNS)} FROM customer_table WHERE subscription_id IN",
                               keys)
        return {values[0]: Row(*values) for values in found}
