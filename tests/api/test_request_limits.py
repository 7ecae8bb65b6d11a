"""Request bodies are bounded in size (413 before they are read whole) and in time (408), on every route;
and a read-your-writes position past the head of the log is refused at once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from service.settings import load_settings
from tests.api.conftest import ORG, Api, Unchanged, assert_problem, pro_order, running_app

LIMIT = 1_048_576
TWO_MIB = b"{" + b" " * (2 * LIMIT - 2) + b"}"
CHUNK = 64 * 1024
SUB = "{sub}"
# (method, path, who calls it): routes that take a body, routes that take none, and a path that is no route.
ROUTES = {
    "create": ("POST", f"/v1/resellers/{ORG}/subscriptions", "admin"),
    "seats": ("POST", f"/v1/resellers/{ORG}/subscriptions/{SUB}/seats", "admin"),
    "cancel": ("POST", f"/v1/resellers/{ORG}/subscriptions/{SUB}/cancel", "admin"),
    "billing": ("PUT", f"/v1/resellers/{ORG}/billing", "admin"),
    "support-enable": ("POST", "/v1/support/resellers", "support"),
    "summary": ("GET", f"/v1/resellers/{ORG}/summary", "admin"),
    "no-such-route": ("POST", "/v1/nowhere", "admin"),
}


def call(api: Api, route: str, sub_id: str, **body: Any) -> Any:
    method, path, who = ROUTES[route]
    headers = {**(api.admin() if who == "admin" else api.support()), "Content-Type": "application/json"}
    return api.request(method, path.replace(SUB, sub_id), headers=headers, **body)


def assert_too_large(response: Any) -> None:
    assert_problem(response, 413, "payload_too_large")
    assert response.headers["connection"] == "close"


@pytest.mark.parametrize("route", ROUTES)
def test_a_declared_body_over_the_limit_is_413_on_every_route(ready: Api, route: str) -> None:
    sub = ready.subscription()
    before = Unchanged.of(ready, sub["id"])

    response = call(ready, route, sub["id"], content=TWO_MIB)

    assert_too_large(response)
    before.check()


def test_a_chunked_body_over_the_limit_is_413(ready: Api) -> None:
    before = Unchanged.of(ready)

    response = call(ready, "create", "", content=iter([TWO_MIB]))  # an iterator: no Content-Length

    assert "content-length" not in response.request.headers
    assert_too_large(response)
    before.check()


def padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` as JSON of exactly ``size`` bytes (whitespace is JSON too)."""
    raw = json.dumps(body).encode()
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_a_body_of_exactly_the_limit_is_served_normally(ready: Api, chunked: bool) -> None:
    body = padded(pro_order(organization_name="Exactly One Mebibyte"), LIMIT)
    assert len(body) == LIMIT

    response = call(ready, "create", "", content=iter([body]) if chunked else body)

    assert response.status_code == 201, response.text
    assert response.json()["organization_name"] == "Exactly One Mebibyte"


def test_the_limit_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_MAX_BODY_BYTES", "2048")
    assert load_settings(data_dir=tmp_path).max_body_bytes == 2048
    with running_app(tmp_path, max_body_bytes=2048) as api:
        api.reseller(ORG)
        before = Unchanged.of(api)
        assert_too_large(call(api, "create", "", content=padded(pro_order(), 2049)))
        before.check()
        assert call(api, "create", "", content=padded(pro_order(), 2048)).status_code == 201


# --- at the ASGI level: what the middleware reads, and when ---------------------------------------------


def asgi_request(api: Api, path: str, receive: Any) -> tuple[int, dict[bytes, bytes], dict[str, Any], float]:
    """POST ``path`` to the app with no Content-Length, its body from ``receive``: the status, headers and
    JSON body of the answer, and how long it took."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                         (b"transfer-encoding", b"chunked"),
                         (b"authorization", api.admin()["Authorization"].encode())],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "state": {}}
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    started = time.monotonic()
    anyio.run(api.client.app, scope, receive, send)
    elapsed = time.monotonic() - started
    start = sent[0]
    body = b"".join(message.get("body", b"") for message in sent[1:])
    return start["status"], dict(start["headers"]), json.loads(body), elapsed


def test_a_streamed_body_is_not_read_past_the_limit(ready: Api) -> None:
    pulled = 0

    async def four_mib_body() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b" " * CHUNK, "more_body": pulled < 4 * LIMIT // CHUNK}

    status, headers, body, _ = asgi_request(ready, f"/v1/resellers/{ORG}/subscriptions", four_mib_body)

    assert (status, body["code"], headers[b"connection"]) == (413, "payload_too_large", b"close")
    assert pulled == LIMIT // CHUNK + 1  # the piece that passed the limit is the last one read


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[Api]:
    with running_app(tmp_path, body_timeout_seconds=0.3) as api:
        api.reseller(ORG)
        yield api


def test_a_body_that_stops_arriving_is_408_after_the_body_timeout(impatient: Api) -> None:
    before = Unchanged.of(impatient)
    pieces = [b'{"plan": "pro", ']

    async def stalled_body() -> dict[str, Any]:
        if pieces:
            return {"type": "http.request", "body": pieces.pop(), "more_body": True}
        await asyncio.sleep(10)  # the client says nothing more for long, and does not hang up
        return {"type": "http.request", "body": b'"billing_cycle": "monthly"}', "more_body": False}

    status, headers, body, elapsed = asgi_request(impatient, f"/v1/resellers/{ORG}/subscriptions", stalled_body)

    assert (status, body["code"], headers[b"connection"]) == (408, "request_timeout", b"close")
    assert 0.3 <= elapsed < 5
    before.check()


def test_a_body_that_arrives_slowly_but_steadily_is_served(impatient: Api) -> None:
    pieces = [padded(pro_order(), 400)[i:i + 100] for i in range(0, 400, 100)]

    async def slow_body() -> dict[str, Any]:
        await asyncio.sleep(0.15)  # each wait below the timeout of 0.3 s, the whole longer than it
        return {"type": "http.request", "body": pieces.pop(0), "more_body": bool(pieces)}

    status, _, body, elapsed = asgi_request(impatient, f"/v1/resellers/{ORG}/subscriptions", slow_body)

    assert status == 201, body
    assert elapsed >= 0.6


# --- ?after= past the head of the log -------------------------------------------------------------------


@pytest.mark.parametrize("path", [f"/v1/resellers/{ORG}/subscriptions", f"/v1/resellers/{ORG}/summary",
                                  f"/v1/resellers/{ORG}/invoices", f"/v1/resellers/{ORG}/invoices/{SUB}"])
def test_after_beyond_the_head_of_the_log_is_an_immediate_422(ready: Api, path: str) -> None:
    sub = ready.subscription()
    head = ready.log_position()
    started = time.monotonic()

    response = ready.get(path.replace(SUB, sub["id"]), params={"after": head + 1}, headers=ready.admin())

    assert time.monotonic() - started < 1
    problem = assert_problem(response, 422, "validation_error", field="after")
    assert str(head) in problem["detail"]


def test_after_at_the_head_of_the_log_is_read_your_writes(ready: Api) -> None:
    ready.services.read_side.start(poll_seconds=0.05)
    created = ready.subscription()
    head = ready.log_position()

    response = ready.get(f"/v1/resellers/{ORG}/subscriptions", params={"after": head}, headers=ready.admin())

    assert response.status_code == 200, response.text
    assert [row["subscription_id"] for row in response.json()["items"]] == [created["id"]]
