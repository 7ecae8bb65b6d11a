from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response, status

from api import views
from api.as_of import AsOf, subscription_at
from api.deps import Idempotency, LedgerDep, ResellerAdmin, ServicesDep
from api.docs import may_answer, problems
from api.routes.common import answer, subscription_id
from api.schemas import CreateSubscriptionIn, EventsOut, OrderIn, PreviewOut, SeatsIn, SeatsPreviewIn, SubscriptionOut
from ledger.errors import ValidationFailed
from ledger.subscription import Order

router = APIRouter(prefix="/v1/resellers/{org_id}/subscriptions", tags=["subscriptions"])

_ENTITY_TAG = re.compile(r'(?:W/)?"(\d{1,18})"')


@may_answer("validation_error", "version_mismatch")
async def expected_version(
    if_match: Annotated[str | None, Header(description='The subscription\'s `version` as you read it, quoted: '
                                           '`"3"`. The change is refused with 412 if it is no longer current.')] = None,
) -> int | None:
    """Optimistic concurrency for portals: a change applies only to the version its user saw."""
    if if_match is None:
        return None
    match = _ENTITY_TAG.fullmatch(if_match.strip())
    if match is None:
        raise ValidationFailed("If-Match", 'If-Match is the subscription\'s version in quotes, such as "3"')
    return int(match.group(1))


ExpectedVersion = Annotated[int | None, Depends(expected_version)]


def _tagged(response: Response, subscription: SubscriptionOut) -> SubscriptionOut:
    """The version as an entity tag, for ``If-Match`` on the next change."""
    response.headers["ETag"] = f'"{subscription.version}"'
    return subscription


def _order(body: OrderIn) -> Order:
    return Order(plan=body.plan, billing_cycle=body.billing_cycle, seats=body.seats,
                 end_user_email=str(body.end_user_email) if body.end_user_email else None,
                 display_name=body.display_name, organization_name=body.organization_name,
                 admin_email=str(body.admin_email) if body.admin_email else None)


@router.post("/preview", response_model=PreviewOut, responses=problems("billing_info_required", "seats_fixed"),
             summary="Price a new subscription: the first period in full, with tax; returns a quote_id")
def preview_create(body: OrderIn, access: ResellerAdmin, ledger: LedgerDep) -> PreviewOut:
    """Prices a new subscription without creating it: the first period in full at the reseller's tax rate. The
    `quote_id` holds this price until `expires_at` (15 minutes): pass it to `POST .../subscriptions` to be
    charged exactly this (a quote expired or no longer matching is refused there). Organization plans (pro,
    enterprise) need `organization_name`, `admin_email` and `seats`; single-user plans (plus) need
    `end_user_email` and have exactly one seat. Problems: 409 `billing_info_required`, 422 `seats_fixed`, 422
    `validation_error` (an unknown plan, a field the plan needs or does not take)."""
    return views.preview(ledger.preview_create(access.org_id, _order(body)))


@router.post("", response_model=SubscriptionOut, status_code=status.HTTP_201_CREATED,
             responses=problems("seats_fixed", "billing_info_required", "quote_stale", "payment_declined",
                                "payment_unavailable"),
             summary="Create a subscription and charge its first period")
def create(body: CreateSubscriptionIn, access: ResellerAdmin, ledger: LedgerDep, idempotency: Idempotency,
           response: Response) -> SubscriptionOut:
    """Creates a subscription and charges its first period to the reseller's card at once: 201 with the subscription,
    its `ETag` (the version, for `If-Match`) and `X-Ledger-Position` (pass it as `?after=` to a list to see the
    change there). An organization plan also opens the customer's account. With a `quote_id` from the preview
    the quoted price is charged, or the create is refused with 409 `quote_stale`. `Idempotency-Key`: a retry
    with the same key and body gets the first answer (`Idempotent-Replayed: true`) and is never charged twice;
    the key with another body is 409 `idempotency_conflict`. Problems: 402 `payment_declined` (nothing is
    created), 503 `payment_unavailable`, 409 `billing_info_required`, 422 `seats_fixed`, 422 `validation_error`."""
    outcome = ledger.create_subscription(access.org_id, _order(body), actor=access.user.user_id,
                                         quote_id=body.quote_id, idempotency=idempotency)
    return _tagged(response, answer(response, outcome, views.subscription))


@router.get("/{id}", response_model=SubscriptionOut, summary="One subscription, expired ones included")
def show(id: str, access: ResellerAdmin, ledger: LedgerDep, response: Response,
         as_of: AsOf = None) -> SubscriptionOut:
    """One of the reseller's subscriptions, expired ones included, with its version as `ETag` for `If-Match` on the
    next change. `?as_of=` answers it as it was at that instant, by the times the ledger recorded (no `ETag`
    then); an instant in the future is 422. 404 `not_found` for an unknown id, another reseller's, or one
    created after `as_of`."""
    if as_of is not None:  # as it was then: its aggregate at the version recorded by as_of
        return views.subscription(subscription_at(ledger, access.org_id, subscription_id(id), as_of))
    return _tagged(response, views.subscription(ledger.subscription(access.org_id, subscription_id(id))))


@router.post("/{id}/seats/preview", response_model=PreviewOut,
             responses=problems("seats_fixed", "no_change", "invalid_state", "billing_info_required"),
             summary="Price a seat change: an increase is prorated now, a decrease waits for the next period")
def preview_seats(id: str, body: SeatsPreviewIn, access: ResellerAdmin, ledger: LedgerDep) -> PreviewOut:
    """Prices a change to `seats` without making it. `kind` says what it would be: `increase`, charged now and prorated
    over what remains of the period; `decrease`, free, taking effect at the next period (`effective_at`);
    `withdraw`, asking for the current seats while a decrease is scheduled. The `quote_id` holds the price for
    15 minutes (`POST .../seats`). Problems: 422 `seats_fixed` (a single-user plan), 422 `no_change`, 409
    `invalid_state` (canceled, expired, past due, or the period has ended), 409 `billing_info_required` (an
    increase), 404 `not_found`."""
    return views.preview(ledger.preview_seat_change(access.org_id, subscription_id(id), body.seats))


@router.post("/{id}/seats", response_model=SubscriptionOut, summary="Change the number of seats",
             responses=problems("seats_fixed", "no_change", "invalid_state", "billing_info_required", "quote_stale",
                                "payment_declined", "payment_unavailable"))
def change_seats(id: str, body: SeatsIn, access: ResellerAdmin, ledger: LedgerDep, idempotency: Idempotency,
                 version: ExpectedVersion, response: Response) -> SubscriptionOut:
    """Changes the number of seats: an increase is charged now (prorated) and applies at once; a decrease is scheduled
    for the next period (`pending_seats`); asking for the current seats withdraws a scheduled decrease. With a
    `quote_id` from the preview the quoted price is charged, or 409 `quote_stale`. `If-Match: "<version>"`
    applies the change only to that version (else 412 `version_mismatch`). `Idempotency-Key` as for the create.
    Problems: 402 `payment_declined`, 503 `payment_unavailable`, 409 `invalid_state`, `billing_info_required`,
    `quote_stale`, `idempotency_conflict`, 412 `version_mismatch`, 422 `seats_fixed`, `no_change`, 404
    `not_found`."""
    outcome = ledger.change_seats(access.org_id, subscription_id(id), body.seats, actor=access.user.user_id,
                                  quote_id=body.quote_id, expected_version=version, idempotency=idempotency)
    return _tagged(response, answer(response, outcome, views.subscription))


@router.post("/{id}/cancel", response_model=SubscriptionOut,
             responses=problems("invalid_state"),
             summary="Cancel at the end of the current period (it stays usable until then)")
def cancel(id: str, access: ResellerAdmin, ledger: LedgerDep, idempotency: Idempotency, version: ExpectedVersion,
           response: Response) -> SubscriptionOut:
    """Cancels at the end of the current period: the subscription stays usable until `current_period_end` (status
    `canceled`, `cancel_at_period_end` true), is not renewed, and then expires. A scheduled seat decrease stays.
    Nothing is refunded. `If-Match` and `Idempotency-Key` as for a seat change. Problems: 409 `invalid_state`
    (already canceled, or expired), 412 `version_mismatch`, 409 `idempotency_conflict`, 404 `not_found`."""
    outcome = ledger.cancel(access.org_id, subscription_id(id), actor=access.user.user_id, expected_version=version,
                           idempotency=idempotency)
    return _tagged(response, answer(response, outcome, views.subscription))


@router.post("/{id}/resume", response_model=SubscriptionOut, summary="Undo a cancellation before the period ends",
             responses=problems("invalid_state"))
def resume(id: str, access: ResellerAdmin, ledger: LedgerDep, idempotency: Idempotency, version: ExpectedVersion,
           response: Response) -> SubscriptionOut:
    """Undoes a cancellation before the period ends: the subscription renews as normal again. `If-Match` and
    `Idempotency-Key` as for a seat change. Problems: 409 `invalid_state` (not canceled, expired, or the period
    has already ended), 412 `version_mismatch`, 409 `idempotency_conflict`, 404 `not_found`."""
    outcome = ledger.resume(access.org_id, subscription_id(id), actor=access.user.user_id, expected_version=version,
                           idempotency=idempotency)
    return _tagged(response, answer(response, outcome, views.subscription))


@router.get("/{id}/events", response_model=EventsOut, summary="The subscription's event history, oldest first")
def history(id: str, access: ResellerAdmin, ledger: LedgerDep, services: ServicesDep) -> EventsOut:
    """The subscription's events, oldest first, in the format of `ledger export-events` (docs/event-export.md): what
    happened, when, who did it (`actor`), and for each charge its bill and payment. 404 `not_found` for an
    unknown id or another reseller's."""
    subscription = ledger.subscription(access.org_id, subscription_id(id))
    return EventsOut(items=[views.event(recorded) for recorded in services.read_side.log.history(subscription.id)])
