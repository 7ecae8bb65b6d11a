"""The FastAPI application: routes, error mapping, and the service's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

import web
from api import docs, errors, observability
from api.deps import storable_parameters
from api.limits import RequestLimits
from api.routes import (
    catalog,
    events,
    invoices,
    portal,
    resellers,
    sandbox,
    subscriptions,
    support,
    webhook_endpoints,
    webhooks,
)
from service import logs
from service.bootstrap import Services, bootstrap
from service.settings import load_settings
from service.tokens import token_keys

DESCRIPTION = """An event-sourced subscription ledger for resellers: buy Lens subscriptions for customers,
preview prices, change seats, cancel and resume; every change is an event that auditors can replay.

Authenticate with `Authorization: Bearer <JWT>`. Errors are RFC 9457 `application/problem+json` with a
stable `code`. Every POST accepts an `Idempotency-Key` header."""


def create_app(services: Services, *, close_on_shutdown: bool = False, background: bool = False,
               followers_elsewhere: bool = False, settle_charges: bool = False) -> FastAPI:
    """``background``: run the scheduler (with charge recovery) in this process, and the projections and the
    outboxes' senders unless they run in another (``followers_elsewhere``: `ledger serve` starts one on SQLite).
    ``settle_charges``: without the scheduler, settle the charges a crash left open once at start."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if background:
            services.start_background(followers=not followers_elsewhere, senders=not followers_elsewhere)
        elif settle_charges:
            services.settle_open_charges_soon()
        yield
        if background:
            services.stop_background()
        if close_on_shutdown:
            services.close()

    app = FastAPI(title="Reseller subscription ledger", version="1.0.0", description=DESCRIPTION,
                  openapi_url="/openapi.json", docs_url=None, redoc_url=None, lifespan=lifespan,
                  responses=docs.problems("validation_error"),  # every route checks its parameters' text
                  dependencies=[Depends(storable_parameters)])
    app.add_middleware(RequestLimits, max_body_bytes=services.settings.max_body_bytes,
                       body_timeout_seconds=services.settings.body_timeout_seconds)
    observability.install(app, services)  # its middleware outermost: after every other
    app.state.services = services
    app.state.token_keys = token_keys(services.settings, services.development_secret)
    errors.install(app)
    docs.install(app)  # /docs and /redoc with local assets, the finished /openapi.json
    for module in (catalog, support, resellers, portal, subscriptions, invoices, webhooks, events,
                   webhook_endpoints):
        app.include_router(module.router)
    if services.settings.clock == "sandbox":
        app.include_router(sandbox.router)

    web.install(app)  # the portal page at / and its assets, versioned and cached, under /portal/

    @app.get("/healthz", tags=["service"], summary="Liveness, and any read model of this process that has stopped",
             responses={200: {"content": {"application/json": {"example": {"status": "ok",
                 "stopped_projections": {}}}}}})
    def healthz() -> dict[str, object]:
        """Liveness: 200 whenever the process answers. `status` is `degraded`, with `stopped_projections`
        naming them, when a read model followed in this process has stopped; readiness is `/readyz`. No token."""
        stopped = services.read_side.stopped_projections()
        return {"status": "degraded" if stopped else "ok", "stopped_projections": stopped}

    return app


def create_app_from_environment() -> FastAPI:
    """The factory each uvicorn worker calls: settings are read once, here (and the worker, a process of its
    own, sets up its logging)."""
    settings = load_settings()
    logs.configure(settings.log_format)
    return create_app(bootstrap(settings), close_on_shutdown=True, settle_charges=True)
