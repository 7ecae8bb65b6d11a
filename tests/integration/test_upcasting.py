"""A log written by an earlier version of the ledger (tests/fixtures/v1_log.jsonl, recorded at commit 70ed489
by tests/fixtures/make_v1_log.py, before any event type had a second schema version) is read by this version:
its events are upcast, every read model is rebuilt from it, and the answers are the ones that version gave.
The policy is in docs/event-schema.md."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent

from commands.application import LedgerApplication
from ledger import events
from ledger.subscription import Subscription
from projections.billing_documents import queries as documents
from projections.cursors import CursorSigner
from projections.customer_table import queries as customers
from projections.deployment import ReadSide, ViewLocation
from projections.export import export_events
from projections.log import EventLog
from projections.replay import replay
from projections.summary import Cards, cards

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "v1_log.jsonl"
SIGNER = CursorSigner(b"upcasting test")
ADA, INITECH = UUID("dd02b91d-cb68-5ef5-9d61-9acc0e3c38d6"), UUID("e704b6d7-5231-507f-a573-34efb70233c9")
GLOBEX, HOOLI = UUID("60fd2a7c-c629-5b0e-89d2-be9dc2681138"), UUID("417153b1-8538-57fc-aae5-66252ee5b6e8")
EVE = UUID("233cb981-1fc3-52d6-b8d4-933e827fc3d3")


def stored_lines() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def old_log(tmp_path: Path):
    """A fresh SQLite store holding the fixture's records, byte for byte, at their positions."""
    app = LedgerApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                 "SQLITE_DBNAME": str(tmp_path / "ledger.sqlite")})
    lines = stored_lines()
    app.recorder.insert_events([StoredEvent(UUID(line["stream_id"]), line["version"], line["topic"],
                                            line["state"].encode("utf-8")) for line in lines])
    assert app.recorder.max_notification_id() == len(lines) == lines[-1]["position"]
    read_side = ReadSide(app, ViewLocation(folder=tmp_path / "views"))
    read_side.catch_up()
    yield app, read_side
    read_side.close()
    app.close()


def test_the_fixture_is_of_the_first_schema_version():
    """So the test below reads history, not what this version writes."""
    states = [json.loads(line["state"]) for line in stored_lines()]
    assert not any("class_version" in state for state in states)
    topics = {line["topic"].rsplit(".", 1)[-1] for line in stored_lines()}
    assert {"SeatsIncreased", "Renewed", "IdempotentRequestRecorded", "SandboxClockStarted", "Expired",
            "RenewalPaymentFailed", "SeatDecreaseScheduled", "Canceled"} <= topics
    for line, state in zip(stored_lines(), states):
        if line["topic"].endswith(("IdempotentRequestRecorded", "SandboxClockStarted")):
            assert "actor" not in state
        if line["topic"].endswith(("SeatsIncreased", "Renewed")):
            assert "currency" not in state


def test_every_read_model_replayed_from_the_old_log_gives_the_known_answers(old_log, tmp_path):
    app, read_side = old_log
    verdicts = replay(read_side, ViewLocation(folder=tmp_path / "replayed"))
    assert verdicts and all(v.equal for v in verdicts), [(v.projection, v.state, v.differences) for v in verdicts]

    table = customers.page(read_side.db("customer_table"), SIGNER, reseller_org_id="org_v1")
    assert table.total == 3
    assert [(row["customer"], row["plan_name"], row["status"], row["seats"], row["pending_seats"],
             row["current_period_start"], row["current_period_end"]) for row in table.items] == [
        ("ada@customer.example", "Lens Plus", "active", 1, None, "2026-02-28T10:00:00Z", "2026-03-31T10:00:00Z"),
        ("Globex", "Lens Enterprise", "canceled", 3, None, "2026-02-14T10:00:00Z", "2027-02-14T10:00:00Z"),
        ("Initech", "Lens Pro", "active", 6, None, "2026-02-28T10:00:00Z", "2026-03-31T10:00:00Z"),
    ]
    other = customers.page(read_side.db("customer_table"), SIGNER, reseller_org_id="org_v1b")
    assert [(row["customer"], row["status"]) for row in other.items] == [("eve@customer.example", "past_due")]
    # Hooli expired: gone from the table and the cards.
    assert cards(read_side.db("summary"), "org_v1") == Cards(total_customers=3, active=2, canceled=1, total_seats=10)
    assert cards(read_side.db("summary"), "org_v1b") == Cards(total_customers=1, active=1, canceled=0, total_seats=1)

    bills = documents.page(read_side.db("billing_documents"), SIGNER, reseller_org_id="org_v1", limit=200).items
    by_purpose = sorted((UUID(str(d["subscription_id"])), d["purpose"], d["subtotal_cents"], d["tax_cents"],
                         d["total_cents"]) for d in bills)
    assert by_purpose == sorted([
        (ADA, "subscription_created", 3000, 570, 3570), (ADA, "renewal", 3000, 570, 3570),
        (INITECH, "subscription_created", 15000, 2850, 17850),
        (INITECH, "seats_increased", 4500, 855, 5355),  # 5 -> 8 seats for half of February, DE 19 %
        (INITECH, "renewal", 18000, 3420, 21420),  # renewed at the scheduled 6 seats
        (HOOLI, "subscription_created", 6000, 1140, 7140),
        (GLOBEX, "subscription_created", 180000, 34200, 214200),
    ])
    assert all(d["total_cents"] == d["subtotal_cents"] + d["tax_cents"] and d["currency"] == "USD" for d in bills)
    eve = documents.page(read_side.db("billing_documents"), SIGNER, reseller_org_id="org_v1b").items
    assert [(d["purpose"], d["total_cents"], d["tax_rate_bps"]) for d in eve] == [("subscription_created", 3600, 2000)]

    initech = app.repository.get(INITECH)
    assert (initech.seats, initech.pending_seats, initech.currency, initech.status) == (6, None, "USD", "active")
    assert app.repository.get(HOOLI).status == "expired"


def test_old_events_are_upcast_to_the_current_schema(old_log):
    app, _ = old_log
    history = list(app.events.get(INITECH))
    increased = next(e for e in history if isinstance(e, Subscription.SeatsIncreased))
    renewed = next(e for e in history if isinstance(e, Subscription.Renewed))
    assert (increased.seats_before, increased.seats_after, increased.currency) == (5, 8, "USD")
    assert (renewed.seats_before, renewed.seats_after, renewed.currency) == (8, 6, "USD")
    assert renewed.currency == renewed.bill.currency

    out = io.StringIO()
    export_events(EventLog(app), out)
    lines = [json.loads(text) for text in out.getvalue().splitlines()]
    assert len(lines) == len(stored_lines())
    for line in lines:
        assert line["actor"], line
        expected = 2 if line["type"] in {"SeatsIncreased", "Renewed", "IdempotentRequestRecorded",
                                         "SandboxClockStarted"} else 1
        assert line["schema_version"] == expected, line["type"]
    upcast_actors = {line["type"]: line["actor"] for line in lines
                     if line["type"] in {"IdempotentRequestRecorded", "SandboxClockStarted"}}
    assert upcast_actors == {"IdempotentRequestRecorded": events.UNKNOWN_BEFORE_V2,
                             "SandboxClockStarted": events.UNKNOWN_BEFORE_V2}
    assert {line["data"]["currency"] for line in lines if line["type"] in {"SeatsIncreased", "Renewed"}} == {"USD"}


def test_an_export_of_the_upcast_log_passes_the_standalone_verifier(old_log, tmp_path):
    """Upcast facts (an actor, a currency) are shown but not stored: the verifier knows them as such."""
    app, _ = old_log
    export = tmp_path / "export.jsonl"
    with export.open("w", encoding="utf-8") as out:
        export_events(EventLog(app), out)
    checked = subprocess.run([sys.executable, str(ROOT / "tools" / "verify_export.py"), str(export)],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # A shown actor on a record that stores one is still covered: editing it is caught.
    lines = export.read_text(encoding="utf-8").splitlines()
    edited = [json.loads(text) for text in lines]
    target = next(line for line in edited if line["type"] == "SeatsIncreased")
    target["actor"] = "someone-else"
    export.write_text("".join(json.dumps(line) + "\n" for line in edited), encoding="utf-8")
    checked = subprocess.run([sys.executable, str(ROOT / "tools" / "verify_export.py"), str(export)],
                             capture_output=True, text=True)
    assert checked.returncode == 1 and "actor" in checked.stdout, checked.stdout


def test_new_events_are_stored_at_the_current_version(old_log):
    """What this version writes carries its class_version and its new facts in the stored record."""
    app, _ = old_log
    increased = next(e for e in app.events.get(INITECH) if isinstance(e, Subscription.SeatsIncreased))
    stored = app.mapper.to_stored_event(increased)
    state = json.loads(stored.state)
    assert state["class_version"] == 2 and state["currency"] == "USD" and state["actor"] == "alice"
