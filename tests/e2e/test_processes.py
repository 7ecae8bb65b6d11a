"""The service as a user runs it: `ledger` processes, HTTP over loopback, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.subscription import Order
from projections import customer_table, summary
from service.bootstrap import bootstrap
from service.settings import load_settings
from tests.e2e.processes import run, serving, started

pytestmark = pytest.mark.e2e


def token(env: dict[str, str], *args: str) -> dict[str, str]:
    minted = run("token", *args, env=env)
    assert minted.returncode == 0, minted.stderr
    return {"Authorization": f"Bearer {minted.stdout.strip()}"}


def test_a_reseller_is_enabled_pays_and_sees_its_table_over_http(service_env: dict[str, str]) -> None:
    enabled = run("support", "enable-reseller", "org_e2e", "--name", "E2E Reseller", env=service_env)
    assert enabled.returncode == 0 and "enabled" in enabled.stdout
    admin = token(service_env, "--org", "org_e2e", "--sub", "alice")
    # On PostgreSQL the read models follow the log in their own process, beside the API.
    followers = started("projections", env=service_env) if "LEDGER_DATABASE_URL" in service_env else nullcontext()
    with followers, serving(service_env) as (base, _):
        billing = httpx.put(f"{base}/v1/resellers/org_e2e/billing", headers=admin, json={
            "payment_method": "pm_card_visa", "billing_email": "billing@e2e.example", "country": "GB"})
        assert billing.status_code == 200 and billing.json()["tax_rate_bps"] == 2000
        order = {"plan": "pro", "billing_cycle": "annual", "organization_name": "Wayne Enterprises",
                 "admin_email": "lucius@wayne.example", "seats": 10}
        quote = httpx.post(f"{base}/v1/resellers/org_e2e/subscriptions/preview", headers=admin, json=order).json()
        created = httpx.post(f"{base}/v1/resellers/org_e2e/subscriptions", headers=admin,
                             json={**order, "quote_id": quote["quote_id"]})
        assert created.status_code == 201, created.text
        assert quote["total_cents"] == 300000 + 60000
        position = created.headers["X-Ledger-Position"]
        rows = httpx.get(f"{base}/v1/resellers/org_e2e/subscriptions", params={"after": position}, headers=admin)
        assert [r["customer"] for r in rows.json()["items"]] == ["Wayne Enterprises"]
        cards = httpx.get(f"{base}/v1/resellers/org_e2e/summary", params={"after": position}, headers=admin).json()
        assert cards == {"total_customers": 1, "active": 1, "canceled": 0, "total_seats": 10}
        history = httpx.get(f"{base}/v1/resellers/org_e2e/subscriptions/{created.json()['id']}/events",
                            headers=admin).json()["items"]
        assert [e["type"] for e in history] == ["SubscriptionCreated"] and history[0]["actor"] == "alice"
        assert httpx.get(f"{base}/v1/resellers/org_e2e/summary", headers=token(service_env, "--org",
                                                                               "org_e2e:member")).status_code == 403
    exported = run("export-events", "--reseller", "org_e2e", env=service_env)
    # enabled, billing info, subscription, customer account, invoice
    assert exported.returncode == 0 and len(exported.stdout.splitlines()) == 5


def test_the_embedded_default_starts_with_sandbox_data_and_prints_a_token(tmp_path: Path) -> None:
    env = {"LEDGER_DATA_DIR": str(tmp_path / "data")}
    with serving(env) as (base, process):
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=15)[0]
    token_line = next(line for line in output.splitlines() if line.strip().startswith("TOKEN="))
    headers = {"Authorization": f"Bearer {token_line.split('=', 1)[1]}"}
    with serving(env) as (base, _):
        def listed() -> int:
            rows = httpx.get(f"{base}/v1/resellers/org_sandbox/subscriptions", headers=headers)
            assert rows.status_code == 200, rows.text
            return rows.json()["total"]  # type: ignore[no-any-return]

        # The first server may have stopped before its read models caught up: the second one's catch up.
        assert wait_until(lambda: listed() == 3)


def _populate(env: dict[str, str], subscriptions: int) -> int:
    overrides = {key.removeprefix("LEDGER_").lower(): value for key, value in env.items()}
    services = bootstrap(load_settings(**overrides))
    try:
        services.ledger.enable_reseller("org_crash", name="Crash", actor="support")
        services.ledger.set_billing_info("org_crash", payment_method="pm_card_visa", billing_email="b@c.example",
                                         country="DE", actor="admin")
        for n in range(subscriptions):
            order = Order("pro", "monthly", seats=1 + n % 7, organization_name=f"Customer {n:05d}",
                          admin_email=f"admin{n}@c.example")
            sub_id = services.ledger.create_subscription("org_crash", order, actor="admin").aggregate.id
            if n % 3 == 0:
                services.ledger.change_seats("org_crash", sub_id, 20, actor="admin")
            if n % 5 == 0:
                services.ledger.cancel("org_crash", sub_id, actor="admin")
        return services.read_side.log.head()
    finally:
        services.close()


@contextmanager
def _positions_of(env: dict[str, str]) -> Iterator[Callable[[], dict[str, int]]]:
    """The read models' positions, read as often as asked through one service of the deployment (bootstrapped,
    and so its tables made, before the projections process starts: a bootstrap per probe took longer than
    a whole catch-up on a fast machine)."""
    overrides = {key.removeprefix("LEDGER_").lower(): value for key, value in env.items()}
    services = bootstrap(load_settings(**overrides))
    try:
        yield lambda: {name: follower.position() for name, follower in services.read_side.followers.items()}
    finally:
        services.close()


def test_killing_the_projections_mid_batch_ends_with_tables_equal_to_a_replay(service_env: dict[str, str],
                                                                              tmp_path: Path) -> None:
    head = _populate(service_env, 600)
    env = {**service_env, "LEDGER_PROJECTION_BATCH_SIZE": "25"}
    # Their output goes to a file: the restarted process logs every invitation it sends, more than a pipe
    # holds, and would block in its logging calls if nobody read it.
    output = tmp_path / "projections.log"

    def running(process: subprocess.Popen[str]) -> None:
        assert process.poll() is None, f"ledger projections exited:\n{output.read_text()}"

    with _positions_of(env) as positions:
        with started("projections", env=env, output=output) as process:
            deadline = time.monotonic() + 60
            while not 0 < min(positions().values()) < head:
                running(process)
                assert time.monotonic() < deadline, f"the projections never got going: {positions()}"
                time.sleep(0.005)
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert min(positions().values()) < head
        with started("projections", env=env, output=output) as process:
            deadline = time.monotonic() + 120
            while min(positions().values()) < head:
                running(process)
                assert time.monotonic() < deadline, f"the projections did not catch up: {positions()}"
                time.sleep(0.1)
    audit = run("replay", "--quiet", env=service_env, timeout=300)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "every read model equals a replay" in audit.stdout
    assert f"{customer_table.NAME:<20} EQUAL" in audit.stdout and f"{summary.NAME:<20} EQUAL" in audit.stdout


def test_a_subscriptions_life_over_http_on_the_sandbox_clock(service_env: dict[str, str]) -> None:
    env = {**service_env, "LEDGER_CLOCK": "sandbox"}
    run("support", "enable-reseller", "org_time", "--name", "Time Travel", env=env)
    admin, support = token(env, "--org", "org_time"), token(env, "--support")
    followers = started("projections", env=env) if "LEDGER_DATABASE_URL" in env else nullcontext()
    with followers, serving(env) as (base, _):
        def call(method: str, path: str, headers: dict[str, str] = admin, **body: object) -> httpx.Response:
            return httpx.request(method, f"{base}{path}", headers=headers, json=body or None, timeout=30)

        def advance(days: int) -> dict[str, object]:
            moved = call("POST", "/v1/sandbox/clock", support, advance_seconds=days * 86400)
            assert moved.status_code == 200, moved.text
            return moved.json()

        assert call("PUT", "/v1/resellers/org_time/billing", payment_method="pm_card_visa",
                    billing_email="b@t.example", country="US").status_code == 200
        start = call("GET", "/v1/sandbox/clock").json()["now"]
        sub = call("POST", "/v1/resellers/org_time/subscriptions", plan="pro", billing_cycle="monthly",
                   organization_name="Chronos", admin_email="a@chronos.example", seats=8).json()
        path = f"/v1/resellers/org_time/subscriptions/{sub['id']}"
        assert call("POST", f"{path}/seats", seats=5).json()["status"] == "pending"
        assert call("POST", f"{path}/cancel").json()["status"] == "canceled"
        assert call("POST", f"{path}/resume").json()["status"] == "pending"
        assert advance(365)["changes"] == 12
        renewed = call("GET", path).json()
        assert (renewed["seats"], renewed["pending_seats"], renewed["status"]) == (5, None, "active")
        assert renewed["current_period_start"][:10] > start[:10]
        assert call("POST", "/v1/sandbox/clock", admin, advance_seconds=1).status_code == 403
        assert call("POST", "/v1/sandbox/clock", support, now="2000-01-01T00:00:00Z").status_code == 422

        call("PUT", "/v1/resellers/org_time/billing", payment_method="pm_card_chargeCustomerFail",
             billing_email="b@t.example", country="US")
        advance(31)
        assert call("GET", path).json()["status"] == "past_due"
        advance(10)
        expired = call("GET", path).json()
        assert (expired["status"], expired["expired_reason"]) == ("expired", "payment_failed")
        position = max(e["position"] for e in call("GET", f"{path}/events").json()["items"])
        table = call("GET", f"/v1/resellers/org_time/subscriptions?after={position}").json()
        cards = call("GET", f"/v1/resellers/org_time/summary?after={position}").json()
        assert table["total"] == 0 and cards["total_customers"] == 0
        types = [e["type"] for e in call("GET", f"{path}/events").json()["items"]]
        assert types.count("Renewed") == 12 and types.count("RenewalPaymentFailed") == 4 and types[-1] == "Expired"
    with serving(env) as (base, _):  # the sandbox clock survives a restart
        assert httpx.get(f"{base}/v1/sandbox/clock", headers=admin).json()["now"] > start


def children_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(child) for child in found]


def wait_until(check: Any, seconds: float = 20) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.05)
    return found


def test_the_embedded_default_follows_the_log_in_a_process_it_restarts_and_that_ends_with_it(
        tmp_path: Path) -> None:
    # The read models poll every 5 s: only the API's notices can show a row within a second.
    env = {"LEDGER_DATA_DIR": str(tmp_path / "data"), "LEDGER_SANDBOX_DATA": "false", "LEDGER_CLOCK": "system",
           "LEDGER_PROJECTION_POLL_SECONDS": "5"}
    assert run("support", "enable-reseller", "org_kids", "--name", "Kids", env=env).returncode == 0
    admin = token(env, "--org", "org_kids")
    with serving(env, output=tmp_path / "serve.log") as (base, server):
        [followers] = wait_until(lambda: children_of(server.pid))
        billing = httpx.put(f"{base}/v1/resellers/org_kids/billing", headers=admin, json={
            "payment_method": "pm_card_visa", "billing_email": "billing@kids.example", "country": "DE"})
        assert billing.status_code == 200, billing.text

        def create(name: str) -> None:
            created = httpx.post(f"{base}/v1/resellers/org_kids/subscriptions", headers=admin, json={
                "plan": "pro", "billing_cycle": "monthly", "seats": 2, "organization_name": name,
                "admin_email": f"admin@{name.lower()}.example"})
            assert created.status_code == 201, created.text

        def customers() -> set[str]:
            page = httpx.get(f"{base}/v1/resellers/org_kids/subscriptions", headers=admin).json()
            return {row["customer"] for row in page["items"]}

        def lag_of(name: str) -> float:
            """From the create's answer to its row, asked as often as the API answers (no pause: a pause between
            the asks would add to what is measured)."""
            create(name)
            started_at = time.monotonic()
            while name not in customers():
                assert time.monotonic() - started_at < 20, f"{name} not listed within 20 s"
            return time.monotonic() - started_at

        lag_of("Before")  # the followers' process may still be starting
        lags = sorted(lag_of(name) for name in ("One", "Two", "Three", "Four", "Five", "Six", "Seven"))
        # Woken by the API's saves: polling alone would put the median at 2.5 s or more (half the poll).
        assert lags[3] < 1.0, lags
        mailbox = tmp_path / "data" / "outbox.mbox"
        wait_until(lambda: mailbox.exists() and "admin@before.example" in mailbox.read_text())

        os.kill(followers, signal.SIGKILL)
        [restarted] = wait_until(lambda: [c for c in children_of(server.pid) if c != followers])
        create("After")
        wait_until(lambda: "After" in customers())
        assert "starting it again" in (tmp_path / "serve.log").read_text()

        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        wait_until(lambda: subprocess.run(["ps", "-p", str(restarted)], capture_output=True).returncode != 0, 10)
