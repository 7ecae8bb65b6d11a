"""Building blocks of the billing-document, webhook and finance tests: the billing view over an
in-memory ledger, documents planted straight in the event store, and Stripe-shaped signed events."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import stripe

from ledger import pricing
from ledger.invoice import SUBSCRIPTION_CREATED, Invoice
from ledger.payments import Payment
from ledger.subscription import Order
from projections import billing_documents
from projections.billing_documents import BillingDocuments, queries
from projections.deployment import ReadSide, ViewLocation
from tests.support import InMemoryLedger

EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
PRO_ORDER = Order("pro", "monthly", seats=3, organization_name="Initech", admin_email="admin@initech.example")
WEBHOOK_SECRET = "whsec_test_billing"


def billing_view(world: InMemoryLedger, folder: Path) -> ReadSide:
    return ReadSide(world.app, ViewLocation(folder=folder), [BillingDocuments()])


def all_entries(read_side: ReadSide) -> list[dict[str, Any]]:
    read_side.catch_up()
    return queries.between(read_side.db(billing_documents.NAME), *EVER)


def documents_by_id(read_side: ReadSide) -> dict[str, dict[str, Any]]:
    return {e["invoice_id"]: e for e in all_entries(read_side) if e["record"] == "document"}


def card_of(world: InMemoryLedger, org_id: str = "org_1") -> tuple[str, str]:
    card = world.ledger.enabled_reseller(org_id).require_billing_info()
    return card.processor_customer, card.processor_payment_method


def charge_outside_the_ledger(world: InMemoryLedger, amount_cents: int, *, currency: str = "USD",
                              org_id: str = "org_1", invoice_id: UUID | None = None) -> str:
    """A successful charge that the ledger never documented (as if it gave up before recording it)."""
    customer, method = card_of(world, org_id)
    return world.gateway.charge(customer=customer, payment_method=method, amount_cents=amount_cents,
                                currency=currency, idempotency_key=f"test-{uuid4()}",
                                metadata={"reseller_org_id": org_id, "subscription_id": str(uuid4()),
                                          "invoice_id": str(invoice_id or uuid4()), "purpose": SUBSCRIPTION_CREATED})


def issue_document(world: InMemoryLedger, payment_reference: str, total_before_tax_cents: int, *,
                   org_id: str = "org_1", currency: str = "USD", at: datetime | None = None,
                   invoice_id: UUID | None = None) -> Invoice:
    """An invoice saved straight into the event store, for whatever payment reference is given."""
    at = at or world.clock.now()
    bill = pricing.full_period(plan_name="Lens Pro", billing_cycle="monthly", unit_price_cents=total_before_tax_cents,
                               seats=1, period_start=at, period_end=at + timedelta(days=30), currency=currency,
                               tax_rate_bps=0)
    invoice = Invoice.issue_paid(Payment(invoice_id or uuid4(), payment_reference), reseller_org_id=org_id,
                                 subscription_id=uuid4(), purpose=SUBSCRIPTION_CREATED, bill=bill, at=at,
                                 actor="test")
    world.app.save(invoice)
    return invoice


def record_refund(world: InMemoryLedger, invoice_id: UUID, amount_cents: int, reference: str,
                  reason: str = "change_not_recorded") -> None:
    invoice = world.app.repository.get(invoice_id)
    invoice.record_refund(amount_cents=amount_cents, refund_reference=reference, reason=reason,
                          at=world.clock.now(), actor="test")
    world.app.save(invoice)


def invoice_ids(world: InMemoryLedger, subscription_id: UUID) -> list[UUID]:
    return [e.payment.invoice_id for e in world.ledger.history(subscription_id) if getattr(e, "payment", None)]


# --- Stripe's webhooks ------------------------------------------------------------------------------


def stripe_event(event_type: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
    """A Stripe event as its webhook delivers it (https://docs.stripe.com/api/events/object)."""
    return json.dumps({
        "id": event_id or f"evt_{uuid4().hex[:24]}", "object": "event", "api_version": "2024-06-20",
        "created": int(time.time()), "livemode": False, "pending_webhooks": 1, "type": event_type,
        "request": {"id": None, "idempotency_key": None}, "data": {"object": obj},
    }).encode()


def refund_object(refund_id: str, payment_intent: str, amount_cents: int, *, status: str = "succeeded",
                  metadata: dict[str, str] | None = None) -> dict[str, Any]:
    return {"id": refund_id, "object": "refund", "amount": amount_cents, "charge": f"ch_{payment_intent}",
            "currency": "usd", "payment_intent": payment_intent, "status": status, "reason": "requested_by_customer",
            "metadata": metadata or {}, "created": int(time.time())}


def charge_object(payment_intent: str, amount_cents: int, *, refunded_cents: int = 0,
                  refunds: list[dict[str, Any]] | None = None,
                  metadata: dict[str, str] | None = None) -> dict[str, Any]:
    charge = {"id": f"ch_{payment_intent}", "object": "charge", "amount": amount_cents,
              "amount_refunded": refunded_cents, "currency": "usd", "payment_intent": payment_intent,
              "status": "succeeded", "refunded": refunded_cents == amount_cents, "metadata": metadata or {}}
    if refunds is not None:  # API versions before 2022-11-15 list a charge's refunds on it
        charge["refunds"] = {"object": "list", "data": refunds, "has_more": False}
    return charge


def payment_intent_object(payment_intent: str, amount_cents: int, metadata: dict[str, str]) -> dict[str, Any]:
    return {"id": payment_intent, "object": "payment_intent", "amount": amount_cents,
            "amount_received": amount_cents, "currency": "usd", "status": "succeeded", "metadata": metadata}


def sign(payload: bytes, *, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(payload.decode(), secret, timestamp=at)
