"""`ledger as-of INSTANT --reseller ORG [--format csv|json] [-o FILE]`."""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from pathlib import Path

import pytest

from cli.audit import COLUMNS
from cli.main import main
from ledger import events
from ledger.subscription import Order
from service.bootstrap import bootstrap
from service.settings import load_settings


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A deployment (sandbox clock) with one reseller that had a customer of 4 seats, then 6."""
    for key in ("LEDGER_DATABASE_URL", "LEDGER_DATABASE_SCHEMA"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LEDGER_SANDBOX_DATA", "false")
    monkeypatch.setenv("LEDGER_CLOCK", "sandbox")
    folder = tmp_path / "data"
    services = bootstrap(load_settings(data_dir=folder))
    try:
        ledger, clock = services.ledger, services.clock
        ledger.enable_reseller("org_cli", name="CLI Reseller", actor="support")
        ledger.set_billing_info("org_cli", payment_method="pm_card_visa", billing_email="b@cli.example",
                                country="US", actor="admin")
        clock.set(clock.now() + timedelta(hours=1), actor="test")  # type: ignore[attr-defined]
        sub = ledger.create_subscription("org_cli", Order("pro", "monthly", seats=4, organization_name="Initech",
                                                          admin_email="a@initech.example"), actor="admin").aggregate
        clock.set(clock.now() + timedelta(hours=1), actor="test")  # type: ignore[attr-defined]
        ledger.change_seats("org_cli", sub.id, 6, actor="admin")
        (tmp_path / "times").write_text(json.dumps({"created": events.iso(sub.created_at),
                                                    "now": events.iso(clock.now())}))
    finally:
        services.close()
    return folder


def times(data_dir: Path) -> dict[str, str]:
    return json.loads((data_dir.parent / "times").read_text())


def as_of(data_dir: Path, *args: str) -> int:
    return main(["as-of", *args, "--data-dir", str(data_dir)])


def test_json_at_an_instant(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "table.json"
    assert as_of(data_dir, times(data_dir)["created"], "--reseller", "org_cli", "--format", "json", "-o",
                 str(out)) == 0
    body = json.loads(out.read_text())
    assert body["summary"] == {"total_customers": 1, "active": 1, "canceled": 0, "total_seats": 4}
    assert [(r["customer"], r["seats"]) for r in body["items"]] == [("Initech", 4)]
    assert body["as_of"] == times(data_dir)["created"]


def test_csv_now_and_before_the_reseller(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert as_of(data_dir, times(data_dir)["now"], "--reseller", "org_cli") == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [(r["customer"], r["seats"]) for r in rows] == [("Initech", "6")]
    assert as_of(data_dir, "2000-01-01T00:00:00Z", "--reseller", "org_cli") == 0
    assert capsys.readouterr().out.splitlines() == [",".join(COLUMNS)]


@pytest.mark.parametrize("instant", ["2999-01-01T00:00:00Z", "not a time", "2026-01-01T10:00:00"])
def test_a_future_or_malformed_instant_is_bad_usage(data_dir: Path, instant: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert as_of(data_dir, instant, "--reseller", "org_cli") == 2
    assert "INSTANT" in capsys.readouterr().err
