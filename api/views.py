"""From aggregates and previews to the bodies of the HTTP contract."""

from __future__ import annotations

from api.schemas import BillingOut, CardOut, EventOut, LineOut, PreviewOut, ResellerOut, SubscriptionOut
from commands.handlers import Priced
from commands.quotes import QUOTE_LIFETIME
from ledger.reseller import Reseller
from ledger.subscription import Subscription
from projections.log import Recorded


def subscription(sub: Subscription) -> SubscriptionOut:
    return SubscriptionOut(
        id=sub.id, reseller_id=sub.reseller_org_id, type=sub.subscription_type, plan=sub.plan,
        plan_name=sub.plan_name, billing_cycle=sub.billing_cycle, customer=sub.customer,
        end_user_email=sub.end_user_email, display_name=sub.display_name, organization_name=sub.organization_name,
        admin_email=sub.admin_email, customer_account_id=sub.customer_account_id, status=sub.status,
        seats=sub.seats, pending_seats=sub.pending_seats, current_period_start=sub.current_period_start,
        current_period_end=sub.current_period_end, cancel_at_period_end=sub.cancel_at_period_end,
        unit_price_cents=sub.unit_price_cents, currency=sub.currency, created_at=sub.created_at,
        version=sub.version, next_retry_at=sub.next_retry_at, expired_reason=sub.expired_reason,
    )


def preview(priced: Priced) -> PreviewOut:
    bill = priced.bill
    return PreviewOut(
        quote_id=priced.quote_id, kind=priced.kind, currency=bill.currency,  # type: ignore[arg-type]
        lines=[LineOut(**vars(line)) for line in bill.lines], unit_price_cents=bill.unit_price_cents,
        quantity=bill.quantity, subtotal_cents=bill.subtotal_cents, tax_rate_bps=bill.tax_rate_bps,
        tax_cents=bill.tax_cents, total_cents=bill.total_cents, priced_at=priced.priced_at,
        effective_at=priced.effective_at, expires_at=priced.priced_at + QUOTE_LIFETIME,
    )


def event(recorded: Recorded) -> EventOut:
    return EventOut(**recorded.as_record())


def billing(reseller: Reseller, tax_rate_bps: int) -> BillingOut:
    card = reseller.card
    return BillingOut(
        org_id=reseller.org_id, on_file=card is not None, billing_email=reseller.billing_email,
        country=reseller.country, tax_exempt=reseller.tax_exempt,
        tax_rate_bps=tax_rate_bps if card is not None else None,
        card=CardOut(brand=card.brand, last4=card.last4, exp_month=card.exp_month, exp_year=card.exp_year)
        if card else None,
    )


def reseller(reseller: Reseller) -> ResellerOut:
    return ResellerOut(org_id=reseller.org_id, name=reseller.name, enabled=reseller.enabled,
                       tax_exempt=reseller.tax_exempt, billing_info_on_file=reseller.card is not None,
                       version=reseller.version)
