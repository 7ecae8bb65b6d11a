"""What operators watch: a request id on every request, one log line per request, Prometheus metrics
(``/metrics``) and readiness (``/readyz``)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem
from service import metrics
from service.bootstrap import Services
from service.logs import REQUEST_ID

log = logging.getLogger("ledger.http")

REQUEST_ID_HEADER = "X-Request-Id"
_ACCEPTED_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
"""A request id a client or proxy sends is kept when it is short and plain; anything else is replaced."""


def request_id_from(headers: Headers) -> str:
    given = headers.get(REQUEST_ID_HEADER)
    return given if given is not None and _ACCEPTED_ID.fullmatch(given) else uuid.uuid4().hex


def route_of(scope: Scope) -> str:
    """The route's template (``/v1/resellers/{org_id}/subscriptions/{id}``), never the raw path, so that the
    metrics' and logs' labels stay few; a path no route matched is ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


class RequestContext:
    """A pure ASGI middleware, outermost: takes the request id from ``X-Request-Id`` (or makes one), makes it
    the context of everything that runs for the request (log lines, problem bodies), echoes it in the answer,
    and, once the answer is sent, writes one log line and counts the request by route template and status.

    An exception that escapes the application is answered here, as a 500 problem with the request id (the
    server's own error answer, further out, would carry none), then raised on for the server to log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(Headers(scope=scope))
        REQUEST_ID.set(request_id)
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if status == 0:
                await problem(500, "internal_error", "an unexpected error occurred and was logged")(
                    scope, receive, send_with_id)
            else:
                status = 500
            raise
        finally:
            self._record(scope, status or 500, time.perf_counter() - started)

    @staticmethod
    def _record(scope: Scope, status: int, seconds: float) -> None:
        method, route = scope.get("method", ""), route_of(scope)
        metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
        metrics.HTTP_DURATION.labels(method, route, str(status)).observe(seconds)
        if route == "/metrics" and status == 200:
            return  # a scrape every few seconds would drown the log
        log.info("%s %s %d %.1f ms", method, route, status, seconds * 1000,
                 extra={"method": method, "route": route, "path": scope.get("path", ""), "status": status,
                        "duration_ms": round(seconds * 1000, 1)})


class _Text(Response):
    media_type = CONTENT_TYPE_LATEST


def install(app: FastAPI, services: Services) -> None:
    """The middleware (outermost: add it after every other middleware) and the operators' routes."""
    app.add_middleware(RequestContext)

    @app.get("/metrics", tags=["service"], response_class=_Text, include_in_schema=True,
             summary="Prometheus metrics",
             description="The text exposition format: requests by route template and status, commands by type "
                         "and outcome, charges and declines, each read model's position and lag behind the log, "
                         "the scheduler's due backlog and the outboxes' depth.",
             responses={200: {"content": {CONTENT_TYPE_LATEST: {
                 "schema": {"type": "string"},
                 "example": "# TYPE ledger_read_model_lag_events gauge\n"
                            'ledger_read_model_lag_events{read_model="customer_table"} 0.0\n'}}}})
    async def metrics_endpoint() -> Response:
        return _Text(await run_in_threadpool(metrics.exposition, services))

    @app.get("/readyz", tags=["service"], summary="Readiness: the store answers and no read model has stopped",
             description="200 when this process can serve: the event store answered and no read model followed in "
                         "this process has stopped on an event it cannot handle; else 503 with the reasons. "
                         "Liveness is `/healthz`.",
             responses={200: {"content": {"application/json": {"example": {"status": "ready", "log_head": 42}}}},
                        503: {"description": "Not ready: the reasons",
                              "content": {"application/json": {"example": {
                                  "status": "not_ready", "store": "unreachable: connection refused",
                                  "stopped_projections": {}}}}}})
    async def readyz() -> Any:
        return await run_in_threadpool(readiness, services)


def readiness(services: Services) -> JSONResponse:
    body: dict[str, Any] = {"status": "ready"}
    ready = True
    try:
        body["log_head"] = services.read_side.log.head()
    except Exception as error:
        ready = False
        body["store"] = "unreachable: " + " ".join(str(error).split())[:300]
    stopped = services.read_side.stopped_projections()
    if stopped:
        ready = False
        body["stopped_projections"] = stopped
    if not ready:
        body["status"] = "not_ready"
        body.setdefault("stopped_projections", stopped)
    return JSONResponse(body, status_code=200 if ready else 503, headers={"Cache-Control": "no-store"})
