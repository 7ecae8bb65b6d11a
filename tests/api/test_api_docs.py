"""API docs that stand alone (issue 11, point 3): a valid OpenAPI document with a bearer scheme and the
problem+json errors actually returned, and /docs and /redoc that load nothing from another host."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from api.docs import MEANINGS, api_routes, declared_problems, route_models
from api.errors import STATUS_OF_CODE
from commands.errors import QuoteStale
from ledger.errors import DomainError
from tests.api.conftest import Api, undeclared_problem

EXTERNAL = re.compile(r"""(?:https?:)?//(?!testserver\b)[A-Za-z0-9.-]+\.[A-Za-z]{2,}""")
PUBLIC = {("get", "/v1/plans"), ("get", "/v1/payment-config"), ("post", "/v1/webhooks/stripe"), ("get", "/healthz"),
          ("get", "/readyz"), ("get", "/metrics")}


@pytest.fixture
def document(sandbox_api: Api) -> dict[str, Any]:
    response = sandbox_api.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, operation) for path, methods in document["paths"].items()
            for method, operation in methods.items()]


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)


def test_an_invalid_document_would_be_caught(document: dict[str, Any]) -> None:
    """The validator is not a formality: a response without a description is refused."""
    broken = dict(document, paths={"/x": {"get": {"responses": {"200": {}}}}})
    with pytest.raises(Exception, match="description"):
        validate(broken)


def test_a_bearer_scheme_secures_every_operation_but_the_public_ones(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for method, path, operation in operations(document):
        if (method, path) in PUBLIC:
            assert not operation.get("security"), (method, path)
        else:
            assert operation.get("security") == [{"bearer": []}], (method, path)
            assert "401" in operation["responses"], (method, path)


def test_every_error_response_is_a_problem_with_its_codes(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for method, path, operation in operations(document):
        errors = {status: r for status, r in operation["responses"].items() if status[0] in "45"}
        if (method, path) not in {("get", "/readyz")}:
            assert "422" in errors, (method, path)  # every route checks its parameters' text
        for status, response in errors.items():
            if (method, path, status) == ("get", "/readyz", "503"):
                continue  # readiness answers its reasons, not a problem
            content = response["content"]
            assert list(content) == ["application/problem+json"], (method, path, status)
            assert content["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
            examples = content["application/problem+json"]["examples"]
            assert examples, (method, path, status)
            for code, example in examples.items():
                assert example["value"]["code"] == code and example["value"]["status"] == int(status)
                assert f"`{code}`" in response["description"]
        if "requestBody" in operation:
            assert {"413", "422"} <= errors.keys(), (method, path)


def test_the_command_routes_declare_their_domain_problems(document: dict[str, Any]) -> None:
    def codes(method: str, path: str) -> set[str]:
        responses = document["paths"][path][method]["responses"]
        return {code for r in responses.values() for code in r.get("content", {}).get(
            "application/problem+json", {}).get("examples", {})}

    base = "/v1/resellers/{org_id}/subscriptions"
    assert {"payment_declined", "quote_stale", "idempotency_conflict", "billing_info_required", "forbidden",
            "unauthenticated", "validation_error"} <= codes("post", base)
    assert {"version_mismatch", "seats_fixed", "no_change"} <= codes("post", base + "/{id}/seats")
    assert {"version_mismatch", "invalid_state"} <= codes("post", base + "/{id}/cancel")
    assert {"projection_lagging"} <= codes("get", base)
    assert {"invalid_signature"} <= codes("post", "/v1/webhooks/stripe")


def test_every_problem_code_the_api_returns_is_documented() -> None:
    """Each code has one status (api.errors) and one meaning (api.docs); every domain error's code is among them,
    so none leaves with the handler's fallback status and no documented meaning."""
    assert set(STATUS_OF_CODE) == set(MEANINGS), set(STATUS_OF_CODE) ^ set(MEANINGS)

    def subclasses(kind: type) -> list[type]:
        return [each for sub in kind.__subclasses__() for each in (sub, *subclasses(sub))]

    import commands.errors  # noqa: F401  (the command layer's errors, subclasses of DomainError)
    raised = {kind.code for kind in subclasses(DomainError)}
    assert len(raised) > 10 and raised <= set(STATUS_OF_CODE), raised - set(STATUS_OF_CODE)


def test_every_problem_code_a_description_names_is_declared(document: dict[str, Any]) -> None:
    """The prose of an operation and its declared responses tell the same story."""
    missing = []
    for method, path, operation in operations(document):
        named = set(re.findall(r"`([a-z_]+)`", operation.get("description", ""))) & set(MEANINGS)
        declared = set(declared_problems(operation["responses"]))
        missing += [f"{method.upper()} {path}: {code}" for code in sorted(named - declared)]
    assert not missing, missing


def test_what_a_route_is_built_with_declares_its_problems(document: dict[str, Any]) -> None:
    """Dependencies mark what they make possible (api.docs.may_answer): every route taking a token declares 401,
    an Idempotency-Key 409 idempotency_conflict, If-Match 412, ?after= 503 projection_lagging; and a route
    naming a resource in its path 404. Each such answer is declared once per status, whatever the router
    and the route declare for the same status (FastAPI would let the route's replace the router's)."""
    for method, path, operation in operations(document):
        codes = set(declared_problems(operation["responses"]))
        parameters = {p["name"].lower(): p["in"] for p in operation.get("parameters", [])}
        assert ("idempotency-key" in parameters) == ("idempotency_conflict" in codes), (method, path)
        assert ("if-match" in parameters) == ("version_mismatch" in codes), (method, path)
        if parameters.get("after") == "query" and path != "/v1/resellers/{org_id}/events":
            assert "projection_lagging" in codes, (method, path)
        if set(re.findall(r"{(\w+)}", path)) - {"org_id"}:
            assert "not_found" in codes, (method, path)
        assert "payload_too_large" in codes, (method, path)
    disable = document["paths"]["/v1/support/resellers/{org_id}/disable"]["post"]["responses"]["409"]
    assert set(disable["content"]["application/problem+json"]["examples"]) == {"idempotency_conflict", "invalid_state"}


def test_a_problem_a_route_does_not_declare_is_caught(sandbox_api: Api) -> None:
    """Every answer of the API tests goes through tests.api.conftest's check that a problem's status and code
    are among its operation's declared responses: a route that answers one it does not declare fails it."""
    app = sandbox_api.client.app

    def undeclared(org_id: str) -> None:
        raise QuoteStale("not declared here")

    app.add_api_route("/v1/test-undeclared/{org_id}", undeclared, dependencies=[])  # type: ignore[attr-defined]
    app.openapi_schema = None  # type: ignore[attr-defined]
    response = sandbox_api.client.get("/v1/test-undeclared/org_x")
    assert response.status_code == 409
    found = undeclared_problem(app, response)  # type: ignore[arg-type]
    assert found is not None and "quote_stale" in found and "/v1/test-undeclared/{org_id}" in found
    declared = sandbox_api.client.get("/v1/resellers/org_x/subscriptions/not-a-uuid")
    assert undeclared_problem(app, declared) is None  # type: ignore[arg-type]
    recorded = sandbox_api.get("/v1/test-undeclared/org_x")  # what running_app checks after each test
    assert sandbox_api.undeclared_problems() == [undeclared_problem(app, recorded)]  # type: ignore[arg-type]
    sandbox_api.problems_answered.clear()  # or this test's own teardown would fail


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_name_no_other_host_and_their_assets_load(sandbox_api: Api, page: str) -> None:
    response = sandbox_api.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not EXTERNAL.findall(html), EXTERNAL.findall(html)
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert assets and all(asset.startswith("/docs/assets/") for asset in assets), assets
    for asset in assets:
        loaded = sandbox_api.get(asset)
        assert loaded.status_code == 200 and len(loaded.content) > 500, asset
        kind = loaded.headers["content-type"]
        expected = {"js": "text/javascript", "css": "text/css", "png": "image/png"}[asset.rsplit(".", 1)[1]]
        assert kind.startswith(expected), (asset, kind)
    assert "/openapi.json" in html
    if page == "/docs":
        assert '"validatorUrl": null' in html  # no badge from validator.swagger.io


def test_the_external_host_check_can_fail() -> None:
    assert EXTERNAL.findall('<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js">')
    assert EXTERNAL.findall('<link href="//fonts.googleapis.com/css?family=Montserrat">')
    assert not EXTERNAL.findall('<script src="/docs/assets/redoc.standalone.js">')


# --- descriptions and examples on every operation ---------------------------------------------------------

JSON = "application/json"


def bodies(operation: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The operation's JSON request body and 2xx JSON responses: (where, media type object)."""
    found = [("request", media) for kind, media in operation.get("requestBody", {}).get("content", {}).items()
             if kind == JSON]
    found += [(status, media) for status, response in operation["responses"].items() if status.startswith("2")
              for kind, media in response.get("content", {}).items() if kind == JSON]
    return found


def examples_of(media: dict[str, Any]) -> list[Any]:
    listed = [media["example"]] if "example" in media else []
    return listed + [example["value"] for example in media.get("examples", {}).values()]


def gaps(document: dict[str, Any]) -> list[str]:
    """Every operation without a description, every JSON body without an example, and every example its
    schema refuses (JSON Schema 2020-12, as OpenAPI 3.1 uses, with formats checked: date-time, uuid, email)."""
    found = []
    for method, path, operation in operations(document):
        where = f"{method.upper()} {path}"
        if not operation.get("description", "").strip():
            found.append(f"{where}: no description")
        for part, media in bodies(operation):
            examples = examples_of(media)
            if not examples:
                found.append(f"{where} {part}: no example")
            schema = {**media.get("schema", {}), "components": document["components"]}
            validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
            for example in examples:
                found += [f"{where} {part}: {error.json_path}: {error.message}"
                          for error in validator.iter_errors(example)]
    return found


def test_every_operation_has_a_description_and_every_json_body_a_valid_example(document: dict[str, Any]) -> None:
    assert not gaps(document), "\n".join(gaps(document))


def test_every_component_schema_example_is_valid(document: dict[str, Any]) -> None:
    """The examples of nested schemas (a line, a card, a plan) too, which Swagger UI shows on its own."""
    schemas = document["components"]["schemas"]
    for name, schema in schemas.items():
        validator = Draft202012Validator({**schema, "components": document["components"]},
                                         format_checker=Draft202012Validator.FORMAT_CHECKER)
        for example in schema.get("examples", []):
            errors = [f"{error.json_path}: {error.message}" for error in validator.iter_errors(example)]
            assert not errors, (name, errors)


def test_the_description_and_example_check_can_fail(document: dict[str, Any]) -> None:
    broken = copy.deepcopy(document)
    operation = broken["paths"]["/v1/resellers/{org_id}/subscriptions"]["post"]
    del operation["description"]
    del operation["requestBody"]["content"][JSON]["example"]
    operation["responses"]["201"]["content"][JSON]["example"] = {"id": "not a uuid", "seats": "five"}
    found = gaps(broken)
    where = "POST /v1/resellers/{org_id}/subscriptions"
    assert f"{where}: no description" in found
    assert f"{where} request: no example" in found
    assert any(gap.startswith(f"{where} 201: $.id: 'not a uuid' is not a 'uuid'") for gap in found), found
    assert any(gap.startswith(f"{where} 201: $.seats:") for gap in found), found
    assert any("'version' is a required property" in gap for gap in found), found


def test_the_models_accept_their_own_examples(sandbox_api: Api) -> None:
    """Pydantic's own rules too (strict integers, known countries, no unknown field), beyond what the JSON
    schema says: each route's body and response model validates each of its examples."""
    checked = set()
    for route in api_routes(sandbox_api.client.app.routes):
        for model in route_models(route):
            extra = model.model_config.get("json_schema_extra")
            examples = extra.get("examples") if isinstance(extra, dict) else None
            assert examples, f"{route.path}: {model.__name__} has no example"
            for example in examples:
                model.model_validate(example)
            checked.add(model)
    assert len(checked) >= 25, sorted(model.__name__ for model in checked)
