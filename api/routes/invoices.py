"""Billing documents of a reseller (charges, prorations, renewals and their refunds), read from the
billing_documents projection."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from api.as_of import AsOf
from api.deps import After, ResellerAdmin, ServicesDep
from api.routes.portal import READ_YOUR_WRITES_SECONDS
from api.schemas import EXAMPLE_LINE, EXAMPLE_SUBSCRIPTION_ID, LineOut
from commands.errors import NotFound, ProjectionLagging
from ledger.errors import ValidationFailed
from projections import as_of as as_of_view
from projections import billing_documents
from projections.as_of import queries as as_of_queries
from projections.billing_documents import queries
from service.bootstrap import Services

router = APIRouter(prefix="/v1/resellers/{org_id}/invoices", tags=["invoices"])

EXAMPLE_REFUND: dict[str, Any] = {"refund_reference": "re_3QxY2bLkdIwHu7ix1a2b3c4d", "amount_cents": 5950,
                                  "reason": "requested_by_customer", "refunded_at": "2026-12-02T09:15:00Z"}
EXAMPLE_INVOICE: dict[str, Any] = {
    "id": "b67c36fa-7d85-5b07-b9f1-160a8af12f94", "reseller_id": "org_acme", "subscription_id": EXAMPLE_SUBSCRIPTION_ID,
    "purpose": "subscription_created", "issued_at": "2026-11-29T10:00:00Z", "period_start": "2026-11-29T10:00:00Z",
    "period_end": "2026-12-29T10:00:00Z", "currency": "USD", "lines": [EXAMPLE_LINE], "subtotal_cents": 15000,
    "tax_rate_bps": 1900, "tax_cents": 2850, "total_cents": 17850, "payment_reference": "pi_3QxY2bLkdIwHu7ix0T2c9hJd",
    "state": "partially_refunded", "refunded_cents": 5950, "refunds": [EXAMPLE_REFUND],
}


class InvoiceRefundOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_REFUND]})
    refund_reference: str = Field(description="The payment processor's refund id")
    amount_cents: int
    reason: str
    refunded_at: datetime


class InvoiceOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_INVOICE]})
    id: UUID
    reseller_id: str
    subscription_id: UUID
    purpose: str = Field(description="subscription_created, seats_increased or renewal")
    issued_at: datetime
    period_start: datetime | None
    period_end: datetime | None
    currency: str
    lines: list[LineOut]
    subtotal_cents: int
    tax_rate_bps: int
    tax_cents: int
    total_cents: int
    payment_reference: str = Field(description="The payment processor's id of the charge (a PaymentIntent)")
    state: str = Field(description="paid, partially_refunded or refunded")
    refunded_cents: int
    refunds: list[InvoiceRefundOut]


class InvoicesOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EXAMPLE_INVOICE], "next_cursor": None,
        "total": 1}]})
    items: list[InvoiceOut]
    next_cursor: str | None
    total: int


def invoice(document: dict[str, Any]) -> InvoiceOut:
    return InvoiceOut(
        id=document["invoice_id"], reseller_id=document["reseller_org_id"],
        subscription_id=document["subscription_id"], purpose=document["purpose"], issued_at=document["issued_at"],
        period_start=document["period_start"], period_end=document["period_end"], currency=document["currency"],
        lines=[LineOut(**line) for line in document["lines"]], subtotal_cents=document["subtotal_cents"],
        tax_rate_bps=document["tax_rate_bps"], tax_cents=document["tax_cents"], total_cents=document["total_cents"],
        payment_reference=document["payment_reference"], state=document["state"],
        refunded_cents=document["refunded_cents"],
        refunds=[InvoiceRefundOut(**refund) for refund in document["refunds"]],
    )


def instant(text: str | None, field: str) -> datetime | None:
    """An ISO 8601 instant with its time zone (2026-11-29T10:00:00Z), or a validation error naming the field."""
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        at = None
    if at is None or at.utcoffset() is None:
        raise ValidationFailed(field, f"{field} must be an ISO 8601 instant with a time zone, "
                                      f"such as 2026-11-29T10:00:00Z")
    return at


def _caught_up(services: Services, after: int | None) -> None:
    name = billing_documents.NAME
    if after and not services.read_side.wait_for(after, [name], READ_YOUR_WRITES_SECONDS):
        raise ProjectionLagging(f"the billing documents have not reached position {after} yet; retry shortly")


@router.get("", response_model=InvoicesOut,
            summary="Billing documents: charges, prorations and renewals with their lines, tax, payment "
                    "reference and refunds, newest first")
def list_invoices(
    access: ResellerAdmin,
    services: ServicesDep,
    after: After,
    subscription_id: Annotated[str | None, Query(max_length=100, description="only this subscription's")] = None,
    issued_from: Annotated[str | None, Query(alias="from", max_length=100,
                                             description="issued at or after this instant (ISO 8601)")] = None,
    issued_to: Annotated[str | None, Query(alias="to", max_length=100,
                                           description="issued before this instant (ISO 8601)")] = None,
    limit: Annotated[int, Query(description="1 to 200")] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    as_of: AsOf = None,
) -> InvoicesOut:
    """The reseller's billing documents, newest first: one per charge (`subscription_created`, `seats_increased`,
    `renewal`), with its lines, tax, total, the processor's payment reference and any refunds. Filters:
    `subscription_id`, `from` and `to` (ISO 8601 instants with a time zone, else 422). Paged by `limit` (1 to
    200) and `cursor` (the previous page's `next_cursor`). `?after=` waits (up to 5 s) for your last change (503
    `projection_lagging`); `?as_of=` lists what was issued by then, with the refunds recorded by then (in the
    future: 422)."""
    start, end = instant(issued_from, "from"), instant(issued_to, "to")
    if as_of is not None:  # as they were then: issued by as_of, with the refunds recorded by then
        if after and not services.read_side.wait_for(after, [as_of_view.NAME], READ_YOUR_WRITES_SECONDS):
            raise ProjectionLagging(f"the as-of view has not reached position {after} yet; retry shortly")
        found = as_of_queries.documents(services.read_side.db(as_of_view.NAME), services.cursors,
                                        reseller_org_id=access.org_id, as_of=as_of,
                                        subscription_id=subscription_id or None, issued_from=start, issued_to=end,
                                        limit=limit, cursor=cursor or None)
        return InvoicesOut(items=[invoice(d) for d in found.items], next_cursor=found.next_cursor, total=found.total)
    _caught_up(services, after)
    found = queries.page(services.read_side.db(billing_documents.NAME), services.cursors,
                         reseller_org_id=access.org_id, subscription_id=subscription_id or None, issued_from=start,
                         issued_to=end, limit=limit, cursor=cursor or None)
    return InvoicesOut(items=[invoice(d) for d in found.items], next_cursor=found.next_cursor, total=found.total)


@router.get("/{invoice_id}", response_model=InvoiceOut, summary="One billing document, with its refunds")
def show_invoice(invoice_id: str, access: ResellerAdmin, services: ServicesDep, after: After) -> InvoiceOut:
    """One billing document with its lines and refunds. `?after=` waits (up to 5 s) for your last change (503
    `projection_lagging`). 404 `not_found` for an unknown id or another reseller's."""
    _caught_up(services, after)
    document = queries.one(services.read_side.db(billing_documents.NAME), access.org_id, invoice_id)
    if document is None:
        raise NotFound(f"no invoice {invoice_id}")
    return invoice(document)
