"""Reading the portal as it was at an instant T: the versions that hold at T (``valid_from <= T <
valid_to``), with the live views' filters, sort and keyset pagination."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.errors import ValidationFailed
from projections.as_of import CARDS, micros
from projections.billing_documents import DOCUMENT_COLUMNS, REFUND_COLUMNS
from projections.billing_documents import queries as live_documents
from projections.cursors import CursorSigner
from projections.customer_table import queries as live_table
from projections.store import Cursor, ViewDatabase, select_by_keys
from projections.summary import Cards

HOLDS = "valid_from <= ? AND valid_to > ?"


def cards(db: ViewDatabase, reseller_org_id: str, as_of: datetime) -> Cards:
    with db.snapshot() as read:
        return _cards(read, reseller_org_id, micros(as_of))


def _cards(read: Cursor, reseller_org_id: str, at: int) -> Cards:
    read.execute(f"SELECT {', '.join(CARDS)} FROM as_of_cards WHERE reseller_org_id = ? AND valid_from <= ? "
                 "ORDER BY valid_from DESC LIMIT 1", (reseller_org_id, at))
    row = read.fetchone()
    return Cards(*row) if row else Cards(0, 0, 0, 0)


SMALL_ANSWER = 2_000
"""A page whose rows at T number at most this is gathered through a narrow index and sorted, rather than
found by walking the sort's index, which holds every version of every instant."""


def page(db: ViewDatabase, signer: CursorSigner, *, reseller_org_id: str, as_of: datetime,
         status: str | None = None, plan: str | None = None, q: str | None = None, sort: str = "customer",
         limit: int = 50, cursor: str | None = None, small_answer: int = SMALL_ANSWER) -> live_table.Page:
    """The customer table as it was at ``as_of``: the rows of subscriptions that had not expired then."""
    asked = live_table.listing(reseller_org_id=reseller_org_id, status=status, plan=plan, q=q, sort=sort,
                               limit=limit)
    at = micros(as_of)
    query = {**asked.query, "as_of": at}
    where, params = _holding(asked.where, asked.params, at)
    page_where, page_params = where, params
    total: int | None = None
    if cursor:
        last_value, last_id, total = signer.read(cursor, query)
        page_where, page_params = _holding(*asked.after(last_value, last_id), at)
    with db.snapshot() as read:
        listed = _cards(read, reseller_org_id, at).total_customers  # the rows at T, without a filter
        # The narrowest way to the rows at T that match: through the interval's indexes when there are few
        # rows at T (early in the history) or for a search (they carry the names); else the filter's index.
        narrow: str | None = None  # an unfiltered page of many rows needs none: it walks the sort's index
        if q or listed <= small_answer:
            narrow = _interval_index(db, read, reseller_org_id, at)
        elif status or plan:
            narrow = "sorted_by_status" if status else "sorted_by_plan"
        if total is None:
            if not (status or plan or q):
                total = listed
            else:
                read.execute(f"SELECT COUNT(*) FROM as_of_subscriptions{_hint(db, narrow)} "
                             f"WHERE {' AND '.join(where)}", params)
                total = int(read.fetchone()[0])
        found: list[Any] = []
        if total:
            # A large answer: walk the sort's index, keeping the versions that hold at T and match (the index
            # carries the interval and the filters); the page fills quickly. A small one: gather, then sort.
            by = narrow if narrow and total <= small_answer else f"sorted_by_{asked.column}"
            read.execute(f"SELECT {', '.join(live_table.OUT)}, {asked.column} FROM as_of_subscriptions"
                         f"{_hint(db, by)} WHERE {' AND '.join(page_where)} ORDER BY {asked.column} "
                         f"{asked.order}, subscription_id {asked.order} LIMIT ?", [*page_params, limit + 1])
            found = read.fetchall()
    more = len(found) > limit
    found = found[:limit]
    items = [dict(zip(live_table.OUT, row[:-1])) for row in found]
    next_cursor = signer.issue(query, [found[-1][-1], found[-1][0], total]) if more else None
    return live_table.Page(items, next_cursor, total)


def _holding(where: list[str], params: list[Any], at: int) -> tuple[list[str], list[Any]]:
    """The terms with the interval's checked right after the reseller's: integer comparisons in the index,
    before any search of the names."""
    return [where[0], HOLDS, *where[1:]], [params[0], at, at, *params[1:]]


def _interval_index(db: ViewDatabase, read: Cursor, reseller_org_id: str, at: int) -> str:
    """Of the versions that hold at T, those begun by T are few early in the reseller's history and those
    not ended by T few late in it: the index of the fewer, taking the middle of the history as the turn.
    (PostgreSQL weighs the two with its statistics: it is not told.)"""
    if db.dialect != "sqlite":
        return "begun"
    ends = []
    for order in ("ASC", "DESC"):
        read.execute(f"SELECT valid_from FROM as_of_cards WHERE reseller_org_id = ? ORDER BY valid_from {order} "
                     "LIMIT 1", (reseller_org_id,))
        row = read.fetchone()
        ends.append(row[0] if row else at)
    return "unended" if at > (ends[0] + ends[1]) // 2 else "begun"


def _hint(db: ViewDatabase, index: str) -> str:
    """SQLite, without statistics, picks its index by the query's shape, not by the data: name it. (PostgreSQL
    plans with its statistics.)"""
    return f" INDEXED BY as_of_subscriptions_{index}" if db.dialect == "sqlite" else ""


def every_row(db: ViewDatabase, reseller_org_id: str, as_of: datetime) -> list[dict[str, Any]]:
    """The whole customer table at ``as_of``, by customer (for exports)."""
    at = micros(as_of)
    with db.snapshot() as read:
        read.execute(f"SELECT {', '.join(live_table.OUT)} FROM as_of_subscriptions WHERE reseller_org_id = ? "
                     f"AND {HOLDS} ORDER BY customer_search, subscription_id", (reseller_org_id, at, at))
        return [dict(zip(live_table.OUT, row)) for row in read.fetchall()]


def documents(db: ViewDatabase, signer: CursorSigner, *, reseller_org_id: str, as_of: datetime,
              subscription_id: str | UUID | None = None, issued_from: datetime | None = None,
              issued_to: datetime | None = None, limit: int = 50, cursor: str | None = None) -> live_documents.Page:
    """A reseller's billing documents as they were at ``as_of`` (those issued by then, with the refunds
    recorded by then), issued in [issued_from, issued_to), newest first."""
    if not 1 <= limit <= live_documents.MAX_LIMIT:
        raise ValidationFailed("limit", f"limit is from 1 to {live_documents.MAX_LIMIT}")
    at = micros(as_of)
    where, params = ["reseller_org_id = ?", HOLDS], [reseller_org_id, at, at]
    subscription = (live_documents._uuid_text(subscription_id, "subscription_id")
                    if subscription_id is not None else None)
    if subscription is not None:
        where.append("subscription_id = ?")
        params.append(subscription)
    start, end = live_documents._bounds(issued_from, issued_to)
    if start is not None:
        where.append("issued_at >= ?")
        params.append(start)
    if end is not None:
        where.append("issued_at < ?")
        params.append(end)
    query = {"reseller": reseller_org_id, "as_of": at, "subscription": subscription, "from": start, "to": end}
    page_where, page_params = list(where), list(params)
    if cursor:
        last = signer.read(cursor, query)
        page_where.append("(issued_at, invoice_id) < (?, ?)")
        page_params += last
    with db.snapshot() as read:
        read.execute(f"SELECT COUNT(*) FROM as_of_invoices WHERE {' AND '.join(where)}", params)
        total = int(read.fetchone()[0])
        read.execute(f"SELECT {', '.join(DOCUMENT_COLUMNS)} FROM as_of_invoices WHERE {' AND '.join(page_where)} "
                     "ORDER BY issued_at DESC, invoice_id DESC LIMIT ?", [*page_params, limit + 1])
        found = [dict(zip(DOCUMENT_COLUMNS, row)) for row in read.fetchall()]
        more = len(found) > limit
        found = found[:limit]
        items = _with_refunds(read, found, at)
    next_cursor = signer.issue(query, [found[-1]["issued_at"], found[-1]["invoice_id"]]) if more else None
    return live_documents.Page(items, next_cursor, total)


def _with_refunds(read: Cursor, documents: list[dict[str, Any]], at: int) -> list[dict[str, Any]]:
    found = select_by_keys(read, f"SELECT {', '.join(REFUND_COLUMNS)}, recorded_from FROM as_of_refunds "
                                 "WHERE invoice_id IN", {d["invoice_id"] for d in documents})
    refunds: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(found, key=lambda r: (r[REFUND_COLUMNS.index("refunded_at")], r[0])):
        if row[-1] <= at:
            refund = dict(zip(REFUND_COLUMNS, row[:-1]))
            refunds.setdefault(refund["invoice_id"], []).append(refund)
    return [{**d, "lines": json.loads(d["lines"]), "refunds": refunds.get(d["invoice_id"], [])} for d in documents]
