"""The finance commands of the `ledger` CLI (`reconcile`, `export-billing`) and the billing export, on a
real deployment in a temporary data dir."""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from finance.cli import register
from finance.export import COLUMNS, export_billing
from service.bootstrap import Services, bootstrap
from service.cli import _command
from service.settings import Settings, load_settings
from tests.billing_support import PRO_ORDER
from tests.support import ADMIN

PERIOD = ["--from", "2000-01-01", "--to", "2100-01-01T00:00:00Z"]


def open_services(settings: Settings) -> Services:
    return bootstrap(settings)


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    settings = load_settings(data_dir=tmp_path / "data", sandbox_data=False, clock="sandbox")
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
    parser = argparse.ArgumentParser(prog="ledger")
    register(parser.add_subparsers(dest="command", required=True), _command, open_services)
    args = parser.parse_args(list(argv))
    return args.run(args, settings)


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


def test_an_unknown_format_is_refused_by_the_parser(settings: Settings) -> None:
    with pytest.raises(SystemExit) as exited:
        run(settings, "export-billing", *PERIOD, "--format", "xlsx")
    assert exited.value.code == 2


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
