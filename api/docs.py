"""The API's documentation: the problem+json error responses, declared once per kind (``problems``), the OpenAPI
document's finishing touches (the Problem schema, examples on every body, 413 on every body-taking operation),
and ``/docs`` (Swagger UI) and ``/redoc`` served with assets vendored in ``api/static``: the pages load nothing
from any other host, so they work offline and behind a strict Content-Security-Policy."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from importlib.resources import files
from typing import Any, get_args

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.routing import BaseRoute

from api.errors import TITLES

PROBLEM_JSON = "application/problem+json"
ASSETS = "/docs/assets"


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem: every error of this API. `code` is stable; `detail` is for people."""

    type: str = Field(description="A URI naming the kind of problem: https://ledger.example/problems/<code>")
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable, for programs: see each operation's error responses")
    request_id: str | None = Field(None, description="The request's X-Request-Id, as in the logs")
    field: str | None = Field(None, description="validation_error: the first field refused")
    errors: list[FieldError] | None = Field(None, description="validation_error: every field refused")
    decline_code: str | None = Field(None, description="payment_declined: the processor's decline code")


MEANINGS: dict[str, tuple[int, str]] = {
    "unauthenticated": (401, "no bearer token, or one that is invalid or expired"),
    "forbidden": (403, "the token does not grant this: not an administrator of the organization, not an enabled "
                       "reseller, or not the support role"),
    "not_found": (404, "no such resource for this reseller (another reseller's is not revealed)"),
    "validation_error": (422, "a body field, query or path parameter is refused; `field` names it"),
    "seats_fixed": (422, "the plan has a fixed number of seats"),
    "no_change": (422, "the change asked for is what is already the case"),
    "billing_info_required": (409, "the reseller has no billing information on file"),
    "invalid_state": (409, "the subscription's state does not allow this (for example resuming one not canceled)"),
    "quote_stale": (409, "the quote_id expired or no longer matches the price; preview again"),
    "idempotency_conflict": (409, "the Idempotency-Key was used before with another request"),
    "version_mismatch": (412, "If-Match names a version that is no longer current"),
    "payment_declined": (402, "the payment processor declined the card; `decline_code` says why"),
    "payment_unavailable": (503, "the payment processor cannot be reached; retry after Retry-After seconds"),
    "projection_lagging": (503, "the view has not reached the position asked for with ?after= yet; retry"),
    "payload_too_large": (413, "the body is larger than the limit (1 MiB by default)"),
    "request_timeout": (408, "the body arrived too slowly"),
    "invalid_signature": (400, "the Stripe-Signature does not verify"),
    "invalid_payload": (400, "the body is not a Stripe event"),
}
EXAMPLE_DETAILS = {
    "unauthenticated": "missing bearer token",
    "forbidden": "you are not an administrator of org_acme",
    "not_found": "no subscription 0b7a3f7e-2f4c-4d36-9d1e-6a3f8f0c9b21",
    "validation_error": "seats: Input should be a valid integer",
    "seats_fixed": "the plan lens_personal has a fixed number of seats",
    "no_change": "the subscription already has 5 seats",
    "billing_info_required": "org_acme has no billing information on file",
    "invalid_state": "the subscription is not canceled",
    "quote_stale": "the quote has expired; preview again",
    "idempotency_conflict": "this Idempotency-Key was used with another request",
    "version_mismatch": "the subscription is at version 4, not 3",
    "payment_declined": "Your card was declined.",
    "payment_unavailable": "the payment processor did not answer; retry shortly",
    "projection_lagging": "the customer table has not reached position 120 yet; retry shortly",
    "payload_too_large": "the request body is larger than 1048576 bytes",
    "request_timeout": "no part of the request body arrived for 10 s",
    "invalid_signature": "the Stripe-Signature header does not match the payload",
    "invalid_payload": "the payload is not a Stripe event",
}


def problem_example(code: str) -> dict[str, Any]:
    status = MEANINGS[code][0]
    example: dict[str, Any] = {"type": f"https://ledger.example/problems/{code}", "title": TITLES.get(status, "Error"),
                               "status": status, "detail": EXAMPLE_DETAILS[code], "code": code,
                               "request_id": "4f1c2e0a9b8d4c7e8f6a5b4c3d2e1f00"}
    if code == "validation_error":
        example |= {"field": "seats", "errors": [{"field": "seats", "message": "Input should be a valid integer"}]}
    if code == "payment_declined":
        example["decline_code"] = "insufficient_funds"
    return example


def problems(*codes: str) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a router or route that may answer these problem codes, grouped by status, each
    with its meaning and an example. A 422 always lists validation_error too (any parameter may be refused),
    so that a route's 422 can replace its router's without losing it."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in dict.fromkeys(codes):
        if code not in MEANINGS:
            raise ValueError(f"no problem code {code!r}")
        by_status[MEANINGS[code][0]].append(code)
    if 422 in by_status and "validation_error" not in by_status[422]:
        by_status[422].insert(0, "validation_error")
    return {
        status: {
            "description": "; ".join(f"`{code}`: {MEANINGS[code][1]}" for code in listed),
            "content": {PROBLEM_JSON: {
                "schema": {"$ref": "#/components/schemas/Problem"},
                "examples": {code: {"summary": MEANINGS[code][1], "value": problem_example(code)} for code in listed},
            }},
        }
        for status, listed in sorted(by_status.items())
    }


AUTHENTICATED = problems("unauthenticated", "validation_error")
SUPPORT = problems("unauthenticated", "forbidden", "validation_error")
RESELLER = problems("unauthenticated", "forbidden", "not_found", "validation_error")
"""A reseller's routes: the token, the organization's administrator, an enabled reseller, its own resources."""

def api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every operation's route, those of included routers too (FastAPI keeps an included router as one
    entry of ``app.routes`` that holds the router: ``original_router``)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (router := getattr(route, "original_router", None)) is not None:
            yield from api_routes(router.routes)


def route_models(route: APIRoute) -> list[type[BaseModel]]:
    """The models of a route's response and body (an optional body's too)."""
    declared = (route.response_model, route.body_field.field_info.annotation if route.body_field else None)
    return [model for each in declared for model in get_args(each) or (each,)
            if isinstance(model, type) and issubclass(model, BaseModel)]


def model_examples(routes: Iterable[BaseRoute]) -> dict[str, list[Any]]:
    """The examples of the routes' body and response models and of the models inside them, by schema name, as
    the models declare them (``json_schema_extra``). FastAPI drops every null from the document it generates,
    examples included, so an example's ``"pending_seats": null`` would vanish and the example would no
    longer match its own schema; ``finish`` puts these back."""
    models: dict[type[BaseModel], None] = {}
    for route in api_routes(routes):
        for model in route_models(route):
            models[model] = None
    found: dict[str, list[Any]] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, each in [*schema.pop("$defs", {}).items(), (model.__name__, schema)]:
            if each.get("examples"):
                found[name] = each["examples"]
    return found


def finish(document: dict[str, Any], examples: dict[str, list[Any]] | None = None) -> dict[str, Any]:
    """The touches FastAPI does not make: the Problem schema; 413 (and 408) on every operation taking a body;
    the models' ``examples`` as they declare them, nulls included; each body's schema example repeated as the
    media type's example, which Swagger UI and Redoc show."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem_schema.pop("$defs", {}))
    schemas["Problem"] = problem_schema
    for name, listed in (examples or {}).items():
        if name in schemas:
            schemas[name]["examples"] = listed
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if "requestBody" in operation:
                for status, declared in problems("payload_too_large", "request_timeout").items():
                    responses.setdefault(str(status), declared)
                _example_from_schema(operation["requestBody"].get("content", {}), schemas)
            for status, response in responses.items():
                if status.startswith("2"):
                    _example_from_schema(response.get("content", {}), schemas)
    return document


def _example_from_schema(content: dict[str, Any], schemas: dict[str, Any]) -> None:
    for media in content.values():
        if "example" in media or "examples" in media:
            continue
        schema = media.get("schema", {})
        # An optional body (``body: X | None = None``) is anyOf X and null: X's example stands for it.
        references = [each.get("$ref", "") for each in schema.get("anyOf", []) if "$ref" in each]
        reference = schema.get("$ref") or (references[0] if len(references) == 1 else "")
        examples = schemas.get(reference.rsplit("/", 1)[-1], {}).get("examples") if reference else None
        if examples:
            media["example"] = examples[0]


def install(app: FastAPI) -> None:
    """The finished OpenAPI document at /openapi.json, Swagger UI at /docs and Redoc at /redoc."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes,
                tags=app.openapi_tags, servers=app.servers), model_examples(app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(ASSETS, StaticFiles(directory=str(files("api").joinpath("static"))), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} – API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png", oauth2_redirect_url="/docs/oauth2-redirect",
            # validatorUrl: Swagger UI would otherwise show a badge fetched from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True, "tryItOutEnabled": False})

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} – API reference",
                              redoc_js_url=f"{ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{ASSETS}/favicon-32x32.png", with_google_fonts=False)
