from __future__ import annotations

from fastapi import APIRouter, Response

from api import views
from api.deps import Idempotency, LedgerDep, ResellerAdmin
from api.docs import problems
from api.routes.common import answer
from api.schemas import BillingInfoIn, BillingOut

router = APIRouter(prefix="/v1/resellers/{org_id}", tags=["billing"])


@router.put("/billing", response_model=BillingOut,
            responses=problems("payment_declined", "payment_unavailable"),
            summary="Put billing information on file: the card is saved with the payment processor")
def put_billing(body: BillingInfoIn, access: ResellerAdmin, ledger: LedgerDep, idempotency: Idempotency,
                response: Response) -> BillingOut:
    """Puts the reseller's billing information on file: `payment_method` (the payment processor's payment method, such
    as `pm_card_visa`) is saved as the card with the processor; `billing_email`; and `country` (ISO 3166-1
    alpha-2), which sets the tax rate (`GET /v1/plans`, `tax_rates_bps`). Answers what is on file: the card's
    brand, last4 and expiry, never its number. Needed before any subscription can be priced or bought. Accepts
    `Idempotency-Key`. Problems: 402 `payment_declined` (the card is refused; nothing changes), 503
    `payment_unavailable`, 409 `idempotency_conflict`, 422 `validation_error` (such as an unknown country)."""
    outcome = ledger.set_billing_info(access.org_id, payment_method=body.payment_method,
                                      billing_email=str(body.billing_email), country=body.country,
                                      actor=access.user.user_id, idempotency=idempotency)
    return answer(response, outcome, lambda reseller: views.billing(reseller, ledger.tax_rate_of(reseller)))


@router.get("/billing", response_model=BillingOut, summary="Billing information on file (never card data)")
def get_billing(access: ResellerAdmin, ledger: LedgerDep) -> BillingOut:
    """The billing information on file: billing email, country, tax rate, tax exemption and the card's brand, last4 and
    expiry. Before any is put, `on_file` is false and `card` null."""
    return views.billing(access.reseller, ledger.tax_rate_of(access.reseller))
