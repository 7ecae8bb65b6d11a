"""Reconciliation time for 100,000 billing documents: the documents of a period read from the
billing-documents view, the simulated processor's charges and refunds listed, and the two compared.

    python bench/reconcile.py [--backend sqlite|postgres|both] [--quick]
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from uuid import uuid4

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the project, not bench/ (bench/commands.py would shadow it)

from bench import common
from finance.reconcile import MARGIN, reconcile
from ledger import pricing
from ledger.invoice import RENEWAL, Invoice
from ledger.payments import Payment
from projections import billing_documents
from projections.billing_documents import queries
from service.bootstrap import Services

DOCUMENTS, QUICK_DOCUMENTS = 100_000, 2_000


def populate(services: Services, count: int) -> tuple[datetime, datetime]:
    """``count`` charges made at the simulated processor, each documented by an invoice in the ledger
    (a few hundred invoices per transaction). Returns the period they fall in."""
    card = services.ledger.enabled_reseller(common.ORG).require_billing_info()
    start = services.clock.now()
    for first in range(0, count, common.SAVE_BATCH):
        invoices = []
        for i in range(first, min(first + common.SAVE_BATCH, count)):
            at = services.clock.now()
            bill = pricing.full_period(plan_name="Lens Pro", billing_cycle="monthly", unit_price_cents=3000,
                                       seats=1 + i % 9, period_start=at, period_end=at + timedelta(days=30),
                                       currency="USD", tax_rate_bps=1900)
            invoice_id, subscription_id = uuid4(), uuid4()
            reference = services.gateway.charge(
                customer=card.processor_customer, payment_method=card.processor_payment_method,
                amount_cents=bill.total_cents, currency=bill.currency, idempotency_key=f"bench-{invoice_id}",
                metadata={"reseller_org_id": common.ORG, "subscription_id": str(subscription_id),
                          "invoice_id": str(invoice_id), "purpose": RENEWAL})
            invoices.append(Invoice.issue_paid(Payment(invoice_id, reference), reseller_org_id=common.ORG,
                                               subscription_id=subscription_id, purpose=RENEWAL, bill=bill, at=at,
                                               actor=common.ACTOR))
        services.app.save(*invoices)
    return start, services.clock.now() + timedelta(seconds=1)


def reconciliation(backend: str, count: int) -> None:
    with common.deployment(backend) as services:
        started = time.perf_counter()
        period_from, period_to = populate(services, count)
        common.show(common.rate("charge and document", backend, "simulated processor", count,
                                time.perf_counter() - started))
        services.read_side.followers[billing_documents.NAME].catch_up()
        started = time.perf_counter()
        entries = queries.between(services.read_side.db(billing_documents.NAME), period_from - MARGIN,
                                  period_to + MARGIN)
        read = time.perf_counter() - started
        report = reconcile(entries, services.gateway, period_from, period_to)
        seconds = time.perf_counter() - started
        if not report.matches:
            raise AssertionError(f"the books should match: {report.mismatches[:3]}")
        common.show(common.rate("reconcile a period", backend, f"{count} documents, books match", count, seconds,
                                "documents/s"))
        common.note(f"of which {read:.2f} s reading the billing documents, {seconds - read:.2f} s listing the "
                    f"processor's charges and comparing")


def main() -> int:
    options = common.options(__doc__ or "")
    count = QUICK_DOCUMENTS if options.quick else DOCUMENTS
    common.header(f"reconciliation of {count} billing documents{' (quick sizes)' if options.quick else ''}")
    for backend in options.backends:
        reconciliation(backend, count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
