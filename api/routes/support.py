from __future__ import annotations

from fastapi import APIRouter, Response, status

from api import views
from api.deps import Idempotency, LedgerDep, SupportUser
from api.docs import problems
from api.routes.common import answer
from api.schemas import EnableResellerIn, ReenableResellerIn, ResellerOut, TaxExemptionIn
from commands.errors import NotFound

router = APIRouter(prefix="/v1/support/resellers", tags=["support"])


@router.post("", response_model=ResellerOut, status_code=status.HTTP_201_CREATED,
             summary="Enable an organization as a reseller (201 when new, 200 when it already was one)")
def enable_new(body: EnableResellerIn, user: SupportUser, ledger: LedgerDep, idempotency: Idempotency,
               response: Response) -> ResellerOut:
    """Support role. Enables the organization `org_id` as a reseller named `name`: 201 when it is new; 200 when it
    already was one (enabled again if it was disabled, renamed if the name differs). Its administrators can then
    put billing information on file and sell. Accepts `Idempotency-Key`. Problems: 401 `unauthenticated`, 403
    `forbidden` (no support role), 409 `idempotency_conflict`, 422 `validation_error`."""
    outcome = ledger.enable_reseller(body.org_id, name=body.name, actor=user.user_id, idempotency=idempotency)
    if not outcome.created:
        response.status_code = status.HTTP_200_OK
    return answer(response, outcome, views.reseller)


@router.get("/{org_id}", response_model=ResellerOut, responses=problems("not_found"))
def show(org_id: str, user: SupportUser, ledger: LedgerDep) -> ResellerOut:
    """Support role. A reseller as the ledger holds it, enabled or disabled, with its tax exemption and whether billing
    information is on file. 404 `not_found` if the organization has never been a reseller; 403 `forbidden`
    without the support role."""
    reseller = ledger.find_reseller(org_id)
    if reseller is None:
        raise NotFound(f"{org_id} has never been a reseller")
    return views.reseller(reseller)


@router.post("/{org_id}/disable", response_model=ResellerOut, summary="Disable a reseller",
             responses=problems("not_found", "invalid_state"))
def disable(org_id: str, user: SupportUser, ledger: LedgerDep, idempotency: Idempotency,
            response: Response) -> ResellerOut:
    """Support role. Disables a reseller: its administrators get 403 `forbidden` on the reseller routes until it is
    enabled again. Accepts `Idempotency-Key`. Problems: 404 `not_found` (never a reseller), 409 `invalid_state`
    (already disabled), 409 `idempotency_conflict`."""
    return answer(response, ledger.disable_reseller(org_id, actor=user.user_id, idempotency=idempotency),
                  views.reseller)


@router.post("/{org_id}/enable", response_model=ResellerOut, responses=problems("not_found"),
             summary="Enable a disabled reseller again (optionally under a new name)")
def enable(org_id: str, user: SupportUser, ledger: LedgerDep, idempotency: Idempotency, response: Response,
           body: ReenableResellerIn | None = None) -> ResellerOut:
    """Support role. Enables a disabled reseller again; with a body `{"name": ...}` it is renamed too (the body is
    optional). Enabling an enabled reseller under its own name changes nothing. Accepts `Idempotency-Key`.
    Problems: 404 `not_found` when the organization has never been a reseller (enable it with `POST
    /v1/support/resellers` and a name), 409 `idempotency_conflict`, 422 `validation_error`."""
    name = body.name if body else None
    return answer(response, ledger.enable_reseller(org_id, name=name, actor=user.user_id, idempotency=idempotency),
                  views.reseller)


@router.put("/{org_id}/tax-exemption", response_model=ResellerOut, responses=problems("not_found", "invalid_state"),
            summary="Mark a reseller tax-exempt (with a reason, such as a certificate number) or not")
def tax_exemption(org_id: str, body: TaxExemptionIn, user: SupportUser, ledger: LedgerDep,
                  idempotency: Idempotency, response: Response) -> ResellerOut:
    """Support role. `tax_exempt: true` with a `reason` (such as the certificate number; required) makes the reseller's
    charges carry 0 % tax from now on; `false` revokes the exemption. Accepts `Idempotency-Key`. Problems: 404
    `not_found` (never a reseller), 409 `invalid_state` (already exempt, or not exempt), 409
    `idempotency_conflict`, 422 `validation_error` (an exemption without a reason)."""
    outcome = ledger.set_tax_exemption(org_id, exempt=body.tax_exempt, reason=body.reason, actor=user.user_id,
                                       idempotency=idempotency)
    return answer(response, outcome, views.reseller)
