"""The portal's read routes: the summary cards and the customer table (read models, caught up by hand here)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import ORG, OTHER_ORG, Api, assert_iso_utc, assert_problem, plus_order, pro_order

ROW_FIELDS = {"subscription_id", "customer", "type", "plan", "plan_name", "billing_cycle", "status", "seats",
              "pending_seats", "current_period_start", "current_period_end"}
TABLE = f"/v1/resellers/{ORG}/subscriptions"
SUMMARY = f"/v1/resellers/{ORG}/summary"


@pytest.fixture
def portfolio(ready: Api) -> dict[str, dict[str, Any]]:
    """Three customers of ORG (one canceled, one with a decrease pending) and one of another reseller."""
    initech = ready.subscription(pro_order(seats=5, organization_name="Initech"))
    ada = ready.subscription(plus_order())
    globex = ready.subscription(pro_order(plan="enterprise", seats=25, billing_cycle="annual",
                                          organization_name="Globex"))
    assert ready.post(ready.sub_path(ada["id"]) + "/cancel", headers=ready.admin()).status_code == 200
    assert ready.post(ready.sub_path(globex["id"]) + "/seats", json={"seats": 20},
                      headers=ready.admin()).status_code == 200
    ready.reseller(OTHER_ORG)
    ready.subscription(pro_order(seats=7, organization_name="Their Customer"), OTHER_ORG)
    ready.services.read_side.catch_up()
    return {"initech": initech, "ada": ada, "globex": globex}


def _table(api: Api, **params: Any) -> Any:
    return api.get(TABLE, params=params, headers=api.admin())


def test_summary_cards_count_customers_statuses_and_current_seats(ready: Api, portfolio: Any) -> None:
    response = ready.get(SUMMARY, headers=ready.admin())

    assert response.status_code == 200
    assert response.json() == {"total_customers": 3, "active": 2, "canceled": 1, "total_seats": 31}


def test_summary_of_a_reseller_without_customers_is_all_zero(ready: Api) -> None:
    ready.services.read_side.catch_up()

    response = ready.get(SUMMARY, headers=ready.admin())

    assert response.status_code == 200
    assert response.json() == {"total_customers": 0, "active": 0, "canceled": 0, "total_seats": 0}


def test_customer_table_lists_this_resellers_rows(ready: Api, portfolio: Any) -> None:
    response = _table(ready)

    assert response.status_code == 200
    table = response.json()
    assert (table["total"], table["next_cursor"]) == (3, None)
    rows = {row["customer"]: row for row in table["items"]}
    assert set(rows) == {"Initech", "ada@customer.example", "Globex"}
    for row in rows.values():
        assert ROW_FIELDS <= row.keys()
        assert_iso_utc(row["current_period_start"], row["current_period_end"])
    assert (rows["Initech"]["plan_name"], rows["Initech"]["status"], rows["Initech"]["seats"]) == \
        ("Lens Pro", "active", 5)
    assert (rows["ada@customer.example"]["type"], rows["ada@customer.example"]["status"]) == \
        ("single_user", "canceled")
    assert (rows["Globex"]["plan_name"], rows["Globex"]["status"], rows["Globex"]["seats"],
            rows["Globex"]["pending_seats"], rows["Globex"]["billing_cycle"]) == \
        ("Lens Enterprise", "pending", 25, 20, "annual")
    assert rows["Globex"]["subscription_id"] == portfolio["globex"]["id"]


@pytest.mark.parametrize("params,customers", [
    pytest.param({"status": "canceled"}, ["ada@customer.example"], id="status"),
    pytest.param({"plan": "pro"}, ["Initech"], id="plan"),
    pytest.param({"q": "GLOB"}, ["Globex"], id="q-case-insensitive"),
    pytest.param({"q": "%"}, [], id="q-wildcard-is-literal"),
    pytest.param({"sort": "-seats"}, ["Globex", "Initech", "ada@customer.example"], id="sort-descending"),
    pytest.param({"sort": "customer"}, ["ada@customer.example", "Globex", "Initech"], id="sort-customer"),
])
def test_customer_table_filters_and_sorts(ready: Api, portfolio: Any, params: dict[str, str],
                                          customers: list[str]) -> None:
    response = _table(ready, **params)

    assert response.status_code == 200
    assert [row["customer"] for row in response.json()["items"]] == customers
    assert response.json()["total"] == len(customers)


def test_customer_table_pages_with_a_cursor(ready: Api, portfolio: Any) -> None:
    seen, cursor = [], None
    for _ in range(5):
        response = _table(ready, limit=1, sort="customer", **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        seen += [row["customer"] for row in response.json()["items"]]
        assert response.json()["total"] == 3
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break

    assert seen == ["ada@customer.example", "Globex", "Initech"]


@pytest.mark.parametrize("params,field", [
    pytest.param({"limit": 0}, "limit", id="limit-0"),
    pytest.param({"limit": 201}, "limit", id="limit-201"),
    pytest.param({"limit": "ten"}, "limit", id="limit-text"),
    pytest.param({"sort": "colour"}, "sort", id="unknown-sort"),
    pytest.param({"status": "sleeping"}, "status", id="unknown-status"),
    pytest.param({"cursor": "garbage"}, "cursor", id="garbage-cursor"),
    pytest.param({"cursor": "abc.\u00e9t\u00e9"}, "cursor", id="non-ascii-cursor"),
    pytest.param({"q": "x" * 201}, "q", id="q-too-long"),
])
def test_customer_table_bad_query_is_a_validation_error_on_its_field(ready: Api, portfolio: Any,
                                                                     params: dict[str, Any], field: str) -> None:
    assert_problem(_table(ready, **params), 422, "validation_error", field=field)


def test_a_cursor_of_another_query_is_a_validation_error(ready: Api, portfolio: Any) -> None:
    cursor = _table(ready, limit=1, sort="customer").json()["next_cursor"]

    response = _table(ready, limit=1, sort="-seats", cursor=cursor)

    assert_problem(response, 422, "validation_error", field="cursor")


@pytest.mark.parametrize("path", [TABLE, SUMMARY])
def test_portal_reads_need_an_enabled_reseller_and_its_admin(ready: Api, path: str) -> None:
    assert_problem(ready.get(path), 401, "unauthenticated")
    assert_problem(ready.get(path, headers=ready.admin(ORG, role="member")), 403, "forbidden")
    assert_problem(ready.get(path.replace(ORG, "org_never"), headers=ready.admin("org_never")), 403, "forbidden")
    ready.disable_reseller(ORG)
    assert_problem(ready.get(path, headers=ready.admin(ORG)), 403, "forbidden")
