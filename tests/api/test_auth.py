"""Who may call what: 401 without a valid token, 403 without the right role or an enabled reseller."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from service.tokens import TokenKeys, mint
from tests.api.conftest import ORG, Api, Unchanged, assert_problem, pro_order, running_app

SUB = "{sub}"
BILLING = {"payment_method": "pm_card_visa", "billing_email": "b@de.example", "country": "DE"}
RESELLER_ROUTES = [
    pytest.param("GET", f"/v1/resellers/{ORG}/billing", None, id="billing-get"),
    pytest.param("PUT", f"/v1/resellers/{ORG}/billing", BILLING, id="billing-put"),
    pytest.param("POST", f"/v1/resellers/{ORG}/subscriptions/preview", pro_order(), id="create-preview"),
    pytest.param("POST", f"/v1/resellers/{ORG}/subscriptions", pro_order(), id="create"),
    pytest.param("GET", f"/v1/resellers/{ORG}/subscriptions/{SUB}", None, id="get"),
    pytest.param("POST", f"/v1/resellers/{ORG}/subscriptions/{SUB}/seats/preview", {"seats": 8}, id="seats-preview"),
    pytest.param("POST", f"/v1/resellers/{ORG}/subscriptions/{SUB}/seats", {"seats": 8}, id="seats"),
    pytest.param("POST", f"/v1/resellers/{ORG}/subscriptions/{SUB}/cancel", None, id="cancel"),
    pytest.param("POST", f"/v1/resellers/{ORG}/subscriptions/{SUB}/resume", None, id="resume"),
    pytest.param("GET", f"/v1/resellers/{ORG}/subscriptions/{SUB}/events", None, id="events"),
]
SUPPORT_ROUTES = [
    pytest.param("POST", "/v1/support/resellers", {"org_id": "org_new", "name": "New"}, id="support-enable-new"),
    pytest.param("GET", f"/v1/support/resellers/{ORG}", None, id="support-show"),
    pytest.param("POST", f"/v1/support/resellers/{ORG}/disable", None, id="support-disable"),
    pytest.param("POST", f"/v1/support/resellers/{ORG}/enable", None, id="support-enable-again"),
    pytest.param("PUT", f"/v1/support/resellers/{ORG}/tax-exemption", {"tax_exempt": True, "reason": "c-1"},
                 id="support-tax-exemption"),
]
ALL_ROUTES = [*RESELLER_ROUTES, *SUPPORT_ROUTES, pytest.param("GET", "/v1/me/business-ids", None, id="business-ids")]


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": "user-admin", "email": "admin@example.com", "orgs": [{"id": ORG, "role": "admin"}],
              "roles": ["support"], "iat": now, "exp": now + 3600}
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not None}


def _bad_authorization(api: Api, kind: str) -> dict[str, str | bytes]:
    """An Authorization header that must not let anyone in (the empty dict: no header at all)."""
    other_secret = TokenKeys("HS256", b"another-secret" * 4, b"another-secret" * 4, None, None)
    tokens = {
        "other-secret": lambda: mint(other_secret, sub="user-admin", email="a@example.com",
                                     orgs=[{"id": ORG, "role": "admin"}], roles=["support"], ttl_seconds=3600),
        "expired": lambda: api.token(orgs=[{"id": ORG, "role": "admin"}], roles=["support"], ttl_seconds=-3600),
        "no-sub": lambda: api.foreign_token(_claims(sub=None)),
        "no-exp": lambda: api.foreign_token(_claims(exp=None)),
        "orgs-not-a-list": lambda: api.foreign_token(_claims(orgs="org_de")),
        "alg-none": lambda: jwt.encode(_claims(), None, algorithm="none"),
        "tampered": lambda: _tampered(api.token(orgs=[{"id": ORG, "role": "member"}])),
    }
    headers: dict[str, str | bytes | None] = {
        "missing": None,
        "empty": "",
        "garbage": "Bearer not-a-jwt",
        "three-dots": "Bearer a.b.c",
        "no-token": "Bearer",
        "blank-token": "Bearer    ",
        "basic": "Basic dXNlcjpwYXNz",
        "no-scheme": api.token(orgs=[{"id": ORG, "role": "admin"}], roles=["support"]),
        "non-ascii": b"Bearer \xe9\xe8",
    }
    if kind in tokens:
        return {"Authorization": f"Bearer {tokens[kind]()}"}
    value = headers[kind]
    return {} if value is None else {"Authorization": value}


def _tampered(token: str) -> str:
    """The token's payload swapped for one that claims admin, keeping the original signature."""
    header, _, signature = token.split(".")
    forged_payload = jwt.encode(_claims(), "k" * 32, algorithm="HS256").split(".")[1]
    return f"{header}.{forged_payload}.{signature}"


BAD_AUTHORIZATIONS = ["missing", "empty", "garbage", "three-dots", "no-token", "blank-token", "basic", "no-scheme",
                      "non-ascii", "other-secret", "expired", "no-sub", "no-exp", "orgs-not-a-list", "alg-none",
                      "tampered"]


def _assert_unauthenticated(api: Api, method: str, path: str, body: Any, kind: str) -> None:
    sub = api.subscription()
    before = Unchanged.of(api, sub["id"])

    response = api.request(method, path.replace(SUB, sub["id"]), json=body, headers=_bad_authorization(api, kind))

    assert_problem(response, 401, "unauthenticated")
    before.check()


@pytest.mark.parametrize("method,path,body", ALL_ROUTES)
@pytest.mark.parametrize("kind", ["missing", "expired", "other-secret"])
def test_every_route_refuses_a_missing_or_invalid_token(ready: Api, method: str, path: str, body: Any,
                                                        kind: str) -> None:
    _assert_unauthenticated(ready, method, path, body, kind)


@pytest.mark.parametrize("method,path,body", [
    pytest.param("POST", f"/v1/resellers/{ORG}/subscriptions/{SUB}/seats", {"seats": 8}, id="seats"),
    pytest.param("POST", "/v1/support/resellers", {"org_id": "org_new", "name": "New"}, id="support-enable-new"),
    pytest.param("GET", "/v1/me/business-ids", None, id="business-ids"),
])
@pytest.mark.parametrize("kind", BAD_AUTHORIZATIONS)
def test_every_kind_of_bad_authorization_is_unauthenticated(ready: Api, method: str, path: str, body: Any,
                                                            kind: str) -> None:
    _assert_unauthenticated(ready, method, path, body, kind)


def test_a_token_for_another_audience_or_issuer_is_unauthenticated_when_they_are_configured(tmp_path: Path) -> None:
    with running_app(tmp_path, jwt_audience="ledger", jwt_issuer="https://id.example") as api:
        keys = api.keys
        good = mint(keys, sub="s", email="s@example.com", orgs=[], roles=["support"], ttl_seconds=600)
        wrong = jwt.encode(_claims(aud="other", iss="https://id.example"), keys.signing_key, algorithm="HS256")
        no_issuer = jwt.encode(_claims(aud="ledger"), keys.signing_key, algorithm="HS256")

        assert api.get("/v1/support/resellers/org_x", headers={"Authorization": f"Bearer {good}"}).status_code == 404
        for token in (wrong, no_issuer):
            assert_problem(api.get("/v1/support/resellers/org_x", headers={"Authorization": f"Bearer {token}"}),
                           401, "unauthenticated")


@pytest.mark.parametrize("method,path,body", RESELLER_ROUTES)
def test_a_member_who_is_not_admin_is_forbidden(ready: Api, method: str, path: str, body: Any) -> None:
    sub = ready.subscription()
    before = Unchanged.of(ready, sub["id"])

    response = ready.request(method, path.replace(SUB, sub["id"]), json=body, headers=ready.admin(ORG, role="member"))

    assert_problem(response, 403, "forbidden")
    before.check()


@pytest.mark.parametrize("method,path,body", RESELLER_ROUTES)
def test_an_admin_of_another_org_is_forbidden(ready: Api, method: str, path: str, body: Any) -> None:
    sub = ready.subscription()
    before = Unchanged.of(ready, sub["id"])

    response = ready.request(method, path.replace(SUB, sub["id"]), json=body, headers=ready.admin("org_elsewhere"))

    assert_problem(response, 403, "forbidden")
    before.check()


@pytest.mark.parametrize("method,path,body", RESELLER_ROUTES)
def test_support_without_admin_role_is_forbidden_on_reseller_routes(ready: Api, method: str, path: str,
                                                                    body: Any) -> None:
    sub = ready.subscription()
    before = Unchanged.of(ready, sub["id"])

    response = ready.request(method, path.replace(SUB, sub["id"]), json=body, headers=ready.support())

    assert_problem(response, 403, "forbidden")
    before.check()


@pytest.mark.parametrize("method,path,body", RESELLER_ROUTES)
def test_an_admin_of_an_org_that_is_not_a_reseller_is_forbidden(api: Api, method: str, path: str,
                                                                body: Any) -> None:
    before = Unchanged.of(api)

    response = api.request(method, path.replace(SUB, "8f0e7d3c-1b2a-4c5d-9e8f-7a6b5c4d3e2f"), json=body,
                           headers=api.admin(ORG))

    assert_problem(response, 403, "forbidden")
    before.check()


@pytest.mark.parametrize("method,path,body", RESELLER_ROUTES)
def test_an_admin_of_a_disabled_reseller_is_forbidden(ready: Api, method: str, path: str, body: Any) -> None:
    sub = ready.subscription()
    ready.disable_reseller(ORG)
    before = Unchanged.of(ready)

    response = ready.request(method, path.replace(SUB, sub["id"]), json=body, headers=ready.admin(ORG))

    assert_problem(response, 403, "forbidden")
    before.check()
    ready.post(f"/v1/support/resellers/{ORG}/enable", headers=ready.support())
    assert ready.show(sub["id"]) == sub


def test_a_disabled_reseller_leaves_the_business_id_selector(ready: Api) -> None:
    ready.disable_reseller(ORG)

    response = ready.get("/v1/me/business-ids", headers=ready.admin(ORG))

    assert response.status_code == 200 and response.json() == {"items": []}


@pytest.mark.parametrize("method,path,body", SUPPORT_ROUTES)
@pytest.mark.parametrize("role", ["admin", "member"])
def test_a_user_without_the_support_role_is_forbidden_on_support_routes(ready: Api, method: str, path: str,
                                                                        body: Any, role: str) -> None:
    before = Unchanged.of(ready)

    response = ready.request(method, path, json=body, headers=ready.admin(ORG, role=role))

    assert_problem(response, 403, "forbidden")
    before.check()


def test_another_role_than_support_is_forbidden_on_support_routes(api: Api) -> None:
    token = api.token(roles=["auditor", "finance"])

    response = api.post("/v1/support/resellers", json={"org_id": "org_new", "name": "New"},
                        headers={"Authorization": f"Bearer {token}"})

    assert_problem(response, 403, "forbidden")
    assert api.log_position() == 0
