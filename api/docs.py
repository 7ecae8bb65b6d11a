"""The API's documentation: the problem+json error responses, declared once per kind (``problems``): a route names
its own domain codes, and those its dependencies imply are found from them (``may_answer``); the OpenAPI
document's finishing touches (the Problem schema, examples on every body, 413 and 408 where the body limits apply),
and ``/docs`` (Swagger UI) and ``/redoc`` served with assets vendored in ``api/static``: the pages load nothing
from any other host, so they work offline and behind a strict Content-Security-Policy."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from importlib.resources import files
from typing import Any, TypeVar, get_args

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.routing import BaseRoute

from api.errors import STATUS_OF_CODE, TITLES

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


MEANINGS: dict[str, str] = {
    "unauthenticated": "no bearer token, or one that is invalid or expired",
    "forbidden": ("the token does not grant this: not an administrator of the organization, not an enabled reseller, "
                  "or not the support role"),
    "not_found": "no such resource for this reseller (another reseller's is not revealed)",
    "validation_error": "a body field, query or path parameter is refused; `field` names it",
    "seats_fixed": "the plan has a fixed number of seats",
    "no_change": "the change asked for is what is already the case",
    "billing_info_required": "the reseller has no billing information on file",
    "invalid_state": ("the resource's state does not allow this (resuming a subscription that is not canceled, "
                      "disabling a reseller already disabled)"),
    "quote_stale": "the quote_id expired or no longer matches the price; preview again",
    "idempotency_conflict": "the Idempotency-Key was used before with another request",
    "version_mismatch": "If-Match names a version that is no longer current",
    "payment_declined": "the payment processor declined the card; `decline_code` says why",
    "payment_unavailable": "the payment processor cannot be reached; retry after Retry-After seconds",
    "projection_lagging": "the view has not reached the position asked for with ?after= yet; retry",
    "payload_too_large": "the body is larger than the limit (1 MiB by default)",
    "request_timeout": "the body arrived too slowly",
    "invalid_signature": "the Stripe-Signature does not verify",
    "invalid_payload": "the body is not a Stripe event",
}
"""What each problem code means, for the documented error responses; its status is ``api.errors.STATUS_OF_CODE``'s."""
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
    status = STATUS_OF_CODE[code]
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
        by_status[STATUS_OF_CODE[code]].append(code)
    if 422 in by_status and "validation_error" not in by_status[422]:
        by_status[422].insert(0, "validation_error")
    return {
        status: {
            "description": "; ".join(f"`{code}`: {MEANINGS[code]}" for code in listed),
            "content": {PROBLEM_JSON: {
                "schema": {"$ref": "#/components/schemas/Problem"},
                "examples": {code: {"summary": MEANINGS[code], "value": problem_example(code)} for code in listed},
            }},
        }
        for status, listed in sorted(by_status.items())
    }


P = TypeVar("P", bound=Callable[..., Any])
_ANSWERS = "__problem_codes__"


def may_answer(*codes: str) -> Callable[[P], P]:
    """Marks a dependency with the problem codes a route that uses it may answer: its own refusals (the token's
    check, the support role) or those it makes possible (an ``Idempotency-Key`` can be reused with another body,
    an ``If-Match`` can be stale). Every route using it documents them, found by ``dependency_problems``."""
    unknown = [code for code in codes if code not in MEANINGS]
    if unknown:
        raise ValueError(f"no problem codes {unknown}")

    def mark(dependency: P) -> P:
        setattr(dependency, _ANSWERS, codes)
        return dependency

    return mark


def dependency_problems(route: APIRoute) -> list[str]:
    """The problem codes a route may answer that follow from how it is built, not from what its own code does:
    its dependencies' (``may_answer``), and ``not_found`` when a path parameter beyond the reseller's names a
    resource. The route's own domain codes are its ``responses=problems(...)``."""
    codes: list[str] = []
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        for dependency in dependant.dependencies:
            codes += getattr(dependency.call, _ANSWERS, ())
            pending.append(dependency)
    if set(route.param_convertors) - {"org_id"}:
        codes.append("not_found")
    return codes


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


def finish(document: dict[str, Any], examples: dict[str, list[Any]] | None = None,
           derived: dict[tuple[str, str], list[str]] | None = None) -> dict[str, Any]:
    """The touches FastAPI does not make: the Problem schema; each operation's problem responses completed with
    the codes its construction implies (``derived``, by path and method: see ``dependency_problems``), 413 on
    every operation (the body limit stands in front of every route) and 408 on every one taking a body; the
    models' ``examples`` as they declare them, nulls included; each body's schema example repeated as the media
    type's example, which Swagger UI and Redoc show."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem_schema.pop("$defs", {}))
    schemas["Problem"] = problem_schema
    for name, listed in (examples or {}).items():
        if name in schemas:
            schemas[name]["examples"] = listed
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            implied = [*(derived or {}).get((path, method), ()), "payload_too_large"]
            if "requestBody" in operation:
                implied.append("request_timeout")
                _example_from_schema(operation["requestBody"].get("content", {}), schemas)
            _add_problems(responses, implied)
            for status, response in responses.items():
                if status.startswith("2"):
                    _example_from_schema(response.get("content", {}), schemas)
    return document


def declared_problems(responses: dict[str, Any]) -> list[str]:
    """The problem codes documented in an operation's responses (each problem example is named by its code)."""
    return [code for response in responses.values()
            for code in response.get("content", {}).get(PROBLEM_JSON, {}).get("examples", {})]


def _add_problems(responses: dict[str, Any], codes: Iterable[str]) -> None:
    """The problem responses rewritten with these codes as well as those already declared. FastAPI lets a route's
    response replace its router's of the same status, so they are merged here, by code."""
    for status, response in problems(*declared_problems(responses), *codes).items():
        responses[str(status)] = response
    ordered = sorted(responses.items())
    responses.clear()
    responses.update(ordered)


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
            derived = {(route.path, method.lower()): dependency_problems(route)
                       for route in api_routes(app.routes) if route.include_in_schema for method in route.methods}
            app.openapi_schema = finish(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes,
                tags=app.openapi_tags, servers=app.servers), model_examples(app.routes), derived)
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
