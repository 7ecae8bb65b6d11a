"""Reconciliation of one period: the ledger's billing documents and refunds against the payment
processor's charges and refunds.

How the two sides pair (docs/finance.md tells it at length):

* Pairs are made by identity, never by time: a document with the charge whose reference (the
  PaymentIntent id) it recorded, a recorded refund with the processor's refund of the same id. The
  charge's metadata names the ledger's invoice, subscription and reseller, for the report.
* The period is on the ledger's clock. A pair belongs to the period of its ledger side (the document's
  issue, the refund's recording). A processor item that the ledger lacks belongs to the period in which
  the ledger's clock read the instant the processor made it (``finance.clocks``): that instant itself
  with the system clock; with the sandbox clock, which only moves when told and may run days ahead of the
  processor's, the sandbox's recorded reading then.
* The ledger dates a document when the change was priced and the processor dates the charge a moment
  later, so the two sides of a pair can fall in different periods. Counterparts are therefore looked for
  beyond the period: the processor is asked for what it made while the ledger's clock read the period
  and ``MARGIN`` either side, and ``reconcile`` needs the ledger's entries of ``ledger_window``, which
  covers whatever the ledger's clock read while the processor made those. Only items of the period are
  reported.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TextIO

from commands.ports import PaymentGateway, ProcessorCharge
from finance.clocks import SAME_CLOCK, ClockMap
from ledger import events

MARGIN = timedelta(hours=1)

CHARGE_WITHOUT_DOCUMENT = "charge_without_document"
DOCUMENT_WITHOUT_CHARGE = "document_without_charge"
AMOUNT_MISMATCH = "amount_mismatch"
CURRENCY_MISMATCH = "currency_mismatch"
REFUND_NOT_RECORDED = "refund_not_recorded"
REFUND_WITHOUT_PROCESSOR_REFUND = "refund_without_processor_refund"
REFUNDED_AMOUNT_MISMATCH = "refunded_amount_mismatch"


class Unreadable(Exception):
    """One side of the books could not be read (``what``); the cause is chained."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass(frozen=True)
class Mismatch:
    """One disagreement; ``at`` is when the item reported happened (ISO 8601 UTC) by the clock of its side
    (the processor's for an item only it has), amounts are in cents."""

    kind: str
    at: str
    detail: str
    invoice_id: str | None = None
    payment_reference: str | None = None
    refund_reference: str | None = None
    ledger_cents: int | None = None
    processor_cents: int | None = None
    ledger_currency: str | None = None
    processor_currency: str | None = None


CSV_COLUMNS = ("kind", "at", "invoice_id", "payment_reference", "refund_reference", "ledger_cents", "processor_cents",
               "ledger_currency", "processor_currency", "detail")


@dataclass(frozen=True)
class Report:
    created_from: datetime
    created_to: datetime
    documents: int
    charges: int
    ledger_refunds: int
    processor_refunds: int
    mismatches: tuple[Mismatch, ...]
    # The processor's items were listed from listed_from to listed_to, by its clock.
    listed_from: datetime
    listed_to: datetime

    @property
    def matches(self) -> bool:
        return not self.mismatches


def ledger_window(created_from: datetime, created_to: datetime,
                  clocks: ClockMap = SAME_CLOCK) -> tuple[datetime, datetime]:
    """The ledger's entries that ``reconcile`` needs for a period are those dated in this window: the
    period and ``MARGIN`` either side, and whatever the ledger's clock read while the processor made the
    items it will be asked for."""
    read_from, read_to = clocks.ledger_window(*clocks.processor_window(created_from - MARGIN, created_to + MARGIN))
    return min(created_from - MARGIN, read_from), max(created_to + MARGIN, read_to)


def reconcile(documents_and_refunds: Iterable[Mapping[str, Any]], gateway: PaymentGateway,
              created_from: datetime, created_to: datetime, clocks: ClockMap = SAME_CLOCK) -> Report:
    """``documents_and_refunds``: the entries of ``ledger_window(created_from, created_to, clocks)`` as
    ``billing_documents.queries.between`` gives them; ``clocks``: how the processor's clock maps onto the
    ledger's. Raises ``Unreadable`` when the processor cannot list its items."""
    documents, refunds = _ledger_side(documents_and_refunds)
    listed_from, listed_to = clocks.processor_window(created_from - MARGIN, created_to + MARGIN)
    try:
        charges = {c.reference: c for c in gateway.list_charges(created_from=listed_from, created_to=listed_to)}
        processor_refunds = {r.reference: r for r in gateway.list_refunds(created_from=listed_from,
                                                                          created_to=listed_to)}
    except Exception as error:
        raise Unreadable(f"the payment processor ({gateway.name})") from error

    def in_period(at: datetime | str) -> bool:
        instant = at if isinstance(at, datetime) else _parse(at)
        return created_from <= instant < created_to

    # A pair belongs to the period of its ledger side; a processor item the ledger lacks, to the period
    # in which the ledger's clock read the instant the processor made it.
    period_documents = [d for d in documents.values() if in_period(d["issued_at"])]
    documented = {d["payment_reference"] for d in period_documents}
    period_charges = [c for c in charges.values() if c.reference in documented
                      or (c.reference not in documents and in_period(clocks.ledger_time(c.created)))]
    period_ledger_refunds = [r for r in refunds.values() if in_period(r["refunded_at"])]
    recorded = {r["refund_reference"] for r in period_ledger_refunds}
    period_processor_refunds = [r for r in processor_refunds.values() if r.reference in recorded
                                or (r.reference not in refunds and in_period(clocks.ledger_time(r.created)))]
    found: list[Mismatch] = []
    for charge in period_charges:
        if charge.reference not in documents:
            found.append(Mismatch(
                CHARGE_WITHOUT_DOCUMENT, at=events.iso(charge.created), invoice_id=charge.metadata.get("invoice_id"),
                payment_reference=charge.reference, processor_cents=charge.amount_cents,
                processor_currency=charge.currency,
                detail="the processor charged this and the ledger has no billing document for it"))
    for document in period_documents:
        if document["payment_reference"] not in charges:
            found.append(Mismatch(
                DOCUMENT_WITHOUT_CHARGE, at=document["issued_at"], invoice_id=document["invoice_id"],
                payment_reference=document["payment_reference"], ledger_cents=document["total_cents"],
                ledger_currency=document["currency"],
                detail="the ledger documents a charge that the processor does not list as succeeded"))
    for reference in sorted(documented & charges.keys()):
        found += _compare(documents[reference], charges[reference])
    for refund in period_processor_refunds:
        ledger_refund = refunds.get(refund.reference)
        if ledger_refund is None:
            found.append(Mismatch(
                REFUND_NOT_RECORDED, at=events.iso(refund.created), invoice_id=refund.metadata.get("invoice_id"),
                payment_reference=refund.charge_reference, refund_reference=refund.reference,
                processor_cents=refund.amount_cents, processor_currency=refund.currency,
                detail="the processor refunded this and the ledger has not recorded it"))
        elif ledger_refund["amount_cents"] != refund.amount_cents:
            found.append(Mismatch(
                REFUNDED_AMOUNT_MISMATCH, at=ledger_refund["refunded_at"], invoice_id=ledger_refund["invoice_id"],
                payment_reference=refund.charge_reference, refund_reference=refund.reference,
                ledger_cents=ledger_refund["amount_cents"], processor_cents=refund.amount_cents,
                ledger_currency=ledger_refund["currency"], processor_currency=refund.currency,
                detail="the ledger recorded another amount for this refund than the processor refunded"))
    for ledger_refund in period_ledger_refunds:
        if ledger_refund["refund_reference"] not in processor_refunds:
            found.append(Mismatch(
                REFUND_WITHOUT_PROCESSOR_REFUND, at=ledger_refund["refunded_at"],
                invoice_id=ledger_refund["invoice_id"], payment_reference=ledger_refund["payment_reference"],
                refund_reference=ledger_refund["refund_reference"], ledger_cents=ledger_refund["amount_cents"],
                ledger_currency=ledger_refund["currency"],
                detail="the ledger recorded a refund that the processor does not list"))
    return Report(created_from, created_to, documents=len(period_documents), charges=len(period_charges),
                  ledger_refunds=len(period_ledger_refunds), processor_refunds=len(period_processor_refunds),
                  mismatches=tuple(sorted(found, key=lambda m: (m.at, m.kind, m.payment_reference or "",
                                                                m.refund_reference or ""))),
                  listed_from=listed_from, listed_to=listed_to)


def write_csv(report: Report, file: TextIO) -> None:
    """One row per mismatch, under a header of ``CSV_COLUMNS``; money in integer cents."""
    writer = csv.writer(file)
    writer.writerow(CSV_COLUMNS)
    for mismatch in report.mismatches:
        writer.writerow(["" if (value := getattr(mismatch, column)) is None else value for column in CSV_COLUMNS])


def _compare(document: Mapping[str, Any], charge: ProcessorCharge) -> list[Mismatch]:
    found = []

    def mismatch(kind: str, ledger: int, processor: int, detail: str) -> Mismatch:
        return Mismatch(kind, at=document["issued_at"], detail=detail, invoice_id=document["invoice_id"],
                        payment_reference=charge.reference, ledger_cents=ledger, processor_cents=processor,
                        ledger_currency=document["currency"], processor_currency=charge.currency)

    if document["total_cents"] != charge.amount_cents:
        found.append(mismatch(AMOUNT_MISMATCH, document["total_cents"], charge.amount_cents,
                              "the document's total is not the amount charged"))
    if document["currency"].upper() != charge.currency.upper():
        found.append(mismatch(CURRENCY_MISMATCH, document["total_cents"], charge.amount_cents,
                              "the document's currency is not the charge's"))
    if document["refunded_cents"] != charge.refunded_cents:
        found.append(mismatch(REFUNDED_AMOUNT_MISMATCH, document["refunded_cents"], charge.refunded_cents,
                              "the ledger and the processor disagree on how much of this charge was refunded"))
    return found


def _ledger_side(entries: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Mapping[str, Any]],
                                                                 dict[str, dict[str, Any]]]:
    """Documents by payment reference and refunds by refund reference (each with its document's payment
    reference and currency), from every entry, including the documents that refund entries carry."""
    documents: dict[str, Mapping[str, Any]] = {}
    refunds: dict[str, dict[str, Any]] = {}
    for entry in entries:
        document = entry if entry["record"] == "document" else entry["document"]
        documents[document["payment_reference"]] = document
        for refund in document["refunds"]:
            refunds[refund["refund_reference"]] = {**refund, "payment_reference": document["payment_reference"],
                                                   "currency": document["currency"]}
    return documents, refunds


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))

