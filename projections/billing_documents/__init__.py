"""Billing documents for finance and the reseller portal: one row per invoice (what was charged, with
its lines and tax) and one row per refund made against it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

from ledger import events
from ledger.invoice import PAID, PARTIALLY_REFUNDED, REFUNDED
from ledger.pricing import Bill
from projections.log import Recorded
from projections.runner import UnhandledEvent
from projections.store import Cursor, row_values, select_by_keys

NAME = "billing_documents"
ISSUED, REFUNDED_EVENT = "InvoiceIssued", "InvoiceRefunded"


@dataclass(frozen=True)
class Document:
    invoice_id: str
    reseller_org_id: str
    subscription_id: str
    purpose: str
    issued_at: str
    period_start: str | None
    period_end: str | None
    lines: str
    subtotal_cents: int
    tax_rate_bps: int
    tax_cents: int
    total_cents: int
    currency: str
    payment_reference: str
    state: str
    refunded_cents: int

    def refunded(self, amount_cents: int) -> Document:
        refunded_cents = self.refunded_cents + amount_cents
        return replace(self, refunded_cents=refunded_cents, state=state_of(self.total_cents, refunded_cents))


@dataclass(frozen=True)
class Refund:
    refund_reference: str
    invoice_id: str
    amount_cents: int
    reason: str
    refunded_at: str


DOCUMENT_COLUMNS = tuple(f.name for f in fields(Document))
REFUND_COLUMNS = tuple(f.name for f in fields(Refund))


def state_of(total_cents: int, refunded_cents: int) -> str:
    """As ``Invoice.state`` says it."""
    if refunded_cents == 0:
        return PAID
    return REFUNDED if refunded_cents == total_cents else PARTIALLY_REFUNDED


def lines_json(bill: Bill) -> str:
    return json.dumps([events.plain(line) for line in bill.lines], separators=(",", ":"))


def _issued(e: Any) -> Document:
    bill: Bill = e.bill
    starts = [line.period_start for line in bill.lines]
    ends = [line.period_end for line in bill.lines]
    return Document(
        invoice_id=str(e.originator_id), reseller_org_id=e.reseller_org_id, subscription_id=str(e.subscription_id),
        purpose=e.purpose, issued_at=events.iso(e.timestamp),
        period_start=events.iso(min(starts)) if starts else None, period_end=events.iso(max(ends)) if ends else None,
        lines=lines_json(bill), subtotal_cents=bill.subtotal_cents, tax_rate_bps=bill.tax_rate_bps,
        tax_cents=bill.tax_cents, total_cents=bill.total_cents, currency=bill.currency,
        payment_reference=e.payment_reference, state=PAID, refunded_cents=0,
    )


class BillingDocuments:
    name = NAME
    streams = frozenset({"Invoice"})

    def create_tables(self, cursor: Cursor) -> None:
        cursor.execute("""CREATE TABLE IF NOT EXISTS billing_documents (
            invoice_id TEXT PRIMARY KEY, reseller_org_id TEXT NOT NULL, subscription_id TEXT NOT NULL,
            purpose TEXT NOT NULL, issued_at TEXT NOT NULL, period_start TEXT, period_end TEXT, lines TEXT NOT NULL,
            subtotal_cents BIGINT NOT NULL, tax_rate_bps INTEGER NOT NULL, tax_cents BIGINT NOT NULL,
            total_cents BIGINT NOT NULL, currency TEXT NOT NULL, payment_reference TEXT NOT NULL,
            state TEXT NOT NULL, refunded_cents BIGINT NOT NULL)""")
        cursor.execute("""CREATE TABLE IF NOT EXISTS billing_refunds (
            refund_reference TEXT PRIMARY KEY, invoice_id TEXT NOT NULL, amount_cents BIGINT NOT NULL,
            reason TEXT NOT NULL, refunded_at TEXT NOT NULL)""")

    def create_indexes(self, cursor: Cursor) -> None:
        # The portal pages a reseller's documents newest first (optionally of one subscription); finance
        # reads a period; webhooks find a document by its payment.
        cursor.execute("CREATE INDEX IF NOT EXISTS billing_documents_by_reseller "
                       "ON billing_documents (reseller_org_id, issued_at, invoice_id)")
        cursor.execute("CREATE INDEX IF NOT EXISTS billing_documents_by_subscription "
                       "ON billing_documents (reseller_org_id, subscription_id, issued_at, invoice_id)")
        cursor.execute("CREATE INDEX IF NOT EXISTS billing_documents_by_issued_at "
                       "ON billing_documents (issued_at, invoice_id)")
        cursor.execute("CREATE INDEX IF NOT EXISTS billing_documents_by_payment "
                       "ON billing_documents (payment_reference)")
        cursor.execute("CREATE INDEX IF NOT EXISTS billing_refunds_by_invoice ON billing_refunds (invoice_id)")
        cursor.execute("CREATE INDEX IF NOT EXISTS billing_refunds_by_refunded_at "
                       "ON billing_refunds (refunded_at, refund_reference)")

    def apply(self, cursor: Cursor, batch: list[Recorded]) -> None:
        mine = [r for r in batch if r.stream_type == "Invoice"]
        if not mine:
            return
        documents = self._load(cursor, {r.stream_key for r in mine})
        refunds: list[Refund] = []
        for recorded in mine:
            key, e = recorded.stream_key, recorded.event
            if recorded.type == ISSUED:
                if key in documents:
                    raise UnhandledEvent(f"invoice {key} was issued twice")
                documents[key] = _issued(e)
            elif recorded.type == REFUNDED_EVENT:
                document = documents.get(key)
                if document is None:
                    raise UnhandledEvent(f"no billing document for invoice {key}: its issue was never seen")
                documents[key] = document.refunded(e.amount_cents)
                refunds.append(Refund(e.refund_reference, key, e.amount_cents, e.reason, events.iso(e.timestamp)))
            else:
                raise UnhandledEvent(f"the billing documents do not know {recorded.type} events")
        assignments = "refunded_cents = excluded.refunded_cents, state = excluded.state"
        cursor.executemany(f"INSERT INTO billing_documents ({', '.join(DOCUMENT_COLUMNS)}) VALUES "
                           f"({', '.join('?' * len(DOCUMENT_COLUMNS))}) ON CONFLICT (invoice_id) DO UPDATE SET "
                           f"{assignments}", [row_values(d) for d in documents.values()])
        if refunds:
            # A refund reference recorded twice is a ledger fault: the unique key stops the view at it.
            cursor.executemany(f"INSERT INTO billing_refunds ({', '.join(REFUND_COLUMNS)}) VALUES "
                               f"({', '.join('?' * len(REFUND_COLUMNS))})", [row_values(r) for r in refunds])

    def rows(self, cursor: Cursor) -> Iterable[tuple[Any, ...]]:
        cursor.execute(f"SELECT 'document', {', '.join(DOCUMENT_COLUMNS)} FROM billing_documents "
                       "ORDER BY invoice_id")
        documents = [tuple(row) for row in cursor.fetchall()]
        cursor.execute(f"SELECT 'refund', {', '.join(REFUND_COLUMNS)} FROM billing_refunds ORDER BY refund_reference")
        return documents + [tuple(row) for row in cursor.fetchall()]

    @staticmethod
    def _load(cursor: Cursor, keys: set[str]) -> dict[str, Document]:
        found = select_by_keys(cursor, f"SELECT {', '.join(DOCUMENT_COLUMNS)} FROM billing_documents "
                                       "WHERE invoice_id IN", keys)
        return {values[0]: Document(*values) for values in found}
