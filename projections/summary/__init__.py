"""The summary cards of the reseller portal, over subscriptions that have not expired: total
customers, active (not canceled), canceled, and total seats (current seats, not pending targets)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from projections.log import Recorded
from projections.runner import UnhandledEvent
from projections.store import Cursor, ViewDatabase, select_by_keys

NAME = "summary"
# Subscription events that change no card: pending targets and failing payments are not counted.
NO_EFFECT = frozenset({"SeatDecreaseScheduled", "SeatDecreaseWithdrawn", "RenewalPaymentFailed"})


@dataclass
class Member:
    reseller_org_id: str
    canceled: int
    seats: int


@dataclass(frozen=True)
class Cards:
    total_customers: int
    active: int
    canceled: int
    total_seats: int


class Summary:
    name = NAME
    streams = frozenset({"Subscription"})

    def create_tables(self, cursor: Cursor) -> None:
        cursor.execute("""CREATE TABLE IF NOT EXISTS summary_members (
            subscription_id TEXT PRIMARY KEY, reseller_org_id TEXT NOT NULL, canceled INTEGER NOT NULL,
            seats INTEGER NOT NULL)""")
        cursor.execute("""CREATE TABLE IF NOT EXISTS summary_cards (
            reseller_org_id TEXT PRIMARY KEY, total_customers BIGINT NOT NULL, active BIGINT NOT NULL,
            canceled BIGINT NOT NULL, total_seats BIGINT NOT NULL)""")

    def create_indexes(self, cursor: Cursor) -> None:
        """None: its queries read by primary key."""

    def apply(self, cursor: Cursor, batch: list[Recorded]) -> None:
        mine = [r for r in batch if r.stream_type == "Subscription" and r.type not in NO_EFFECT]
        if not mine:
            return
        members = self._load(cursor, {r.stream_key for r in mine})
        deltas: dict[str, list[int]] = {}
        for recorded in mine:
            key, e = recorded.stream_key, recorded.event
            before = members.get(key)
            if recorded.type == "SubscriptionCreated":
                after: Member | None = Member(e.reseller_org_id, 0, e.seats)
            elif before is None:
                raise UnhandledEvent(f"no member for subscription {key}: its creation was never seen")
            elif recorded.type in ("SeatsIncreased", "Renewed"):
                after = Member(before.reseller_org_id, before.canceled, e.seats_after)
            elif recorded.type in ("Canceled", "Resumed"):
                after = Member(before.reseller_org_id, int(recorded.type == "Canceled"), before.seats)
            elif recorded.type == "Expired":
                after = None
            else:
                raise UnhandledEvent(f"the summary does not know {recorded.type} events")
            for member, sign in ((before, -1), (after, 1)):
                if member is not None:
                    delta = deltas.setdefault(member.reseller_org_id, [0, 0, 0, 0])
                    for i, value in enumerate((1, 1 - member.canceled, member.canceled, member.seats)):
                        delta[i] += sign * value
            members[key] = after
        gone = [(key,) for key, member in members.items() if member is None]
        kept = [(key, m.reseller_org_id, m.canceled, m.seats) for key, m in members.items() if m is not None]
        if gone:
            cursor.executemany("DELETE FROM summary_members WHERE subscription_id = ?", gone)
        if kept:
            cursor.executemany("INSERT INTO summary_members VALUES (?, ?, ?, ?) ON CONFLICT (subscription_id) "
                               "DO UPDATE SET canceled = excluded.canceled, seats = excluded.seats", kept)
        cursor.executemany(
            "INSERT INTO summary_cards AS c VALUES (?, ?, ?, ?, ?) ON CONFLICT (reseller_org_id) DO UPDATE SET "
            "total_customers = c.total_customers + excluded.total_customers, active = c.active + excluded.active, "
            "canceled = c.canceled + excluded.canceled, total_seats = c.total_seats + excluded.total_seats",
            [(reseller, *delta) for reseller, delta in deltas.items()])

    def rows(self, cursor: Cursor) -> Iterable[tuple[Any, ...]]:
        cursor.execute("SELECT 'card', reseller_org_id, total_customers, active, canceled, total_seats "
                       "FROM summary_cards WHERE total_customers > 0 ORDER BY reseller_org_id")
        cards = [tuple(row) for row in cursor.fetchall()]
        cursor.execute("SELECT 'member', subscription_id, reseller_org_id, canceled, seats FROM summary_members "
                       "ORDER BY subscription_id")
        return cards + [tuple(row) for row in cursor.fetchall()]

    @staticmethod
    def _load(cursor: Cursor, keys: set[str]) -> dict[str, Member | None]:
        found = select_by_keys(cursor, "SELECT subscription_id, reseller_org_id, canceled, seats FROM summary_members "
                                       "WHERE subscription_id IN", keys)
        return {key: Member(reseller, canceled, seats) for key, reseller, canceled, seats in found}


def cards(db: ViewDatabase, reseller_org_id: str) -> Cards:
    with db.snapshot() as cursor:
        cursor.execute("SELECT total_customers, active, canceled, total_seats FROM summary_cards "
                       "WHERE reseller_org_id = ?", (reseller_org_id,))
        row = cursor.fetchone()
    return Cards(*row) if row else Cards(0, 0, 0, 0)
