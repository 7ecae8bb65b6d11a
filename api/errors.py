"""Every error leaves as RFC 9457 problem+json with a stable code. Domain errors map here, in one place."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.security import Unauthenticated
from commands.errors import PaymentUnavailable, ProjectionLagging
from ledger.errors import DomainError, PaymentDeclined, ValidationFailed
from service.logs import REQUEST_ID

log = logging.getLogger("ledger.api")

STATUS_OF_CODE = {
    "validation_error": 422,
    "seats_fixed": 422,
    "no_change": 422,
    "billing_info_required": 409,
    "invalid_state": 409,
    "quote_stale": 409,
    "idempotency_conflict": 409,
    "version_mismatch": 412,
    "payment_declined": 402,
    "not_found": 404,
    "forbidden": 403,
    "unauthenticated": 401,
    "payment_unavailable": 503,
    "projection_lagging": 503,
    "invalid_signature": 400,
    "invalid_payload": 400,
    "payload_too_large": 413,
    "request_timeout": 408,
}
"""The status of every problem code the API answers with: the one mapping, which the handlers below, the body
limits (``api.limits``) and the documented error responses (``api.docs``) all read."""
TITLES = {
    400: "Bad request", 401: "Unauthenticated", 402: "Payment declined", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 408: "Request timeout", 409: "Conflict", 412: "Precondition failed",
    413: "Request too large", 415: "Unsupported media type", 422: "Unprocessable request", 500: "Internal error",
    503: "Service unavailable",
}
CODES_OF_HTTP_STATUS = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated", 403: "forbidden",
                        408: "request_timeout", 413: "payload_too_large"}


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"type": f"https://ledger.example/problems/{code}", "title": TITLES.get(status, "Error"),
            "status": status, "detail": detail, "code": code, **extra}
    if (request_id := REQUEST_ID.get()) is not None:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    def domain_error(_: Request, error: DomainError) -> JSONResponse:
        extra: dict[str, Any] = {}
        headers = None
        if isinstance(error, ValidationFailed):
            extra["field"] = error.field
            extra["errors"] = [{"field": error.field, "message": error.detail}]
        if isinstance(error, PaymentDeclined):
            extra["decline_code"] = error.decline_code
        if isinstance(error, PaymentUnavailable):
            headers = {"Retry-After": str(error.retry_after_seconds)}
        if isinstance(error, ProjectionLagging):
            headers = {"Retry-After": "1"}
        return problem(STATUS_OF_CODE.get(error.code, 409), error.code, error.detail, headers, **extra)

    @app.exception_handler(Unauthenticated)
    def unauthenticated(_: Request, error: Unauthenticated) -> JSONResponse:
        return problem(401, "unauthenticated", str(error), {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": "body", "message": "the body is not valid JSON"} if e["type"] == "json_invalid"
            else {"field": _field_of(e["loc"]), "message": e["msg"]}
            for e in error.errors()
        ]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        return problem(422, "validation_error", f"{first['field']}: {first['message']}",
                       field=first["field"], errors=errors)

    @app.exception_handler(StarletteHTTPException)
    def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400:  # FastAPI's answer to a body it cannot parse (not UTF-8, too deep)
            return problem(422, "validation_error", f"body: {error.detail}", field="body",
                           errors=[{"field": "body", "message": str(error.detail)}])
        code = CODES_OF_HTTP_STATUS.get(error.status_code, "http_error")
        return problem(error.status_code, code, str(error.detail), dict(error.headers or {}))

    @app.exception_handler(Exception)
    def unexpected(request: Request, error: Exception) -> JSONResponse:
        # Called outside the except block (in a worker thread): the error is passed, or no traceback is logged.
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
        return problem(500, "internal_error", "an unexpected error occurred and was logged")


def _field_of(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"
