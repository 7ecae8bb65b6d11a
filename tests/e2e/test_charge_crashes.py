"""A charging command killed at each of its steps, on SQLite and PostgreSQL: after a retry with the same
key, or after recovery, each charge has exactly one billing document, nothing is charged twice, and
``ledger reconcile`` and ``ledger replay`` find nothing wrong."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from commands.recovery import ChargeRecovery
from ledger.charge import Charge
from ledger.invoice import Invoice
from ledger.subscription import Subscription
from service.bootstrap import Services, bootstrap
from service.settings import load_settings
from tests.e2e import crashing_command
from tests.e2e.crashing_command import DIED, ORDER, ORG, STEPS
from tests.e2e.processes import ROOT, environment, run, serving

pytestmark = pytest.mark.e2e

EVER = {"created_from": datetime(2000, 1, 1, tzinfo=UTC), "created_to": datetime(2100, 1, 1, tzinfo=UTC)}
# Where the order of retry and recovery matters: while the money may be at the processor.
PATHS = [(step, "retry") for step in STEPS] + [("after_intent", "recover"), ("after_charge", "recover"),
                                               ("before_save", "recover")]


@pytest.fixture
def env(service_env: dict[str, str]) -> dict[str, str]:
    return {**service_env, "LEDGER_CLOCK": "sandbox"}


@pytest.fixture
def deployment(env: dict[str, str]) -> Iterator[Services]:
    services = open_services(env)
    reseller(services)
    yield services
    services.close()


def reseller(services: Services) -> None:
    services.ledger.enable_reseller(ORG, name="Crash Resellers", actor="support-user")
    services.ledger.set_billing_info(ORG, payment_method="pm_card_visa", billing_email="billing@crash.example",
                                     country="DE", actor="crash-user")


def open_services(env: dict[str, str]) -> Services:
    return bootstrap(load_settings(**{k.removeprefix("LEDGER_").lower(): v for k, v in env.items()}))


def die(env: dict[str, str], command: str, step: str, subscription_id: UUID | None, key: str) -> None:
    child = subprocess.run(
        [sys.executable, "-m", crashing_command.__name__, command, step, str(subscription_id or "-"), key],
        env=environment(env), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert child.returncode == DIED, f"the command did not die at {step}: {child.returncode} {child.stderr[-2000:]}"


def aggregates(services: Services, kind: type) -> list[Any]:
    ids = {n.originator_id for n in services.app.recorder.select_notifications(start=None, limit=100_000)}
    found = [services.app.repository.get(i) for i in ids]
    return [a for a in found if isinstance(a, kind)]


def check_books(services: Services) -> None:
    charges = {c.reference: c for c in services.gateway.list_charges(**EVER)}
    invoices = aggregates(services, Invoice)
    assert sorted(i.payment_reference for i in invoices) == sorted(charges), \
        "each processor charge has exactly one billing document"
    for invoice in invoices:
        assert (invoice.bill.total_cents, invoice.refunded_cents) == (
            charges[invoice.payment_reference].amount_cents, charges[invoice.payment_reference].refunded_cents)
    assert [c.id for c in aggregates(services, Charge) if c.is_open] == []


def a_subscription(services: Services) -> Subscription:
    return services.ledger.create_subscription(ORG, ORDER, actor="crash-user").aggregate


def redo(services: Services, command: str, subscription_id: UUID | None, key: str) -> Any:
    """What the client (or, for a renewal, the scheduler) does next: the same request again."""
    crashing_command.run(command, services, str(subscription_id) if subscription_id else None, key)


@pytest.mark.parametrize("command", ["create", "increase", "renew", "renew_batch"])
@pytest.mark.parametrize(("step", "then"), PATHS)
def test_a_command_killed_at_any_step_ends_with_one_document_per_charge(
        deployment: Services, env: dict[str, str], command: str, step: str, then: str) -> None:
    killed_and_taken_up(deployment, env, command, step, then)


@pytest.fixture
def stripe_env(localstripe_url: str, tmp_path: Path) -> dict[str, str]:
    return {"LEDGER_DATA_DIR": str(tmp_path / "data"), "LEDGER_SANDBOX_DATA": "false", "LEDGER_CLOCK": "sandbox",
            "LEDGER_PAYMENTS": "stripe", "LEDGER_STRIPE_SECRET_KEY": "sk_test_localstripe",
            "LEDGER_STRIPE_API_BASE": localstripe_url}


@pytest.mark.parametrize("command", ["create", "increase", "renew", "renew_batch"])
@pytest.mark.parametrize(("step", "then"), [("after_charge", "retry"), ("after_charge", "recover"),
                                            ("before_save", "retry"), ("after_intent", "recover")])
def test_with_the_stripe_adapter_too(stripe_env: dict[str, str], command: str, step: str, then: str) -> None:
    """Against localstripe, which ignores idempotency keys: the retry must find the charge, not replay it."""
    services = open_services(stripe_env)
    try:
        reseller(services)
        killed_and_taken_up(services, stripe_env, command, step, then)
    finally:
        services.close()


def killed_and_taken_up(deployment: Services, env: dict[str, str], command: str, step: str, then: str) -> None:
    subscription_id = None
    if command != "create":
        subscription_id = a_subscription(deployment).id
    if command in ("renew", "renew_batch"):
        due = deployment.app.repository.get(subscription_id).current_period_end
        deployment.clock.set(due, actor="tester")
    charges_before = len(deployment.gateway.list_charges(**EVER))

    die(env, command, step, subscription_id, "key-1")
    if then == "recover":
        ChargeRecovery(deployment.ledger, grace=timedelta(0)).run()
    redo(deployment, command, subscription_id, "key-1")
    ChargeRecovery(deployment.ledger, grace=timedelta(0)).run()

    check_books(deployment)
    charges = deployment.gateway.list_charges(**EVER)
    refunds = deployment.gateway.list_refunds(**EVER)
    kept = len(charges) - len(refunds) - charges_before
    assert kept == 1, "the change is paid exactly once"
    if then == "retry" or step in ("after_intent", "after_save"):
        assert refunds == [], "a retry takes the dead attempt's charge rather than charging again"
    subscriptions = aggregates(deployment, Subscription)
    assert len(subscriptions) == 1
    [subscription] = subscriptions
    expected = {"create": (3, 0), "increase": (5, 0), "renew": (3, 1), "renew_batch": (3, 1)}[command]
    assert (subscription.seats, subscription.period_index) == expected


def test_reconcile_and_replay_agree_after_crashes(deployment: Services, env: dict[str, str]) -> None:
    for number, step in enumerate(STEPS):
        die(env, "create", step, None, f"key-{number}")
        if number % 2:
            ChargeRecovery(deployment.ledger, grace=timedelta(0)).run()
        redo(deployment, "create", None, f"key-{number}")
    deployment.read_side.catch_up()
    now = deployment.clock.now()
    deployment.close()

    window = ["--from", "2000-01-01", "--to", (now + timedelta(days=1)).date().isoformat()]
    reconciled = run("reconcile", *window, env=env, timeout=120)
    replayed = run("replay", env=env, timeout=120)

    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr


def test_a_serving_process_settles_what_a_crash_left_open_when_it_starts(
        deployment: Services, env: dict[str, str], backend: str) -> None:
    die(env, "create", "after_charge", None, "key-1")
    workers = ["--workers", "2"] if backend == "postgres" else []

    with serving({**env, "LEDGER_RECOVERY_GRACE_SECONDS": "0"}, *workers):
        deadline = time.monotonic() + 30
        while any(c.is_open for c in aggregates(deployment, Charge)) and time.monotonic() < deadline:
            time.sleep(0.2)

    [charge] = aggregates(deployment, Charge)
    assert charge.state == "reversed"
    assert list(deployment.ledger.history(charge.id))[-1].actor == "system:recovery"
    check_books(deployment)
