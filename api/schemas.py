"""The HTTP contract's bodies: what comes in (strict) and what goes out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
)

from api.text import refuse_unstorable

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
# ISO 3166-1 alpha-2: the codes officially assigned. Which of them carry tax: GET /v1/plans, `tax_rates_bps`.
ISO_3166_ALPHA2 = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO
JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR
MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO
RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV
TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW""".split())


def _iso_country(code: str) -> str:
    if code not in ISO_3166_ALPHA2:
        raise ValueError("not an ISO 3166-1 alpha-2 country code (such as US, DE or GB); the countries that carry "
                         "tax, and their rates, are in GET /v1/plans (tax_rates_bps); any other is taxed at 0 %")
    return code


Country = Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z]{2}$"),
                    AfterValidator(_iso_country)]
OrgId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,100}$")]


# Examples for the OpenAPI document (api/docs.finish shows each on the bodies): one German reseller, org_acme
# (19 % tax), and one Lens Pro subscription of 5 seats, monthly, for Initech.
EXAMPLE_SUBSCRIPTION_ID = "0b7a3f7e-2f4c-4d36-9d1e-6a3f8f0c9b21"
EXAMPLE_LINE: dict[str, Any] = {"description": "Lens Pro, monthly, 5 seats", "quantity": 5, "unit_amount_cents": 3000,
                                "amount_cents": 15000, "period_start": "2026-11-29T10:00:00Z",
                                "period_end": "2026-12-29T10:00:00Z", "proration": False}
EXAMPLE_SUBSCRIPTION: dict[str, Any] = {
    "id": EXAMPLE_SUBSCRIPTION_ID, "reseller_id": "org_acme", "type": "organization", "plan": "pro",
    "plan_name": "Lens Pro", "billing_cycle": "monthly", "customer": "Initech", "end_user_email": None,
    "display_name": None, "organization_name": "Initech", "admin_email": "admin@initech.example",
    "customer_account_id": "583f1914-c371-5307-8ee1-f97ddd40a74f", "status": "active", "seats": 5,
    "pending_seats": None, "current_period_start": "2026-11-29T10:00:00Z", "current_period_end": "2026-12-29T10:00:00Z",
    "cancel_at_period_end": False, "unit_price_cents": 3000, "currency": "USD", "created_at": "2026-11-29T10:00:00Z",
    "version": 1, "next_retry_at": None, "expired_reason": None,
}
EXAMPLE_EVENT: dict[str, Any] = {
    "position": 42, "stream_id": EXAMPLE_SUBSCRIPTION_ID, "stream_type": "Subscription", "version": 3,
    "type": "Canceled", "schema_version": 1, "occurred_at": "2026-12-10T14:30:00Z", "actor": "user-42",
    "data": {"effective_at": "2026-12-29T10:00:00Z", "pending_seats": None},
}
EXAMPLE_RESELLER: dict[str, Any] = {"org_id": "org_acme", "name": "Acme Reselling GmbH", "enabled": True,
                                    "tax_exempt": False, "billing_info_on_file": True, "version": 3}


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
    model_config = ConfigDict(json_schema_extra={"examples": [{"org_id": "org_acme", "name": "Acme Reselling GmbH"}]})


    org_id: OrgId
    name: Text


class ReenableResellerIn(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Acme Reselling GmbH"}]})


    name: Text | None = None


class TaxExemptionIn(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"tax_exempt": True,
        "reason": "VAT exemption certificate DE-2026-0042"}]})


    tax_exempt: StrictBool
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] = ""


class BillingInfoIn(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"payment_method": "pm_card_visa",
        "billing_email": "billing@acme.example", "country": "DE"}]})


    payment_method: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
    billing_email: EmailStr
    country: Country


class OrderIn(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"plan": "pro", "billing_cycle": "monthly", "organization_name": "Initech",
            "admin_email": "admin@initech.example", "seats": 5},
        {"plan": "plus", "billing_cycle": "annual", "end_user_email": "ada@customer.example",
            "display_name": "Ada Lovelace"}]})


    plan: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
    billing_cycle: Literal["monthly", "annual"]
    end_user_email: EmailStr | None = None
    display_name: Text | None = None
    organization_name: Text | None = None
    admin_email: EmailStr | None = None
    seats: StrictInt | None = None


QuoteId = Annotated[str, StringConstraints(max_length=2000)]


class CreateSubscriptionIn(OrderIn):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"plan": "pro", "billing_cycle": "monthly", "organization_name": "Initech",
            "admin_email": "admin@initech.example", "seats": 5,
         "quote_id": "qt_WyJvcmdfYWNtZSIsImNyZWF0ZTo0ZjNhIiwwLDE3OTYyODcwOTEsMTc4NTBd."
                     "rQzlmYRi1Q4qFdj3Q3gb3VuWhztSdtvP"},
        {"plan": "plus", "billing_cycle": "annual", "end_user_email": "ada@customer.example",
            "display_name": "Ada Lovelace"}]})


    quote_id: QuoteId | None = None


class SeatsPreviewIn(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"seats": 8}]})


    seats: StrictInt


class SeatsIn(SeatsPreviewIn):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"seats": 8,
         "quote_id": "qt_WyJvcmdfYWNtZSIsInNlYXRzOjBiN2EzZjdlOjgiLDEsMTc5NjI4NzA5MSwxMDcxMF0."
                     "BIftrXfdIXXjooEniY8UW3KpAB17tSZI"},
        {"seats": 3}]})


    quote_id: QuoteId | None = None


class SubscriptionOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_SUBSCRIPTION]})


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
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_LINE]})


    description: str
    quantity: int
    unit_amount_cents: int
    amount_cents: int
    period_start: datetime
    period_end: datetime
    proration: bool


class PreviewOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "quote_id": "qt_WyJvcmdfYWNtZSIsImNyZWF0ZTo0ZjNhIiwwLDE3OTYyODcwOTEsMTc4NTBd.rQzlmYRi1Q4qFdj3Q3gb3VuWhztSdtvP",
        "kind": "create", "currency": "USD", "lines": [EXAMPLE_LINE], "unit_price_cents": 3000, "quantity": 5,
        "subtotal_cents": 15000, "tax_rate_bps": 1900, "tax_cents": 2850, "total_cents": 17850,
        "priced_at": "2026-11-29T10:00:00Z", "effective_at": "2026-11-29T10:00:00Z",
        "expires_at": "2026-11-29T10:15:00Z"}]})


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
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_EVENT]})



    position: int = Field(description="Its place in the whole event log")
    stream_id: UUID
    stream_type: str
    version: int
    type: str
    schema_version: int = Field(description="The version of the type's schema that data follows (older "
                                            "records are upcast when read; docs/event-export.md)")
    occurred_at: datetime
    actor: str = Field(description="Who caused it: a token subject, support:<login>, system:… or processor:…")
    data: dict[str, Any]


class EventsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EXAMPLE_EVENT]}]})


    items: list[EventOut]


class PlanOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"id": "pro", "name": "Lens Pro",
        "kind": "organization", "monthly_cents": 3000, "annual_cents": 30000, "min_seats": 1, "max_seats": 10000}]})


    id: str
    name: str
    kind: str
    monthly_cents: int
    annual_cents: int
    min_seats: int
    max_seats: int


class CatalogOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"currency": "USD", "plans": [
        {"id": "plus", "name": "Lens Plus", "kind": "single_user", "monthly_cents": 3000, "annual_cents": 30000,
         "min_seats": 1, "max_seats": 1},
        {"id": "pro", "name": "Lens Pro", "kind": "organization", "monthly_cents": 3000, "annual_cents": 30000,
         "min_seats": 1, "max_seats": 10000}],
        "tax_rates_bps": {"US": 0, "DE": 1900, "GB": 2000, "FR": 2000}}]})


    currency: str
    plans: list[PlanOut]
    tax_rates_bps: dict[str, int]


class CardOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"brand": "visa", "last4": "4242", "exp_month": 12,
        "exp_year": 2030}]})


    brand: str
    last4: str
    exp_month: int
    exp_year: int


class BillingOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "org_id": "org_acme", "on_file": True, "billing_email": "billing@acme.example", "country": "DE",
        "tax_exempt": False, "tax_rate_bps": 1900,
        "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}}]})


    org_id: str
    on_file: bool
    billing_email: str | None
    country: str | None
    tax_exempt: bool
    tax_rate_bps: int | None
    card: CardOut | None


class ResellerOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_RESELLER]})


    org_id: str
    name: str
    enabled: bool
    tax_exempt: bool
    billing_info_on_file: bool
    version: int


class BusinessIdOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"id": "org_acme", "name": "Acme Reselling GmbH"}]})


    id: str
    name: str


class PaymentConfigOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"processor": "stripe", "stripe_publishable_key": "pk_test_51Hx0000000000000000000000"},
        {"processor": "simulated", "stripe_publishable_key": None}]})

    processor: Literal["simulated", "stripe"]
    stripe_publishable_key: str | None


class BusinessIdsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [{"id": "org_acme",
        "name": "Acme Reselling GmbH"}]}]})


    items: list[BusinessIdOut]


EXAMPLE_ROW: dict[str, Any] = {"subscription_id": EXAMPLE_SUBSCRIPTION_ID, "customer": "Initech",
    "type": "organization", "plan": "pro",
    "plan_name": "Lens Pro", "billing_cycle": "monthly", "status": "active", "seats": 5, "pending_seats": None,
    "current_period_start": "2026-11-29T10:00:00Z", "current_period_end": "2026-12-29T10:00:00Z"}


class CustomerRowOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_ROW]})


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
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EXAMPLE_ROW],
        "next_cursor": "eyJrIjpbIkluaXRlY2giXX0", "total": 12}]})


    items: list[CustomerRowOut]
    next_cursor: str | None
    total: int


class SummaryOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"total_customers": 12, "active": 10, "canceled": 2,
        "total_seats": 57}]})


    total_customers: int
    active: int
    canceled: int
    total_seats: int
