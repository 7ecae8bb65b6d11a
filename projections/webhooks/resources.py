"""The resource a webhook carries, as the API shows it (``SubscriptionOut``, ``InvoiceOut``), at the version
the event left it: rendered from the aggregate's own history, so a retry or a resend sends the same body.
tests/api/test_webhook_endpoints.py checks these against the API's answers."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from commands.application import LedgerApplication
from ledger import events
from ledger.invoice import PAID, PARTIALLY_REFUNDED, REFUNDED
from ledger.subscription import Subscription


def _iso(value: Any) -> str | None:
    return events.iso(value) if value is not None else None


def subscription(app: LedgerApplication, stream_id: UUID, version: int) -> dict[str, Any]:
    sub: Subscription = app.repository.get(stream_id, version=version)
    return {
        "id": str(sub.id), "reseller_id": sub.reseller_org_id, "type": sub.subscription_type, "plan": sub.plan,
        "plan_name": sub.plan_name, "billing_cycle": sub.billing_cycle, "customer": sub.customer,
        "end_user_email": sub.end_user_email, "display_name": sub.display_name,
        "organization_name": sub.organization_name, "admin_email": sub.admin_email,
        "customer_account_id": str(sub.customer_account_id) if sub.customer_account_id else None,
        "status": sub.status, "seats": sub.seats, "pending_seats": sub.pending_seats,
        "current_period_start": _iso(sub.current_period_start), "current_period_end": _iso(sub.current_period_end),
        "cancel_at_period_end": sub.cancel_at_period_end, "unit_price_cents": sub.unit_price_cents,
        "currency": sub.currency, "created_at": _iso(sub.created_at), "version": sub.version,
        "next_retry_at": _iso(sub.next_retry_at), "expired_reason": sub.expired_reason,
    }


def invoice(app: LedgerApplication, stream_id: UUID, version: int) -> dict[str, Any]:
    history = list(app.events.get(stream_id, lte=version))
    issued, refunds = history[0], history[1:]
    bill = issued.bill
    starts = [line.period_start for line in bill.lines]
    ends = [line.period_end for line in bill.lines]
    refunded = sum(refund.amount_cents for refund in refunds)
    state = PAID if refunded == 0 else REFUNDED if refunded == bill.total_cents else PARTIALLY_REFUNDED
    return {
        "id": str(issued.originator_id), "reseller_id": issued.reseller_org_id,
        "subscription_id": str(issued.subscription_id), "purpose": issued.purpose,
        "issued_at": events.iso(issued.timestamp), "period_start": _iso(min(starts)) if starts else None,
        "period_end": _iso(max(ends)) if ends else None, "currency": bill.currency,
        "lines": [events.plain(line) for line in bill.lines], "subtotal_cents": bill.subtotal_cents,
        "tax_rate_bps": bill.tax_rate_bps, "tax_cents": bill.tax_cents, "total_cents": bill.total_cents,
        "payment_reference": issued.payment_reference, "state": state, "refunded_cents": refunded,
        "refunds": [{"refund_reference": r.refund_reference, "amount_cents": r.amount_cents, "reason": r.reason,
                     "refunded_at": events.iso(r.timestamp)} for r in refunds],
    }


def render(app: LedgerApplication, stream_type: str, stream_id: UUID, version: int) -> dict[str, Any]:
    if stream_type == "Subscription":
        return subscription(app, stream_id, version)
    if stream_type == "Invoice":
        return invoice(app, stream_id, version)
    raise ValueError(f"webhooks carry no {stream_type} resources")
