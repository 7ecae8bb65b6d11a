"""GET /v1/resellers/{org_id}/invoices and /invoices/{id}: the billing documents through the real app."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from api.app import create_app
from service.bootstrap import bootstrap
from service.settings import load_settings
from service.tokens import token_keys
from tests.api.conftest import ORG, OTHER_ORG, Api, assert_iso_utc, assert_problem, plus_order, pro_order

INVOICE_FIELDS = {"id", "reseller_id", "subscription_id", "purpose", "issued_at", "period_start", "period_end",
                  "currency", "lines", "subtotal_cents", "tax_rate_bps", "tax_cents", "total_cents",
                  "payment_reference", "state", "refunded_cents", "refunds"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The real app on the sandbox clock, its projections (billing documents among them) followed in
    background threads."""
    services = bootstrap(load_settings(data_dir=tmp_path / "data", sandbox_data=False, clock="sandbox"))
    try:
        app = create_app(services)
        services.read_side.start(poll_seconds=0.05)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Api(client, services, token_keys(services.settings, services.development_secret))
    finally:
        services.close()


def invoices_of(api: Api, org_id: str = ORG, **params: Any) -> Any:
    response = api.get(f"/v1/resellers/{org_id}/invoices", params=params, headers=api.admin(org_id))
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def bought(api: Api) -> dict[str, Any]:
    """ORG bought a Pro subscription, raised it to 7 seats the next day and bought a Plus; OTHER_ORG bought one."""
    api.reseller(ORG)
    api.reseller(OTHER_ORG, country="US")
    pro = api.subscription(pro_order(seats=5))
    api.move_clock(timedelta(days=1))
    raised = api.post(api.sub_path(pro["id"]) + "/seats", json={"seats": 7}, headers=api.admin())
    assert raised.status_code == 200, raised.text
    api.move_clock(timedelta(days=1))
    plus = api.subscription(plus_order())
    other = api.subscription(pro_order(seats=2), OTHER_ORG)
    position = api.log_position()
    everything = invoices_of(api, after=position)
    return {"pro": pro, "plus": plus, "other": other, "position": position, "items": everything["items"]}


def test_the_list_is_every_document_newest_first_with_lines_tax_and_payment(api: Api, bought: dict[str, Any]) -> None:
    items = bought["items"]
    assert [(i["purpose"], i["subscription_id"]) for i in items] == [
        ("subscription_created", bought["plus"]["id"]), ("seats_increased", bought["pro"]["id"]),
        ("subscription_created", bought["pro"]["id"])]
    charges = {c.reference: c for c in api.charges()}
    for item in items:
        assert set(item) == INVOICE_FIELDS
        assert item["reseller_id"] == ORG and item["currency"] == "USD" and item["state"] == "paid"
        assert_iso_utc(item["issued_at"], item["period_start"], item["period_end"])
        assert all(type(item[k]) is int for k in ("subtotal_cents", "tax_cents", "total_cents", "refunded_cents"))
        assert item["subtotal_cents"] == sum(line["amount_cents"] for line in item["lines"])
        assert item["total_cents"] == item["subtotal_cents"] + item["tax_cents"]
        assert item["tax_rate_bps"] == 1900
        assert charges[item["payment_reference"]].amount_cents == item["total_cents"]
        assert item["refunds"] == []
    increase = items[1]
    assert [line["proration"] for line in increase["lines"]] == [True, True]
    assert increase["lines"][0]["amount_cents"] < 0 < increase["lines"][1]["amount_cents"]


def test_filters_and_pages(api: Api, bought: dict[str, Any]) -> None:
    mine = invoices_of(api, subscription_id=bought["pro"]["id"])
    assert mine["total"] == 2 and {i["subscription_id"] for i in mine["items"]} == {bought["pro"]["id"]}
    newest = bought["items"][0]["issued_at"]
    a_second_later = (datetime.fromisoformat(newest) + timedelta(seconds=1)).astimezone(timezone(timedelta(hours=2)))
    window = invoices_of(api, **{"from": newest, "to": a_second_later.isoformat()})
    assert [i["id"] for i in window["items"]] == [bought["items"][0]["id"]] and window["total"] == 1
    before = invoices_of(api, to=newest)
    assert [i["id"] for i in before["items"]] == [i["id"] for i in bought["items"][1:]]

    first = invoices_of(api, limit=2)
    assert first["total"] == 3 and len(first["items"]) == 2 and first["next_cursor"]
    rest = invoices_of(api, limit=2, cursor=first["next_cursor"])
    assert rest["next_cursor"] is None
    assert [i["id"] for i in first["items"] + rest["items"]] == [i["id"] for i in bought["items"]]


def test_one_document_and_its_refunds(api: Api, bought: dict[str, Any]) -> None:
    created = bought["items"][2]
    invoice = api.services.app.repository.get(UUID(created["id"]))
    refund = api.services.gateway.refund(payment_reference=invoice.payment_reference, amount_cents=500,
                                         idempotency_key="r", metadata={})
    invoice.record_refund(amount_cents=500, refund_reference=refund, reason="goodwill", at=api.now(), actor="test")
    position = api.services.app.save(invoice)[-1].notification.id

    response = api.get(f"/v1/resellers/{ORG}/invoices/{created['id']}", params={"after": position},
                       headers=api.admin())
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["state"], body["refunded_cents"]) == ("partially_refunded", 500)
    assert [(r["refund_reference"], r["amount_cents"], r["reason"]) for r in body["refunds"]] == [
        (refund, 500, "goodwill")]
    assert_iso_utc(body["refunds"][0]["refunded_at"])
    assert {k: v for k, v in body.items() if k not in ("state", "refunded_cents", "refunds")} == {
        k: v for k, v in created.items() if k not in ("state", "refunded_cents", "refunds")}


@pytest.mark.parametrize("invoice_id", ["unknown", "malformed", "another resellers"])
def test_a_document_not_of_this_reseller_is_not_found(api: Api, bought: dict[str, Any], invoice_id: str) -> None:
    other_orgs = invoices_of(api, OTHER_ORG)["items"]
    path_id = {"unknown": str(uuid4()), "malformed": "not-an-id", "another resellers": other_orgs[0]["id"]}[invoice_id]
    response = api.get(f"/v1/resellers/{ORG}/invoices/{path_id}", headers=api.admin())
    assert_problem(response, 404, "not_found")


def test_a_reseller_sees_only_its_own_documents(api: Api, bought: dict[str, Any]) -> None:
    theirs = invoices_of(api, OTHER_ORG)
    assert theirs["total"] == 1 and theirs["items"][0]["subscription_id"] == bought["other"]["id"]
    assert invoices_of(api, subscription_id=bought["other"]["id"])["items"] == []


@pytest.mark.parametrize(("params", "field"), [
    ({"from": "yesterday"}, "from"),
    ({"from": "2026-01-01"}, "from"),
    ({"to": "2026-01-01T00:00:00"}, "to"),
    ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
    ({"limit": 0}, "limit"),
    ({"limit": 201}, "limit"),
    ({"limit": "many"}, "limit"),
    ({"subscription_id": "not-a-uuid"}, "subscription_id"),
    ({"cursor": "forged.cursor"}, "cursor"),
    ({"cursor": "é"}, "cursor"),
    ({"after": -1}, "after"),
])
def test_malformed_queries_are_validation_errors(api: Api, bought: dict[str, Any], params: dict[str, Any],
                                                 field: str) -> None:
    response = api.get(f"/v1/resellers/{ORG}/invoices", params=params, headers=api.admin())
    assert_problem(response, 422, "validation_error", field)


def test_a_cursor_of_another_query_is_refused(api: Api, bought: dict[str, Any]) -> None:
    cursor = invoices_of(api, limit=1)["next_cursor"]
    response = api.get(f"/v1/resellers/{ORG}/invoices", params={"limit": 1, "cursor": cursor,
                                                                "subscription_id": bought["pro"]["id"]},
                       headers=api.admin())
    assert_problem(response, 422, "validation_error", "cursor")


@pytest.mark.parametrize("who", ["member", "admin of another org", "support", "a disabled reseller"])
def test_only_an_admin_of_an_enabled_reseller_may_read(api: Api, bought: dict[str, Any], who: str) -> None:
    if who == "a disabled reseller":
        api.disable_reseller(ORG)
    headers = {"member": api.admin(ORG, role="member"), "admin of another org": api.admin(OTHER_ORG),
               "support": api.support(), "a disabled reseller": api.admin(ORG)}[who]
    invoice_id = bought["items"][0]["id"]
    for path in (f"/v1/resellers/{ORG}/invoices", f"/v1/resellers/{ORG}/invoices/{invoice_id}"):
        assert_problem(api.get(path, headers=headers), 403, "forbidden")


def test_without_a_token_it_is_unauthenticated(api: Api, bought: dict[str, Any]) -> None:
    assert_problem(api.get(f"/v1/resellers/{ORG}/invoices"), 401, "unauthenticated")
