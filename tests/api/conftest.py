"""The real app, wired on a temporary data dir, driven through FastAPI's TestClient.

`Api` wraps the client: every answer is checked never to be a 500, every problem answered to be one its
operation documents in /openapi.json (after the test: ``undeclared_problem``), and a few short helpers give
tokens, resellers and subscriptions. Nothing is mocked: the simulated payment processor and the
SQLite event store are the embedded defaults.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from starlette.routing import Match

with warnings.catch_warnings():  # starlette warns that its TestClient will move to httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from api.app import create_app
from api.docs import api_routes
from commands.ports import ProcessorCharge
from ledger import events
from ledger.reseller import Reseller
from service.bootstrap import Services, bootstrap
from service.settings import load_settings
from service.tokens import TokenKeys, mint, token_keys

PROBLEM_JSON = "application/problem+json"
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
ADMIN = "user-admin"
SUPPORT = "user-support"

ORG = "org_de"  # a German reseller (19 % tax) with a Visa card on file
OTHER_ORG = "org_other"


def pro_order(seats: int = 5, **changes: Any) -> dict[str, Any]:
    return {"plan": "pro", "billing_cycle": "monthly", "seats": seats, "organization_name": "Initech",
            "admin_email": "admin@initech.example", **changes}


def plus_order(**changes: Any) -> dict[str, Any]:
    return {"plan": "plus", "billing_cycle": "annual", "end_user_email": "ada@customer.example",
            "display_name": "Ada Lovelace", **changes}


def assert_problem(response: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem with the given status and code (and the field, for validation errors)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    if field is not None:
        assert body["field"] == field, body
    return body


def declared_problem_codes(operation: dict[str, Any], status: int) -> set[str]:
    """The problem codes an OpenAPI operation documents for this status (its examples are named by code)."""
    content = operation["responses"].get(str(status), {}).get("content", {})
    return set(content.get(PROBLEM_JSON, {}).get("examples", {}))


def undeclared_problem(app: FastAPI, response: httpx.Response) -> str | None:
    """Why a problem answer is not what its operation documents (its status and code are not among the error
    responses of /openapi.json), or None. Answers no documented operation matched are not judged (an unknown
    path, a method the path does not take)."""
    if not response.headers.get("content-type", "").startswith(PROBLEM_JSON) or response.status_code == 500:
        return None
    method, path = response.request.method, response.request.url.path
    scope = {"type": "http", "method": method, "path": path}
    route = next((route for route in api_routes(app.routes) if route.matches(scope)[0] is Match.FULL), None)
    if route is None or not route.include_in_schema:
        return None
    operation = app.openapi()["paths"][route.path][method.lower()]
    code = response.json().get("code")
    if code in declared_problem_codes(operation, response.status_code):
        return None
    return (f"{method} {route.path} answered {response.status_code} {code}, which its documented responses do not "
            f"name: declare it with api.docs.problems({code!r}) on the route ({response.text})")


def assert_iso_utc(*values: Any) -> None:
    for value in values:
        assert isinstance(value, str) and ISO_UTC.match(value), value


@dataclass
class Api:
    client: TestClient
    services: Services
    keys: TokenKeys
    problems_answered: list[httpx.Response] = field(default_factory=list)

    def undeclared_problems(self) -> list[str]:
        """Each problem answered so far whose status and code its operation does not document."""
        return [found for response in self.problems_answered
                if (found := undeclared_problem(self.client.app, response)) is not None]  # type: ignore[arg-type]

    # --- tokens ---------------------------------------------------------------------------------

    def token(self, *, sub: str = ADMIN, orgs: list[dict[str, str]] | None = None, roles: list[str] | None = None,
              ttl_seconds: int = 3600) -> str:
        return mint(self.keys, sub=sub, email=f"{sub}@example.com", orgs=orgs or [], roles=roles or [],
                    ttl_seconds=ttl_seconds)

    def admin(self, org_id: str = ORG, *, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(orgs=[{'id': org_id, 'role': role}])}"}

    def support(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub=SUPPORT, roles=['support'])}"}

    # --- requests (never a 500) ---------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        assert response.status_code != 500, f"{method} {path} answered 500: {response.text}"
        if response.headers.get("content-type", "").startswith(PROBLEM_JSON):
            self.problems_answered.append(response)  # checked against the document at the end (running_app)
        return response

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, **kwargs)

    # --- set-up through the API ---------------------------------------------------------------

    def enable_reseller(self, org_id: str, name: str | None = None) -> dict[str, Any]:
        response = self.post("/v1/support/resellers", json={"org_id": org_id, "name": name or f"Reseller {org_id}"},
                             headers=self.support())
        assert response.status_code in (200, 201), response.text
        return response.json()

    def disable_reseller(self, org_id: str) -> None:
        response = self.post(f"/v1/support/resellers/{org_id}/disable", headers=self.support())
        assert response.status_code == 200, response.text

    def put_billing(self, org_id: str, payment_method: str = "pm_card_visa", country: str = "DE") -> httpx.Response:
        return self.put(f"/v1/resellers/{org_id}/billing", headers=self.admin(org_id),
                        json={"payment_method": payment_method, "country": country,
                              "billing_email": f"billing@{org_id.replace('_', '-')}.example"})

    def reseller(self, org_id: str = ORG, *, country: str = "DE", payment_method: str = "pm_card_visa") -> str:
        self.enable_reseller(org_id)
        response = self.put_billing(org_id, payment_method, country)
        assert response.status_code == 200, response.text
        return org_id

    def create(self, body: dict[str, Any], org_id: str = ORG, **kwargs: Any) -> httpx.Response:
        return self.post(f"/v1/resellers/{org_id}/subscriptions", json=body, headers=self.admin(org_id), **kwargs)

    def subscription(self, body: dict[str, Any] | None = None, org_id: str = ORG) -> dict[str, Any]:
        response = self.create(body or pro_order(), org_id)
        assert response.status_code == 201, response.text
        return response.json()

    def sub_path(self, sub_id: str, org_id: str = ORG) -> str:
        return f"/v1/resellers/{org_id}/subscriptions/{sub_id}"

    def show(self, sub_id: str, org_id: str = ORG) -> dict[str, Any]:
        response = self.get(self.sub_path(sub_id, org_id), headers=self.admin(org_id))
        assert response.status_code == 200, response.text
        return response.json()

    def event_types(self, sub_id: str, org_id: str = ORG) -> list[str]:
        response = self.get(self.sub_path(sub_id, org_id) + "/events", headers=self.admin(org_id))
        assert response.status_code == 200, response.text
        return [item["type"] for item in response.json()["items"]]

    # --- what was written ---------------------------------------------------------------------

    def log_position(self) -> int:
        return self.services.app.recorder.max_notification_id() or 0

    def charges(self) -> list[ProcessorCharge]:
        return self.services.gateway.list_charges(created_from=datetime(2000, 1, 1, tzinfo=UTC),
                                                  created_to=datetime(2200, 1, 1, tzinfo=UTC))

    def reseller_event_types(self, org_id: str = ORG) -> list[str]:
        return [events.type_name(e) for e in self.services.ledger.history(Reseller.id_for(org_id))]

    def now(self) -> datetime:
        return self.services.clock.now()

    def move_clock(self, by: timedelta) -> None:
        self.services.clock.set(self.now() + by, actor="test")  # type: ignore[attr-defined]

    def foreign_token(self, claims: dict[str, Any]) -> str:
        """A token signed with this service's secret but with whatever claims are given."""
        return jwt.encode(claims, self.keys.signing_key, algorithm=self.keys.algorithm)


@dataclass
class Unchanged:
    """A snapshot of one subscription, its history, the log and the processor, to compare after a refusal."""

    api: Api
    sub_id: str | None
    org_id: str
    body: dict[str, Any] | None
    events: list[str] | None
    position: int
    charge_count: int

    @classmethod
    def of(cls, api: Api, sub_id: str | None = None, org_id: str = ORG) -> Unchanged:
        body = api.show(sub_id, org_id) if sub_id else None
        history = api.event_types(sub_id, org_id) if sub_id else None
        return cls(api, sub_id, org_id, body, history, api.log_position(), len(api.charges()))

    def check(self, *, except_reseller_events: int = 0, except_charge_events: int = 0) -> None:
        if self.sub_id:
            assert self.api.show(self.sub_id, self.org_id) == self.body
            assert self.api.event_types(self.sub_id, self.org_id) == self.events
        assert self.api.log_position() == self.position + except_reseller_events + except_charge_events
        assert len(self.api.charges()) == self.charge_count


@contextmanager
def running_app(tmp_path: Path, **settings: Any) -> Iterator[Api]:
    """The real app on a data dir of its own, with the given settings; its services closed at the end."""
    services = bootstrap(load_settings(data_dir=tmp_path / "data", sandbox_data=False, **settings))
    try:
        # Entered once, so that every request of the test shares one event-loop thread.
        with TestClient(create_app(services), raise_server_exceptions=False) as client:
            built = Api(client, services, token_keys(services.settings, services.development_secret))
            yield built
            # After the test, so that building the OpenAPI document is not timed with a request.
            assert not built.undeclared_problems(), built.undeclared_problems()
    finally:
        services.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The app on the system clock, with no resellers."""
    with running_app(tmp_path) as built:
        yield built


@pytest.fixture
def sandbox_api(tmp_path: Path) -> Iterator[Api]:
    """The app on the sandbox clock, which only moves when a test moves it."""
    with running_app(tmp_path, clock="sandbox") as built:
        yield built


@pytest.fixture
def ready(api: Api) -> Api:
    """The app with the German reseller ORG enabled and a Visa card on file."""
    api.reseller(ORG)
    return api
