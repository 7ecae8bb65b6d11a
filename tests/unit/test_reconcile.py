"""Reconciliation against the simulated processor: each kind of mismatch, planted, is found; a clean
period matches."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from commands.application import LedgerApplication
from commands.clocks import SandboxClock, SystemClock
from commands.gateways.simulated import SimulatedGateway
from commands.handlers import Ledger
from commands.locks import ThreadLocks
from commands.quotes import QuoteSigner
from finance.clocks import DRIFT, SAME_CLOCK, ClockMap, SandboxReadings, sandbox_clock_map
from finance.reconcile import CSV_COLUMNS, MARGIN, Report, ledger_window, reconcile, write_csv
from ledger.errors import PaymentDeclined
from projections import billing_documents
from projections.billing_documents import queries
from projections.deployment import ReadSide
from tests.billing_support import (
    EVER,
    PRO_ORDER,
    billing_view,
    charge_outside_the_ledger,
    invoice_ids,
    issue_document,
    record_refund,
)
from tests.support import ADMIN, CATALOG, T0, InMemoryLedger, reseller_with_card

PERIOD = (T0 - timedelta(days=1), T0 + timedelta(days=60))


@pytest.fixture
def view(world: InMemoryLedger, tmp_path: Path) -> Iterator[ReadSide]:
    read_side = billing_view(world, tmp_path)
    yield read_side
    read_side.close()


def reconciled(world: InMemoryLedger, view: ReadSide, start: datetime = PERIOD[0],
               end: datetime = PERIOD[1]) -> Report:
    view.catch_up()
    entries = queries.between(view.db(billing_documents.NAME), start - MARGIN, end + MARGIN)
    return reconcile(entries, world.gateway, start, end)


def first_invoice(world: InMemoryLedger) -> tuple[UUID, str, int]:
    sub_id = world.ledger.create_subscription("org_1", PRO_ORDER, actor=ADMIN).aggregate.id
    [invoice_id] = invoice_ids(world, sub_id)
    invoice = world.app.repository.get(invoice_id)
    return invoice_id, invoice.payment_reference, invoice.bill.total_cents


def test_a_clean_period_matches(world: InMemoryLedger, view: ReadSide) -> None:
    invoice_id, payment, total = first_invoice(world)
    sub_id = world.app.repository.get(invoice_id).subscription_id
    world.clock.set(T0 + timedelta(days=2))
    world.ledger.change_seats("org_1", sub_id, 6, actor=ADMIN)
    world.clock.set(T0 + timedelta(days=3))
    refund = world.gateway.refund(payment_reference=payment, amount_cents=total, idempotency_key="undo",
                                  metadata={})
    record_refund(world, invoice_id, total, refund)
    world.clock.set(T0 + timedelta(days=29))
    world.ledger.run_due(sub_id)

    report = reconciled(world, view)
    assert report.matches and report.mismatches == ()
    assert (report.documents, report.charges, report.ledger_refunds, report.processor_refunds) == (3, 3, 1, 1)


def plant_charge_without_document(world: InMemoryLedger) -> None:
    charge_outside_the_ledger(world, 4200)


def plant_document_without_charge(world: InMemoryLedger) -> None:
    issue_document(world, "pi_sim_never_charged", 4200)


def plant_amount_mismatch(world: InMemoryLedger) -> None:
    issue_document(world, charge_outside_the_ledger(world, 4200), 4100)


def plant_currency_mismatch(world: InMemoryLedger) -> None:
    issue_document(world, charge_outside_the_ledger(world, 4200, currency="EUR"), 4200, currency="USD")


def plant_refund_not_recorded(world: InMemoryLedger) -> None:
    _, payment, _ = first_invoice(world)
    world.gateway.refund(payment_reference=payment, amount_cents=500, idempotency_key="dashboard", metadata={})


def plant_refund_without_processor_refund(world: InMemoryLedger) -> None:
    invoice_id, _, _ = first_invoice(world)
    record_refund(world, invoice_id, 500, "re_sim_never_made")


def plant_refunded_amount_mismatch(world: InMemoryLedger) -> None:
    invoice_id, payment, _ = first_invoice(world)
    refund = world.gateway.refund(payment_reference=payment, amount_cents=500, idempotency_key="r", metadata={})
    record_refund(world, invoice_id, 400, refund)


# A refund missing on one side also leaves the charge's refunded total different on the two sides.
@pytest.mark.parametrize(("plant", "kinds"), [
    (plant_charge_without_document, ["charge_without_document"]),
    (plant_document_without_charge, ["document_without_charge"]),
    (plant_amount_mismatch, ["amount_mismatch"]),
    (plant_currency_mismatch, ["currency_mismatch"]),
    (plant_refund_not_recorded, ["refund_not_recorded", "refunded_amount_mismatch"]),
    (plant_refund_without_processor_refund, ["refund_without_processor_refund", "refunded_amount_mismatch"]),
    (plant_refunded_amount_mismatch, ["refunded_amount_mismatch", "refunded_amount_mismatch"]),
])
def test_each_kind_of_mismatch_is_found(world: InMemoryLedger, view: ReadSide,
                                        plant: Callable[[InMemoryLedger], None], kinds: list[str]) -> None:
    first_invoice(world)  # a document that matches, beside the planted fault
    plant(world)
    report = reconciled(world, view)
    assert not report.matches
    assert sorted(m.kind for m in report.mismatches) == sorted(kinds)


def test_a_mismatch_names_both_sides(world: InMemoryLedger, view: ReadSide) -> None:
    payment = charge_outside_the_ledger(world, 4200)
    invoice = issue_document(world, payment, 4100)
    [mismatch] = reconciled(world, view).mismatches
    assert (mismatch.kind, mismatch.invoice_id, mismatch.payment_reference, mismatch.ledger_cents,
            mismatch.processor_cents, mismatch.ledger_currency, mismatch.processor_currency, mismatch.at) == (
        "amount_mismatch", str(invoice.id), payment, 4100, 4200, "USD", "USD", "2026-01-31T10:00:00Z")


def test_only_the_periods_own_items_are_reported(world: InMemoryLedger, view: ReadSide) -> None:
    first_invoice(world)
    world.clock.set(T0 + timedelta(days=90))
    plant_charge_without_document(world)
    assert reconciled(world, view).matches
    later = reconciled(world, view, T0 + timedelta(days=89), T0 + timedelta(days=91))
    assert [m.kind for m in later.mismatches] == ["charge_without_document"]


def test_a_document_dated_across_the_boundary_from_its_charge_still_matches(world: InMemoryLedger,
                                                                             view: ReadSide) -> None:
    boundary = T0 + timedelta(seconds=1)
    payment = charge_outside_the_ledger(world, 4200)  # charged at T0
    issue_document(world, payment, 4200, at=T0 + timedelta(seconds=2))  # documented a moment later
    assert reconciled(world, view, T0 - timedelta(days=1), boundary).matches
    assert reconciled(world, view, boundary, boundary + timedelta(days=1)).matches


def test_a_declined_card_leaves_nothing_to_reconcile(world: InMemoryLedger, view: ReadSide) -> None:
    world.ledger.set_billing_info("org_1", payment_method="pm_card_chargeCustomerFail",
                                  billing_email="b@r.example", country="DE", actor=ADMIN)
    with pytest.raises(PaymentDeclined):
        world.ledger.create_subscription("org_1", PRO_ORDER, actor=ADMIN)
    report = reconciled(world, view, *EVER)
    assert report.matches and report.documents == report.charges == 0


def test_the_csv_lists_every_mismatch_in_cents(world: InMemoryLedger, view: ReadSide) -> None:
    plant_amount_mismatch(world)
    plant_document_without_charge(world)
    out = io.StringIO()
    write_csv(reconciled(world, view), out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert sorted(row[0] for row in rows[1:]) == ["amount_mismatch", "document_without_charge"]
    by_kind = {row[0]: dict(zip(CSV_COLUMNS, row)) for row in rows[1:]}
    assert (by_kind["amount_mismatch"]["ledger_cents"], by_kind["amount_mismatch"]["processor_cents"]) == (
        "4100", "4200")
    assert by_kind["document_without_charge"]["processor_cents"] == ""


# --- the sandbox clock against the processor's ------------------------------------------------------------


def test_sandbox_readings_map_the_processors_instants_onto_the_sandbox_clock() -> None:
    started, moved, read = (datetime(2026, 12, 1, 9, tzinfo=UTC), datetime(2026, 12, 1, 10, tzinfo=UTC),
                            datetime(2026, 12, 1, 11, tzinfo=UTC))
    first, second = datetime(2026, 12, 1, 9, tzinfo=UTC), datetime(2027, 3, 1, tzinfo=UTC)
    clocks = SandboxReadings(((started, first), (moved, second)), read_at=read)

    assert clocks.ledger_time(started - timedelta(days=1)) == started - timedelta(days=1)  # the system's before
    assert clocks.ledger_time(started + timedelta(minutes=59)) == first  # it stands still between moves
    assert clocks.ledger_time(moved) == second
    assert clocks.ahead_by == second - read
    # What the processor made while the sandbox read a period of the ledger, give or take DRIFT:
    assert clocks.processor_window(first, second) == (started - DRIFT, moved + DRIFT)
    assert clocks.processor_window(first + timedelta(days=1), second + timedelta(days=1)) == (
        moved - DRIFT, read + DRIFT)  # the sandbox has not reached the period's end yet
    assert clocks.ledger_window(moved, read) == (first, second)  # DRIFT reaches back before the move


def test_the_sandbox_clocks_readings_are_its_recorded_moves_at_the_real_instants_they_were_made() -> None:
    app = LedgerApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    sandbox = SandboxClock(app, lambda: T0)
    assert sandbox_clock_map(app) is SAME_CLOCK  # never started: nothing to map

    before = datetime.now(UTC)
    sandbox.now()
    sandbox.set(T0 + timedelta(days=30), actor="test")
    after = datetime.now(UTC)

    clocks = sandbox_clock_map(app)
    assert isinstance(clocks, SandboxReadings)
    assert [reading for _, reading in clocks.readings] == [T0, T0 + timedelta(days=30)]
    assert all(before <= real <= after for real, _ in clocks.readings)


def test_with_the_sandbox_clock_pairs_are_made_by_id_and_placed_by_what_the_sandbox_read(tmp_path: Path) -> None:
    # The sandbox starts at T0, months before today; the processor dates by real time, as Stripe does.
    app = LedgerApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    sandbox = SandboxClock(app, lambda: T0)
    processor = SimulatedGateway(":memory:", SystemClock())
    ledger = Ledger(app, catalog=CATALOG, clock=sandbox, gateway=processor, locks=ThreadLocks(),
                    quotes=QuoteSigner(b"test quotes"))
    world = InMemoryLedger(ledger, sandbox, processor)  # type: ignore[arg-type]
    reseller_with_card(world, country="DE")
    sub_id = ledger.create_subscription("org_1", PRO_ORDER, actor=ADMIN).aggregate.id  # dated T0, charged today
    renewal = datetime(2026, 2, 28, 10, tzinfo=UTC)
    sandbox.set(renewal, actor="test")
    ledger.run_due(sub_id)  # dated at the renewal, charged today
    charge_outside_the_ledger(world, 4200)  # today, while the sandbox reads the renewal's instant
    view = billing_view(world, tmp_path)
    view.catch_up()
    clocks = sandbox_clock_map(app)

    def reconciled(start: datetime, clocks: ClockMap) -> Report:
        end = start + timedelta(days=2)
        entries = queries.between(view.db(billing_documents.NAME), *ledger_window(start, end, clocks))
        return reconcile(entries, processor, start, end, clocks)

    creation_days, renewal_days = T0 - timedelta(days=1), renewal - timedelta(days=1)
    try:
        created = reconciled(creation_days, clocks)
        assert created.matches and (created.documents, created.charges) == (1, 1)
        renewed = reconciled(renewal_days, clocks)
        assert [m.kind for m in renewed.mismatches] == ["charge_without_document"]
        assert (renewed.documents, renewed.charges) == (1, 2)
        # By the processor's dates, neither period would find its charges.
        assert [m.kind for m in reconciled(creation_days, SAME_CLOCK).mismatches] == ["document_without_charge"]
        assert [m.kind for m in reconciled(renewal_days, SAME_CLOCK).mismatches] == ["document_without_charge"]
    finally:
        view.close()
