"""The FastAPI application: routes, error mapping, and the service's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.routes import catalog, portal, resellers, subscriptions, support
from service.bootstrap import Services, bootstrap
from service.settings import load_settings
from service.tokens import token_keys

DESCRIPTION = """An event-sourced subscription ledger for resellers: buy Lens subscriptions for customers,
preview prices, change seats, cancel and resume; every change is an event that auditors can replay.

Authenticate with `Authorization: Bearer <JWT>`. Errors are RFC 9457 `application/problem+json` with a
stable `code`. Every POST accepts an `Idempotency-Key` header."""


def create_app(services: Services, *, close_on_shutdown: bool = False, run_followers: bool = False) -> FastAPI:
    """``run_followers``: keep the projections caught up in this process (the embedded default)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if run_followers:
            services.read_side.start()
        yield
        if run_followers:
            services.read_side.stop()
        if close_on_shutdown:
            services.close()

    app = FastAPI(title="Reseller subscription ledger", version="1.0.0", description=DESCRIPTION,
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None, lifespan=lifespan)
    app.state.services = services
    app.state.token_keys = token_keys(services.settings, services.development_secret)
    errors.install(app)
    for module in (catalog, support, resellers, portal, subscriptions):
        app.include_router(module.router)

    @app.get("/healthz", tags=["service"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def create_app_from_environment() -> FastAPI:
    """The factory each uvicorn worker calls: settings are read once, here."""
    return create_app(bootstrap(load_settings()), close_on_shutdown=True)
