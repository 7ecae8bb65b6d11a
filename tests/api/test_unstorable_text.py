"""Text the ledger cannot keep (NUL, other control characters, lone surrogates) is refused at the door,
in any body field, path or query parameter, header or token claim: 422 naming the field, nothing written."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.conftest import ORG, Api, Unchanged, assert_problem, plus_order, pro_order

SUB = "{sub}"
BILLING = {"payment_method": "pm_card_visa", "billing_email": "billing@de.example", "country": "DE"}
# (method, path, who calls it, a body it accepts, the text field spoilt)
FIELDS = {
    "create-organization_name": ("POST", f"/v1/resellers/{ORG}/subscriptions", "admin", pro_order(),
                                 "organization_name"),
    "create-admin_email": ("POST", f"/v1/resellers/{ORG}/subscriptions", "admin", pro_order(), "admin_email"),
    "create-plan": ("POST", f"/v1/resellers/{ORG}/subscriptions", "admin", pro_order(), "plan"),
    "create-billing_cycle": ("POST", f"/v1/resellers/{ORG}/subscriptions", "admin", pro_order(), "billing_cycle"),
    "create-end_user_email": ("POST", f"/v1/resellers/{ORG}/subscriptions", "admin", plus_order(), "end_user_email"),
    "create-display_name": ("POST", f"/v1/resellers/{ORG}/subscriptions", "admin", plus_order(), "display_name"),
    "create-quote_id": ("POST", f"/v1/resellers/{ORG}/subscriptions", "admin", {**pro_order(), "quote_id": "q"},
                        "quote_id"),
    "preview-organization_name": ("POST", f"/v1/resellers/{ORG}/subscriptions/preview", "admin", pro_order(),
                                  "organization_name"),
    "seats-quote_id": ("POST", f"/v1/resellers/{ORG}/subscriptions/{SUB}/seats", "admin",
                       {"seats": 6, "quote_id": "q"}, "quote_id"),
    "billing-billing_email": ("PUT", f"/v1/resellers/{ORG}/billing", "admin", BILLING, "billing_email"),
    "billing-payment_method": ("PUT", f"/v1/resellers/{ORG}/billing", "admin", BILLING, "payment_method"),
    "billing-country": ("PUT", f"/v1/resellers/{ORG}/billing", "admin", BILLING, "country"),
    "reseller-name": ("POST", "/v1/support/resellers", "support", {"org_id": "org_new", "name": "New"}, "name"),
    "reseller-org_id": ("POST", "/v1/support/resellers", "support", {"org_id": "org_new", "name": "New"}, "org_id"),
    "reseller-new-name": ("POST", f"/v1/support/resellers/{ORG}/enable", "support", {"name": "Renamed"}, "name"),
    "tax-exemption-reason": ("PUT", f"/v1/support/resellers/{ORG}/tax-exemption", "support",
                             {"tax_exempt": True, "reason": "certificate 1"}, "reason"),
}
UNSTORABLE = {"nul": "\x00", "bell": "\x07", "escape": "\x1b", "delete": "\x7f", "c1-next-line": "\x85",
              "tab": "\t", "newline": "\n", "carriage-return": "\r", "lone-surrogate": "\ud800",
              "low-surrogate": "\udfff"}


def spoil(value: str, character: str) -> str:
    """The value with the character in its middle, where stripping whitespace cannot remove it."""
    middle = len(value) // 2
    return value[:middle] + character + value[middle:]


def send(api: Api, method: str, path: str, who: str, body: dict[str, Any], **headers: str | bytes) -> httpx.Response:
    """``body`` as JSON with \\u escapes, so that lone surrogates travel as a client would send them."""
    credentials = api.admin() if who == "admin" else api.support()
    return api.request(method, path, content=json.dumps(body).encode(),
                       headers={**credentials, "Content-Type": "application/json", **headers})


def create(api: Api, body: dict[str, Any]) -> httpx.Response:
    return send(api, "POST", f"/v1/resellers/{ORG}/subscriptions", "admin", body)


@pytest.mark.parametrize("route", FIELDS)
def test_a_nul_in_any_text_field_is_a_validation_error_on_that_field(ready: Api, route: str) -> None:
    sub = ready.subscription()
    method, path, who, body, field = FIELDS[route]
    before = Unchanged.of(ready, sub["id"])

    response = send(ready, method, path.replace(SUB, sub["id"]), who, {**body, field: spoil(body[field], "\x00")})

    problem = assert_problem(response, 422, "validation_error", field=field)
    assert "U+0000" in problem["detail"]
    before.check()


@pytest.mark.parametrize("character", [pytest.param(c, id=name) for name, c in UNSTORABLE.items()])
def test_every_control_character_and_lone_surrogate_is_refused(ready: Api, character: str) -> None:
    before = Unchanged.of(ready)

    response = create(ready, pro_order(organization_name=spoil("Initech", character)))

    problem = assert_problem(response, 422, "validation_error", field="organization_name")
    assert f"U+{ord(character):04X}" in problem["detail"]
    before.check()


def test_text_in_any_script_with_symbols_is_kept(ready: Api) -> None:
    """The rule refuses only what cannot be stored, not what is merely unusual."""
    name = "Zoë & Søn 株式会社 Ünïcødé 🚀 \u00a0\u200b\ufffd"

    response = create(ready, pro_order(organization_name=name))

    assert response.status_code == 201, response.text
    assert response.json()["organization_name"] == name


def test_a_refused_name_leaves_the_other_resellers_table_and_summary_readable(ready: Api) -> None:
    ready.services.read_side.start(poll_seconds=0.05)
    ready.reseller("org_other")
    ready.subscription(org_id="org_other")
    refused = create(ready, pro_order(organization_name="Ini\x00tech"))
    assert_problem(refused, 422, "validation_error", field="organization_name")
    head = str(ready.log_position())

    for path in ("subscriptions", "summary"):
        answer = ready.get(f"/v1/resellers/org_other/{path}", params={"after": head}, headers=ready.admin("org_other"))
        assert answer.status_code == 200, answer.text
    assert ready.get("/v1/resellers/org_other/summary", headers=ready.admin("org_other")).json()["total_customers"] == 1


def test_an_unknown_field_named_with_a_nul_is_refused(ready: Api) -> None:
    before = Unchanged.of(ready)

    response = create(ready, {**pro_order(), "note\x00": "x"})

    assert_problem(response, 422, "validation_error", field="note\x00")
    before.check()


@pytest.mark.parametrize("path,params,field", [
    pytest.param(f"/v1/resellers/{ORG}/subscriptions", {"q": "Ini\x00tech"}, "q", id="table-q"),
    pytest.param(f"/v1/resellers/{ORG}/subscriptions", {"plan": "pro\x1b"}, "plan", id="table-plan"),
    pytest.param(f"/v1/resellers/{ORG}/subscriptions", {"cursor": "c\x00"}, "cursor", id="table-cursor"),
    pytest.param(f"/v1/resellers/{ORG}/subscriptions", {"sort": "\x7fseats"}, "sort", id="table-sort"),
    pytest.param(f"/v1/resellers/{ORG}/invoices", {"subscription_id": "\x00"}, "subscription_id",
                 id="invoices-subscription"),
    pytest.param(f"/v1/resellers/{ORG}/summary", {"unused\x00": "1"}, "unused\x00", id="unknown-parameter-name"),
])
def test_a_control_character_in_a_query_parameter_is_a_validation_error_on_it(
        ready: Api, path: str, params: dict[str, str], field: str) -> None:
    response = ready.get(path, params=params, headers=ready.admin())

    problem = assert_problem(response, 422, "validation_error", field=field)
    assert "control character" in problem["detail"]


@pytest.mark.parametrize("method,path,who,field", [
    pytest.param("GET", "/v1/resellers/org%00de/subscriptions", "admin", "org_id", id="reseller-org"),
    pytest.param("GET", f"/v1/resellers/{ORG}/subscriptions/{SUB}%00", "admin", "id", id="subscription-id"),
    pytest.param("GET", f"/v1/resellers/{ORG}/invoices/%1b", "admin", "invoice_id", id="invoice-id"),
    pytest.param("POST", "/v1/support/resellers/org%00x/disable", "support", "org_id", id="support-disable"),
    pytest.param("POST", "/v1/support/resellers/org%01x/enable", "support", "org_id", id="support-enable"),
])
def test_a_control_character_in_a_path_parameter_is_a_validation_error_on_it(
        ready: Api, method: str, path: str, who: str, field: str) -> None:
    sub = ready.subscription()
    before = Unchanged.of(ready, sub["id"])

    response = ready.request(method, path.replace(SUB, sub["id"]), json={"name": "X"} if "enable" in path else None,
                             headers=ready.admin() if who == "admin" else ready.support())

    problem = assert_problem(response, 422, "validation_error", field=field)
    assert "control character" in problem["detail"]
    before.check()


@pytest.mark.parametrize("key", [b"k\x00ey", b"k\x1bey", b"k\x85ey"], ids=["nul", "escape", "c1-next-line"])
def test_a_control_character_in_the_idempotency_key_is_refused(ready: Api, key: bytes) -> None:
    before = Unchanged.of(ready)

    response = send(ready, "POST", f"/v1/resellers/{ORG}/subscriptions", "admin", pro_order(),
                    **{"Idempotency-Key": key})

    assert_problem(response, 422, "validation_error", field="Idempotency-Key")
    before.check()


@pytest.mark.parametrize("claims", [
    pytest.param({"sub": "user\x00admin"}, id="sub"),
    pytest.param({"email": "a\x00@example.com"}, id="email"),
    pytest.param({"orgs": [{"id": ORG, "role": "admin"}, {"id": "org\x00", "role": "admin"}]}, id="org"),
    pytest.param({"roles": ["support\x07"]}, id="role"),
])
def test_a_token_whose_claims_cannot_be_stored_is_unauthenticated(ready: Api, claims: dict[str, Any]) -> None:
    """The token's ``sub`` becomes the actor of every event: a signed token is refused too."""
    before = Unchanged.of(ready)
    expires = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
    token = ready.foreign_token({"sub": "user-admin", "orgs": [{"id": ORG, "role": "admin"}], "exp": expires,
                                 **claims})

    response = ready.post(f"/v1/resellers/{ORG}/subscriptions", json=pro_order(),
                          headers={"Authorization": f"Bearer {token}"})

    assert_problem(response, 401, "unauthenticated")
    before.check()


def test_the_sandbox_clock_refuses_a_control_character(sandbox_api: Api) -> None:
    before = sandbox_api.now()

    response = sandbox_api.post("/v1/sandbox/clock", json={"now": "2030-01-01T00:00:00Z\x00"},
                                headers=sandbox_api.support())

    problem = assert_problem(response, 422, "validation_error", field="now")
    assert "U+0000" in problem["detail"]
    assert sandbox_api.now() == before
