"""Reading the customer table: filters, sort, keyset pagination and the total."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.errors import ValidationFailed
from projections.cursors import CursorSigner
from projections.store import Cursor, ViewDatabase

SORTABLE = {"customer": "customer_search", "created_at": "created_at", "current_period_end": "current_period_end",
            "current_period_start": "current_period_start", "seats": "seats", "status": "status", "plan": "plan"}
STATUSES = ("active", "pending", "canceled", "past_due")
OUT = ("subscription_id", "customer", "type", "plan", "plan_name", "billing_cycle", "status", "seats",
       "pending_seats", "current_period_start", "current_period_end")


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None
    total: int


@dataclass(frozen=True)
class Listing:
    """A validated request for the table: the sort's column and direction, the filters as SQL terms, and the
    query a cursor is bound to."""
    column: str
    descending: bool
    where: list[str]
    params: list[Any]
    query: dict[str, Any]

    @property
    def order(self) -> str:
        return "DESC" if self.descending else "ASC"

    def after(self, last_value: Any, last_id: str) -> tuple[list[str], list[Any]]:
        """The terms and parameters of the page that follows the row (last_value, last_id)."""
        return ([*self.where, f"({self.column}, subscription_id) {'<' if self.descending else '>'} (?, ?)"],
                [*self.params, last_value, last_id])


def listing(*, reseller_org_id: str, status: str | None, plan: str | None, q: str | None, sort: str,
            limit: int) -> Listing:
    column = SORTABLE.get(sort.removeprefix("-"))
    if column is None:
        raise ValidationFailed("sort", f"sort by one of {', '.join(SORTABLE)} (prefix - for descending)")
    if status is not None and status not in STATUSES:
        raise ValidationFailed("status", f"status is one of {', '.join(STATUSES)}")
    if not 1 <= limit <= 200:
        raise ValidationFailed("limit", "limit is from 1 to 200")
    where, params = ["reseller_org_id = ?"], [reseller_org_id]
    if status:
        where.append("status = ?")
        params.append(status)
    if plan:
        where.append("plan = ?")
        params.append(plan)
    if q:
        where.append("customer_search LIKE ? ESCAPE '\\'")
        params.append("%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    query = {"reseller": reseller_org_id, "status": status, "plan": plan, "q": q, "sort": sort}
    return Listing(column, sort.startswith("-"), where, params, query)


def _total(read: Cursor, asked: Listing) -> int:
    """The listing's total: from the view's counts, unless a search narrows it (its rows are then counted)."""
    if asked.query["q"]:
        read.execute(f"SELECT COUNT(*) FROM customer_table WHERE {' AND '.join(asked.where)}", asked.params)
    else:
        read.execute(f"SELECT COALESCE(SUM(subscriptions), 0) FROM customer_table_counts "
                     f"WHERE {' AND '.join(asked.where)}", asked.params)
    return int(read.fetchone()[0])


def page(db: ViewDatabase, signer: CursorSigner, *, reseller_org_id: str, status: str | None = None,
         plan: str | None = None, q: str | None = None, sort: str = "customer", limit: int = 50,
         cursor: str | None = None) -> Page:
    asked = listing(reseller_org_id=reseller_org_id, status=status, plan=plan, q=q, sort=sort, limit=limit)
    column, order, where, params = asked.column, asked.order, asked.where, asked.params
    page_where, page_params = list(where), list(params)
    total: int | None = None
    if cursor:
        # The total is counted for the first page and carried by the cursor: the listing's own total.
        last_value, last_id, total = signer.read(cursor, asked.query)
        page_where, page_params = asked.after(last_value, last_id)
    with db.snapshot() as read:
        if total is None:
            total = _total(read, asked)
        read.execute(f"SELECT {', '.join(OUT)}, {column} FROM customer_table WHERE {' AND '.join(page_where)} "
                     f"ORDER BY {column} {order}, subscription_id {order} LIMIT ?", [*page_params, limit + 1])
        found = read.fetchall()
    more = len(found) > limit
    found = found[:limit]
    items = [dict(zip(OUT, row[:-1])) for row in found]
    next_cursor = signer.issue(asked.query, [found[-1][-1], found[-1][0], total]) if more else None
    return Page(items, next_cursor, total)
