"""Billing documents as CSV for an accounting system.

One row per line of a billing document (``record`` = ``line``) and one per refund (``record`` =
``refund``), in these columns, in this order (the order is part of the format; new columns only ever
go at the end):

    record, document_id, date, reseller_org_id, subscription_id, purpose, line_number, description,
    quantity, unit_amount_cents, amount_cents, period_start, period_end, tax_rate_bps,
    document_subtotal_cents, document_tax_cents, document_total_cents, currency, payment_reference,
    state, refund_reference

Money is integer cents. A line's ``amount_cents`` is before tax (a proration credit is negative); the
document's tax and total are repeated on each of its lines. A refund's ``amount_cents`` is the amount
given back, tax included, as a negative number; its period is the refunded document's. ``date`` is when
the document was issued or the refund made (ISO 8601 UTC); ``state`` is the document's state now.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

COLUMNS = (
    "record", "document_id", "date", "reseller_org_id", "subscription_id", "purpose", "line_number", "description",
    "quantity", "unit_amount_cents", "amount_cents", "period_start", "period_end", "tax_rate_bps",
    "document_subtotal_cents", "document_tax_cents", "document_total_cents", "currency", "payment_reference",
    "state", "refund_reference",
)


def export_billing(documents: Iterable[Mapping[str, Any]], file: TextIO) -> int:
    """Write the entries (as ``billing_documents.queries.between`` gives them) as CSV; returns the rows written."""
    writer = csv.DictWriter(file, fieldnames=COLUMNS)
    writer.writeheader()
    written = 0
    for entry in documents:
        rows = _line_rows(entry) if entry["record"] == "document" else [_refund_row(entry)]
        writer.writerows(rows)
        written += len(rows)
    return written


def _document_columns(document: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "document_id": document["invoice_id"], "reseller_org_id": document["reseller_org_id"],
        "subscription_id": document["subscription_id"], "purpose": document["purpose"],
        "tax_rate_bps": document["tax_rate_bps"], "document_subtotal_cents": document["subtotal_cents"],
        "document_tax_cents": document["tax_cents"], "document_total_cents": document["total_cents"],
        "currency": document["currency"], "payment_reference": document["payment_reference"],
        "state": document["state"], "refund_reference": "",
    }


def _line_rows(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {**_document_columns(document), "record": "line", "date": document["issued_at"], "line_number": number,
         "description": line["description"], "quantity": line["quantity"],
         "unit_amount_cents": line["unit_amount_cents"], "amount_cents": line["amount_cents"],
         "period_start": line["period_start"], "period_end": line["period_end"]}
        for number, line in enumerate(document["lines"], start=1)
    ]


def _refund_row(refund: Mapping[str, Any]) -> dict[str, Any]:
    document = refund["document"]
    return {**_document_columns(document), "record": "refund", "date": refund["refunded_at"], "line_number": "",
            "description": f"Refund ({refund['reason']})", "quantity": 1, "unit_amount_cents": -refund["amount_cents"],
            "amount_cents": -refund["amount_cents"], "period_start": document["period_start"] or "",
            "period_end": document["period_end"] or "", "refund_reference": refund["refund_reference"]}
