"""``?as_of=``: the customer table, the summary cards, one subscription and the invoices as the portal
would have shown them at an instant, on the sandbox clock, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ledger import events
from tests.api.conftest import ORG, OTHER_ORG, Api, assert_problem, plus_order, pro_order, running_app

TABLE = f"/v1/resellers/{ORG}/subscriptions"
SUMMARY = f"/v1/resellers/{ORG}/summary"
INVOICES = f"/v1/resellers/{ORG}/invoices"
HOUR = timedelta(hours=1)


@pytest.fixture
def api(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Api]:
    """The app on the sandbox clock, its views on the backend under test."""
    settings: dict[str, Any] = {"clock": "sandbox"}
    if backend == "postgres":
        settings |= {"database_url": request.getfixturevalue("postgres_url"),
                     "database_schema": request.getfixturevalue("postgres_schema")}
    with running_app(tmp_path, **settings) as built:
        yield built


def iso(at: datetime) -> str:
    return events.iso(at)


def get(api: Api, path: str, at: datetime | str | None = None, **params: Any) -> Any:
    if at is not None:
        params["as_of"] = at if isinstance(at, str) else iso(at)
    api.services.read_side.catch_up()
    return api.get(path, params=params, headers=api.admin())


def ok(api: Api, path: str, at: datetime | str | None = None, **params: Any) -> Any:
    response = get(api, path, at, **params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def story(api: Api) -> dict[str, Any]:
    """A reseller enabled an hour after ``before``; Initech created with 5 seats, increased to 8 an hour
    later, canceled an hour after that; the clock then runs past the period's end (it expires)."""
    times: dict[str, Any] = {"before": api.now()}
    api.move_clock(HOUR)
    api.reseller(ORG)
    api.move_clock(HOUR)
    initech = api.subscription(pro_order(seats=5, organization_name="Initech"))
    times["created"] = api.now()
    api.move_clock(HOUR)
    assert api.post(api.sub_path(initech["id"]) + "/seats", json={"seats": 8},
                    headers=api.admin()).status_code == 200
    times["increased"] = api.now()
    api.move_clock(HOUR)
    assert api.post(api.sub_path(initech["id"]) + "/cancel", headers=api.admin()).status_code == 200
    times["canceled"] = api.now()
    times["id"] = initech["id"]
    times["period_end"] = datetime.fromisoformat(initech["current_period_end"])
    return times


def test_before_the_reseller_existed_everything_is_empty(api: Api, story: dict[str, Any]) -> None:
    at = story["before"]
    assert ok(api, TABLE, at) == {"items": [], "next_cursor": None, "total": 0}
    assert ok(api, SUMMARY, at) == {"total_customers": 0, "active": 0, "canceled": 0, "total_seats": 0}
    assert ok(api, INVOICES, at) == {"items": [], "next_cursor": None, "total": 0}
    assert_problem(get(api, api.sub_path(story["id"]), at), 404, "not_found")


def test_between_the_increase_and_the_cancel_the_middle_state(api: Api, story: dict[str, Any]) -> None:
    at = story["increased"] + HOUR / 2

    table = ok(api, TABLE, at)
    assert table["total"] == 1
    [row] = table["items"]
    assert (row["subscription_id"], row["seats"], row["status"]) == (story["id"], 8, "active")
    assert ok(api, SUMMARY, at) == {"total_customers": 1, "active": 1, "canceled": 0, "total_seats": 8}
    one = ok(api, api.sub_path(story["id"]), at)
    assert (one["seats"], one["status"], one["cancel_at_period_end"], one["version"]) == (8, "active", False, 2)
    invoices = ok(api, INVOICES, at)
    assert [i["purpose"] for i in invoices["items"]] == ["seats_increased", "subscription_created"]
    # A second before the increase: the state made at creation.
    before_increase = story["increased"] - timedelta(seconds=1)
    assert [r["seats"] for r in ok(api, TABLE, before_increase)["items"]] == [5]
    assert ok(api, api.sub_path(story["id"]), before_increase)["version"] == 1
    assert ok(api, INVOICES, before_increase)["total"] == 1
    # At the very instant of the increase, the increase holds.
    assert [r["seats"] for r in ok(api, TABLE, story["increased"])["items"]] == [8]


def test_after_the_cancel_and_after_expiry(api: Api, story: dict[str, Any]) -> None:
    canceled = ok(api, TABLE, story["canceled"])
    assert [r["status"] for r in canceled["items"]] == ["canceled"]
    assert ok(api, SUMMARY, story["canceled"]) == {"total_customers": 1, "active": 0, "canceled": 1,
                                                    "total_seats": 8}
    api.services.clock.set(story["period_end"] + HOUR, actor="test")  # type: ignore[attr-defined]
    api.services.read_side.catch_up()
    api.services.scheduler.run_due()
    after = api.now()
    # Expired: gone from the table and the cards at and after the expiry, still there just before.
    assert ok(api, TABLE, after) == {"items": [], "next_cursor": None, "total": 0}
    assert ok(api, SUMMARY, after)["total_customers"] == 0
    assert ok(api, TABLE, story["period_end"] - timedelta(seconds=1))["total"] == 1
    assert ok(api, api.sub_path(story["id"]), after)["status"] == "expired"
    assert ok(api, api.sub_path(story["id"]), story["canceled"])["status"] == "canceled"


@pytest.mark.parametrize("path", [TABLE, SUMMARY, INVOICES, "one"])
def test_an_instant_in_the_future_is_refused(api: Api, story: dict[str, Any], path: str) -> None:
    path = api.sub_path(story["id"]) if path == "one" else path
    assert_problem(get(api, path, api.now() + timedelta(seconds=1)), 422, "validation_error", "as_of")
    assert get(api, path, api.now()).status_code == 200  # now itself is not the future


def test_a_malformed_instant_is_refused(api: Api, story: dict[str, Any]) -> None:
    for path in (TABLE, SUMMARY, INVOICES, api.sub_path(story["id"])):
        for text in ("yesterday", "2026-13-01T00:00:00Z", "2026-01-01T10:00:00", "2026-01-01", "",
                     "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-01-01T10:00:00Z\x00"):
            assert_problem(get(api, path, text), 422, "validation_error", "as_of")


def test_offsets_name_the_same_instant(api: Api, story: dict[str, Any]) -> None:
    at = story["increased"]
    shifted = at.astimezone(datetime.fromisoformat("2026-01-01T00:00:00+05:30").tzinfo).isoformat()
    assert ok(api, TABLE, shifted) == ok(api, TABLE, at)


@pytest.fixture
def crowd(api: Api) -> list[datetime]:
    """Seven customers of ORG made an hour apart, changed as they go, and one of another reseller;
    returns the instant after each step."""
    api.reseller(ORG)
    api.reseller(OTHER_ORG)
    api.subscription(pro_order(seats=3, organization_name="Their Customer"), OTHER_ORG)
    steps = []
    made = []
    for i, name in enumerate(["Initech", "Globex", "Umbrella", "Hooli", "Acme", "Stark", "Wayne"]):
        api.move_clock(HOUR)
        plan = "enterprise" if i % 3 == 0 else "pro"
        made.append(api.subscription(pro_order(seats=2 + i, organization_name=name, plan=plan)))
        if i == 2:
            api.subscription(plus_order(end_user_email="ada@customer.example"))
        if i >= 3:
            api.post(api.sub_path(made[i - 3]["id"]) + ("/cancel" if i % 2 else "/seats"),
                     json=None if i % 2 else {"seats": 20}, headers=api.admin())
        steps.append(api.now())
    return steps


def _walk(api: Api, at: datetime | None, **params: Any) -> tuple[list[dict[str, Any]], set[int]]:
    """Every page of one listing, and the totals the pages gave."""
    items, totals, cursor = [], set(), None
    while True:
        page = ok(api, TABLE, at, **params, **({"cursor": cursor} if cursor else {}))
        items += page["items"]
        totals.add(page["total"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items, totals


FILTERS = [{}, {"status": "canceled"}, {"status": "active"}, {"plan": "enterprise"}, {"q": "o"},
           {"sort": "-seats"}, {"sort": "created_at"}, {"sort": "status", "plan": "pro"}, {"sort": "-customer"}]


@pytest.mark.parametrize("params", FILTERS, ids=[str(f) for f in FILTERS])
def test_as_of_now_pages_filters_and_sorts_as_the_live_table(api: Api, crowd: list[datetime],
                                                               params: dict[str, Any]) -> None:
    live, _ = _walk(api, None, **params)
    assert live
    as_of, totals = _walk(api, api.now(), limit=2, **params)
    assert as_of == live and totals == {len(live)}


def test_pages_of_an_earlier_instant(api: Api, crowd: list[datetime]) -> None:
    at = crowd[2]  # Initech, Globex, Umbrella and Ada; nothing changed yet
    items, totals = _walk(api, at, limit=1, sort="-seats")
    assert [(r["customer"], r["seats"]) for r in items] == [("Umbrella", 4), ("Globex", 3), ("Initech", 2),
                                                           ("ada@customer.example", 1)]
    assert totals == {4}
    assert ok(api, TABLE, at, status="canceled")["total"] == 0
    assert [r["customer"] for r in ok(api, TABLE, at, plan="enterprise")["items"]] == ["Initech"]
    assert ok(api, TABLE, crowd[3], status="canceled")["items"][0]["customer"] == "Initech"  # the fourth step
    assert [r["seats"] for r in ok(api, TABLE, crowd[3], q="globex")["items"]] == [3]
    assert [r["seats"] for r in ok(api, TABLE, crowd[4], q="globex")["items"]] == [20]  # the fifth step
    assert ok(api, TABLE, crowd[4], status="canceled")["total"] == 1
    assert ok(api, TABLE, crowd[5], status="canceled")["total"] == 2


def test_a_cursor_belongs_to_its_instant(api: Api, crowd: list[datetime]) -> None:
    first = ok(api, TABLE, crowd[3], limit=1)
    assert_problem(get(api, TABLE, crowd[4], limit=1, cursor=first["next_cursor"]), 422, "validation_error",
                   "cursor")
    live = ok(api, TABLE, None, limit=1)
    assert_problem(get(api, TABLE, crowd[4], limit=1, cursor=live["next_cursor"]), 422, "validation_error", "cursor")


def test_invoices_page_as_of_with_filters(api: Api, crowd: list[datetime]) -> None:
    at = crowd[4]
    everything = ok(api, INVOICES, at, limit=200)
    assert everything["total"] == 7  # six creations (Ada's included) and Globex's increase
    assert ok(api, INVOICES, crowd[3])["total"] == 5
    pages, cursor = [], None
    while True:
        page = ok(api, INVOICES, at, limit=2, **({"cursor": cursor} if cursor else {}))
        pages += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == everything["items"]
    globex = ok(api, TABLE, at, q="globex")["items"][0]["subscription_id"]
    assert [i["purpose"] for i in ok(api, INVOICES, at, subscription_id=globex)["items"]] == [
        "seats_increased", "subscription_created"]
    assert ok(api, INVOICES, api.now())["total"] == ok(api, INVOICES)["total"]
