"""GET /v1/resellers/{org_id}/events: a reseller's history in the export's format, with a cursor."""

from __future__ import annotations

import io
import json
from typing import Any

from projections.export import export_events
from tests.api.conftest import ORG, OTHER_ORG, Api, assert_problem, pro_order


def _feed(api: Api, org_id: str = ORG, **params: Any) -> dict[str, Any]:
    api.services.read_side.catch_up()
    response = api.get(f"/v1/resellers/{org_id}/events", params=params, headers=api.admin(org_id))
    assert response.status_code == 200, response.text
    return response.json()


def _export(api: Api, org_id: str) -> list[dict[str, Any]]:
    out = io.StringIO()
    export_events(api.services.read_side.log, out, reseller_org_id=org_id)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_feed_is_the_resellers_export_paged_by_a_cursor(ready: Api) -> None:
    api = ready
    api.reseller(OTHER_ORG)
    first = api.subscription(pro_order(seats=3))
    api.subscription(pro_order(seats=2), org_id=OTHER_ORG)
    api.post(api.sub_path(first["id"]) + "/seats", json={"seats": 5}, headers=api.admin())
    api.post(api.sub_path(first["id"]) + "/cancel", headers=api.admin())

    expected = _export(api, ORG)
    assert len(expected) >= 6
    seen, after, pages = [], 0, 0
    while True:
        page = _feed(api, after=after, limit=2)
        pages += 1
        seen.extend(page["items"])
        assert page["next_after"] == (page["items"][-1]["position"] if page["items"] else after)
        after = page["next_after"]
        if not page["has_more"]:
            break
    assert seen == expected  # the same objects, hashes included, and none of the other reseller's
    assert pages == (len(expected) + 1) // 2
    assert all(item["hash"] and item["stored"] for item in seen)
    other = {item["stream_id"] for item in _export(api, OTHER_ORG)}
    assert not other & {item["stream_id"] for item in seen}
    # Following from the end: nothing new, the cursor stays where it was.
    assert _feed(api, after=after) == {"items": [], "next_after": after, "has_more": False}


def test_types_filter_and_new_events_appear_after_the_cursor(ready: Api) -> None:
    api = ready
    sub = api.subscription(pro_order(seats=3))
    page = _feed(api, types="SubscriptionCreated,Canceled")
    assert [item["type"] for item in page["items"]] == ["SubscriptionCreated"]
    head = _feed(api)["next_after"]
    api.post(api.sub_path(sub["id"]) + "/cancel", headers=api.admin())
    later = _feed(api, after=head)
    assert [item["type"] for item in later["items"]] == ["Canceled"]
    assert later["items"][0]["stream_id"] == sub["id"]


def test_refusals(ready: Api) -> None:
    api = ready
    api.reseller(OTHER_ORG)
    head = api.log_position()
    assert_problem(api.get(f"/v1/resellers/{ORG}/events", params={"after": head + 1}, headers=api.admin()),
                   422, "validation_error", "after")
    assert _feed(api, after=head)["items"] == []
    assert_problem(api.get(f"/v1/resellers/{ORG}/events", params={"types": "Nope"}, headers=api.admin()),
                   422, "validation_error", "types")
    assert_problem(api.get(f"/v1/resellers/{ORG}/events", params={"limit": 0}, headers=api.admin()),
                   422, "validation_error")
    assert_problem(api.get(f"/v1/resellers/{ORG}/events", params={"after": -1}, headers=api.admin()),
                   422, "validation_error")
    # Another reseller's administrator cannot read this feed.
    assert_problem(api.get(f"/v1/resellers/{ORG}/events", headers=api.admin(OTHER_ORG)), 403, "forbidden")
