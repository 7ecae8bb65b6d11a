from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentUser, LedgerDep
from api.docs import AUTHENTICATED
from api.schemas import BusinessIdOut, BusinessIdsOut, CatalogOut, PlanOut

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.get("/plans", response_model=CatalogOut, summary="The plan catalog: prices per seat and the tax table")
def plans(ledger: LedgerDep) -> CatalogOut:
    catalog = ledger.catalog
    return CatalogOut(currency=catalog.currency, plans=[PlanOut(**vars(plan)) for plan in catalog.plans.values()],
                      tax_rates_bps=dict(catalog.tax_rates_bps))


@router.get("/me/business-ids", response_model=BusinessIdsOut, responses=AUTHENTICATED,
            summary="The caller's organizations that are enabled resellers and that the caller administers")
def business_ids(user: CurrentUser, ledger: LedgerDep) -> BusinessIdsOut:
    items = []
    for org_id in sorted(user.org_roles):
        reseller = ledger.find_reseller(org_id) if user.is_admin_of(org_id) else None
        if reseller is not None and reseller.enabled:
            items.append(BusinessIdOut(id=org_id, name=reseller.name))
    return BusinessIdsOut(items=items)
