"""Every bad input is refused with the problem SPEC names, and nothing is written when it is."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from ledger.reseller import Reseller
from tests.api.conftest import ORG, OTHER_ORG, Api, Unchanged, assert_problem, plus_order, pro_order

# --- malformed bodies on every route that takes one ---------------------------------------------------

SUB = "{sub}"
# route id -> (method, path, who calls it, a body it accepts)
BODY_ROUTES: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "create-preview": ("POST", f"/v1/resellers/{ORG}/subscriptions/preview", "admin", pro_order()),
    "create": ("POST", f"/v1/resellers/{ORG}/subscriptions", "admin", pro_order()),
    "seats-preview": ("POST", f"/v1/resellers/{ORG}/subscriptions/{SUB}/seats/preview", "admin", {"seats": 6}),
    "seats": ("POST", f"/v1/resellers/{ORG}/subscriptions/{SUB}/seats", "admin", {"seats": 6}),
    "billing": ("PUT", f"/v1/resellers/{ORG}/billing", "admin",
                {"payment_method": "pm_card_visa", "billing_email": "b@de.example", "country": "DE"}),
    "support-enable": ("POST", "/v1/support/resellers", "support", {"org_id": "org_new", "name": "New"}),
    "tax-exemption": ("PUT", f"/v1/support/resellers/{ORG}/tax-exemption", "support",
                      {"tax_exempt": True, "reason": "c-1"}),
}
# Every route gets the first three; the rest go to one order route and one seats route, to keep the suite fast.
MALFORMED_BODIES = {"truncated-json": b'{"seats": 3', "array": b"[1, 2]", "empty": b"",
                    "single-quotes": b"{'seats': 3}", "text": b"not json at all", "string": b'"seats"',
                    "number": b"42", "null": b"null"}
UNREADABLE_BODIES = {"not-utf-8": b"\xff\xfe\x00", "deeply-nested": b"[" * 100_000 + b"]" * 100_000,
                     "number-too-long-to-parse": b'{"seats": ' + b"9" * 5000 + b"}"}


def _cases(bodies: dict[str, bytes], every_route: int) -> list[Any]:
    return [pytest.param(route, raw, id=f"{name}-{route}")
            for index, (name, raw) in enumerate(bodies.items())
            for route in (BODY_ROUTES if index < every_route else ("create", "seats"))]


def _send(api: Api, route: str, sub_id: str, **body: Any) -> Any:
    """Call a body route as the right user: ``content=`` raw bytes, or ``json=`` a body."""
    method, path, who, _ = BODY_ROUTES[route]
    headers = {**(api.admin() if who == "admin" else api.support()), "Content-Type": "application/json"}
    return api.request(method, path.replace(SUB, sub_id), headers=headers, **body)


@pytest.mark.parametrize("route,raw", _cases(MALFORMED_BODIES, every_route=3))
def test_a_body_that_is_not_a_json_object_is_a_validation_error(ready: Api, route: str, raw: bytes) -> None:
    sub = ready.subscription()
    before = Unchanged.of(ready, sub["id"])

    response = _send(ready, route, sub["id"], content=raw)

    assert_problem(response, 422, "validation_error", field="body")
    before.check()


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_an_unknown_field_is_a_validation_error_on_that_field(ready: Api, route: str) -> None:
    sub = ready.subscription()
    before = Unchanged.of(ready, sub["id"])

    response = _send(ready, route, sub["id"], json={**BODY_ROUTES[route][3], "colour": "blue"})

    assert_problem(response, 422, "validation_error", field="colour")
    before.check()


@pytest.mark.parametrize("route,raw", _cases(UNREADABLE_BODIES, every_route=1))
def test_a_body_the_json_parser_cannot_read_is_a_validation_error(ready: Api, route: str, raw: bytes) -> None:
    sub = ready.subscription()
    before = Unchanged.of(ready, sub["id"])

    response = _send(ready, route, sub["id"], content=raw)

    assert_problem(response, 422, "validation_error", field="body")
    before.check()


@pytest.mark.parametrize("suffix", ["/cancel", "/resume"])
@pytest.mark.parametrize("raw", [pytest.param(raw, id=name) for name, raw in UNREADABLE_BODIES.items()])
def test_an_unreadable_body_on_a_command_without_body_is_ignored_or_refused_never_a_500(
        ready: Api, suffix: str, raw: bytes) -> None:
    sub = ready.subscription()
    if suffix == "/resume":
        ready.post(ready.sub_path(sub["id"]) + "/cancel", headers=ready.admin())

    response = ready.post(ready.sub_path(sub["id"]) + suffix, content=raw,
                          headers={**ready.admin(), "Content-Type": "application/json", "Idempotency-Key": "k-1"})

    if response.status_code == 200:
        assert response.json()["status"] == ("canceled" if suffix == "/cancel" else "active")
    else:
        assert_problem(response, 422, "validation_error")


# --- orders: create and its preview ----------------------------------------------------------------

ORDER_ROUTES = [pytest.param("/preview", id="preview"), pytest.param("", id="create")]
BAD_ORDERS = [
    pytest.param(pro_order(plan="platinum"), "plan", id="unknown-plan"),
    pytest.param(pro_order(plan=""), "plan", id="empty-plan"),
    pytest.param(pro_order(plan=7), "plan", id="plan-not-a-string"),
    pytest.param(pro_order(billing_cycle="weekly"), "billing_cycle", id="weekly"),
    pytest.param(pro_order(billing_cycle="Monthly"), "billing_cycle", id="capitalised-cycle"),
    pytest.param(pro_order(billing_cycle=None), "billing_cycle", id="null-cycle"),
    pytest.param({k: v for k, v in pro_order().items() if k != "billing_cycle"}, "billing_cycle", id="no-cycle"),
    pytest.param({k: v for k, v in pro_order().items() if k != "plan"}, "plan", id="no-plan"),
    pytest.param(pro_order(seats=0), "seats", id="seats-0"),
    pytest.param(pro_order(seats=-1), "seats", id="seats-negative"),
    pytest.param(pro_order(seats=10001), "seats", id="seats-10001"),
    pytest.param(pro_order(seats="3"), "seats", id="seats-string"),
    pytest.param(pro_order(seats=3.5), "seats", id="seats-float"),
    pytest.param(pro_order(seats=3.0), "seats", id="seats-whole-float"),
    pytest.param(pro_order(seats=True), "seats", id="seats-true"),
    pytest.param(pro_order(seats=None), "seats", id="seats-null"),
    pytest.param(pro_order(seats=[3]), "seats", id="seats-list"),
    pytest.param({k: v for k, v in pro_order().items() if k != "seats"}, "seats", id="pro-without-seats"),
    pytest.param(pro_order(plan="enterprise", seats=0), "seats", id="enterprise-seats-0"),
    pytest.param(pro_order(plan="enterprise", seats=10001), "seats", id="enterprise-seats-10001"),
    pytest.param({k: v for k, v in pro_order().items() if k != "organization_name"}, "organization_name",
                 id="pro-without-organization"),
    pytest.param(pro_order(organization_name="   "), "organization_name", id="pro-blank-organization"),
    pytest.param({k: v for k, v in pro_order().items() if k != "admin_email"}, "admin_email",
                 id="pro-without-admin-email"),
    pytest.param(pro_order(admin_email="not-an-email"), "admin_email", id="pro-invalid-admin-email"),
    pytest.param(pro_order(admin_email="a@b@c.example"), "admin_email", id="pro-double-at-admin-email"),
    pytest.param(pro_order(admin_email=""), "admin_email", id="pro-empty-admin-email"),
    pytest.param(pro_order(end_user_email="ada@customer.example"), "end_user_email", id="pro-with-end-user"),
    pytest.param(pro_order(display_name="Ada"), "display_name", id="pro-with-display-name"),
    pytest.param(pro_order(organization_name="x" * 201), "organization_name", id="pro-organization-too-long"),
    pytest.param({k: v for k, v in plus_order().items() if k != "end_user_email"}, "end_user_email",
                 id="plus-without-end-user-email"),
    pytest.param(plus_order(end_user_email="ada at customer"), "end_user_email", id="plus-invalid-email"),
    pytest.param(plus_order(end_user_email="ada@"), "end_user_email", id="plus-email-without-domain"),
    pytest.param(plus_order(organization_name="Initech"), "organization_name", id="plus-with-organization"),
    pytest.param(plus_order(admin_email="admin@initech.example"), "admin_email", id="plus-with-admin-email"),
    pytest.param(plus_order(seats="1"), "seats", id="plus-seats-string"),
]


@pytest.mark.parametrize("suffix", ORDER_ROUTES)
@pytest.mark.parametrize("body,field", BAD_ORDERS)
def test_a_bad_order_is_a_validation_error_on_its_field(ready: Api, suffix: str, body: dict[str, Any],
                                                        field: str) -> None:
    before = Unchanged.of(ready)

    response = ready.post(f"/v1/resellers/{ORG}/subscriptions{suffix}", json=body, headers=ready.admin())

    assert_problem(response, 422, "validation_error", field=field)
    before.check()


@pytest.mark.parametrize("suffix", ORDER_ROUTES)
@pytest.mark.parametrize("seats", [2, 0, 5])
def test_plus_with_other_than_one_seat_is_seats_fixed(ready: Api, suffix: str, seats: int) -> None:
    before = Unchanged.of(ready)

    response = ready.post(f"/v1/resellers/{ORG}/subscriptions{suffix}", json=plus_order(seats=seats),
                          headers=ready.admin())

    assert_problem(response, 422, "seats_fixed")
    before.check()


def test_create_without_billing_info_is_refused(api: Api) -> None:
    api.enable_reseller(ORG)
    before = Unchanged.of(api)

    response = api.create(pro_order())

    assert_problem(response, 409, "billing_info_required")
    before.check()


def test_create_for_a_reseller_whose_card_fails_is_declined_and_records_only_the_decline(api: Api) -> None:
    api.reseller(ORG, payment_method="pm_card_chargeCustomerFail")
    before = Unchanged.of(api)

    response = api.create(pro_order())

    body = assert_problem(response, 402, "payment_declined")
    assert body["decline_code"] == "generic_decline"
    # The charge's intent, recorded before the processor was asked, ends declined.
    before.check(except_reseller_events=1, except_charge_events=3)
    assert api.reseller_event_types(ORG)[-1] == "ChargeDeclined"


# --- seat changes ----------------------------------------------------------------------------------

SEAT_ROUTES = [pytest.param("/seats/preview", id="preview"), pytest.param("/seats", id="change")]
BAD_SEATS = [
    pytest.param({"seats": 0}, id="0"),
    pytest.param({"seats": -3}, id="negative"),
    pytest.param({"seats": 10001}, id="10001"),
    pytest.param({"seats": "3"}, id="string"),
    pytest.param({"seats": 3.5}, id="float"),
    pytest.param({"seats": True}, id="true"),
    pytest.param({"seats": None}, id="null"),
    pytest.param({"seats": {"n": 3}}, id="object"),
    pytest.param({"seats": 10 ** 30}, id="huge"),
    pytest.param({}, id="missing"),
]


@pytest.mark.parametrize("suffix", SEAT_ROUTES)
@pytest.mark.parametrize("body", BAD_SEATS)
def test_a_bad_seat_count_is_a_validation_error_on_seats(ready: Api, suffix: str, body: dict[str, Any]) -> None:
    sub = ready.subscription(pro_order(seats=5))
    before = Unchanged.of(ready, sub["id"])

    response = ready.post(ready.sub_path(sub["id"]) + suffix, json=body, headers=ready.admin())

    assert_problem(response, 422, "validation_error", field="seats")
    before.check()


@pytest.mark.parametrize("suffix", SEAT_ROUTES)
@pytest.mark.parametrize("seats", [1, 2])
def test_seats_of_a_plus_subscription_are_fixed(ready: Api, suffix: str, seats: int) -> None:
    sub = ready.subscription(plus_order())
    before = Unchanged.of(ready, sub["id"])

    response = ready.post(ready.sub_path(sub["id"]) + suffix, json={"seats": seats}, headers=ready.admin())

    assert_problem(response, 422, "seats_fixed")
    before.check()


@pytest.mark.parametrize("suffix", SEAT_ROUTES)
def test_the_current_seats_without_a_pending_decrease_is_no_change(ready: Api, suffix: str) -> None:
    sub = ready.subscription(pro_order(seats=5))
    before = Unchanged.of(ready, sub["id"])

    response = ready.post(ready.sub_path(sub["id"]) + suffix, json={"seats": 5}, headers=ready.admin())

    assert_problem(response, 422, "no_change")
    before.check()


def test_the_same_pending_decrease_again_is_no_change(ready: Api) -> None:
    sub = ready.subscription(pro_order(seats=5))
    ready.post(ready.sub_path(sub["id"]) + "/seats", json={"seats": 3}, headers=ready.admin())
    before = Unchanged.of(ready, sub["id"])

    response = ready.post(ready.sub_path(sub["id"]) + "/seats", json={"seats": 3}, headers=ready.admin())

    assert_problem(response, 422, "no_change")
    before.check()


def _canceled(api: Api) -> dict[str, Any]:
    sub = api.subscription(pro_order(seats=5))
    response = api.post(api.sub_path(sub["id"]) + "/cancel", headers=api.admin())
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("suffix,body", [
    pytest.param("/seats", {"seats": 8}, id="increase"),
    pytest.param("/seats", {"seats": 2}, id="decrease"),
    pytest.param("/seats/preview", {"seats": 8}, id="preview-increase"),
    pytest.param("/cancel", None, id="cancel-again"),
])
def test_a_canceled_subscription_cannot_change(ready: Api, suffix: str, body: dict[str, Any] | None) -> None:
    sub = _canceled(ready)
    before = Unchanged.of(ready, sub["id"])

    response = ready.post(ready.sub_path(sub["id"]) + suffix, json=body, headers=ready.admin())

    assert_problem(response, 409, "invalid_state")
    before.check()


def test_resume_of_an_active_subscription_is_invalid_state(ready: Api) -> None:
    sub = ready.subscription()
    before = Unchanged.of(ready, sub["id"])

    response = ready.post(ready.sub_path(sub["id"]) + "/resume", headers=ready.admin())

    assert_problem(response, 409, "invalid_state")
    before.check()


def test_a_declined_increase_changes_nothing_and_records_the_decline_on_the_reseller(ready: Api) -> None:
    sub = ready.subscription(pro_order(seats=5))
    assert ready.put_billing(ORG, "pm_card_chargeCustomerFail").status_code == 200
    before = Unchanged.of(ready, sub["id"])
    reseller_events = ready.reseller_event_types(ORG)

    response = ready.post(ready.sub_path(sub["id"]) + "/seats", json={"seats": 8}, headers=ready.admin())

    body = assert_problem(response, 402, "payment_declined")
    assert body["decline_code"] == "generic_decline"
    before.check(except_reseller_events=1, except_charge_events=3)
    assert ready.reseller_event_types(ORG) == [*reseller_events, "ChargeDeclined"]
    declined = list(ready.services.ledger.history(Reseller.id_for(ORG)))[-1]
    assert str(declined.subscription_id) == sub["id"] and declined.amount_cents > 0


def test_a_decrease_needs_no_charge_even_when_the_card_fails(ready: Api) -> None:
    sub = ready.subscription(pro_order(seats=5))
    assert ready.put_billing(ORG, "pm_card_chargeCustomerFail").status_code == 200

    response = ready.post(ready.sub_path(sub["id"]) + "/seats", json={"seats": 3}, headers=ready.admin())

    assert response.status_code == 200
    assert response.json()["pending_seats"] == 3


# --- billing info ----------------------------------------------------------------------------------


def _billing(payment_method: str = "pm_card_visa", country: Any = "DE", email: Any = "b@de.example") -> dict[str, Any]:
    return {"payment_method": payment_method, "billing_email": email, "country": country}


def test_a_card_refused_when_saved_is_payment_declined_and_nothing_is_kept(api: Api) -> None:
    api.enable_reseller(ORG)
    before = Unchanged.of(api)

    response = api.put(f"/v1/resellers/{ORG}/billing", json=_billing("pm_card_chargeDeclined"), headers=api.admin())

    body = assert_problem(response, 402, "payment_declined")
    assert body["decline_code"] == "generic_decline"
    before.check()
    assert api.get(f"/v1/resellers/{ORG}/billing", headers=api.admin()).json()["on_file"] is False


def test_a_refused_card_keeps_the_card_already_on_file(ready: Api) -> None:
    before = ready.get(f"/v1/resellers/{ORG}/billing", headers=ready.admin()).json()

    response = ready.put(f"/v1/resellers/{ORG}/billing", json=_billing("pm_card_chargeDeclined", "GB"),
                         headers=ready.admin())

    assert_problem(response, 402, "payment_declined")
    assert ready.get(f"/v1/resellers/{ORG}/billing", headers=ready.admin()).json() == before


@pytest.mark.parametrize("body,field", [
    pytest.param(_billing("pm_card_unknown"), "payment_method", id="unknown-payment-method"),
    pytest.param(_billing("4242424242424242"), "payment_method", id="card-number"),
    pytest.param(_billing(""), "payment_method", id="empty-payment-method"),
    pytest.param(_billing(country="DEU"), "country", id="three-letters"),
    pytest.param(_billing(country="D"), "country", id="one-letter"),
    pytest.param(_billing(country="D1"), "country", id="digit"),
    pytest.param(_billing(country=""), "country", id="empty-country"),
    pytest.param(_billing(country=49), "country", id="number-country"),
    pytest.param(_billing(country="ÄÖ"), "country", id="non-ascii-country"),
    pytest.param(_billing(email="billing"), "billing_email", id="invalid-email"),
    pytest.param({"payment_method": "pm_card_visa", "country": "DE"}, "billing_email", id="no-email"),
])
def test_bad_billing_info_is_a_validation_error_on_its_field(api: Api, body: dict[str, Any], field: str) -> None:
    api.enable_reseller(ORG)
    before = Unchanged.of(api)

    response = api.put(f"/v1/resellers/{ORG}/billing", json=body, headers=api.admin())

    assert_problem(response, 422, "validation_error", field=field)
    before.check()


@pytest.mark.parametrize("body,field", [
    pytest.param({"org_id": "org with spaces", "name": "X"}, "org_id", id="org-id-spaces"),
    pytest.param({"org_id": "", "name": "X"}, "org_id", id="org-id-empty"),
    pytest.param({"org_id": "org_x", "name": ""}, "name", id="name-empty"),
    pytest.param({"org_id": "org_x"}, "name", id="name-missing"),
])
def test_bad_support_enable_is_a_validation_error_on_its_field(api: Api, body: dict[str, Any], field: str) -> None:
    before = Unchanged.of(api)

    response = api.post("/v1/support/resellers", json=body, headers=api.support())

    assert_problem(response, 422, "validation_error", field=field)
    before.check()


@pytest.mark.parametrize("method,path,body,status,code", [
    pytest.param("POST", "/v1/support/resellers/org_never/disable", None, 404, "not_found", id="disable-unknown"),
    pytest.param("POST", "/v1/support/resellers/org_never/enable", None, 404, "not_found", id="enable-unknown"),
    pytest.param("PUT", "/v1/support/resellers/org_never/tax-exemption", {"tax_exempt": True, "reason": "c-1"}, 404,
                 "not_found", id="exempt-unknown"),
    pytest.param("PUT", f"/v1/support/resellers/{ORG}/tax-exemption", {"tax_exempt": False}, 409, "invalid_state",
                 id="revoke-when-not-exempt"),
    pytest.param("PUT", f"/v1/support/resellers/{ORG}/tax-exemption", {"tax_exempt": True}, 422,
                 "validation_error", id="exempt-without-reason"),
    pytest.param("POST", f"/v1/support/resellers/{ORG}/enable", {"nmae": "typo"}, 422, "validation_error",
                 id="enable-again-unknown-field"),
])
def test_support_commands_refused(ready: Api, method: str, path: str, body: dict[str, Any] | None, status: int,
                                  code: str) -> None:
    before = Unchanged.of(ready)

    response = ready.request(method, path, json=body, headers=ready.support())

    assert_problem(response, status, code)
    before.check()


def test_disabling_a_disabled_reseller_is_invalid_state(ready: Api) -> None:
    ready.disable_reseller(ORG)
    before = Unchanged.of(ready)

    response = ready.post(f"/v1/support/resellers/{ORG}/disable", headers=ready.support())

    assert_problem(response, 409, "invalid_state")
    before.check()


def test_enable_again_with_malformed_json_is_a_validation_error(ready: Api) -> None:
    before = Unchanged.of(ready)

    response = ready.post(f"/v1/support/resellers/{ORG}/enable", content=b'{"name": ',
                          headers={**ready.support(), "Content-Type": "application/json"})

    assert_problem(response, 422, "validation_error", field="body")
    before.check()


def test_unknown_routes_and_methods_answer_problems(ready: Api) -> None:
    unknown = ready.get("/v1/nothing-here", headers=ready.admin())
    wrong_method = ready.request("DELETE", f"/v1/resellers/{ORG}/billing", headers=ready.admin())

    assert_problem(unknown, 404, "not_found")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"].startswith("application/problem+json")


def test_tax_exemption_needs_a_boolean(ready: Api) -> None:
    before = Unchanged.of(ready)

    response = ready.put(f"/v1/support/resellers/{ORG}/tax-exemption", json={"tax_exempt": "yes", "reason": "x"},
                         headers=ready.support())

    assert_problem(response, 422, "validation_error", field="tax_exempt")
    before.check()


# --- subscriptions that are not there, or not the caller's --------------------------------------------

SUBSCRIPTION_ROUTES = [
    pytest.param("GET", "", None, id="get"),
    pytest.param("GET", "/events", None, id="events"),
    pytest.param("POST", "/seats/preview", {"seats": 8}, id="seats-preview"),
    pytest.param("POST", "/seats", {"seats": 8}, id="seats"),
    pytest.param("POST", "/cancel", None, id="cancel"),
    pytest.param("POST", "/resume", None, id="resume"),
]


@pytest.mark.parametrize("method,suffix,body", SUBSCRIPTION_ROUTES)
@pytest.mark.parametrize("sub_id", [
    pytest.param(str(uuid.uuid4()), id="unknown-uuid"),
    pytest.param("not-a-uuid", id="malformed"),
    pytest.param("%20", id="blank"),
    pytest.param("00000000-0000-0000-0000-00000000000g", id="almost-a-uuid"),
])
def test_an_unknown_or_malformed_subscription_id_is_not_found(ready: Api, method: str, suffix: str,
                                                              body: dict[str, Any] | None, sub_id: str) -> None:
    before = Unchanged.of(ready)

    response = ready.request(method, f"/v1/resellers/{ORG}/subscriptions/{sub_id}{suffix}", json=body,
                             headers=ready.admin())

    assert_problem(response, 404, "not_found")
    before.check()


def test_the_id_of_a_reseller_is_not_a_subscription(ready: Api) -> None:
    response = ready.get(ready.sub_path(str(Reseller.id_for(ORG))), headers=ready.admin())

    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize("method,suffix,body", SUBSCRIPTION_ROUTES)
def test_another_resellers_subscription_is_not_found_and_not_revealed(ready: Api, method: str, suffix: str,
                                                                      body: dict[str, Any] | None) -> None:
    ready.reseller(OTHER_ORG)
    theirs = ready.subscription(pro_order(seats=5, organization_name="Their Customer"), OTHER_ORG)
    before = Unchanged.of(ready, theirs["id"], OTHER_ORG)
    unknown = str(uuid.uuid4())

    response = ready.request(method, ready.sub_path(theirs["id"]) + suffix, json=body, headers=ready.admin())
    for_unknown = ready.request(method, ready.sub_path(unknown) + suffix, json=body, headers=ready.admin())

    problem = assert_problem(response, 404, "not_found")
    assert OTHER_ORG not in response.text and "Their Customer" not in response.text
    assert problem.pop("request_id") != assert_problem(for_unknown, 404, "not_found")["request_id"]
    assert problem == {key: value.replace(unknown, theirs["id"]) if isinstance(value, str) else value
                       for key, value in assert_problem(for_unknown, 404, "not_found").items() if key != "request_id"}
    before.check()
