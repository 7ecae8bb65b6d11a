"""`ledger replay` as an auditor runs it: every read model is compared at the head of the log, and a view
behind it, or empty while the log is not, fails the audit (exit 1) by name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger.subscription import Order
from projections import customer_table, summary
from service.bootstrap import Services, bootstrap
from service.settings import load_settings
from tests.e2e.processes import run

pytestmark = pytest.mark.e2e


@pytest.fixture
def deployment(service_env: dict[str, str]) -> Iterator[Services]:
    overrides = {key.removeprefix("LEDGER_").lower(): value for key, value in service_env.items()}
    services = bootstrap(load_settings(**overrides))
    services.ledger.enable_reseller("org_audit", name="Audit", actor="support")
    services.ledger.set_billing_info("org_audit", payment_method="pm_card_visa", billing_email="b@a.example",
                                     country="DE", actor="admin")
    yield services
    services.close()


def subscribe(services: Services, name: str) -> None:
    order = Order("pro", "monthly", seats=3, organization_name=name, admin_email=f"admin@{name.lower()}.example")
    services.ledger.create_subscription("org_audit", order, actor="admin")


def audit(env: dict[str, str]) -> tuple[int, str]:
    done = run("replay", "--quiet", env=env, timeout=120)
    return done.returncode, done.stdout + done.stderr


def line_of(output: str, view: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(f"{view} "))


def test_views_caught_up_with_the_log_pass(deployment: Services, service_env: dict[str, str]) -> None:
    subscribe(deployment, "Caught Up")
    deployment.read_side.catch_up()

    code, output = audit(service_env)

    assert code == 0, output
    for view in deployment.read_side.followers:
        assert " EQUAL " in line_of(output, view), output
    assert "verdict: every read model equals a replay of the event log" in output


def test_a_view_behind_the_head_fails_by_name(deployment: Services, service_env: dict[str, str]) -> None:
    subscribe(deployment, "Early")
    deployment.read_side.catch_up()
    subscribe(deployment, "Late")
    for name, follower in deployment.read_side.followers.items():
        if name != customer_table.NAME:
            follower.catch_up()
    behind_by = deployment.read_side.log.head() - deployment.read_side.followers[customer_table.NAME].position()

    code, output = audit(service_env)

    assert code == 1, output
    assert f"BEHIND ({behind_by} events)" in line_of(output, customer_table.NAME), output
    assert "replayed but not live" in output and "Late" in output
    assert " EQUAL " in line_of(output, summary.NAME)
    assert "verdict: DIFFERENCES FOUND" in output


def test_empty_views_of_a_log_with_events_fail(deployment: Services, service_env: dict[str, str]) -> None:
    subscribe(deployment, "Never Projected")
    head = deployment.read_side.log.head()

    code, output = audit(service_env)

    assert code == 1, output
    for view in deployment.read_side.followers:
        assert f"EMPTY (none of {head} events)" in line_of(output, view), output
