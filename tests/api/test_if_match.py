"""Optimistic concurrency for portals: If-Match with the version the user saw, 412 when it moved on."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api, Unchanged, assert_problem, pro_order


def test_a_subscription_carries_its_version_as_an_entity_tag(ready: Api) -> None:
    sub = ready.subscription(pro_order(seats=5))
    shown = ready.get(ready.sub_path(sub["id"]), headers=ready.admin())
    assert shown.headers["ETag"] == '"1"'

    changed = ready.post(ready.sub_path(sub["id"]) + "/seats", json={"seats": 6},
                         headers={**ready.admin(), "If-Match": '"1"'})

    assert changed.status_code == 200
    assert changed.json()["version"] == 2 and changed.headers["ETag"] == '"2"'


def test_one_more_seat_from_a_stale_read_is_refused_not_turned_into_a_decrease(ready: Api) -> None:
    """Two portal users read 10 seats and each ask for 11: the second must not silently schedule nothing."""
    sub = ready.subscription(pro_order(seats=10))
    seen = ready.show(sub["id"])
    first = ready.post(ready.sub_path(sub["id"]) + "/seats", json={"seats": seen["seats"] + 1},
                       headers={**ready.admin(), "If-Match": f'"{seen["version"]}"'})
    assert first.status_code == 200
    before = Unchanged.of(ready, sub["id"])

    second = ready.post(ready.sub_path(sub["id"]) + "/seats", json={"seats": seen["seats"] + 1},
                        headers={**ready.admin(), "If-Match": f'"{seen["version"]}"'})

    body = assert_problem(second, 412, "version_mismatch")
    assert "version 2" in body["detail"]
    before.check()


@pytest.mark.parametrize("action", ["cancel", "resume"])
def test_cancel_and_resume_check_the_version_too(ready: Api, action: str) -> None:
    sub = ready.subscription(pro_order(seats=3))
    if action == "resume":
        assert ready.post(ready.sub_path(sub["id"]) + "/cancel", headers=ready.admin()).status_code == 200
    current = ready.show(sub["id"])["version"]

    stale = ready.post(ready.sub_path(sub["id"]) + f"/{action}",
                       headers={**ready.admin(), "If-Match": f'"{current - 1}"'})
    fresh = ready.post(ready.sub_path(sub["id"]) + f"/{action}",
                       headers={**ready.admin(), "If-Match": f'W/"{current}"'})

    assert_problem(stale, 412, "version_mismatch")
    assert fresh.status_code == 200 and fresh.json()["version"] == current + 1


def test_without_if_match_a_change_behaves_as_before(ready: Api) -> None:
    sub = ready.subscription(pro_order(seats=3))
    ready.post(ready.sub_path(sub["id"]) + "/seats", json={"seats": 4}, headers=ready.admin())

    response = ready.post(ready.sub_path(sub["id"]) + "/seats", json={"seats": 2}, headers=ready.admin())

    assert response.status_code == 200 and response.json()["pending_seats"] == 2


@pytest.mark.parametrize("value", ["3", '"three"', '"-1"', '"1", "2"', "*x"])
def test_an_if_match_that_is_not_a_quoted_version_is_a_validation_error(ready: Api, value: str) -> None:
    sub = ready.subscription(pro_order(seats=3))
    before = Unchanged.of(ready, sub["id"])

    response = ready.post(ready.sub_path(sub["id"]) + "/cancel", headers={**ready.admin(), "If-Match": value})

    assert_problem(response, 422, "validation_error", field="If-Match")
    before.check()
