"""The HTTP contract's bodies: what comes in (strict) and what goes out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StrictBool, StrictInt, StringConstraints, field_validator

from api.text import refuse_unstorable

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Country = Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z]{2}$")]
OrgId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,100}$")]


class RequestBody(BaseModel):
    """Every request body: no unknown field, and no text that cannot be stored in any field, however
    deep. It is checked here, before each field's own rules, so that a field added later is covered too."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        refuse_unstorable(value)
        return value


class EnableResellerIn(RequestBody):
    org_id: OrgId
    name: Text


class ReenableResellerIn(RequestBody):
    name: Text | None = None


class TaxExemptionIn(RequestBody):
    tax_exempt: StrictBool
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] = ""


class BillingInfoIn(RequestBody):
    payment_method: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
    billing_email: EmailStr
    country: Country


class OrderIn(RequestBody):
    plan: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
    billing_cycle: Literal["monthly", "annual"]
    end_user_email: EmailStr | None = None
    display_name: Text | None = None
    organization_name: Text | None = None
    admin_email: EmailStr | None = None
    seats: StrictInt | None = None


QuoteId = Annotated[str, StringConstraints(max_length=2000)]


class CreateSubscriptionIn(OrderIn):
    quote_id: QuoteId | None = None


class SeatsPreviewIn(RequestBody):
    seats: StrictInt


class SeatsIn(SeatsPreviewIn):
    quote_id: QuoteId | None = None


class SubscriptionOut(BaseModel):
    id: UUID
    reseller_id: str
    type: str
    plan: str
    plan_name: str
    billing_cycle: str
    customer: str
    end_user_email: str | None
    display_name: str | None
    organization_name: str | None
    admin_email: str | None
    customer_account_id: UUID | None
    status: str
    seats: int
    pending_seats: int | None
    current_period_start: datetime
    current_period_end: datetime
    cancel_at_period_end: bool
    unit_price_cents: int
    currency: str
    created_at: datetime
    version: int
    next_retry_at: datetime | None = Field(description="When a failing renewal is next tried (past_due)")
    expired_reason: str | None = Field(description="canceled or payment_failed, once expired")


class LineOut(BaseModel):
    description: str
    quantity: int
    unit_amount_cents: int
    amount_cents: int
    period_start: datetime
    period_end: datetime
    proration: bool


class PreviewOut(BaseModel):
    quote_id: str
    kind: Literal["create", "increase", "decrease", "withdraw"]
    currency: str
    lines: list[LineOut]
    unit_price_cents: int
    quantity: int
    subtotal_cents: int
    tax_rate_bps: int
    tax_cents: int
    total_cents: int
    priced_at: datetime
    effective_at: datetime = Field(description="When the change takes effect (a decrease: the next period)")
    expires_at: datetime


class EventOut(BaseModel):
    """One event, in the format of `ledger export-events` (docs/event-export.md)."""

    position: int = Field(description="Its place in the whole event log")
    stream_id: UUID
    stream_type: str
    version: int
    type: str
    occurred_at: datetime
    actor: str | None
    data: dict[str, Any]


class EventsOut(BaseModel):
    items: list[EventOut]


class PlanOut(BaseModel):
    id: str
    name: str
    kind: str
    monthly_cents: int
    annual_cents: int
    min_seats: int
    max_seats: int


class CatalogOut(BaseModel):
    currency: str
    plans: list[PlanOut]
    tax_rates_bps: dict[str, int]


class CardOut(BaseModel):
    brand: str
    last4: str
    exp_month: int
    exp_year: int


class BillingOut(BaseModel):
    org_id: str
    on_file: bool
    billing_email: str | None
    country: str | None
    tax_exempt: bool
    tax_rate_bps: int | None
    card: CardOut | None


class ResellerOut(BaseModel):
    org_id: str
    name: str
    enabled: bool
    tax_exempt: bool
    billing_info_on_file: bool
    version: int


class BusinessIdOut(BaseModel):
    id: str
    name: str


class BusinessIdsOut(BaseModel):
    items: list[BusinessIdOut]


class CustomerRowOut(BaseModel):
    subscription_id: UUID
    customer: str
    type: str
    plan: str
    plan_name: str
    billing_cycle: str
    status: str
    seats: int
    pending_seats: int | None
    current_period_start: datetime
    current_period_end: datetime


class CustomerTableOut(BaseModel):
    items: list[CustomerRowOut]
    next_cursor: str | None
    total: int


class SummaryOut(BaseModel):
    total_customers: int
    active: int
    canceled: int
    total_seats: int
