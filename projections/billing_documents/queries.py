"""Reading billing documents: a reseller's, paged newest first; one by id; and a whole period for finance."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from ledger.errors import ValidationFailed
from projections.billing_documents import DOCUMENT_COLUMNS, REFUND_COLUMNS
from projections.cursors import CursorSigner
from projections.store import Cursor, ViewDatabase, select_by_keys

DOCUMENT, REFUND = "document", "refund"
MAX_LIMIT = 200


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None
    total: int


def page(db: ViewDatabase, signer: CursorSigner, *, reseller_org_id: str, subscription_id: str | UUID | None = None,
         issued_from: datetime | None = None, issued_to: datetime | None = None, limit: int = 50,
         cursor: str | None = None) -> Page:
    """A reseller's billing documents issued in [issued_from, issued_to), newest first."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed("limit", f"limit is from 1 to {MAX_LIMIT}")
    where, params = ["reseller_org_id = ?"], [reseller_org_id]
    subscription = _uuid_text(subscription_id, "subscription_id") if subscription_id is not None else None
    if subscription is not None:
        where.append("subscription_id = ?")
        params.append(subscription)
    start, end = _bounds(issued_from, issued_to)
    if start is not None:
        where.append("issued_at >= ?")
        params.append(start)
    if end is not None:
        where.append("issued_at < ?")
        params.append(end)
    query = {"reseller": reseller_org_id, "subscription": subscription, "from": start, "to": end}
    page_where, page_params = list(where), list(params)
    if cursor:
        last = signer.read(cursor, query)
        page_where.append("(issued_at, invoice_id) < (?, ?)")
        page_params += last
    with db.snapshot() as read:
        read.execute(f"SELECT COUNT(*) FROM billing_documents WHERE {' AND '.join(where)}", params)
        total = int(read.fetchone()[0])
        read.execute(f"SELECT {', '.join(DOCUMENT_COLUMNS)} FROM billing_documents WHERE {' AND '.join(page_where)} "
                     "ORDER BY issued_at DESC, invoice_id DESC LIMIT ?", [*page_params, limit + 1])
        found = [dict(zip(DOCUMENT_COLUMNS, row)) for row in read.fetchall()]
        more = len(found) > limit
        found = found[:limit]
        items = _with_refunds(read, found)
    next_cursor = signer.issue(query, [found[-1]["issued_at"], found[-1]["invoice_id"]]) if more else None
    return Page(items, next_cursor, total)


def one(db: ViewDatabase, reseller_org_id: str, invoice_id: str | UUID) -> dict[str, Any] | None:
    """A billing document of this reseller; None for another reseller's (its existence stays hidden)."""
    try:
        key = _uuid_text(invoice_id, "invoice_id")
    except ValidationFailed:
        return None
    with db.snapshot() as read:
        read.execute(f"SELECT {', '.join(DOCUMENT_COLUMNS)} FROM billing_documents "
                     "WHERE invoice_id = ? AND reseller_org_id = ?", (key, reseller_org_id))
        row = read.fetchone()
        if row is None:
            return None
        return _with_refunds(read, [dict(zip(DOCUMENT_COLUMNS, row))])[0]


def between(db: ViewDatabase, issued_from: datetime, issued_to: datetime) -> list[dict[str, Any]]:
    """Finance's view of [issued_from, issued_to), oldest first: each document issued in it
    (``record: "document"``, as ``one`` gives it) and each refund made in it (``record: "refund"``, with
    the refunded document under ``document``), whenever that document was issued."""
    start, end = _bounds(issued_from, issued_to)
    with db.snapshot() as read:
        read.execute(f"SELECT {', '.join(DOCUMENT_COLUMNS)} FROM billing_documents "
                     "WHERE issued_at >= ? AND issued_at < ? ORDER BY issued_at, invoice_id", (start, end))
        documents = _with_refunds(read, [dict(zip(DOCUMENT_COLUMNS, row)) for row in read.fetchall()])
        read.execute(f"SELECT {', '.join(REFUND_COLUMNS)} FROM billing_refunds "
                     "WHERE refunded_at >= ? AND refunded_at < ? ORDER BY refunded_at, refund_reference", (start, end))
        refunds = [dict(zip(REFUND_COLUMNS, row)) for row in read.fetchall()]
        known = {d["invoice_id"]: d for d in documents}
        missing = {r["invoice_id"] for r in refunds} - known.keys()
        earlier = select_by_keys(read, f"SELECT {', '.join(DOCUMENT_COLUMNS)} FROM billing_documents "
                                       "WHERE invoice_id IN", missing)
        known.update((d["invoice_id"], d) for d in _with_refunds(read, [dict(zip(DOCUMENT_COLUMNS, row))
                                                                         for row in earlier]))
    entries = [{"record": DOCUMENT, **d} for d in documents]
    entries += [{"record": REFUND, **r, "document": known[r["invoice_id"]]} for r in refunds]
    return sorted(entries, key=lambda e: (e["issued_at"] if e["record"] == DOCUMENT else e["refunded_at"],
                                          e["record"], e.get("refund_reference") or e["invoice_id"]))


def invoice_paid_by(db: ViewDatabase, payment_reference: str) -> UUID | None:
    """The invoice that documents this payment (a PaymentIntent id), if the view has seen it."""
    with db.snapshot() as read:
        read.execute("SELECT invoice_id FROM billing_documents WHERE payment_reference = ?", (payment_reference,))
        row = read.fetchone()
    return UUID(row[0]) if row else None


def _with_refunds(read: Cursor, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = select_by_keys(read, f"SELECT {', '.join(REFUND_COLUMNS)} FROM billing_refunds WHERE invoice_id IN",
                           {d["invoice_id"] for d in documents})
    refunds: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(found, key=lambda r: (r[REFUND_COLUMNS.index("refunded_at")], r[0])):
        refund = dict(zip(REFUND_COLUMNS, row))
        refunds.setdefault(refund["invoice_id"], []).append(refund)
    return [{**d, "lines": json.loads(d["lines"]), "refunds": refunds.get(d["invoice_id"], [])} for d in documents]


def _uuid_text(value: str | UUID, field: str) -> str:
    try:
        return str(value if isinstance(value, UUID) else UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise ValidationFailed(field, f"{field} is not a UUID") from None


def _bounds(issued_from: datetime | None, issued_to: datetime | None) -> tuple[str | None, str | None]:
    """The period as the view's text instants. Documents carry whole seconds, so a bound with a fraction
    moves up to the next second: t >= from and t < to hold the same for every whole-second t."""
    start = _instant_text(issued_from, "from") if issued_from is not None else None
    end = _instant_text(issued_to, "to") if issued_to is not None else None
    if start is not None and end is not None and start >= end:
        raise ValidationFailed("to", "to must be after from")
    return start, end


def _instant_text(at: datetime, field: str) -> str:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValidationFailed(field, f"{field} needs a time zone (for example 2026-01-01T00:00:00Z)")
    try:
        whole = at.astimezone(UTC).replace(microsecond=0)
        if at.microsecond:
            whole += timedelta(seconds=1)
    except OverflowError:
        raise ValidationFailed(field, f"{field} is out of range") from None
    # isoformat keeps four-digit years, so the texts compare as the instants do.
    return whole.replace(tzinfo=None).isoformat() + "Z"
