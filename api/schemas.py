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
    schema_version: int = Field(description="The version of the type's schema that data follows (older "
                                            "records are upcast when read; docs/event-export.md)")
    occurred_at: datetime
    actor: str = Field(description="Who caused it: a token subject, support:<login>, system:… or processor:…")
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
