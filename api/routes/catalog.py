from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentUser, LedgerDep, ServicesDep
from api.schemas import BusinessIdOut, BusinessIdsOut, CatalogOut, PaymentConfigOut, PlanOut

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.get("/plans", response_model=CatalogOut, summary="The plan catalog: prices per seat and the tax table")
def plans(ledger: LedgerDep) -> CatalogOut:
    """The plans a reseller can sell: prices per seat in integer cents for a monthly and an annual cycle, the seat
    limits of each, and the tax rates by billing country in basis points (1900 = 19 %; a country not listed is
    taxed at 0 %). No token is needed."""
    catalog = ledger.catalog
    return CatalogOut(currency=catalog.currency, plans=[PlanOut(**vars(plan)) for plan in catalog.plans.values()],
                      tax_rates_bps=dict(catalog.tax_rates_bps))


@router.get("/payment-config", response_model=PaymentConfigOut,
            summary="How a portal collects a card: the payment processor, and Stripe's publishable key")
def payment_config(services: ServicesDep) -> PaymentConfigOut:
    """What a portal needs to put a card on file with `PUT /v1/resellers/{org_id}/billing`. `processor` is
    `simulated` (the embedded default: send one of Stripe's test payment methods, such as `pm_card_visa`) or
    `stripe`, where `stripe_publishable_key` (`LEDGER_STRIPE_PUBLISHABLE_KEY`, null when not set) lets the portal
    collect the card with Stripe.js Elements and send only the PaymentMethod id (`pm_…`) it creates: card data
    never reaches this service. No token is needed; nothing secret is in the answer."""
    settings = services.settings
    stripe = settings.payments == "stripe"
    return PaymentConfigOut(processor=settings.payments, stripe_publishable_key=settings.stripe_publishable_key
                            if stripe else None)


@router.get("/me/business-ids", response_model=BusinessIdsOut,
            summary="The caller's organizations that are enabled resellers and that the caller administers")
def business_ids(user: CurrentUser, ledger: LedgerDep) -> BusinessIdsOut:
    """The portal's reseller selector: the organizations of the token's `orgs` where the caller's role is `admin` and
    that are enabled resellers. Organizations where the caller is only a member, or that are not (or no longer)
    enabled, are left out. 401 `unauthenticated` without a valid token."""
    items = []
    for org_id in sorted(user.org_roles):
        reseller = ledger.find_reseller(org_id) if user.is_admin_of(org_id) else None
        if reseller is not None and reseller.enabled:
            items.append(BusinessIdOut(id=org_id, name=reseller.name))
    return BusinessIdsOut(items=items)
