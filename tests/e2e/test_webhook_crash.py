"""kill -9 of the process sending webhooks, in the middle of a delivery, loses nothing: once it is started
again every event reaches the receiver at least once, deduplicable by its id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from projections.webhooks import event_id_for
from tests.e2e.processes import run, serving, started
from tests.e2e.test_processes import children_of, token
from tests.webhook_receiver import receiving, verify

pytestmark = pytest.mark.e2e

ORG = "org_hooks"
TYPES = ["subscription.created", "invoice.issued", "subscription.canceled"]


@contextmanager
def background(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[str] | None]:
    """On PostgreSQL, `ledger projections` and `ledger scheduler` (given), beside the API; on SQLite, nothing."""
    if "LEDGER_DATABASE_URL" not in env:
        yield None
        return
    with started("projections", env=env, output=log), started("scheduler", env=env, output=log) as scheduler:
        yield scheduler


def _create(base: str, admin: dict[str, str], n: int) -> None:
    for i in range(n):
        created = httpx.post(f"{base}/v1/resellers/{ORG}/subscriptions", headers=admin, timeout=30, json={
            "plan": "pro", "billing_cycle": "monthly", "organization_name": f"Customer {i}",
            "admin_email": f"admin{i}@customer.example", "seats": 2})
        assert created.status_code == 201, created.text


def test_kill_9_of_the_sender_mid_delivery_loses_nothing(service_env: dict[str, str], tmp_path: Path) -> None:
    env = {**service_env, "LEDGER_WEBHOOKS_ALLOW_PRIVATE": "true", "LEDGER_WEBHOOKS_TIMEOUT_SECONDS": "1"}
    assert run("support", "enable-reseller", ORG, "--name", "Hooks", env=env).returncode == 0
    admin = token(env, "--org", ORG)
    on_postgres = "LEDGER_DATABASE_URL" in env
    log = tmp_path / "processes.log"
    with receiving() as receiver:
        receiver.delay["/hook"] = 0.3
        # A follower enqueues the deliveries and the sender sends them: both in the process that `ledger serve`
        # starts on SQLite; on PostgreSQL the follower in `ledger projections`, the sender in `ledger scheduler`.
        with background(env, log) as scheduler, serving(env, output=log) as (base, server):
            billing = httpx.put(f"{base}/v1/resellers/{ORG}/billing", headers=admin, json={
                "payment_method": "pm_card_visa", "billing_email": "billing@hooks.example", "country": "US"})
            assert billing.status_code == 200, billing.text
            endpoint = httpx.post(f"{base}/v1/resellers/{ORG}/webhook-endpoints", headers=admin,
                                  json={"url": receiver.url("/hook"), "event_types": TYPES})
            assert endpoint.status_code == 201, endpoint.text
            secret = endpoint.json()["secret"]
            _create(base, admin, 6)
            receiver.wait_for("/hook", 2, timeout=30)
            deadline = time.monotonic() + 10
            while receiver.started <= len(receiver.at("/hook")):  # kill while a request is being answered
                assert time.monotonic() < deadline, "no delivery in flight to interrupt"
                time.sleep(0.005)
            if on_postgres:
                os.kill(scheduler.pid, signal.SIGKILL)
                scheduler.wait()
            else:  # the sender's process, then `ledger serve`, before it starts the sender again
                [sender] = children_of(server.pid)
                os.kill(sender, signal.SIGKILL)
                os.kill(server.pid, signal.SIGKILL)
                server.wait()
            received_at_kill = len(receiver.at("/hook"))
            if on_postgres:  # the API lives on: more events while nobody sends
                _create(base, admin, 2)
        time.sleep(0.5)
        assert len(receiver.at("/hook")) <= received_at_kill + 1  # the sender is dead: nothing more arrives
        with background(env, log), serving(env, output=log) as (base, _):
            if not on_postgres:
                _create(base, admin, 2)
            exported = run("export-events", "--reseller", ORG, env=env)
            expected = {event_id_for(UUID(line["stream_id"]), line["version"])
                        for line in map(json.loads, exported.stdout.splitlines())
                        if line["type"] in ("SubscriptionCreated", "InvoiceIssued")}
            assert len(expected) == 16
            # The receiver kept the body of the cut request (it answers after its delay, to nobody): every id
            # can be in hand while that delivery is still `sending`, sent again only once the sender's grace
            # period (3 x timeout + 5 s) has passed. So wait for the ledger to record all 16 delivered too.
            deadline = time.monotonic() + 60
            while True:
                listed = httpx.get(f"{base}/v1/resellers/{ORG}/webhook-endpoints/{endpoint.json()['id']}/deliveries",
                                   params={"limit": 100}, headers=admin).json()["items"]
                missing = expected - {r.json["id"] for r in receiver.at("/hook")}
                undelivered = [d for d in listed if d["status"] != "delivered"]
                if not missing and not undelivered and len(listed) == 16:
                    break
                assert time.monotonic() < deadline, (
                    f"{len(missing)} events never arrived, {len(undelivered)} of {len(listed)} deliveries not "
                    f"delivered: {[(d['status'], d['attempt_log']) for d in undelivered]}; {log.read_text()[-3000:]}")
                time.sleep(0.2)
    got = receiver.at("/hook")
    ids = Counter(r.json["id"] for r in got)
    assert set(ids) == expected
    assert all(verify(secret, r.headers["Ledger-Signature"], r.body) for r in got)
    # The delivery cut by the kill was sent again: the receiver saw it twice, with the same body.
    duplicated = [event_id for event_id, count in ids.items() if count > 1]
    assert duplicated, "the interrupted delivery was expected to arrive twice"
    for event_id in duplicated:
        assert len({r.body for r in got if r.json["id"] == event_id}) == 1
    assert {d["status"] for d in listed} == {"delivered"} and len(listed) == 16
    interrupted = [d for d in listed if any("interrupted" in (a["error"] or "") for a in d["attempt_log"])]
    assert interrupted
