"""`ledger scheduler` with renewal worker processes (LEDGER_SCHEDULER_PROCESSES), as an operator runs it: a backlog
that fell due while nothing ran is renewed by the workers, counted in the scheduler's metrics, and the workers end
with the scheduler."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from commands.clocks import ManualClock
from commands.handlers import Ledger
from commands.locks import ThreadLocks
from commands.quotes import QuoteSigner
from ledger import events
from service.bootstrap import bootstrap
from service.settings import load_settings
from tests.billing_support import PRO_ORDER
from tests.e2e.processes import free_port, started
from tests.support import ADMIN

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

BACKLOG = 600
"""More than a page of the due-dates view (500): enough for the scheduler to hand it to its workers."""


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_backlog_is_renewed_by_the_schedulers_worker_processes_which_end_with_it(
        postgres_url: str, postgres_schema: str, tmp_path: Path) -> None:
    env = {"LEDGER_DATA_DIR": str(tmp_path / "data"), "LEDGER_SANDBOX_DATA": "false",
           "LEDGER_DATABASE_URL": postgres_url, "LEDGER_DATABASE_SCHEMA": postgres_schema}
    services = bootstrap(load_settings(**{key.removeprefix("LEDGER_").lower(): value for key, value in env.items()}))
    try:
        services.ledger.enable_reseller("org_due", name="Due Reseller", actor="support")
        services.ledger.set_billing_info("org_due", payment_method="pm_card_visa", billing_email="b@due.example",
                                         country="DE", actor=ADMIN)
        # Bought 40 days ago, on a ledger whose clock says so: every one of them is due now.
        then = Ledger(services.app, catalog=services.catalog, gateway=services.gateway, locks=ThreadLocks(),
                      clock=ManualClock((datetime.now(UTC) - timedelta(days=40)).replace(microsecond=0)),
                      quotes=QuoteSigner(b"e2e"))
        subscriptions = [then.create_subscription("org_due", PRO_ORDER, actor=ADMIN).aggregate.id
                         for _ in range(BACKLOG)]
    finally:
        services.close()
    port, log = free_port(), tmp_path / "scheduler.log"
    env |= {"LEDGER_SCHEDULER_PROCESSES": "2", "LEDGER_SCHEDULER_METRICS_PORT": str(port)}

    with started("scheduler", env=env, output=log) as scheduler:
        deadline, renewed = time.monotonic() + 90, 0.0
        while renewed < BACKLOG and time.monotonic() < deadline and scheduler.poll() is None:
            time.sleep(0.5)
            try:
                exposition = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.TransportError:
                continue
            counted = re.search(r'^ledger_charges_total\{outcome="succeeded"\} (\S+)$', exposition, re.MULTILINE)
            renewed = float(counted[1]) if counted else 0.0
        assert renewed == BACKLOG, log.read_text()
        workers = children_of(scheduler.pid)
        assert len(workers) >= 2, workers  # the two workers (and multiprocessing's resource tracker)
        assert "2 renewal worker processes started for a backlog" in log.read_text()

    assert scheduler.returncode == 0, log.read_text()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)], "worker processes outlived the scheduler"
    assert "Traceback" not in log.read_text()
    services = bootstrap(load_settings(**{key.removeprefix("LEDGER_").lower(): value for key, value in env.items()
                                          if key != "LEDGER_SCHEDULER_METRICS_PORT"}))
    try:
        for sub_id in subscriptions:
            assert [events.type_name(e) for e in services.ledger.history(sub_id)] == [
                "SubscriptionCreated", "Renewed"]
    finally:
        services.close()
