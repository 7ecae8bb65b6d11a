"""Idempotency-Key replays and price quotes: a retry never charges twice, a quote charges what it showed."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest

from tests.api.conftest import ORG, OTHER_ORG, Api, Unchanged, assert_problem, pro_order

REPLAYED = "Idempotent-Replayed"


def _with_key(api: Api, key: str, org_id: str = ORG) -> dict[str, str]:
    return {**api.admin(org_id), "Idempotency-Key": key}


# --- Idempotency-Key -------------------------------------------------------------------------------


def test_a_create_retried_with_the_same_key_and_body_answers_the_same_and_charges_once(ready: Api) -> None:
    path = f"/v1/resellers/{ORG}/subscriptions"

    first = ready.post(path, json=pro_order(), headers=_with_key(ready, "create-1"))
    position = ready.log_position()
    second = ready.post(path, json=pro_order(), headers=_with_key(ready, "create-1"))

    assert first.status_code == 201 and REPLAYED not in first.headers
    assert second.status_code == first.status_code
    assert second.json() == first.json()
    assert second.headers[REPLAYED] == "true"
    assert [charge.amount_cents for charge in ready.charges()] == [17850]
    assert ready.log_position() == position


def test_a_seat_increase_retried_with_the_same_key_charges_once(ready: Api) -> None:
    sub = ready.subscription(pro_order(seats=5))
    path = ready.sub_path(sub["id"]) + "/seats"

    first = ready.post(path, json={"seats": 9}, headers=_with_key(ready, "seats-1"))
    second = ready.post(path, json={"seats": 9}, headers=_with_key(ready, "seats-1"))

    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert second.headers[REPLAYED] == "true"
    assert first.json()["seats"] == 9 and ready.show(sub["id"])["version"] == 2
    assert len(ready.charges()) == 2  # the creation and one increase
    assert ready.event_types(sub["id"]) == ["SubscriptionCreated", "SeatsIncreased"]


def test_the_replay_answers_the_first_response_even_after_later_changes(ready: Api) -> None:
    sub = ready.subscription(pro_order(seats=5))
    path = ready.sub_path(sub["id"]) + "/seats"
    first = ready.post(path, json={"seats": 9}, headers=_with_key(ready, "seats-1"))
    ready.post(ready.sub_path(sub["id"]) + "/cancel", headers=ready.admin())

    second = ready.post(path, json={"seats": 9}, headers=_with_key(ready, "seats-1"))

    assert second.status_code == 200 and second.json() == first.json()
    assert ready.show(sub["id"])["status"] == "canceled"


@pytest.mark.parametrize("suffix", ["/cancel", "/resume"])
def test_cancel_and_resume_retried_with_the_same_key_are_replayed(ready: Api, suffix: str) -> None:
    sub = ready.subscription()
    if suffix == "/resume":
        ready.post(ready.sub_path(sub["id"]) + "/cancel", headers=ready.admin())

    first = ready.post(ready.sub_path(sub["id"]) + suffix, headers=_with_key(ready, "k-1"))
    second = ready.post(ready.sub_path(sub["id"]) + suffix, headers=_with_key(ready, "k-1"))

    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert second.headers[REPLAYED] == "true"


def test_billing_put_retried_with_the_same_key_is_replayed(api: Api) -> None:
    api.enable_reseller(ORG)
    body = {"payment_method": "pm_card_visa", "billing_email": "b@de.example", "country": "DE"}

    first = api.put(f"/v1/resellers/{ORG}/billing", json=body, headers=_with_key(api, "billing-1"))
    position = api.log_position()
    second = api.put(f"/v1/resellers/{ORG}/billing", json=body, headers=_with_key(api, "billing-1"))

    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert second.headers.get(REPLAYED) == "true"
    assert api.log_position() == position


def test_the_same_body_written_differently_is_still_a_replay(ready: Api) -> None:
    path = f"/v1/resellers/{ORG}/subscriptions"
    headers = {**_with_key(ready, "create-1"), "Content-Type": "application/json"}
    compact = json.dumps(pro_order(), separators=(",", ":"))
    reordered = json.dumps(dict(reversed(list(pro_order().items()))), indent=2)

    first = ready.post(path, content=compact, headers=headers)
    second = ready.post(path, content=reordered, headers=headers)

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json() and second.headers[REPLAYED] == "true"
    assert len(ready.charges()) == 1


def test_enabling_a_reseller_retried_with_the_same_key_answers_201_again(api: Api) -> None:
    headers = {**api.support(), "Idempotency-Key": "enable-1"}
    body = {"org_id": "org_new", "name": "New Co"}

    first = api.post("/v1/support/resellers", json=body, headers=headers)
    second = api.post("/v1/support/resellers", json=body, headers=headers)

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json() and second.headers[REPLAYED] == "true"


@pytest.mark.parametrize("second_body", [
    pytest.param(pro_order(seats=6), id="other-seats"),
    pytest.param(pro_order(organization_name="Globex"), id="other-customer"),
    pytest.param(pro_order(plan="enterprise"), id="other-plan"),
])
def test_the_same_key_with_another_body_is_an_idempotency_conflict(ready: Api, second_body: dict[str, Any]) -> None:
    path = f"/v1/resellers/{ORG}/subscriptions"
    assert ready.post(path, json=pro_order(), headers=_with_key(ready, "create-1")).status_code == 201
    before = Unchanged.of(ready)

    response = ready.post(path, json=second_body, headers=_with_key(ready, "create-1"))

    assert_problem(response, 409, "idempotency_conflict")
    before.check()


def test_the_same_key_on_another_subscription_is_an_idempotency_conflict(ready: Api) -> None:
    first_sub, second_sub = ready.subscription(), ready.subscription()
    ready.post(ready.sub_path(first_sub["id"]) + "/cancel", headers=_with_key(ready, "cancel-1"))
    before = Unchanged.of(ready, second_sub["id"])

    response = ready.post(ready.sub_path(second_sub["id"]) + "/cancel", headers=_with_key(ready, "cancel-1"))

    assert_problem(response, 409, "idempotency_conflict")
    before.check()


def test_idempotency_keys_are_scoped_per_reseller(ready: Api) -> None:
    ready.reseller(OTHER_ORG)

    ours = ready.post(f"/v1/resellers/{ORG}/subscriptions", json=pro_order(), headers=_with_key(ready, "shared"))
    theirs = ready.post(f"/v1/resellers/{OTHER_ORG}/subscriptions", json=pro_order(),
                        headers=_with_key(ready, "shared", OTHER_ORG))

    assert ours.status_code == theirs.status_code == 201
    assert REPLAYED not in theirs.headers
    assert theirs.json()["id"] != ours.json()["id"]
    assert (ours.json()["reseller_id"], theirs.json()["reseller_id"]) == (ORG, OTHER_ORG)
    assert len(ready.charges()) == 2


def test_a_refused_request_does_not_burn_its_key(ready: Api) -> None:
    path = f"/v1/resellers/{ORG}/subscriptions"
    refused = ready.post(path, json=pro_order(seats=0), headers=_with_key(ready, "create-1"))

    accepted = ready.post(path, json=pro_order(seats=3), headers=_with_key(ready, "create-1"))

    assert_problem(refused, 422, "validation_error", field="seats")
    assert accepted.status_code == 201 and REPLAYED not in accepted.headers


@pytest.mark.parametrize("key", [pytest.param("k" * 256, id="too-long"), pytest.param("tab\tkey", id="unprintable"),
                                 pytest.param("", id="empty")])
def test_a_malformed_idempotency_key_is_a_validation_error(ready: Api, key: str) -> None:
    before = Unchanged.of(ready)

    response = ready.post(f"/v1/resellers/{ORG}/subscriptions", json=pro_order(), headers=_with_key(ready, key))

    assert_problem(response, 422, "validation_error", field="Idempotency-Key")
    before.check()


# --- quotes ----------------------------------------------------------------------------------------


@pytest.fixture
def sandbox(sandbox_api: Api) -> Api:
    """The sandbox-clock app with the German reseller ORG and its Visa card."""
    sandbox_api.reseller(ORG)
    return sandbox_api


def _seats_preview(api: Api, sub_id: str, seats: int) -> dict[str, Any]:
    response = api.post(api.sub_path(sub_id) + "/seats/preview", json={"seats": seats}, headers=api.admin())
    assert response.status_code == 200, response.text
    return response.json()


def _create_preview(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(f"/v1/resellers/{ORG}/subscriptions/preview", json=body, headers=api.admin())
    assert response.status_code == 200, response.text
    return response.json()


def test_a_create_confirmed_with_its_quote_charges_the_previewed_total(sandbox: Api) -> None:
    preview = _create_preview(sandbox, pro_order(seats=7))
    sandbox.move_clock(timedelta(minutes=10))

    response = sandbox.create(pro_order(seats=7, quote_id=preview["quote_id"]))

    assert response.status_code == 201, response.text
    assert [charge.amount_cents for charge in sandbox.charges()] == [preview["total_cents"]] == [24990]


def test_a_seat_increase_confirmed_with_its_quote_charges_exactly_the_previewed_total(sandbox: Api) -> None:
    sub = sandbox.subscription(pro_order(seats=5))
    sandbox.move_clock(timedelta(days=3, hours=5, seconds=17))
    preview = _seats_preview(sandbox, sub["id"], 8)
    sandbox.move_clock(timedelta(minutes=14))

    response = sandbox.post(sandbox.sub_path(sub["id"]) + "/seats",
                            json={"seats": 8, "quote_id": preview["quote_id"]}, headers=sandbox.admin())

    assert response.status_code == 200, response.text
    assert response.json()["seats"] == 8
    assert sandbox.charges()[-1].amount_cents == preview["total_cents"]
    assert len(sandbox.charges()) == 2


def test_a_quote_fixes_the_proration_instant(sandbox: Api) -> None:
    sub = sandbox.subscription(pro_order(seats=5))
    sandbox.move_clock(timedelta(days=2))
    preview = _seats_preview(sandbox, sub["id"], 50)
    sandbox.move_clock(timedelta(minutes=14))
    later_price = _seats_preview(sandbox, sub["id"], 50)["total_cents"]

    sandbox.post(sandbox.sub_path(sub["id"]) + "/seats", json={"seats": 50, "quote_id": preview["quote_id"]},
                 headers=sandbox.admin())

    assert later_price < preview["total_cents"]
    assert sandbox.charges()[-1].amount_cents == preview["total_cents"]


def test_a_create_quote_confirmed_after_the_tax_rate_changed_is_stale(sandbox: Api) -> None:
    preview = _create_preview(sandbox, pro_order())
    granted = sandbox.put(f"/v1/support/resellers/{ORG}/tax-exemption", json={"tax_exempt": True, "reason": "c-1"},
                          headers=sandbox.support())
    assert granted.status_code == 200
    before = Unchanged.of(sandbox)

    response = sandbox.create(pro_order(quote_id=preview["quote_id"]))

    assert_problem(response, 409, "quote_stale")
    before.check()


def test_a_quote_confirmed_after_the_subscription_changed_is_stale(sandbox: Api) -> None:
    sub = sandbox.subscription(pro_order(seats=5))
    preview = _seats_preview(sandbox, sub["id"], 8)
    assert sandbox.post(sandbox.sub_path(sub["id"]) + "/seats", json={"seats": 3},
                        headers=sandbox.admin()).status_code == 200
    before = Unchanged.of(sandbox, sub["id"])

    response = sandbox.post(sandbox.sub_path(sub["id"]) + "/seats", json={"seats": 8, "quote_id": preview["quote_id"]},
                            headers=sandbox.admin())

    assert_problem(response, 409, "quote_stale")
    before.check()


def test_a_quote_cannot_be_confirmed_twice(sandbox: Api) -> None:
    sub = sandbox.subscription(pro_order(seats=5))
    preview = _seats_preview(sandbox, sub["id"], 8)
    body = {"seats": 8, "quote_id": preview["quote_id"]}
    assert sandbox.post(sandbox.sub_path(sub["id"]) + "/seats", json=body, headers=sandbox.admin()).status_code == 200
    before = Unchanged.of(sandbox, sub["id"])

    response = sandbox.post(sandbox.sub_path(sub["id"]) + "/seats", json=body, headers=sandbox.admin())

    assert_problem(response, 409, "quote_stale")
    before.check()


def test_a_seat_quote_older_than_15_minutes_is_stale(sandbox: Api) -> None:
    sub = sandbox.subscription(pro_order(seats=5))
    preview = _seats_preview(sandbox, sub["id"], 8)
    sandbox.move_clock(timedelta(minutes=15, seconds=1))
    before = Unchanged.of(sandbox, sub["id"])

    response = sandbox.post(sandbox.sub_path(sub["id"]) + "/seats", json={"seats": 8, "quote_id": preview["quote_id"]},
                            headers=sandbox.admin())

    assert_problem(response, 409, "quote_stale")
    before.check()


def test_a_create_quote_older_than_15_minutes_is_stale(sandbox: Api) -> None:
    preview = _create_preview(sandbox, pro_order())
    sandbox.move_clock(timedelta(minutes=16))
    before = Unchanged.of(sandbox)

    response = sandbox.create(pro_order(quote_id=preview["quote_id"]))

    assert_problem(response, 409, "quote_stale")
    before.check()


def test_a_quote_for_5_seats_confirmed_with_6_is_stale(sandbox: Api) -> None:
    sub = sandbox.subscription(pro_order(seats=3))
    preview = _seats_preview(sandbox, sub["id"], 5)
    before = Unchanged.of(sandbox, sub["id"])

    response = sandbox.post(sandbox.sub_path(sub["id"]) + "/seats", json={"seats": 6, "quote_id": preview["quote_id"]},
                            headers=sandbox.admin())

    assert_problem(response, 409, "quote_stale")
    before.check()


def test_a_create_quote_confirmed_with_another_order_is_stale(sandbox: Api) -> None:
    preview = _create_preview(sandbox, pro_order(seats=5))
    before = Unchanged.of(sandbox)

    response = sandbox.create(pro_order(seats=6, quote_id=preview["quote_id"]))

    assert_problem(response, 409, "quote_stale")
    before.check()


def test_a_quote_for_one_subscription_is_stale_on_another(sandbox: Api) -> None:
    first, second = sandbox.subscription(pro_order(seats=5)), sandbox.subscription(pro_order(seats=5))
    preview = _seats_preview(sandbox, first["id"], 8)
    before = Unchanged.of(sandbox, second["id"])

    response = sandbox.post(sandbox.sub_path(second["id"]) + "/seats",
                            json={"seats": 8, "quote_id": preview["quote_id"]}, headers=sandbox.admin())

    assert_problem(response, 409, "quote_stale")
    before.check()


def _forged(quote_id: str) -> str:
    """The quote with its payload altered (its total lowered to one cent, if it reads as JSON), the signature kept."""
    payload, signature = quote_id.rsplit(".", 1)
    prefix, body = ("qt_", payload[3:]) if payload.startswith("qt_") else ("", payload)
    try:
        fields = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        fields[-1] = 1
        body = base64.urlsafe_b64encode(json.dumps(fields, separators=(",", ":")).encode()).rstrip(b"=").decode()
    except (ValueError, TypeError, IndexError, KeyError):
        body = body[:-1] + ("A" if body[-1:] != "A" else "B")
    return f"{prefix}{body}.{signature}"


def _other_signature(quote_id: str) -> str:
    body, signature = quote_id.rsplit(".", 1)
    return f"{body}.{'A' * len(signature) if not signature.startswith('A') else 'B' * len(signature)}"


GARBLINGS = {
    "forged-total": _forged,
    "other-signature": _other_signature,
    "truncated": lambda quote_id: quote_id[:-10],
    "appended": lambda quote_id: quote_id + "x",
    "reversed": lambda quote_id: "qt_" + quote_id[3:][::-1],
    "no-prefix": lambda quote_id: quote_id[3:],
    "not-a-quote": lambda _: "not-a-quote",
    "prefix-only": lambda _: "qt_",
    "dot-only": lambda _: "qt_.",
    "short-garbage": lambda _: "qt_abc.def",
    "empty": lambda _: "",
    "long-garbage": lambda _: "x" * 1999,
    "non-ascii": lambda _: "qt_" + "\u00e9" * 20 + ".sig",
    "non-ascii-signature": lambda quote_id: quote_id.rsplit(".", 1)[0] + ".\u00e9t\u00e9",
}


@pytest.mark.parametrize("garble", [pytest.param(fn, id=name) for name, fn in GARBLINGS.items()])
def test_a_forged_or_garbled_seat_quote_is_a_validation_error_on_quote_id(sandbox: Api, garble: Any) -> None:
    sub = sandbox.subscription(pro_order(seats=5))
    quote_id = garble(_seats_preview(sandbox, sub["id"], 8)["quote_id"])
    before = Unchanged.of(sandbox, sub["id"])

    response = sandbox.post(sandbox.sub_path(sub["id"]) + "/seats", json={"seats": 8, "quote_id": quote_id},
                            headers=sandbox.admin())

    assert_problem(response, 422, "validation_error", field="quote_id")
    before.check()


@pytest.mark.parametrize("quote_id", [pytest.param(42, id="number"), pytest.param(["qt_a.b"], id="list"),
                                      pytest.param({"id": "qt_a.b"}, id="object")])
def test_a_quote_id_that_is_not_a_string_is_a_validation_error_on_quote_id(sandbox: Api, quote_id: Any) -> None:
    sub = sandbox.subscription(pro_order(seats=5))
    before = Unchanged.of(sandbox, sub["id"])

    response = sandbox.post(sandbox.sub_path(sub["id"]) + "/seats", json={"seats": 8, "quote_id": quote_id},
                            headers=sandbox.admin())

    assert_problem(response, 422, "validation_error", field="quote_id")
    before.check()


@pytest.mark.parametrize("garble", [pytest.param(GARBLINGS[name], id=name)
                                    for name in ("forged-total", "other-signature", "non-ascii-signature")])
def test_a_forged_create_quote_is_a_validation_error_on_quote_id(sandbox: Api, garble: Any) -> None:
    preview = _create_preview(sandbox, pro_order())
    before = Unchanged.of(sandbox)

    response = sandbox.create(pro_order(quote_id=garble(preview["quote_id"])))

    assert_problem(response, 422, "validation_error", field="quote_id")
    before.check()
