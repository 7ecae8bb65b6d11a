"""Operations (issue 11, point 4): the request id, one JSON log line per request, /metrics and /readyz."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service import logs
from service.settings import load_settings
from tests.api.conftest import ORG, Api, assert_problem, pro_order

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Every log line of the test, as JSON, in a buffer; the logging set-up is put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    logs.configure("json", stream=buffer, force=True)
    try:
        yield buffer
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def parsed(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def samples(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


# --- the request id -----------------------------------------------------------------------------------


def test_a_given_request_id_is_echoed_and_put_in_problem_bodies(api: Api) -> None:
    response = api.get(f"/v1/resellers/{ORG}/subscriptions", headers={"X-Request-Id": "trace-42.a"})
    assert response.headers["X-Request-Id"] == "trace-42.a"
    assert assert_problem(response, 401, "unauthenticated")["request_id"] == "trace-42.a"


def test_without_one_a_request_id_is_made_and_each_request_gets_its_own(api: Api) -> None:
    first, second = api.get("/v1/plans"), api.get("/v1/plans")
    assert HEX_ID.match(first.headers["X-Request-Id"]) and HEX_ID.match(second.headers["X-Request-Id"])
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


@pytest.mark.parametrize("given", ["", "x" * 129, "has space", "semi;colon", "ünïcode"])
def test_a_request_id_that_is_not_plain_is_replaced(api: Api, given: str) -> None:
    response = api.get("/v1/plans", headers={"X-Request-Id": given.encode("utf-8")})  # type: ignore[dict-item]
    assert HEX_ID.match(response.headers["X-Request-Id"])


def test_problems_from_every_layer_carry_the_request_id(ready: Api) -> None:
    headers = {**ready.admin(), "X-Request-Id": "layers"}
    refusals = [
        ready.get(f"/v1/resellers/{ORG}/subscriptions/00000000-0000-0000-0000-000000000000", headers=headers),
        ready.post(f"/v1/resellers/{ORG}/subscriptions", headers=headers, json={"plan": 1}),
        ready.post(f"/v1/resellers/{ORG}/subscriptions", headers={**headers, "Content-Length": "99999999"},
                   content=b"{}"),  # refused by the body limit, before the app
        ready.get("/no/such/route", headers=headers),
    ]
    for response in refusals:
        assert response.status_code >= 400
        assert response.json()["request_id"] == "layers", response.text
        assert response.headers["X-Request-Id"] == "layers"


def test_an_unexpected_error_is_a_500_problem_with_the_request_id_and_a_log_line(
        api: Api, log_lines: io.StringIO) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    api.client.app.add_api_route("/test-broken", broken)  # type: ignore[attr-defined]
    response = api.client.get("/test-broken", headers={"X-Request-Id": "broken-1"})
    assert response.status_code == 500 and response.headers["X-Request-Id"] == "broken-1"
    assert response.json()["code"] == "internal_error" and response.json()["request_id"] == "broken-1"
    mine = [line for line in parsed(log_lines) if line.get("request_id") == "broken-1"]
    assert any("boom" in line.get("exception", "") for line in mine), mine
    assert any(line.get("route") == "/test-broken" and line.get("status") == 500 for line in mine), mine


# --- logs ----------------------------------------------------------------------------------------------


def test_one_json_line_per_request_with_method_route_status_duration_and_id(
        ready: Api, log_lines: io.StringIO) -> None:
    sub = ready.subscription()
    ready.get(ready.sub_path(sub["id"]), headers={**ready.admin(), "X-Request-Id": "one-line"})
    lines = [line for line in parsed(log_lines) if line.get("logger") == "ledger.http"]
    mine = [line for line in lines if line.get("request_id") == "one-line"]
    assert len(mine) == 1, lines
    line = mine[0]
    assert line["method"] == "GET" and line["status"] == 200
    assert line["route"] == "/v1/resellers/{org_id}/subscriptions/{id}"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["level"] == "info" and line["time"].endswith("Z")


def test_lines_logged_while_a_request_runs_carry_its_id(api: Api, log_lines: io.StringIO) -> None:
    def chatty() -> dict[str, str]:  # a sync route: it runs in a worker thread, as most routes do
        logging.getLogger("ledger.test").warning("inside the request")
        return {}

    api.client.app.add_api_route("/test-chatty", chatty)  # type: ignore[attr-defined]
    assert api.client.get("/test-chatty", headers={"X-Request-Id": "inside-1"}).status_code == 200
    inside = [line for line in parsed(log_lines) if line["message"] == "inside the request"]
    assert [line.get("request_id") for line in inside] == ["inside-1"]
    logging.getLogger("ledger.test").warning("outside any request")
    outside = [line for line in parsed(log_lines) if line["message"] == "outside any request"]
    assert "request_id" not in outside[0]


def test_the_text_format_names_the_request_id(api: Api) -> None:
    buffer = io.StringIO()
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        assert logs.configure("text", stream=buffer, force=True) == "text"
        api.get("/v1/plans", headers={"X-Request-Id": "as-text"})
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
    line = next(line for line in buffer.getvalue().splitlines() if "ledger.http" in line)
    assert "GET /v1/plans 200" in line and line.endswith("[request_id=as-text]")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_log_format_setting_and_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert logs.resolve_format(None, _Terminal()) == "text"
    assert logs.resolve_format(None, io.StringIO()) == "json"
    assert logs.resolve_format("json", _Terminal()) == "json"
    monkeypatch.setenv("LEDGER_LOG_FORMAT", "text")
    assert load_settings().log_format == "text"
    monkeypatch.setenv("LEDGER_LOG_FORMAT", "xml")
    with pytest.raises(Exception, match="LEDGER_LOG_FORMAT"):
        load_settings()


# --- metrics -------------------------------------------------------------------------------------------


def test_requests_are_counted_by_route_template_and_status(ready: Api) -> None:
    before = samples(ready)
    sub = ready.subscription()
    ready.get(ready.sub_path(sub["id"]), headers=ready.admin())
    ready.get(ready.sub_path("not-a-uuid"), headers=ready.admin())
    after = samples(ready)
    template = "/v1/resellers/{org_id}/subscriptions/{id}"
    for status in ("200", "404"):
        labels = {"method": "GET", "route": template, "status": status}
        assert value(after, "ledger_http_requests_total", **labels) - value(
            before, "ledger_http_requests_total", **labels) == 1
        assert value(after, "ledger_http_request_duration_seconds_count", **labels) - value(
            before, "ledger_http_request_duration_seconds_count", **labels) == 1
    created = {"method": "POST", "route": "/v1/resellers/{org_id}/subscriptions", "status": "201"}
    assert value(after, "ledger_http_requests_total", **created) - value(
        before, "ledger_http_requests_total", **created) == 1
    assert not any(name == "ledger_http_requests_total" and sub["id"] in str(labels) for name, labels in after)


def test_commands_charges_and_declines_are_counted(ready: Api) -> None:
    before = samples(ready)
    ready.subscription()
    ready.reseller("org_failing", payment_method="pm_card_chargeCustomerFail")
    declined = ready.create(pro_order(), "org_failing")
    assert_problem(declined, 402, "payment_declined")
    refused_card = ready.put_billing("org_failing", "pm_card_chargeDeclinedLostCard")
    assert_problem(refused_card, 402, "payment_declined")
    after = samples(ready)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("ledger_commands_total", command="create_subscription", outcome="ok") == 1
    assert grew("ledger_commands_total", command="create_subscription", outcome="payment_declined") == 1
    assert grew("ledger_commands_total", command="set_billing_info", outcome="payment_declined") == 1
    assert grew("ledger_charges_total", outcome="succeeded") == 1
    assert grew("ledger_charges_total", outcome="declined") == 1
    assert grew("ledger_payment_declines_total", decline_code="generic_decline") == 1
    assert grew("ledger_payment_declines_total", decline_code="lost_card") == 1


def test_read_models_scheduler_and_outboxes_are_reported(ready: Api) -> None:
    sub = ready.subscription()
    head = ready.log_position()
    found = samples(ready)
    assert value(found, "ledger_event_log_head") == head
    assert value(found, "ledger_store_up") == 1
    for name, follower in ready.services.read_side.followers.items():
        reached = follower.position()
        assert value(found, "ledger_read_model_position", read_model=name) == reached
        assert value(found, "ledger_read_model_lag_events", read_model=name) == head - reached
        assert ("ledger_read_model_stopped", (("read_model", name),)) in found
    assert value(found, "ledger_scheduler_due_backlog") == 0
    # The subscription bought invitations; nothing sends mail in this app, so they wait in the outbox.
    ready.services.read_side.catch_up()
    assert value(samples(ready), "ledger_outbox_depth", outbox="invitations") >= 1
    assert sub["id"]


def test_the_due_backlog_counts_what_fell_due(tmp_path: Any) -> None:
    from datetime import timedelta

    from tests.api.conftest import running_app

    with running_app(tmp_path, clock="sandbox") as api:
        api.reseller(ORG)
        api.subscription()
        api.subscription()
        api.move_clock(timedelta(days=40))  # both monthly periods have ended, and nothing ran the scheduler
        api.services.read_side.catch_up()  # the due dates view, which the scheduler reads (no followers run here)
        assert value(samples(api), "ledger_scheduler_due_backlog") == 2


def test_the_webhook_outbox_depth_counts_deliveries_not_yet_made(tmp_path: Any) -> None:
    from tests.api.conftest import running_app
    from tests.webhook_receiver import receiving

    with running_app(tmp_path, webhooks_allow_private=True) as api, receiving() as receiver:
        api.reseller(ORG)
        assert value(samples(api), "ledger_outbox_depth", outbox="webhooks") == 0
        registered = api.post(f"/v1/resellers/{ORG}/webhook-endpoints", headers=api.admin(),
                              json={"url": receiver.url("/hook"), "event_types": ["subscription.created",
                                                                                  "invoice.issued"]})
        assert registered.status_code == 201, registered.text
        api.subscription()
        api.services.read_side.catch_up()  # the follower enqueues; no sender runs in this app
        assert value(samples(api), "ledger_outbox_depth", outbox="webhooks") == 2
        assert api.services.webhooks.send_due() == 2  # type: ignore[union-attr]
        assert value(samples(api), "ledger_outbox_depth", outbox="webhooks") == 0


def test_the_scheduler_process_serves_its_own_metrics(tmp_path: Any) -> None:
    """``ledger scheduler`` in the PostgreSQL layout serves no API: with LEDGER_SCHEDULER_METRICS_PORT its
    renewals (commands and charges) and the due backlog are scraped from it directly."""
    import time
    import urllib.request
    from datetime import timedelta

    from tests.api.conftest import running_app

    def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    with running_app(tmp_path, clock="sandbox", scheduler_metrics_port=0) as api:
        api.reseller(ORG)
        api.subscription()
        api.move_clock(timedelta(days=40))
        api.services.read_side.catch_up()
        before = samples(api)
        assert value(before, "ledger_scheduler_due_backlog") == 1
        api.services.start_background(followers=False)  # what `ledger scheduler` runs: it renews at once
        server = api.services.metrics_server
        assert server is not None and server.port > 0
        deadline = time.monotonic() + 20
        while True:
            found = scrape(server.port)
            renewed = value(found, "ledger_commands_total", command="run_due", outcome="ok") - value(
                before, "ledger_commands_total", command="run_due", outcome="ok")
            if renewed >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert renewed >= 1
        assert value(found, "ledger_charges_total", outcome="succeeded") - value(
            before, "ledger_charges_total", outcome="succeeded") >= 1
        api.services.read_side.catch_up()
        assert value(scrape(server.port), "ledger_scheduler_due_backlog") == 0
        api.services.stop_background()
        assert api.services.metrics_server is None


# --- readiness -----------------------------------------------------------------------------------------


def test_ready_when_the_store_answers(api: Api) -> None:
    response = api.get("/readyz")
    assert response.status_code == 200 and response.json()["status"] == "ready"
    assert api.get("/healthz").status_code == 200


def test_not_ready_when_a_read_model_stopped(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api.services.read_side, "stopped_projections", lambda: {"summary": "unknown event"})
    response = api.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not_ready", "log_head": 0,
                               "stopped_projections": {"summary": "unknown event"}}


def test_not_ready_when_the_store_does_not_answer(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable() -> int:
        raise OSError("connection refused")

    monkeypatch.setattr(api.services.read_side.log, "head", unreachable)
    response = api.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "not_ready" and "connection refused" in response.json()["store"]
    assert value(samples(api), "ledger_store_up") == 0
