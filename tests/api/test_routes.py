"""The happy path of every route of the ledger core, and the shapes of its answers (SPEC section 3)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

from ledger.reseller import Reseller
from tests.api.conftest import ADMIN, ORG, SUPPORT, Api, assert_iso_utc, assert_problem, plus_order, pro_order

SUBSCRIPTION_FIELDS = {
    "id", "reseller_id", "type", "plan", "billing_cycle", "customer", "end_user_email", "display_name",
    "organization_name", "admin_email", "customer_account_id", "status", "seats", "pending_seats",
    "current_period_start", "current_period_end", "cancel_at_period_end", "unit_price_cents", "currency",
    "created_at", "version",
}
PREVIEW_FIELDS = {"quote_id", "currency", "lines", "unit_price_cents", "quantity", "subtotal_cents", "tax_rate_bps",
                  "tax_cents", "total_cents"}
LINE_FIELDS = {"description", "quantity", "unit_amount_cents", "amount_cents", "period_start", "period_end",
               "proration"}
EVENT_FIELDS = {"version", "type", "occurred_at", "actor", "data"}
GERMAN_TAX = Decimal("0.19")


def half_up(value: Fraction) -> int:
    """ROUND_HALF_UP to a whole cent, as SPEC asks."""
    magnitude = (abs(value) + Fraction(1, 2)).__floor__()
    return magnitude if value >= 0 else -magnitude


def german_tax(subtotal_cents: int) -> int:
    return int((Decimal(subtotal_cents) * GERMAN_TAX).quantize(Decimal(1), ROUND_HALF_UP))


def parse(text: str) -> datetime:
    assert_iso_utc(text)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def assert_preview_adds_up(preview: dict[str, Any]) -> None:
    assert PREVIEW_FIELDS <= preview.keys()
    assert isinstance(preview["quote_id"], str) and preview["quote_id"]
    assert preview["currency"] == "USD"
    assert_iso_utc(*(preview[key] for key in ("priced_at", "effective_at", "expires_at") if key in preview))
    for line in preview["lines"]:
        assert LINE_FIELDS <= line.keys()
        assert type(line["amount_cents"]) is int and type(line["unit_amount_cents"]) is int
        assert_iso_utc(line["period_start"], line["period_end"])
    for money in ("unit_price_cents", "subtotal_cents", "tax_cents", "total_cents"):
        assert type(preview[money]) is int, money
    assert preview["subtotal_cents"] == sum(line["amount_cents"] for line in preview["lines"])
    assert preview["tax_rate_bps"] == 1900
    assert preview["tax_cents"] == german_tax(preview["subtotal_cents"])
    assert preview["total_cents"] == preview["subtotal_cents"] + preview["tax_cents"]


# --- catalog and the business-id selector ------------------------------------------------------------


def test_plans_lists_the_catalog_in_cents(api: Api) -> None:
    response = api.get("/v1/plans", headers=api.admin())

    assert response.status_code == 200
    catalog = response.json()
    plans = {plan["id"]: plan for plan in catalog["plans"]}
    assert catalog["currency"] == "USD"
    assert (plans["plus"]["kind"], plans["plus"]["monthly_cents"], plans["plus"]["annual_cents"]) == \
        ("single_user", 3000, 30000)
    assert (plans["plus"]["min_seats"], plans["plus"]["max_seats"]) == (1, 1)
    assert (plans["pro"]["name"], plans["pro"]["kind"], plans["pro"]["monthly_cents"]) == \
        ("Lens Pro", "organization", 3000)
    assert (plans["enterprise"]["monthly_cents"], plans["enterprise"]["annual_cents"]) == (6000, 60000)
    assert (plans["enterprise"]["min_seats"], plans["enterprise"]["max_seats"]) == (1, 10000)
    assert catalog["tax_rates_bps"]["DE"] == 1900 and catalog["tax_rates_bps"]["US"] == 0


def test_business_ids_lists_only_enabled_resellers_the_caller_administers(api: Api) -> None:
    api.enable_reseller("org_admin", "Admin Co")
    api.enable_reseller("org_member", "Member Co")
    api.enable_reseller("org_disabled", "Disabled Co")
    api.disable_reseller("org_disabled")
    token = api.token(orgs=[{"id": "org_admin", "role": "admin"}, {"id": "org_member", "role": "member"},
                            {"id": "org_disabled", "role": "admin"}, {"id": "org_never", "role": "admin"}])

    response = api.get("/v1/me/business-ids", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200
    assert response.json() == {"items": [{"id": "org_admin", "name": "Admin Co"}]}


# --- support ----------------------------------------------------------------------------------------


def test_support_enables_a_new_reseller_with_201_and_an_existing_one_with_200(api: Api) -> None:
    first = api.post("/v1/support/resellers", json={"org_id": "org_new", "name": "New Co"}, headers=api.support())
    again = api.post("/v1/support/resellers", json={"org_id": "org_new", "name": "New Co"}, headers=api.support())

    assert first.status_code == 201
    assert first.json() == {"org_id": "org_new", "name": "New Co", "enabled": True, "tax_exempt": False,
                            "billing_info_on_file": False, "version": 1}
    assert again.status_code == 200
    assert again.json()["version"] == 1


def test_support_shows_disables_and_enables_again(api: Api) -> None:
    api.enable_reseller("org_x", "X Co")

    shown = api.get("/v1/support/resellers/org_x", headers=api.support())
    disabled = api.post("/v1/support/resellers/org_x/disable", headers=api.support())
    enabled = api.post("/v1/support/resellers/org_x/enable", json={"name": "X Renamed"}, headers=api.support())

    assert shown.status_code == 200 and shown.json()["enabled"] is True
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    assert enabled.status_code == 200
    assert (enabled.json()["enabled"], enabled.json()["name"]) == (True, "X Renamed")
    assert api.get("/v1/me/business-ids", headers=api.admin("org_x")).json()["items"] == \
        [{"id": "org_x", "name": "X Renamed"}]


def test_support_enable_again_without_a_body_keeps_the_name(api: Api) -> None:
    api.enable_reseller("org_x", "X Co")
    api.disable_reseller("org_x")

    enabled = api.post("/v1/support/resellers/org_x/enable", headers=api.support())

    assert enabled.status_code == 200
    assert (enabled.json()["enabled"], enabled.json()["name"]) == (True, "X Co")


def test_support_show_of_an_org_that_never_was_a_reseller_is_not_found(api: Api) -> None:
    assert_problem(api.get("/v1/support/resellers/org_never", headers=api.support()), 404, "not_found")


def test_tax_exemption_sets_the_tax_rate_to_zero_and_can_be_revoked(ready: Api) -> None:
    api = ready
    granted = api.put(f"/v1/support/resellers/{ORG}/tax-exemption", json={"tax_exempt": True, "reason": "cert 42"},
                      headers=api.support())
    billing = api.get(f"/v1/resellers/{ORG}/billing", headers=api.admin()).json()
    preview = api.post(f"/v1/resellers/{ORG}/subscriptions/preview", json=pro_order(), headers=api.admin()).json()
    revoked = api.put(f"/v1/support/resellers/{ORG}/tax-exemption", json={"tax_exempt": False},
                      headers=api.support())

    assert granted.status_code == 200 and granted.json()["tax_exempt"] is True
    assert (billing["tax_exempt"], billing["tax_rate_bps"]) == (True, 0)
    assert (preview["tax_rate_bps"], preview["tax_cents"], preview["total_cents"]) == (0, 0, 15000)
    assert revoked.status_code == 200 and revoked.json()["tax_exempt"] is False
    assert api.get(f"/v1/resellers/{ORG}/billing", headers=api.admin()).json()["tax_rate_bps"] == 1900


# --- billing ----------------------------------------------------------------------------------------


def test_billing_before_any_card_shows_nothing_on_file(api: Api) -> None:
    api.enable_reseller(ORG)

    response = api.get(f"/v1/resellers/{ORG}/billing", headers=api.admin())

    assert response.status_code == 200
    assert response.json()["on_file"] is False and response.json()["card"] is None


def test_billing_put_saves_the_card_and_get_shows_brand_last4_expiry_country_and_tax_rate(api: Api) -> None:
    api.enable_reseller(ORG)

    put = api.put(f"/v1/resellers/{ORG}/billing", headers=api.admin(),
                  json={"payment_method": "pm_card_mastercard", "billing_email": "billing@de.example",
                        "country": "DE"})
    got = api.get(f"/v1/resellers/{ORG}/billing", headers=api.admin())

    assert put.status_code == 200
    assert got.status_code == 200
    assert got.json() == put.json()
    billing = got.json()
    assert billing["card"] == {"brand": "mastercard", "last4": "4444", "exp_month": 12, "exp_year": 2034}
    assert (billing["country"], billing["tax_rate_bps"], billing["billing_email"], billing["on_file"]) == \
        ("DE", 1900, "billing@de.example", True)
    assert "pm_card_mastercard" not in got.text


def test_billing_country_is_read_case_insensitively(api: Api) -> None:
    api.enable_reseller(ORG)

    response = api.put_billing(ORG, country="gb")

    assert response.status_code == 200
    assert (response.json()["country"], response.json()["tax_rate_bps"]) == ("GB", 2000)


# --- subscriptions: create --------------------------------------------------------------------------


def test_create_preview_prices_the_first_period_in_full_with_german_tax(ready: Api) -> None:
    response = ready.post(f"/v1/resellers/{ORG}/subscriptions/preview", json=pro_order(seats=5),
                          headers=ready.admin())

    assert response.status_code == 200
    preview = response.json()
    assert_preview_adds_up(preview)
    assert (preview["unit_price_cents"], preview["quantity"], preview["subtotal_cents"]) == (3000, 5, 15000)
    assert (preview["tax_cents"], preview["total_cents"]) == (2850, 17850)
    [line] = preview["lines"]
    assert (line["quantity"], line["unit_amount_cents"], line["amount_cents"], line["proration"]) == \
        (5, 3000, 15000, False)
    assert "Lens Pro" in line["description"]
    assert ready.charges() == []


def test_create_an_organization_subscription(ready: Api) -> None:
    response = ready.create(pro_order(seats=5))

    assert response.status_code == 201
    sub = response.json()
    assert SUBSCRIPTION_FIELDS <= sub.keys()
    assert (sub["reseller_id"], sub["type"], sub["plan"], sub["billing_cycle"]) == \
        (ORG, "organization", "pro", "monthly")
    assert (sub["customer"], sub["organization_name"], sub["admin_email"]) == \
        ("Initech", "Initech", "admin@initech.example")
    assert (sub["end_user_email"], sub["display_name"]) == (None, None)
    assert sub["customer_account_id"] is not None and sub["customer_account_id"] != sub["id"]
    assert (sub["status"], sub["seats"], sub["pending_seats"], sub["cancel_at_period_end"]) == \
        ("active", 5, None, False)
    assert (sub["unit_price_cents"], sub["currency"], sub["version"]) == (3000, "USD", 1)
    start, end, created = (parse(sub[key]) for key in ("current_period_start", "current_period_end", "created_at"))
    assert start == created
    assert 28 <= (end - start).days <= 31
    assert [charge.amount_cents for charge in ready.charges()] == [17850]


def test_create_a_single_user_subscription(ready: Api) -> None:
    response = ready.create(plus_order())

    assert response.status_code == 201
    sub = response.json()
    assert (sub["type"], sub["plan"], sub["billing_cycle"], sub["seats"]) == ("single_user", "plus", "annual", 1)
    assert (sub["customer"], sub["end_user_email"], sub["display_name"]) == \
        ("ada@customer.example", "ada@customer.example", "Ada Lovelace")
    assert (sub["organization_name"], sub["admin_email"], sub["customer_account_id"]) == (None, None, None)
    start, end = parse(sub["current_period_start"]), parse(sub["current_period_end"])
    assert 365 <= (end - start).days <= 366
    assert [charge.amount_cents for charge in ready.charges()] == [35700]  # 300.00 + 19 %


def test_create_plus_with_seats_one_is_accepted(ready: Api) -> None:
    response = ready.create(plus_order(seats=1))

    assert response.status_code == 201 and response.json()["seats"] == 1


def test_get_shows_the_subscription_as_created(ready: Api) -> None:
    created = ready.subscription()

    response = ready.get(ready.sub_path(created["id"]), headers=ready.admin())

    assert response.status_code == 200
    assert response.json() == created


# --- subscriptions: seats, cancel, resume, events ---------------------------------------------------


def test_seats_preview_of_an_increase_prorates_the_remaining_time(sandbox_api: Api) -> None:
    api = sandbox_api
    api.reseller(ORG)
    sub = api.subscription(pro_order(seats=5))
    api.move_clock(timedelta(days=9, hours=7, seconds=13))

    response = api.post(api.sub_path(sub["id"]) + "/seats/preview", json={"seats": 8}, headers=api.admin())

    assert response.status_code == 200
    preview = response.json()
    assert_preview_adds_up(preview)
    start, end = parse(sub["current_period_start"]), parse(sub["current_period_end"])
    f = Fraction(int((end - api.now()).total_seconds()), int((end - start).total_seconds()))
    credit, charge = preview["lines"]
    assert (credit["quantity"], credit["amount_cents"], credit["proration"]) == \
        (5, -half_up(3000 * 5 * f), True)
    assert (charge["quantity"], charge["amount_cents"], charge["proration"]) == \
        (8, half_up(3000 * 8 * f), True)
    assert (credit["period_start"], credit["period_end"]) == (api.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                                                              sub["current_period_end"])
    assert "5 seats" in credit["description"] and "8 seats" in charge["description"]
    assert (preview["quantity"], preview["unit_price_cents"]) == (8, 3000)
    assert len(api.charges()) == 1  # the creation only


def test_tax_rounds_a_half_cent_up_not_to_even(sandbox_api: Api) -> None:
    api = sandbox_api
    api.reseller(ORG)
    sub = api.subscription(pro_order(seats=5))
    start, end = parse(sub["current_period_start"]), parse(sub["current_period_end"])
    length = int((end - start).total_seconds())
    # Find the first minute at which 5 -> 8 seats has a subtotal whose 19 % is an even whole cent and a half.
    for offset in range(60, length // 2, 60):
        f = Fraction(length - offset, length)
        subtotal = half_up(3000 * 8 * f) - half_up(3000 * 5 * f)
        if subtotal % 200 == 150:
            break
    api.move_clock(timedelta(seconds=offset))

    preview = api.post(api.sub_path(sub["id"]) + "/seats/preview", json={"seats": 8}, headers=api.admin()).json()

    assert preview["subtotal_cents"] == subtotal
    assert Fraction(subtotal * 19, 100) % 1 == Fraction(1, 2)
    assert preview["tax_cents"] == (subtotal * 19 + 50) // 100
    assert preview["total_cents"] == subtotal + preview["tax_cents"]


def test_seats_preview_of_a_decrease_costs_nothing_now(ready: Api) -> None:
    sub = ready.subscription(pro_order(seats=5))

    response = ready.post(ready.sub_path(sub["id"]) + "/seats/preview", json={"seats": 3}, headers=ready.admin())

    assert response.status_code == 200
    preview = response.json()
    assert (preview["lines"], preview["subtotal_cents"], preview["tax_cents"], preview["total_cents"]) == \
        ([], 0, 0, 0)
    assert ready.show(sub["id"])["version"] == 1


def test_seat_increase_applies_at_once_and_charges_the_proration(sandbox_api: Api) -> None:
    api = sandbox_api
    api.reseller(ORG)
    sub = api.subscription(pro_order(seats=5))
    api.move_clock(timedelta(days=10))
    preview = api.post(api.sub_path(sub["id"]) + "/seats/preview", json={"seats": 8}, headers=api.admin()).json()

    response = api.post(api.sub_path(sub["id"]) + "/seats", json={"seats": 8}, headers=api.admin())

    assert response.status_code == 200
    changed = response.json()
    assert (changed["seats"], changed["pending_seats"], changed["status"], changed["version"]) == \
        (8, None, "active", 2)
    assert [charge.amount_cents for charge in api.charges()] == [17850, preview["total_cents"]]
    assert api.event_types(sub["id"]) == ["SubscriptionCreated", "SeatsIncreased"]


def test_seat_decrease_is_scheduled_and_asking_for_the_current_seats_withdraws_it(ready: Api) -> None:
    sub = ready.subscription(pro_order(seats=5))
    seats = ready.sub_path(sub["id"]) + "/seats"

    decreased = ready.post(seats, json={"seats": 3}, headers=ready.admin())
    withdrawn = ready.post(seats, json={"seats": 5}, headers=ready.admin())

    assert decreased.status_code == 200
    assert (decreased.json()["status"], decreased.json()["seats"], decreased.json()["pending_seats"]) == \
        ("pending", 5, 3)
    assert withdrawn.status_code == 200
    assert (withdrawn.json()["status"], withdrawn.json()["seats"], withdrawn.json()["pending_seats"]) == \
        ("active", 5, None)
    assert len(ready.charges()) == 1
    assert ready.event_types(sub["id"]) == ["SubscriptionCreated", "SeatDecreaseScheduled", "SeatDecreaseWithdrawn"]


def test_an_increase_withdraws_a_pending_decrease(ready: Api) -> None:
    sub = ready.subscription(pro_order(seats=5))
    seats = ready.sub_path(sub["id"]) + "/seats"
    ready.post(seats, json={"seats": 3}, headers=ready.admin())

    response = ready.post(seats, json={"seats": 6}, headers=ready.admin())

    assert response.status_code == 200
    assert (response.json()["seats"], response.json()["pending_seats"], response.json()["status"]) == \
        (6, None, "active")
    assert ready.event_types(sub["id"]) == ["SubscriptionCreated", "SeatDecreaseScheduled", "SeatDecreaseWithdrawn",
                                            "SeatsIncreased"]


def test_cancel_then_resume(ready: Api) -> None:
    sub = ready.subscription()

    canceled = ready.post(ready.sub_path(sub["id"]) + "/cancel", headers=ready.admin())
    resumed = ready.post(ready.sub_path(sub["id"]) + "/resume", headers=ready.admin())

    assert canceled.status_code == 200
    assert (canceled.json()["status"], canceled.json()["cancel_at_period_end"]) == ("canceled", True)
    assert canceled.json()["current_period_end"] == sub["current_period_end"]
    assert resumed.status_code == 200
    assert (resumed.json()["status"], resumed.json()["cancel_at_period_end"], resumed.json()["version"]) == \
        ("active", False, 3)
    assert len(ready.charges()) == 1


def test_resume_keeps_a_pending_decrease(ready: Api) -> None:
    sub = ready.subscription(pro_order(seats=5))
    ready.post(ready.sub_path(sub["id"]) + "/seats", json={"seats": 2}, headers=ready.admin())
    ready.post(ready.sub_path(sub["id"]) + "/cancel", headers=ready.admin())

    resumed = ready.post(ready.sub_path(sub["id"]) + "/resume", headers=ready.admin())

    assert resumed.status_code == 200
    assert (resumed.json()["status"], resumed.json()["pending_seats"]) == ("pending", 2)


def test_events_lists_the_history_oldest_first_with_facts(ready: Api) -> None:
    sub = ready.subscription(pro_order(seats=5))
    ready.post(ready.sub_path(sub["id"]) + "/seats", json={"seats": 7}, headers=ready.admin())
    ready.post(ready.sub_path(sub["id"]) + "/seats", json={"seats": 4}, headers=ready.admin())
    ready.post(ready.sub_path(sub["id"]) + "/cancel", headers=ready.admin())
    ready.post(ready.sub_path(sub["id"]) + "/resume", headers=ready.admin())

    response = ready.get(ready.sub_path(sub["id"]) + "/events", headers=ready.admin())

    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["type"] for item in items] == ["SubscriptionCreated", "SeatsIncreased", "SeatDecreaseScheduled",
                                                "Canceled", "Resumed"]
    assert [item["version"] for item in items] == [1, 2, 3, 4, 5]
    for item in items:
        assert EVENT_FIELDS <= item.keys()
        assert item["actor"] == ADMIN
        assert_iso_utc(item["occurred_at"])
    created, increased = items[0]["data"], items[1]["data"]
    assert created["bill"]["total_cents"] == 17850 and created["bill"]["tax_rate_bps"] == 1900
    assert (increased["seats_before"], increased["seats_after"]) == (5, 7)
    assert type(increased["bill"]["total_cents"]) is int
    assert increased["bill"]["total_cents"] == ready.charges()[1].amount_cents
    assert ready.show(sub["id"])["version"] == 5


def test_support_actor_is_recorded_on_reseller_changes(api: Api) -> None:
    api.enable_reseller("org_x")

    assert api.get("/v1/support/resellers/org_x", headers=api.support()).json()["org_id"] == "org_x"
    assert api.reseller_event_types("org_x") == ["ResellerEnabled"]
    assert next(iter(api.services.ledger.history(Reseller.id_for("org_x")))).actor == SUPPORT


# --- the documentation ------------------------------------------------------------------------------


def test_openapi_lists_the_routes(api: Api) -> None:
    response = api.get("/openapi.json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    for path, methods in {
        "/v1/plans": {"get"},
        "/v1/me/business-ids": {"get"},
        "/v1/support/resellers": {"post"},
        "/v1/support/resellers/{org_id}/disable": {"post"},
        "/v1/support/resellers/{org_id}/enable": {"post"},
        "/v1/resellers/{org_id}/billing": {"get", "put"},
        "/v1/resellers/{org_id}/subscriptions": {"post"},
        "/v1/resellers/{org_id}/subscriptions/preview": {"post"},
        "/v1/resellers/{org_id}/subscriptions/{id}": {"get"},
        "/v1/resellers/{org_id}/subscriptions/{id}/seats/preview": {"post"},
        "/v1/resellers/{org_id}/subscriptions/{id}/seats": {"post"},
        "/v1/resellers/{org_id}/subscriptions/{id}/cancel": {"post"},
        "/v1/resellers/{org_id}/subscriptions/{id}/resume": {"post"},
        "/v1/resellers/{org_id}/subscriptions/{id}/events": {"get"},
    }.items():
        assert path in paths, path
        assert methods <= paths[path].keys(), path


def test_docs_page_is_served(api: Api) -> None:
    response = api.get("/docs")

    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
