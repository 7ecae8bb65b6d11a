"""`ledger replay` as an auditor runs it: every read model is compared at the head of the log, and a view
behind it, or empty while the log is not, fails the audit (exit 1) by name."""

from __future__ import annotations

import json
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


def test_the_verdict_is_the_same_in_one_process_and_in_several(deployment: Services,
                                                               service_env: dict[str, str]) -> None:
    for name in ("Alpha", "Beta", "Gamma"):
        subscribe(deployment, name)
    deployment.read_side.catch_up()
    with deployment.read_side.db(customer_table.NAME).transaction() as cursor:
        cursor.execute("UPDATE customer_table SET seats = 97 WHERE customer = 'Beta'")

    verdicts = {}
    for processes in ("1", "3"):
        done = run("replay", "--quiet", "--json", "--processes", processes, env=service_env, timeout=120)
        assert done.returncode == 1, done.stdout + done.stderr
        verdicts[processes] = json.loads(done.stdout)

    assert verdicts["3"] == verdicts["1"]
    by_name = {model["name"]: model for model in verdicts["3"]["read_models"]}
    assert list(by_name) == list(deployment.read_side.followers)  # in the views' order, whatever their process
    assert by_name[customer_table.NAME]["different_rows"] == 2
    assert any("97" in difference for difference in by_name[customer_table.NAME]["differences"])
    assert [name for name, model in by_name.items() if not model["equal"]] == [customer_table.NAME]


@pytest.mark.parametrize("processes", ["0", "9", "two"])
def test_a_process_count_out_of_range_is_refused(service_env: dict[str, str], processes: str) -> None:
    done = run("replay", "--processes", processes, env=service_env, timeout=60)

    assert done.returncode == 2
    assert "--processes" in done.stderr and "Traceback" not in done.stderr
