"""Webhooks out: endpoints, signed deliveries to a real local receiver, retries, disabling, resending."""

from __future__ import annotations

import mailbox
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from commands.mail import OUTBOX_FILE_NAME
from ledger import events
from ledger.webhook_endpoint import EVENT_TYPES
from projections.webhooks.sender import RetryPolicy, WebhookSender, WebhookSenderThread
from tests.api.conftest import ORG, OTHER_ORG, Api, assert_problem, pro_order, running_app
from tests.webhook_receiver import Receiver, receiving, verify

ALL = list(EVENT_TYPES)


@pytest.fixture
def hooked(tmp_path: Path) -> Iterator[tuple[Api, Receiver]]:
    with running_app(tmp_path, webhooks_allow_private=True) as api, receiving() as receiver:
        api.reseller(ORG)
        yield api, receiver


def _register(api: Api, url: str, types: list[str] = ALL, org_id: str = ORG) -> dict[str, Any]:
    response = api.post(f"/v1/resellers/{org_id}/webhook-endpoints", json={"url": url, "event_types": types},
                        headers=api.admin(org_id))
    assert response.status_code == 201, response.text
    return response.json()


def _pump(api: Api, sender: WebhookSender | None = None) -> int:
    api.services.read_side.catch_up()
    return (sender or api.services.webhooks).send_due()  # type: ignore[union-attr]


def _deliveries(api: Api, endpoint_id: str) -> list[dict[str, Any]]:
    response = api.get(f"/v1/resellers/{ORG}/webhook-endpoints/{endpoint_id}/deliveries", headers=api.admin())
    assert response.status_code == 200, response.text
    return response.json()["items"]


class FakeClock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC).replace(microsecond=0)

    def now(self) -> datetime:
        return self.at


def test_signed_deliveries_carry_the_resource_as_the_api_shows_it(hooked: tuple[Api, Receiver]) -> None:
    api, receiver = hooked
    endpoint = _register(api, receiver.url("/all"))
    secret = endpoint.pop("secret")
    assert secret.startswith("whsec_")
    shown = api.get(f"/v1/resellers/{ORG}/webhook-endpoints/{endpoint['id']}", headers=api.admin()).json()
    assert "secret" not in shown and shown["status"] == "enabled"
    only_cancel = _register(api, receiver.url("/cancel"), ["subscription.canceled"])

    created = api.subscription(pro_order(seats=3))
    increased = api.post(api.sub_path(created["id"]) + "/seats", json={"seats": 5}, headers=api.admin()).json()
    canceled = api.post(api.sub_path(created["id"]) + "/cancel", headers=api.admin()).json()
    _pump(api)

    got = receiver.wait_for("/all", 5)
    for received in got:
        assert verify(secret, received.headers["Ledger-Signature"], received.body), received.headers
        assert not verify(only_cancel["secret"], received.headers["Ledger-Signature"], received.body)
    bodies = [r.json for r in got]
    assert [b["type"] for b in bodies] == ["subscription.created", "invoice.issued", "subscription.seats_increased",
                                           "invoice.issued", "subscription.canceled"]
    assert len({b["id"] for b in bodies}) == 5
    assert all(b["reseller_id"] == ORG and b["created_at"].endswith("Z") for b in bodies)
    # The resource as the API answered the command that made the event.
    assert bodies[0]["data"]["object"] == created
    assert bodies[2]["data"]["object"] == increased
    assert bodies[4]["data"]["object"] == canceled
    invoices = api.get(f"/v1/resellers/{ORG}/invoices", headers=api.admin()).json()["items"]
    assert {b["data"]["object"]["id"]: b["data"]["object"] for b in (bodies[1], bodies[3])} == {
        item["id"]: item for item in invoices}
    # The other endpoint got only what it asked for, the same event under the same id.
    cancel_only = receiver.wait_for("/cancel", 1)
    assert [r.json["type"] for r in cancel_only] == ["subscription.canceled"]
    assert cancel_only[0].json["id"] == bodies[4]["id"]
    assert verify(only_cancel["secret"], cancel_only[0].headers["Ledger-Signature"], cancel_only[0].body)

    listed = _deliveries(api, endpoint["id"])
    assert [d["status"] for d in listed] == ["delivered"] * 5
    assert [d["position"] for d in listed] == sorted((d["position"] for d in listed), reverse=True)
    assert all(d["attempt_log"][0]["status_code"] == 200 for d in listed)
    # Nothing sent twice.
    assert _pump(api) == 0 and len(receiver.at("/all")) == 5


def test_the_secret_is_shown_once_and_never_stored(hooked: tuple[Api, Receiver]) -> None:
    api, receiver = hooked
    endpoint = _register(api, receiver.url("/hook"), ["subscription.created"])
    rolled = api.post(f"/v1/resellers/{ORG}/webhook-endpoints/{endpoint['id']}/roll-secret", headers=api.admin())
    assert rolled.status_code == 200, rolled.text
    new_secret = rolled.json()["secret"]
    assert new_secret != endpoint["secret"]
    api.services.read_side.catch_up()
    listed = api.get(f"/v1/resellers/{ORG}/webhook-endpoints", headers=api.admin()).json()["items"]
    assert [item["id"] for item in listed] == [endpoint["id"]] and "secret" not in listed[0]
    api.subscription()
    _pump(api)
    [received] = receiver.wait_for("/hook", 1)
    assert verify(new_secret, received.headers["Ledger-Signature"], received.body)
    assert not verify(endpoint["secret"], received.headers["Ledger-Signature"], received.body)
    # Neither secret is anywhere in the log.
    stored = repr([vars(e) for e in api.services.ledger.history(UUID(endpoint["id"]))])
    assert "secret_salt" in stored
    assert endpoint["secret"] not in stored and new_secret not in stored


def test_refused_urls_and_types(tmp_path: Path) -> None:
    with running_app(tmp_path) as api:
        api.reseller(ORG)
        path = f"/v1/resellers/{ORG}/webhook-endpoints"
        for url in ("http://127.0.0.1:9/x", "http://localhost/x", "http://10.1.2.3/x", "http://169.254.169.254/",
                    "http://[::1]/x", "http://192.168.0.10/", "https://[fe80::1]/", "http://0.0.0.0/",
                    "ftp://example.com/x", "not a url", "https://user:pw@example.com/x"):
            assert_problem(api.post(path, json={"url": url, "event_types": ALL}, headers=api.admin()),
                           422, "validation_error", "url")
        assert_problem(api.post(path, json={"url": "http://93.184.216.34/x", "event_types": ["subscription.nope"]},
                                headers=api.admin()), 422, "validation_error", "event_types")
        assert_problem(api.post(path, json={"url": "http://93.184.216.34/x", "event_types": []},
                                headers=api.admin()), 422, "validation_error")
        accepted = api.post(path, json={"url": "http://93.184.216.34/x", "event_types": ["invoice.issued"]},
                            headers=api.admin())
        assert accepted.status_code == 201, accepted.text
        api.reseller(OTHER_ORG)
        assert_problem(api.get(f"{path}/{accepted.json()['id']}".replace(ORG, OTHER_ORG), headers=api.admin(OTHER_ORG)),
                       404, "not_found")
        assert_problem(api.get(path, headers=api.admin(OTHER_ORG)), 403, "forbidden")


def test_failures_are_retried_with_backoff_then_the_endpoint_is_disabled_and_its_owner_told(
        hooked: tuple[Api, Receiver]) -> None:
    api, receiver = hooked
    receiver.status["/down"] = 503
    endpoint = _register(api, receiver.url("/down"), ["subscription.created"])
    base = api.services.webhooks
    assert base is not None
    clock = FakeClock()
    sender = WebhookSender(base.db, base.app, base.secrets, base.guard, clock, disable=base.disable,
                           mailer=base.mailer, timeout_seconds=2,
                           retry=RetryPolicy(first_delay=timedelta(minutes=1), longest_delay=timedelta(hours=6)))
    api.subscription()
    assert _pump(api, sender) == 1
    [delivery] = _deliveries(api, endpoint["id"])
    assert delivery["status"] == "pending" and delivery["attempts"] == 1
    assert delivery["last_status_code"] == 503 and delivery["attempt_log"][0]["error"] == "HTTP 503"
    assert delivery["next_attempt_at"] == events.iso(clock.at + timedelta(minutes=1))
    assert sender.send_due() == 0  # not due before its backoff
    delays = []
    while (current := _deliveries(api, endpoint["id"])[0])["status"] == "pending":
        due = datetime.fromisoformat(current["next_attempt_at"].replace("Z", "+00:00"))
        delays.append(due - clock.at)
        clock.at = due
        assert sender.send_due() == 1
        assert len(delays) < 40
    assert delays[:4] == [timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=4), timedelta(minutes=8)]
    assert max(delays) == timedelta(hours=6)
    assert current["status"] == "failed"
    assert len(receiver.at("/down")) == current["attempts"] == len(current["attempt_log"])
    # Failing for 3 days: disabled, by an event, and the reseller's billing email told.
    shown = api.get(f"/v1/resellers/{ORG}/webhook-endpoints/{endpoint['id']}", headers=api.admin()).json()
    assert shown["status"] == "disabled" and "503" in shown["disabled_reason"]
    api.services.read_side.catch_up()
    sender.send_notices()
    mails = list(mailbox.mbox(api.services.settings.data_dir / OUTBOX_FILE_NAME))
    notices = [m for m in mails if "disabled" in m["Subject"]]
    assert len(notices) == 1 and notices[0]["To"] == "billing@org-de.example"
    assert receiver.url("/down") in notices[0].get_payload()
    # Nothing more goes to a disabled endpoint, and it cannot be resent there.
    api.subscription()
    receiver.status["/down"] = 200
    clock.at += timedelta(days=1)
    assert _pump(api, sender) == 0
    assert_problem(api.post(f"/v1/resellers/{ORG}/webhook-endpoints/{endpoint['id']}/deliveries/{current['id']}/"
                            "resend", headers=api.admin()), 409, "invalid_state")


def test_a_failed_delivery_can_be_resent(hooked: tuple[Api, Receiver]) -> None:
    api, receiver = hooked
    receiver.status["/flaky"] = 500
    endpoint = _register(api, receiver.url("/flaky"), ["subscription.created"])
    api.subscription()
    _pump(api)
    [failed] = _deliveries(api, endpoint["id"])
    assert failed["status"] == "pending" and failed["attempts"] == 1
    receiver.status["/flaky"] = 204
    path = f"/v1/resellers/{ORG}/webhook-endpoints/{endpoint['id']}/deliveries/{failed['id']}/resend"
    resent = api.post(path, headers=api.admin())
    assert resent.status_code == 202, resent.text
    assert resent.json()["status"] == "pending"
    assert _pump(api) == 1
    [delivered] = _deliveries(api, endpoint["id"])
    assert delivered["status"] == "delivered" and delivered["attempts"] == 2
    assert [a["status_code"] for a in delivered["attempt_log"]] == [500, 204]
    first, second = receiver.at("/flaky")
    assert first.body == second.body  # the same event, the same body: deduplicable by its id
    assert_problem(api.post(path.replace(failed["id"], "nope"), headers=api.admin()), 404, "not_found")


def test_deleted_endpoints_get_nothing(hooked: tuple[Api, Receiver]) -> None:
    api, receiver = hooked
    endpoint = _register(api, receiver.url("/gone"))
    deleted = api.request("DELETE", f"/v1/resellers/{ORG}/webhook-endpoints/{endpoint['id']}", headers=api.admin())
    assert deleted.status_code == 200 and deleted.json()["status"] == "deleted"
    api.subscription()
    _pump(api)
    time.sleep(0.2)
    assert receiver.at("/gone") == []
    assert api.get(f"/v1/resellers/{ORG}/webhook-endpoints", headers=api.admin()).json()["items"] == []


def test_a_slow_receiver_does_not_hold_up_other_endpoints(hooked: tuple[Api, Receiver]) -> None:
    api, receiver = hooked
    receiver.delay["/slow"] = 1.5
    _register(api, receiver.url("/slow"), ["subscription.created"])
    _register(api, receiver.url("/fast"), ["subscription.created"])
    for _ in range(4):
        api.subscription()
    api.services.read_side.catch_up()
    assert api.services.webhooks is not None
    thread = WebhookSenderThread(api.services.webhooks, concurrency=4, poll_seconds=0.1)
    started = time.monotonic()
    thread.start()
    try:
        fast = receiver.wait_for("/fast", 4, timeout=10)
        fast_done = fast[-1].at - started
        slow = receiver.wait_for("/slow", 4, timeout=20)
    finally:
        thread.stop()
        thread.join(timeout=10)
    # The fast endpoint had all four while the slow one was on its first; the slow one got them one at a time.
    assert fast_done < 1.0, fast_done
    assert slow[-1].at - started >= 4 * 1.5 - 0.1
