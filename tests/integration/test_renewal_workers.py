"""Renewal worker processes (LEDGER_SCHEDULER_PROCESSES, PostgreSQL): a backlog handed to real worker processes is
renewed, charged and recorded exactly as the scheduler's own threads would, each subscription once, its outcomes
counted in the scheduler's metrics; the processes live while the backlog does, and a worker that dies is
replaced at the next run."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from prometheus_client import REGISTRY

from commands.clocks import SandboxClock
from commands.recovery import ChargeRecovery
from projections.verify import RawLog, verify
from service import scheduler as scheduler_module
from service.bootstrap import Services, bootstrap
from service.renewal_workers import WorkerFailure
from service.settings import SettingsError, load_settings
from tests.e2e.test_charge_crashes import check_books
from tests.integration.test_renewal_batches import EVER, create, period_end, types
from tests.support import ADMIN

pytestmark = pytest.mark.postgres

BIG_BACKLOG = 600
"""Long enough a run to kill a worker in the middle of it."""


@pytest.fixture
def deployment(postgres_url: str, postgres_schema: str, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    """On PostgreSQL with two renewal worker processes and a sandbox clock; pages of 6 (so a backlog is any 6 due at
    once) in batches of 2."""
    monkeypatch.setattr(scheduler_module, "SCAN", 6)
    built = bootstrap(load_settings(data_dir=tmp_path / "data", sandbox_data=False, database_url=postgres_url,
                                    database_schema=postgres_schema, clock="sandbox", scheduler_processes=2))
    built.scheduler.batch = 2
    for org_id, card in (("org_pay", "pm_card_visa"), ("org_fail", "pm_card_visa")):
        built.ledger.enable_reseller(org_id, name=org_id, actor="support")
        built.ledger.set_billing_info(org_id, payment_method=card, billing_email=f"b@{org_id}.example", country="DE",
                                      actor=ADMIN)
    yield built
    built.close()


def count(name: str, **labels: str) -> float:
    """This process's count of ``name`` with these labels, as Prometheus would read it."""
    return REGISTRY.get_sample_value(f"{name}_total", labels) or 0.0


def counts() -> tuple[float, float, float]:
    return (count("ledger_commands", command="run_due", outcome="ok"), count("ledger_charges", outcome="succeeded"),
            count("ledger_charges", outcome="declined"))


def move_past(services: Services, at: datetime) -> None:
    clock = services.clock
    assert isinstance(clock, SandboxClock)
    clock.set(at + timedelta(seconds=1), actor="tester")


def test_a_backlog_is_renewed_in_worker_processes_each_subscription_once(deployment: Services) -> None:
    ledger, workers = deployment.ledger, deployment.scheduler.workers
    assert workers is not None
    paying = [create(ledger, "org_pay", seats=1 + n % 4) for n in range(13)]
    declining = [create(ledger, "org_fail") for _ in range(3)]
    ledger.set_billing_info("org_fail", payment_method="pm_card_chargeCustomerFail", billing_email="b@f.example",
                            country="DE", actor=ADMIN)
    canceled = create(ledger, "org_pay")
    ledger.cancel("org_pay", canceled, actor=ADMIN)
    move_past(deployment, period_end(ledger, paying[0]))
    before = counts()

    ran = deployment.scheduler.run_due()

    assert (ran.changes, ran.failures) == (13 + 3 + 1, 0)
    assert workers.started  # the backlog went to the workers, which stay for the next run
    for sub_id in paying:
        assert types(ledger, sub_id) == ["SubscriptionCreated", "Renewed"]
    for sub_id in declining:
        assert types(ledger, sub_id) == ["SubscriptionCreated", "RenewalPaymentFailed"]
    assert types(ledger, canceled) == ["SubscriptionCreated", "Canceled", "Expired"]
    charges = deployment.gateway.list_charges(**EVER)
    assert len(charges) == 17 + 13  # the creations, then one charge for each paying renewal
    renewed = {UUID(charge.metadata["subscription_id"]) for charge in charges[17:]}
    assert renewed == set(paying)
    # What the workers did is counted in the scheduler's process, whose metrics Prometheus reads.
    assert [after - was for after, was in zip(counts(), before, strict=True)] == [17, 13, 3]
    # Their events were appended to the one log, whose hash chain verifies.
    verdict = verify(RawLog(ledger.app.recorder))
    assert verdict.failure is None and verdict.events == deployment.read_side.log.head()

    assert deployment.scheduler.run_due().changes == 0
    assert not workers.started  # nothing due: the processes ended with the backlog


def test_a_worker_that_died_fails_its_run_and_the_next_run_renews_with_new_workers(deployment: Services) -> None:
    ledger, workers = deployment.ledger, deployment.scheduler.workers
    assert workers is not None
    subs = [create(ledger, "org_pay") for _ in range(6)]
    move_past(deployment, period_end(ledger, subs[0]))
    assert deployment.scheduler.run_due().changes == 6
    for child in multiprocessing.active_children():  # killed between two runs, as the kernel's OOM killer would
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join()
    move_past(deployment, period_end(ledger, subs[0]))

    with pytest.raises(WorkerFailure, match="worker process ended"):
        deployment.scheduler.run_due()
    ran = deployment.scheduler.run_due()

    assert (ran.changes, ran.failures) == (6, 0)
    for sub_id in subs:
        assert types(ledger, sub_id) == ["SubscriptionCreated", "Renewed", "Renewed"]
    assert len(deployment.gateway.list_charges(**EVER)) == 6 * 3


def test_a_worker_killed_in_the_middle_of_a_backlog_takes_no_money_without_its_record(deployment: Services) -> None:
    ledger = deployment.ledger
    subs = [create(ledger, "org_pay") for _ in range(BIG_BACKLOG)]
    move_past(deployment, period_end(ledger, subs[0]))
    outcome: list[BaseException | object] = []
    running = threading.Thread(target=lambda: outcome.append(_outcome_of(deployment.scheduler.run_due)))
    running.start()
    deadline = time.monotonic() + 60
    while len(deployment.gateway.list_charges(**EVER)) == BIG_BACKLOG and time.monotonic() < deadline:
        time.sleep(0.005)  # until the first renewal is charged
    assert running.is_alive(), "the backlog was done before a worker could be killed"
    for child in multiprocessing.active_children():
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    running.join()

    assert isinstance(outcome[0], WorkerFailure)  # the run stops and says why; the scheduler runs again shortly
    # What the scheduler's thread does next: settle the charges the dead worker left open, run again.
    ChargeRecovery(ledger, grace=timedelta(0)).run()
    ran = deployment.scheduler.run_due()

    assert ran.failures == 0
    for sub_id in subs:
        assert types(ledger, sub_id).count("Renewed") == 1
    check_books(deployment)  # each charge the processor took has its one billing document; no charge left open


def _outcome_of(run: Callable[[], object]) -> BaseException | object:
    try:
        return run()
    except Exception as error:
        return error


def test_the_setting_needs_postgresql() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(scheduler_processes=2)
    assert str(refused.value) == ("LEDGER_SCHEDULER_PROCESSES needs LEDGER_DATABASE_URL (the embedded default has one "
                                  "writer)")
