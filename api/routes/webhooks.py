"""Stripe's webhook endpoint: no bearer token; the body's signature, made with the endpoint's secret,
is the authentication."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict

from api.deps import ServicesDep
from api.docs import problems
from api.errors import problem
from commands.errors import NotFound
from commands.webhooks import InvalidPayload, InvalidSignature, StripeWebhooks
from projections import billing_documents
from projections.billing_documents import queries
from service.bootstrap import Services

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class WebhookReceivedOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"received": True, "duplicate": False}]})
    received: bool
    duplicate: bool


def stripe_webhooks(services: Services) -> StripeWebhooks:
    """The handler, or not found when this deployment takes no payments through Stripe."""
    secret = services.settings.stripe_webhook_secret
    if services.settings.payments != "stripe" or secret is None or not secret.get_secret_value().strip():
        raise NotFound("Stripe webhooks are not configured here")
    view = services.read_side.db(billing_documents.NAME)
    return StripeWebhooks(services.app, secret.get_secret_value(), clock=services.clock,
                          invoice_paid_by=lambda payment_reference: queries.invoice_paid_by(view, payment_reference))


@router.post("/stripe", response_model=WebhookReceivedOut,
             summary="Receive a Stripe event: verified, recorded once; a redelivery changes nothing",
             responses=problems("invalid_signature", "invalid_payload", "not_found", "request_timeout"))
async def stripe_event(
    request: Request,
    services: ServicesDep,
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
) -> Any:
    """Stripe's webhook endpoint, for the payment processor rather than integrators: no bearer token; the
    `Stripe-Signature` header, made with the deployment's webhook secret, authenticates the raw body. Each
    Stripe event is recorded once (a refund made in Stripe's dashboard, for example, is recorded on the invoice
    its payment belongs to); a redelivery answers `duplicate: true` and changes nothing. Problems: 400
    `invalid_signature`, 400 `invalid_payload`, 404 `not_found` when this deployment takes no payments through
    Stripe."""
    webhooks = stripe_webhooks(services)
    payload = await request.body()
    try:
        outcome = await run_in_threadpool(webhooks.receive, payload, stripe_signature)
    except (InvalidSignature, InvalidPayload) as refused:
        return problem(400, refused.code, refused.detail)
    return WebhookReceivedOut(received=True, duplicate=outcome.duplicate)
