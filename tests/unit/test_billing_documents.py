"""The billing_documents projection and its queries, over the events an in-memory ledger records."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate

from ledger.errors import ValidationFailed
from ledger.subscription import Order
from projections import billing_documents
from projections.billing_documents import BillingDocuments, queries
from projections.cursors import CursorSigner
from projections.deployment import ReadSide, ViewLocation
from projections.log import Recorded
from projections.replay import replay
from projections.runner import UnhandledEvent
from tests.billing_support import EVER, PRO_ORDER, all_entries, invoice_ids, issue_document, record_refund
from tests.support import ADMIN, T0, InMemoryLedger, in_memory_ledger, reseller_with_card

SIGNER = CursorSigner(b"test cursors")


class InvoiceVoided(Aggregate.Event):
    """An Invoice event type the projection has never heard of."""

    TOPIC = "ledger:Invoice.InvoiceVoided"


@pytest.fixture
def world() -> InMemoryLedger:
    world = in_memory_ledger()
    reseller_with_card(world, "org_1", country="DE")
    reseller_with_card(world, "org_2", country="US")
    return world


@pytest.fixture
def view(world: InMemoryLedger, tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Iterator[ReadSide]:
    """The billing documents in SQLite, and in PostgreSQL when a server answers."""
    location = (ViewLocation(conninfo=request.getfixturevalue("postgres_url"),
                             schema=request.getfixturevalue("postgres_schema"))
                if backend == "postgres" else ViewLocation(folder=tmp_path))
    read_side = ReadSide(world.app, location, [BillingDocuments()])
    yield read_side
    read_side.close()


def rows(read_side: ReadSide) -> list[tuple[object, ...]]:
    read_side.catch_up()
    follower = read_side.followers[billing_documents.NAME]
    with follower.db.snapshot() as cursor:
        return list(follower.projection.rows(cursor))


def create(world: InMemoryLedger, org_id: str = "org_1", order: Order = PRO_ORDER) -> UUID:
    return world.ledger.create_subscription(org_id, order, actor=ADMIN).aggregate.id


def later(world: InMemoryLedger, minutes: int = 1) -> None:
    world.clock.set(world.clock.now() + timedelta(minutes=minutes))


def page(read_side: ReadSide, **kwargs: object) -> queries.Page:
    read_side.catch_up()
    return queries.page(read_side.db(billing_documents.NAME), SIGNER, **{"reseller_org_id": "org_1", **kwargs})


# --- given events, the rows --------------------------------------------------------------------------------


def test_an_issued_invoice_is_a_document_with_its_lines_tax_and_payment(world: InMemoryLedger,
                                                                          view: ReadSide) -> None:
    sub_id = create(world)
    world.clock.set(T0 + timedelta(days=3))
    world.ledger.change_seats("org_1", sub_id, 5, actor=ADMIN)
    created_id, increased_id = invoice_ids(world, sub_id)

    [document_row, increase_row] = sorted(rows(view), key=lambda row: row[5])  # by issued_at
    charges = world.gateway.list_charges(created_from=EVER[0], created_to=EVER[1])
    assert document_row == (
        "document", str(created_id), "org_1", str(sub_id), "subscription_created", "2026-01-31T10:00:00Z",
        "2026-01-31T10:00:00Z", "2026-02-28T10:00:00Z",
        '[{"description":"Lens Pro, monthly, 3 seats","quantity":3,"unit_amount_cents":3000,"amount_cents":9000,'
        '"period_start":"2026-01-31T10:00:00Z","period_end":"2026-02-28T10:00:00Z","proration":false}]',
        9000, 1900, 1710, 10710, "USD", charges[0].reference, "paid", 0)
    document = queries.one(view.db(billing_documents.NAME), "org_1", increased_id)
    assert document is not None
    assert [line["description"] for line in document["lines"]] == ["Unused time on 3 seats",
                                                                  "Remaining time on 5 seats"]
    assert sum(line["amount_cents"] for line in document["lines"]) == document["subtotal_cents"]
    assert document["total_cents"] == document["subtotal_cents"] + document["tax_cents"] == charges[1].amount_cents
    assert (document["purpose"], document["period_start"], document["period_end"]) == (
        "seats_increased", "2026-02-03T10:00:00Z", "2026-02-28T10:00:00Z")


def test_refunds_are_rows_of_their_own_and_move_the_documents_state(world: InMemoryLedger, view: ReadSide) -> None:
    [invoice_id] = invoice_ids(world, create(world))
    later(world)
    record_refund(world, invoice_id, 710, "re_first", reason="goodwill")
    [document] = [row for row in rows(view) if row[0] == "document"]
    assert (document[-2], document[-1]) == ("partially_refunded", 710)
    later(world)
    record_refund(world, invoice_id, 10000, "re_rest")

    refunds = [row for row in rows(view) if row[0] == "refund"]
    assert refunds == [("refund", "re_first", str(invoice_id), 710, "goodwill", "2026-01-31T10:01:00Z"),
                       ("refund", "re_rest", str(invoice_id), 10000, "change_not_recorded", "2026-01-31T10:02:00Z")]
    document = queries.one(view.db(billing_documents.NAME), "org_1", invoice_id)
    assert document is not None
    assert (document["state"], document["refunded_cents"]) == ("refunded", 10710)
    assert [r["refund_reference"] for r in document["refunds"]] == ["re_first", "re_rest"]


def test_an_invoice_issued_and_refunded_in_one_save_is_projected_in_one_batch(world: InMemoryLedger,
                                                                              view: ReadSide) -> None:
    invoice = issue_document(world, "pi_undone", 5000, invoice_id=uuid4())
    invoice.record_refund(amount_cents=5000, refund_reference="re_undo", reason="change_not_recorded",
                          at=world.clock.now(), actor="test")
    world.app.save(invoice)
    projected = rows(view)
    assert [row[0] for row in projected] == ["document", "refund"]
    assert projected[0][-2:] == ("refunded", 5000)


def test_events_of_other_aggregates_change_nothing(world: InMemoryLedger, view: ReadSide) -> None:
    sub_id = create(world, order=Order("plus", "annual", end_user_email="ada@customer.example"))
    before = rows(view)
    world.ledger.cancel("org_1", sub_id, actor=ADMIN)
    world.ledger.resume("org_1", sub_id, actor=ADMIN)
    world.ledger.disable_reseller("org_2", actor="support")
    assert rows(view) == before and len(before) == 1


def test_a_replay_in_big_batches_equals_the_view_followed_event_by_event(world: InMemoryLedger,
                                                                        tmp_path: Path) -> None:
    sub_id = create(world)
    later(world)
    world.ledger.change_seats("org_1", sub_id, 8, actor=ADMIN)
    [first, _] = invoice_ids(world, sub_id)
    later(world)
    record_refund(world, first, 1234, "re_partial")
    create(world, "org_2")
    live = ReadSide(world.app, ViewLocation(folder=tmp_path / "live"), [BillingDocuments()], batch_size=1)
    live.catch_up()
    fresh = ViewLocation(folder=tmp_path / "fresh")
    try:
        [verdict] = replay(live, fresh)
    finally:
        fresh.close()
        live.close()
    assert verdict.equal and verdict.live_rows == 4


def test_an_unknown_invoice_event_stops_the_projection() -> None:
    unknown = InvoiceVoided(originator_id=uuid4(), originator_version=2,
                            timestamp=datetime(2026, 1, 1, tzinfo=UTC))
    cursor = sqlite3.connect(":memory:").cursor()
    projection = BillingDocuments()
    projection.create_tables(cursor)
    with pytest.raises(UnhandledEvent, match="InvoiceVoided"):
        projection.apply(cursor, [Recorded(7, unknown)])


def test_a_refund_of_a_document_never_seen_stops_the_projection(world: InMemoryLedger) -> None:
    invoice = issue_document(world, "pi_x", 1000)
    record_refund(world, invoice.id, 100, "re_x")
    [_, refunded] = list(world.ledger.history(invoice.id))
    cursor = sqlite3.connect(":memory:").cursor()
    projection = BillingDocuments()
    projection.create_tables(cursor)
    with pytest.raises(UnhandledEvent, match="never seen"):
        projection.apply(cursor, [Recorded(9, refunded)])


# --- the reseller's pages ----------------------------------------------------------------------------------


@pytest.fixture
def many(world: InMemoryLedger) -> dict[str, list[UUID]]:
    """Seven documents of org_1 a minute apart (three of one subscription), and one of org_2: the
    invoice ids of the first two subscriptions, and the first's id."""
    first = create(world)
    later(world)
    second = create(world)
    for seats in (4, 5):
        later(world)
        world.ledger.change_seats("org_1", first, seats, actor=ADMIN)
    for _ in range(3):
        later(world)
        create(world)
    later(world)
    create(world, "org_2")
    return {"first": invoice_ids(world, first), "second": invoice_ids(world, second), "first_sub": [first]}


def test_a_page_is_newest_first_and_the_cursor_walks_every_document_once(
        world: InMemoryLedger, view: ReadSide, many: dict[str, list[UUID]]) -> None:
    seen: list[dict[str, object]] = []
    cursor = None
    while True:
        found = page(view, limit=3, cursor=cursor)
        assert found.total == 7
        seen += found.items
        cursor = found.next_cursor
        if cursor is None:
            break
    issued = [item["issued_at"] for item in seen]
    assert len(seen) == 7 and len({item["invoice_id"] for item in seen}) == 7
    assert issued == sorted(issued, reverse=True)
    assert {item["reseller_org_id"] for item in seen} == {"org_1"}


def test_a_page_filters_by_subscription_and_period(world: InMemoryLedger, view: ReadSide,
                                                    many: dict[str, list[UUID]]) -> None:
    first_sub = page(view, subscription_id=str(many["first_sub"][0]))
    assert [item["invoice_id"] for item in first_sub.items] == [str(i) for i in reversed(many["first"])]
    assert first_sub.total == 3

    start = T0 + timedelta(minutes=1)
    window = page(view, issued_from=start, issued_to=start + timedelta(minutes=2))
    assert [item["issued_at"] for item in window.items] == ["2026-01-31T10:02:00Z", "2026-01-31T10:01:00Z"]
    fractional = page(view, issued_from=start - timedelta(microseconds=1), issued_to=start + timedelta(microseconds=1))
    assert [item["issued_at"] for item in fractional.items] == ["2026-01-31T10:01:00Z"]
    in_berlin = page(view, issued_from=start.astimezone(timezone(timedelta(hours=1))), limit=200)
    assert in_berlin.total == 6
    assert page(view, subscription_id=uuid4()).items == []


def test_a_cursor_belongs_to_its_query(view: ReadSide, many: dict[str, list[UUID]]) -> None:
    cursor = page(view, limit=2).next_cursor
    assert cursor is not None
    for other in ({"limit": 2, "issued_from": T0}, {"limit": 2, "reseller_org_id": "org_2"}):
        with pytest.raises(ValidationFailed) as refused:
            page(view, cursor=cursor, **other)
        assert refused.value.field == "cursor"
    for forged in (cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB"), "nonsense", "é.é"):
        with pytest.raises(ValidationFailed) as refused:
            page(view, cursor=forged)
        assert refused.value.field == "cursor"


@pytest.mark.parametrize(("arguments", "field"), [
    ({"limit": 0}, "limit"),
    ({"limit": 201}, "limit"),
    ({"subscription_id": "not-a-uuid"}, "subscription_id"),
    ({"issued_from": datetime(2026, 1, 1)}, "from"),
    ({"issued_to": datetime(2026, 1, 1)}, "to"),
    ({"issued_from": T0, "issued_to": T0}, "to"),
])
def test_bad_arguments_are_validation_errors(view: ReadSide, arguments: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        page(view, **arguments)
    assert refused.value.field == field


def test_one_hides_other_resellers_documents_and_reads_malformed_ids_as_unknown(
        view: ReadSide, many: dict[str, list[UUID]]) -> None:
    view.catch_up()
    db = view.db(billing_documents.NAME)
    invoice_id = many["first"][0]
    assert queries.one(db, "org_1", invoice_id) is not None
    assert queries.one(db, "org_1", str(invoice_id)) is not None
    assert queries.one(db, "org_2", invoice_id) is None
    assert queries.one(db, "org_1", "not-a-uuid") is None
    assert queries.one(db, "org_1", uuid4()) is None


# --- finance's period ------------------------------------------------------------------------------------


def test_between_gives_the_periods_documents_and_its_refunds_of_earlier_documents(world: InMemoryLedger,
                                                                                   view: ReadSide) -> None:
    [january] = invoice_ids(world, create(world))
    world.clock.set(T0 + timedelta(days=5))
    record_refund(world, january, 1000, "re_in_february")
    world.clock.set(T0 + timedelta(days=6))
    [february] = invoice_ids(world, create(world, "org_2"))

    entries = queries.between(_caught_up(view), T0 + timedelta(days=1), T0 + timedelta(days=30))
    assert [(e["record"], e.get("refund_reference"), e["invoice_id"]) for e in entries] == [
        ("refund", "re_in_february", str(january)), ("document", None, str(february))]
    assert entries[0]["document"]["invoice_id"] == str(january)
    assert entries[0]["document"]["refunded_cents"] == 1000
    assert [e["record"] for e in all_entries(view)] == ["document", "refund", "document"]
    assert queries.invoice_paid_by(_caught_up(view), entries[1]["payment_reference"]) == february
    assert queries.invoice_paid_by(_caught_up(view), "pi_unknown") is None


def _caught_up(view: ReadSide) -> object:
    view.catch_up()
    return view.db(billing_documents.NAME)
