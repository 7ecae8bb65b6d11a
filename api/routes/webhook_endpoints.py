"""Webhooks out: a reseller's endpoints, their signing secrets, and the deliveries made to them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import After, Idempotency, ResellerAdmin, ServicesDep
from api.docs import problems
from api.routes.common import answer
from api.routes.portal import _caught_up
from commands.errors import NotFound
from commands.webhook_endpoints import WebhookEndpoints
from ledger.errors import InvalidState
from ledger.webhook_endpoint import ENABLED, EVENT_TYPES, WebhookEndpoint
from projections import webhooks
from projections.webhooks import DELIVERY_COLUMNS, PENDING, SENDING
from service.bootstrap import Services

router = APIRouter(prefix="/v1/resellers/{org_id}/webhook-endpoints", tags=["webhooks out"])

SIGNATURE_DOC = ("Each delivery is a POST of JSON `{id, type, created_at, reseller_id, ledger_event, data: {object}}` "
                 "signed in the `Ledger-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\" "
                 "with the endpoint's secret>`. Deduplicate by `id`: an event may arrive more than once.")

EXAMPLE_ENDPOINT: dict[str, Any] = {
    "id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "url": "https://hooks.example.com/ledger",
    "event_types": ["subscription.created", "subscription.canceled", "invoice.issued"],
    "description": "Provisioning", "status": "enabled", "disabled_reason": None, "created_at": "2026-11-29T10:00:00Z",
    "version": 1,
}
EXAMPLE_ATTEMPT: dict[str, Any] = {"attempt": 1, "started_at": "2026-12-10T14:30:01Z", "duration_ms": 184,
                                   "status_code": 200, "error": None}
EXAMPLE_DELIVERY: dict[str, Any] = {
    "id": "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "endpoint_id": EXAMPLE_ENDPOINT["id"],
    "event_id": "a8098c1a-f86e-41d8-9c0b-4a4f6c7e8d11", "event_type": "subscription.canceled", "position": 42,
    "occurred_at": "2026-12-10T14:30:00Z", "status": "delivered", "attempts": 1, "next_attempt_at": None,
    "delivered_at": "2026-12-10T14:30:01Z", "last_status_code": 200, "last_error": None,
    "attempt_log": [EXAMPLE_ATTEMPT],
}


class WebhookEndpointIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"url": "https://hooks.example.com/ledger",
        "event_types": ["subscription.created", "subscription.canceled",
        "invoice.issued"], "description": "Provisioning"}]})
    url: str = Field(max_length=2048, description="http(s) URL; must resolve to public addresses",
                     examples=["https://hooks.example.com/ledger"])
    event_types: list[str] = Field(min_length=1, max_length=len(EVENT_TYPES), description=", ".join(EVENT_TYPES))
    description: str | None = Field(None, max_length=500)


class WebhookEndpointOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_ENDPOINT]})
    id: UUID
    url: str
    event_types: list[str]
    description: str | None
    status: str = Field(description="enabled, disabled (after failing for 3 days) or deleted")
    disabled_reason: str | None
    created_at: datetime
    version: int


class WebhookEndpointWithSecretOut(WebhookEndpointOut):
    model_config = ConfigDict(json_schema_extra={"examples": [{**EXAMPLE_ENDPOINT,
        "secret": "whsec_mfrggzdfmztwq2lknnwg23tpobyxe43u"}]})
    secret: str = Field(description="The signing secret, shown only in this answer: keep it")


class WebhookEndpointsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EXAMPLE_ENDPOINT]}]})
    items: list[WebhookEndpointOut]


class AttemptOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_ATTEMPT]})
    attempt: int
    started_at: datetime
    duration_ms: int | None
    status_code: int | None
    error: str | None


class DeliveryOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_DELIVERY]})
    id: UUID
    endpoint_id: UUID
    event_id: UUID = Field(description="The `id` in the body: the same for every delivery of one event")
    event_type: str
    position: int = Field(description="The event's position in the log")
    occurred_at: datetime
    status: str = Field(description="pending, sending, delivered or failed (retries given up after 3 days)")
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[AttemptOut]


class DeliveriesOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EXAMPLE_DELIVERY], "next_cursor": "42"}]})
    items: list[DeliveryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page")


def _endpoints(services: Services) -> WebhookEndpoints:
    assert services.webhook_endpoints is not None
    return services.webhook_endpoints


def _endpoint_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise NotFound(f"no webhook endpoint {text}") from None


def _out(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return dict(id=endpoint.id, url=endpoint.url, event_types=endpoint.event_types, description=endpoint.description,
                status=endpoint.state, disabled_reason=endpoint.disabled_reason, created_at=endpoint.created_on,
                version=endpoint.version)


def _shown(endpoint: WebhookEndpoint) -> WebhookEndpointOut:
    return WebhookEndpointOut(**_out(endpoint))


@router.post("", response_model=WebhookEndpointWithSecretOut, status_code=status.HTTP_201_CREATED,
             summary="Register a webhook endpoint; its signing secret is shown in this answer only",
             description=SIGNATURE_DOC + " URLs resolving to loopback, link-local or private addresses are 422.")
def register(body: WebhookEndpointIn, access: ResellerAdmin, services: ServicesDep, idempotency: Idempotency,
             response: Response) -> WebhookEndpointWithSecretOut:
    registered = _endpoints(services).register(access.org_id, url=body.url, event_types=body.event_types,
                                               description=body.description, actor=access.user.user_id,
                                               idempotency=idempotency)
    return answer(response, registered.outcome,
                  lambda endpoint: WebhookEndpointWithSecretOut(**_out(endpoint), secret=registered.secret))


@router.get("", response_model=WebhookEndpointsOut, summary="The reseller's webhook endpoints (not deleted)")
def list_endpoints(access: ResellerAdmin, services: ServicesDep, after: After) -> WebhookEndpointsOut:
    """The reseller's webhook endpoints that are not deleted, oldest first, never with their secrets. `?after=` waits
    (up to 5 s) for your last change (503 `projection_lagging`)."""
    _caught_up(services, after, webhooks.NAME)
    with services.read_side.db(webhooks.NAME).snapshot() as cursor:
        cursor.execute("SELECT endpoint_id FROM webhook_endpoints WHERE reseller_org_id = ? AND state != 'deleted' "
                       "ORDER BY created_at, endpoint_id", (access.org_id,))
        ids = [UUID(row[0]) for row in cursor.fetchall()]
    found = [_endpoints(services).endpoint(access.org_id, endpoint_id) for endpoint_id in ids]
    return WebhookEndpointsOut(items=[_shown(endpoint) for endpoint in found if endpoint.state != "deleted"])


@router.get("/{id}", response_model=WebhookEndpointOut, summary="One webhook endpoint (never its secret)")
def show(id: str, access: ResellerAdmin, services: ServicesDep) -> WebhookEndpointOut:
    """One webhook endpoint, its event types and status (`disabled` with its reason after failing for 3 days), never
    its secret. 404 `not_found` for an unknown id or another reseller's."""
    return _shown(_endpoints(services).endpoint(access.org_id, _endpoint_id(id)))


@router.delete("/{id}", response_model=WebhookEndpointOut, responses=problems("invalid_state"),
               summary="Delete a webhook endpoint: nothing more is sent")
def delete(id: str, access: ResellerAdmin, services: ServicesDep, response: Response) -> WebhookEndpointOut:
    """Deletes the endpoint: nothing more is sent to it, and it leaves the list. 404 `not_found` for an unknown id or
    another reseller's; 409 `invalid_state` if it is already deleted."""
    outcome = _endpoints(services).delete(access.org_id, _endpoint_id(id), actor=access.user.user_id)
    return answer(response, outcome, _shown)


@router.post("/{id}/roll-secret", response_model=WebhookEndpointWithSecretOut, responses=problems("invalid_state"),
             summary="Replace the signing secret at once; the new one is shown in this answer only")
def roll_secret(id: str, access: ResellerAdmin, services: ServicesDep, idempotency: Idempotency,
                response: Response) -> WebhookEndpointWithSecretOut:
    """Replaces the endpoint's signing secret at once: deliveries from now on are signed with the new secret, shown in
    this answer only. Accepts `Idempotency-Key` (a retry answers the same secret). 404 `not_found`; 409
    `invalid_state` for a deleted endpoint, 409 `idempotency_conflict`."""
    rolled = _endpoints(services).roll_secret(access.org_id, _endpoint_id(id), actor=access.user.user_id,
                                              idempotency=idempotency)
    return answer(response, rolled.outcome,
                  lambda endpoint: WebhookEndpointWithSecretOut(**_out(endpoint), secret=rolled.secret))


def _deliveries(cursor: Any, where: str, params: tuple[Any, ...], limit: int) -> list[DeliveryOut]:
    cursor.execute(f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM webhook_deliveries WHERE {where} "
                   f"ORDER BY position DESC LIMIT ?", (*params, limit))
    rows = [dict(zip(DELIVERY_COLUMNS, row, strict=True)) for row in cursor.fetchall()]
    attempts: dict[str, list[AttemptOut]] = {row["delivery_id"]: [] for row in rows}
    if rows:
        cursor.execute("SELECT delivery_id, attempt, started_at, duration_ms, status_code, error "
                       f"FROM webhook_attempts WHERE delivery_id IN ({', '.join('?' * len(rows))}) "
                       "ORDER BY delivery_id, attempt",
                       tuple(attempts))
        for delivery_id, attempt, started_at, duration_ms, status_code, error in cursor.fetchall():
            attempts[delivery_id].append(AttemptOut(attempt=attempt, started_at=started_at, duration_ms=duration_ms,
                                                    status_code=status_code, error=error))
    return [DeliveryOut(id=row["delivery_id"], endpoint_id=row["endpoint_id"], event_id=row["event_id"],
                        event_type=row["event_type"], position=row["position"], occurred_at=row["occurred_at"],
                        status=row["state"], attempts=row["attempts"],
                        next_attempt_at=row["next_attempt_at"] if row["state"] == PENDING else None,
                        delivered_at=row["delivered_at"], last_status_code=row["last_status"],
                        last_error=row["last_error"], attempt_log=attempts[row["delivery_id"]]) for row in rows]


@router.get("/{id}/deliveries", response_model=DeliveriesOut,
            summary="Deliveries to this endpoint, newest first, each with its attempts")
def deliveries(
    id: str, access: ResellerAdmin, services: ServicesDep, after: After,
    limit: Annotated[int, Query(ge=1, le=200, description="1 to 200")] = 50,
    cursor: Annotated[str | None, Query(max_length=20, pattern=r"^\d{1,18}$",
                                        description="The `next_cursor` of the previous page")] = None,
) -> DeliveriesOut:
    """Deliveries of events to this endpoint, newest first (by log position), each with its attempts: start time,
    duration, the receiver's status code or the error. Paged by `limit` (1 to 200) and `cursor` (the previous
    page's `next_cursor`). `?after=` waits (up to 5 s) for your last change (503 `projection_lagging`). 404
    `not_found` for another reseller's endpoint."""
    endpoint = _endpoints(services).endpoint(access.org_id, _endpoint_id(id))
    _caught_up(services, after, webhooks.NAME)
    before = int(cursor) if cursor else None
    with services.read_side.db(webhooks.NAME).snapshot() as db:
        where, params = "endpoint_id = ?", (str(endpoint.id),)
        if before is not None:
            where, params = where + " AND position < ?", (*params, before)
        items = _deliveries(db, where, params, limit + 1)
    more = len(items) > limit
    items = items[:limit]
    return DeliveriesOut(items=items, next_cursor=str(items[-1].position) if more else None)


@router.post("/{id}/deliveries/{delivery_id}/resend", response_model=DeliveryOut,
             status_code=status.HTTP_202_ACCEPTED, responses=problems("invalid_state"),
             summary="Send a delivery again (soon, by the sender; with a fresh 3-day retry window)")
def resend(id: str, delivery_id: str, access: ResellerAdmin, services: ServicesDep) -> DeliveryOut:
    """Sends a delivery again: it is set back to pending, and the sender sends it soon with a fresh 3-day retry window;
    202 with the delivery as it now stands. 404 `not_found` (an unknown endpoint or delivery); 409
    `invalid_state` when the endpoint is not enabled, or the delivery is being sent right now."""
    endpoint = _endpoints(services).endpoint(access.org_id, _endpoint_id(id))
    if endpoint.state != ENABLED:
        raise InvalidState(f"webhook endpoint {endpoint.id} is {endpoint.state}: nothing is sent to it")
    key = str(_endpoint_id(delivery_id)) if delivery_id else ""
    with services.read_side.db(webhooks.NAME).transaction() as db:
        found = _deliveries(db, "endpoint_id = ? AND delivery_id = ?", (str(endpoint.id), key), 1)
        if not found:
            raise NotFound(f"no delivery {delivery_id} to this endpoint")
        if found[0].status == SENDING:
            raise InvalidState("this delivery is being sent right now")
        db.execute("UPDATE webhook_deliveries SET state = ?, next_attempt_at = NULL, first_attempt_at = NULL "
                   "WHERE delivery_id = ?", (PENDING, key))
        return _deliveries(db, "delivery_id = ?", (key,), 1)[0]
