"""The finance commands of the `ledger` CLI (`reconcile`, `export-billing`) and the billing export, on a
real deployment in a temporary data dir."""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from cli import finance as finance_cli
from cli.main import main
from commands.errors import PaymentUnavailable
from finance.export import COLUMNS, export_billing
from service.bootstrap import Services, bootstrap
from service.settings import Settings, load_settings
from tests.billing_support import PRO_ORDER
from tests.support import ADMIN

PERIOD = ["--from", "2000-01-01", "--to", "2100-01-01T00:00:00Z"]
ROOT = Path(__file__).resolve().parents[2]


def open_services(settings: Settings) -> Services:
    return bootstrap(settings)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A deployment in a temporary data dir, which the commands find in the environment."""
    for name in [name for name in os.environ if name.startswith("LEDGER_")]:
        monkeypatch.delenv(name)
    for name, value in {"LEDGER_DATA_DIR": str(tmp_path / "data"), "LEDGER_SANDBOX_DATA": "false",
                        "LEDGER_CLOCK": "sandbox"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    services = open_services(settings)
    try:
        services.ledger.enable_reseller("org_1", name="Reseller", actor="support")
        services.ledger.set_billing_info("org_1", payment_method="pm_card_visa", billing_email="b@r.example",
                                         country="DE", actor=ADMIN)
        sub_id = services.ledger.create_subscription("org_1", PRO_ORDER, actor=ADMIN).aggregate.id
        services.clock.set(services.clock.now() + timedelta(days=1), actor="test")  # type: ignore[attr-defined]
        services.ledger.change_seats("org_1", sub_id, 5, actor=ADMIN)
    finally:
        services.close()
    yield settings


def run(settings: Settings, *argv: str) -> int:
    """`ledger ARGV` on the deployment of ``settings`` (the environment's)."""
    assert load_settings().data_dir == settings.data_dir
    return main(list(argv))


def plant_an_undocumented_charge(settings: Settings) -> None:
    services = open_services(settings)
    try:
        card = services.ledger.enabled_reseller("org_1").require_billing_info()
        services.gateway.charge(customer=card.processor_customer, payment_method=card.processor_payment_method,
                                amount_cents=4200, currency="USD", idempotency_key="lost", metadata={})
    finally:
        services.close()


def test_reconcile_exits_0_when_the_books_match(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(settings, "reconcile", *PERIOD) == 0
    out = capsys.readouterr().out
    assert "2 billing documents and 2 charges" in out and "The books match." in out


def test_reconcile_exits_1_and_writes_the_mismatches(settings: Settings, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    plant_an_undocumented_charge(settings)
    report = tmp_path / "mismatches.csv"
    assert run(settings, "reconcile", *PERIOD, "--csv", str(report)) == 1
    assert "1 mismatch:" in capsys.readouterr().out
    rows = list(csv.DictReader(report.open()))
    assert [(row["kind"], row["processor_cents"]) for row in rows] == [("charge_without_document", "4200")]


@pytest.mark.parametrize(("command", "period", "message"), [
    ("reconcile", ["--from", "yesterday", "--to", "2026-01-01"], "--from 'yesterday' is not a date"),
    ("reconcile", ["--from", "2026-01-01", "--to", "2026-13-01"], "--to '2026-13-01' is not a date"),
    ("reconcile", ["--from", "2026-02-01", "--to", "2026-01-01"], "must be before --to"),
    ("export-billing", ["--from", "2026-01-01T00:00:00+01:00", "--to", "2025-12-31T23:00:00Z"], "must be before"),
])
def test_bad_input_exits_2_with_a_message_and_no_traceback(settings: Settings, capsys: pytest.CaptureFixture[str],
                                                           command: str, period: list[str], message: str) -> None:
    assert run(settings, command, *period) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_unwritable_output_is_bad_input(settings: Settings, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert run(settings, "export-billing", *PERIOD, "--output", str(tmp_path / "missing" / "out.csv")) == 2
    assert "cannot write" in capsys.readouterr().err


def test_an_unknown_format_is_refused_by_the_parser(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(settings, "export-billing", *PERIOD, "--format", "xlsx") == 2
    assert "'xlsx' is not one of 'csv'" in capsys.readouterr().err


def test_export_billing_writes_a_row_per_line_and_per_refund(settings: Settings, tmp_path: Path) -> None:
    output = tmp_path / "billing.csv"
    services = open_services(settings)
    try:
        invoice = next(e for e in services.app.recorder.select_notifications(start=None, limit=100)
                       if e.topic == "ledger:Invoice.InvoiceIssued")
        document = services.app.repository.get(invoice.originator_id)
        refund = services.gateway.refund(payment_reference=document.payment_reference, amount_cents=1000,
                                         idempotency_key="r", metadata={})
        document.record_refund(amount_cents=1000, refund_reference=refund, reason="goodwill",
                               at=services.clock.now(), actor="test")
        services.app.save(document)
    finally:
        services.close()

    assert run(settings, "export-billing", *PERIOD, "--format", "csv", "--output", str(output)) == 0
    rows = list(csv.DictReader(output.open()))
    assert tuple(rows[0].keys()) == COLUMNS
    assert [(r["record"], r["purpose"], r["line_number"]) for r in rows] == [
        ("line", "subscription_created", "1"), ("line", "seats_increased", "1"), ("line", "seats_increased", "2"),
        ("refund", "subscription_created", "")]
    created, credit, charge, refunded = rows
    assert (created["quantity"], created["unit_amount_cents"], created["amount_cents"], created["tax_rate_bps"],
            created["document_subtotal_cents"], created["document_tax_cents"], created["document_total_cents"],
            created["currency"], created["state"]) == (
        "3", "3000", "9000", "1900", "9000", "1710", "10710", "USD", "partially_refunded")
    assert int(credit["amount_cents"]) < 0 < int(charge["amount_cents"])
    assert int(credit["amount_cents"]) + int(charge["amount_cents"]) == int(charge["document_subtotal_cents"])
    assert (refunded["amount_cents"], refunded["refund_reference"], refunded["payment_reference"]) == (
        "-1000", refund, created["payment_reference"])


def test_export_of_nothing_is_a_header() -> None:
    out = io.StringIO()
    assert export_billing([], out) == 0
    assert out.getvalue().strip() == ",".join(COLUMNS)


def test_a_report_period_can_be_a_window_of_hours(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    services = open_services(settings)
    try:
        now = services.clock.now()
    finally:
        services.close()
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    assert run(settings, "reconcile", "--from", start.isoformat(), "--to", end.isoformat()) == 0
    assert "The books match." in capsys.readouterr().out


# --- failures to read: exit 3, one line ---------------------------------------------------------------------


def unreachable_processor(tmp_path: Path) -> dict[str, str]:
    """Stripe settings whose API is a local port that nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return {"LEDGER_DATA_DIR": str(tmp_path / "data"), "LEDGER_PAYMENTS": "stripe",
            "LEDGER_STRIPE_SECRET_KEY": "sk_test_unreachable", "LEDGER_STRIPE_API_BASE": f"http://127.0.0.1:{port}"}


def test_an_unreachable_processor_exits_3_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | unreachable_processor(tmp_path)
    done = subprocess.run([sys.executable, "-m", "cli", "reconcile", *PERIOD], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "ledger: could not read the payment processor (stripe): the payment processor is unavailable "
        "(APIConnectionError); retry later"]


def test_verbose_prints_the_trace_before_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in unreachable_processor(tmp_path).items():
        monkeypatch.setenv(name, value)

    assert run(load_settings(), "reconcile", *PERIOD, "--verbose") == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "stripe._error.APIConnectionError" in err
    assert err.splitlines()[-1].startswith("ledger: could not read the payment processor (stripe): ")


@pytest.mark.parametrize("command", ["reconcile", "export-billing"])
def test_an_unreadable_store_exits_3_with_one_line(settings: Settings, command: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (settings.data_dir / "ledger.sqlite").write_bytes(b"not a database" * 100)

    assert run(settings, command, *PERIOD) == 3
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["ledger: could not read the ledger's store: DatabaseError: file is not a "
                                         "database"]
    assert "The books match" not in captured.out


def test_a_processor_that_refuses_to_list_exits_3_not_1(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    def refusing(settings: Settings) -> Services:
        services = bootstrap(settings)
        services.gateway.list_charges = _refuse  # type: ignore[method-assign]
        return services

    monkeypatch.setattr(finance_cli, "open_services", refusing)

    assert run(settings, "reconcile", *PERIOD) == 3
    assert capsys.readouterr().err.splitlines() == [
        "ledger: could not read the payment processor (simulated): the payment processor refused to answer"]


def _refuse(**_: object) -> list[object]:
    raise PaymentUnavailable("the payment processor refused to answer")


@pytest.mark.parametrize("argv", [["reconcile", "--from", "2026-01-01"], ["reconcile", *PERIOD, "--bogus"],
                                  ["export-billing", *PERIOD, "--verbose=yes"]])
def test_bad_usage_is_refused_by_the_parser_with_exit_2(settings: Settings, argv: list[str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert run(settings, *argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("ledger") and "Traceback" not in err, err
