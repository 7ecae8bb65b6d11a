"""Stripe's webhooks: verified, recorded once, and their effects applied once in any order of delivery."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from commands.webhooks import InvalidPayload, InvalidSignature, ProcessorEvent, StripeWebhooks, WebhookOutcome
from finance.reconcile import reconcile
from ledger import events
from projections import billing_documents
from projections.billing_documents import queries
from projections.deployment import ReadSide
from tests.billing_support import (
    EVER,
    PRO_ORDER,
    WEBHOOK_SECRET,
    all_entries,
    billing_view,
    charge_object,
    documents_by_id,
    invoice_ids,
    issue_document,
    payment_intent_object,
    record_refund,
    refund_object,
    sign,
    stripe_event,
)
from tests.support import ADMIN, InMemoryLedger


@pytest.fixture
def view(world: InMemoryLedger, tmp_path: Path) -> Iterator[ReadSide]:
    read_side = billing_view(world, tmp_path)
    yield read_side
    read_side.close()


@pytest.fixture
def webhooks(world: InMemoryLedger, view: ReadSide) -> StripeWebhooks:
    def invoice_paid_by(payment_reference: str) -> UUID | None:
        view.catch_up()
        return queries.invoice_paid_by(view.db(billing_documents.NAME), payment_reference)

    return StripeWebhooks(world.app, WEBHOOK_SECRET, clock=world.clock, invoice_paid_by=invoice_paid_by,
                          settle_seconds=0)


@pytest.fixture
def paid(world: InMemoryLedger) -> tuple[UUID, str, int]:
    """A subscription's first invoice: its id, its PaymentIntent and its total."""
    sub_id = world.ledger.create_subscription("org_1", PRO_ORDER, actor=ADMIN).aggregate.id
    [invoice_id] = invoice_ids(world, sub_id)
    invoice = world.app.repository.get(invoice_id)
    return invoice_id, invoice.payment_reference, invoice.bill.total_cents


def deliver(webhooks: StripeWebhooks, payload: bytes) -> WebhookOutcome:
    return webhooks.receive(payload, sign(payload))


def log_position(world: InMemoryLedger) -> int:
    return world.app.recorder.max_notification_id() or 0


def refund_in_the_dashboard(world: InMemoryLedger, payment_reference: str, amount_cents: int) -> str:
    return world.gateway.refund(payment_reference=payment_reference, amount_cents=amount_cents,
                                idempotency_key=f"dashboard-{uuid4()}", metadata={})


def refunds_on(world: InMemoryLedger, invoice_id: UUID) -> list[tuple[str, int]]:
    return [(e.refund_reference, e.amount_cents) for e in world.ledger.history(invoice_id)
            if events.type_name(e) == "InvoiceRefunded"]


# --- signatures ------------------------------------------------------------------------------------------


def test_a_signed_event_is_recorded_once_with_its_facts(world: InMemoryLedger, webhooks: StripeWebhooks,
                                                         paid: tuple[UUID, str, int]) -> None:
    invoice_id, payment_intent, total = paid
    payload = stripe_event("payment_intent.succeeded",
                           payment_intent_object(payment_intent, total, {"invoice_id": str(invoice_id)}),
                           event_id="evt_paid_1")
    outcome = deliver(webhooks, payload)

    assert (outcome.event_id, outcome.event_type, outcome.duplicate, outcome.unmatched_payment) == (
        "evt_paid_1", "payment_intent.succeeded", False, False)
    record = world.app.repository.get(ProcessorEvent.id_for("stripe", "evt_paid_1"))
    [received] = list(world.ledger.history(record.id))
    assert events.type_name(received) == "ProcessorEventReceived"
    assert (received.event_id, received.object_id, received.payment_reference, received.amount_cents,
            received.currency, received.metadata) == (
        "evt_paid_1", payment_intent, payment_intent, total, "USD", {"invoice_id": str(invoice_id)})


def test_a_replayed_delivery_is_a_duplicate_and_changes_nothing(world: InMemoryLedger,
                                                                webhooks: StripeWebhooks) -> None:
    payload = stripe_event("customer.updated", {"id": "cus_1", "object": "customer", "metadata": {}})
    signature = sign(payload)
    assert not webhooks.receive(payload, signature).duplicate
    position = log_position(world)
    assert webhooks.receive(payload, signature).duplicate
    assert webhooks.receive(payload, sign(payload)).duplicate  # Stripe re-signs a redelivery
    assert log_position(world) == position


@pytest.mark.parametrize("signature_of", [
    lambda payload: None,
    lambda payload: "",
    lambda payload: "garbage",
    lambda payload: "t=notanumber,v1=abc",
    lambda payload: f"t={int(time.time())}",
    lambda payload: sign(payload + b" "),
    lambda payload: sign(payload, secret="whsec_someone_else"),
], ids=["missing", "empty", "garbage", "bad timestamp", "no v1", "another body", "another secret"])
def test_a_bad_or_missing_signature_is_refused_and_records_nothing(
        world: InMemoryLedger, webhooks: StripeWebhooks, signature_of: Callable[[bytes], str | None]) -> None:
    payload = stripe_event("customer.updated", {"id": "cus_1", "object": "customer"})
    position = log_position(world)
    with pytest.raises(InvalidSignature):
        webhooks.receive(payload, signature_of(payload))
    assert log_position(world) == position


def test_an_expired_signature_is_refused_and_a_recent_one_accepted(world: InMemoryLedger,
                                                                   webhooks: StripeWebhooks) -> None:
    payload = stripe_event("customer.updated", {"id": "cus_1", "object": "customer"})
    with pytest.raises(InvalidSignature, match="tolerance"):
        webhooks.receive(payload, sign(payload, at=int(time.time()) - 301))
    assert not webhooks.receive(payload, sign(payload, at=int(time.time()) - 240)).duplicate


def test_a_body_that_is_not_utf8_is_refused(webhooks: StripeWebhooks) -> None:
    with pytest.raises(InvalidSignature):
        webhooks.receive(b"\xff\xfe not text", "t=1,v1=abc")


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"id": "evt_1", "object": "event"}',
                                  b'{"id": "evt_1", "object": "event", "type": "x", "data": {"object": 3}}'])
def test_a_signed_body_that_is_no_stripe_event_is_an_invalid_payload(world: InMemoryLedger,
                                                                      webhooks: StripeWebhooks,
                                                                      body: bytes) -> None:
    position = log_position(world)
    with pytest.raises(InvalidPayload):
        webhooks.receive(body, sign(body))
    assert log_position(world) == position


# --- refunds made outside the ledger ---------------------------------------------------------------------


def test_a_dashboard_refund_is_recorded_once_on_its_invoice(world: InMemoryLedger, webhooks: StripeWebhooks,
                                                           view: ReadSide, paid: tuple[UUID, str, int]) -> None:
    invoice_id, payment_intent, total = paid
    refund_id = refund_in_the_dashboard(world, payment_intent, 1000)

    created = deliver(webhooks, stripe_event("refund.created", refund_object(refund_id, payment_intent, 1000)))
    deliver(webhooks, stripe_event("refund.updated", refund_object(refund_id, payment_intent, 1000)))
    deliver(webhooks, stripe_event("charge.refunded", charge_object(
        payment_intent, total, refunded_cents=1000, refunds=[refund_object(refund_id, payment_intent, 1000)],
        metadata={"invoice_id": str(invoice_id)})))

    assert created.refunds_recorded == (refund_id,)
    assert refunds_on(world, invoice_id) == [(refund_id, 1000)]
    [refunded] = [e for e in world.ledger.history(invoice_id) if events.type_name(e) == "InvoiceRefunded"]
    assert (refunded.reason, refunded.actor) == ("refunded_at_processor: requested_by_customer", "processor:stripe")
    document = documents_by_id(view)[str(invoice_id)]
    assert (document["state"], document["refunded_cents"]) == ("partially_refunded", 1000)
    assert reconcile(all_entries(view), world.gateway, *EVER).matches


def test_a_refund_is_recorded_by_whichever_of_its_events_arrives_first(world: InMemoryLedger,
                                                                       webhooks: StripeWebhooks,
                                                                       paid: tuple[UUID, str, int]) -> None:
    invoice_id, payment_intent, total = paid
    first = refund_in_the_dashboard(world, payment_intent, 700)
    second = refund_in_the_dashboard(world, payment_intent, 300)

    # The charge's event (naming both refunds) comes first; then the refunds' own, oldest last.
    charge = deliver(webhooks, stripe_event("charge.refunded", charge_object(
        payment_intent, total, refunded_cents=1000, metadata={"invoice_id": str(invoice_id)},
        refunds=[refund_object(second, payment_intent, 300), refund_object(first, payment_intent, 700)])))
    deliver(webhooks, stripe_event("refund.updated", refund_object(second, payment_intent, 300)))
    deliver(webhooks, stripe_event("refund.created", refund_object(first, payment_intent, 700, status="pending")))

    assert charge.refunds_recorded == (second, first)
    assert sorted(refunds_on(world, invoice_id)) == sorted([(first, 700), (second, 300)])


def test_a_pending_refund_waits_for_the_event_that_says_it_succeeded(world: InMemoryLedger,
                                                                     webhooks: StripeWebhooks,
                                                                     paid: tuple[UUID, str, int]) -> None:
    invoice_id, payment_intent, _ = paid
    refund_id = refund_in_the_dashboard(world, payment_intent, 500)
    pending = deliver(webhooks, stripe_event("refund.created", refund_object(refund_id, payment_intent, 500,
                                                                             status="pending")))
    assert pending.refunds_recorded == () and refunds_on(world, invoice_id) == []
    deliver(webhooks, stripe_event("refund.updated", refund_object(refund_id, payment_intent, 500)))
    deliver(webhooks, stripe_event("refund.updated", refund_object(refund_id, payment_intent, 500)))
    assert refunds_on(world, invoice_id) == [(refund_id, 500)]


def test_a_refund_the_ledger_made_itself_is_not_recorded_again(world: InMemoryLedger, webhooks: StripeWebhooks,
                                                               paid: tuple[UUID, str, int]) -> None:
    invoice_id, payment_intent, total = paid
    refund_id = world.gateway.refund(payment_reference=payment_intent, amount_cents=total,
                                     idempotency_key=f"ledger-undo-{invoice_id}",
                                     metadata={"invoice_id": str(invoice_id), "reason": "change_not_recorded"})
    record_refund(world, invoice_id, total, refund_id)
    outcome = deliver(webhooks, stripe_event("refund.created", refund_object(
        refund_id, payment_intent, total, metadata={"invoice_id": str(invoice_id)})))
    assert outcome.refunds_recorded == ()
    assert refunds_on(world, invoice_id) == [(refund_id, total)]


def test_a_refund_whose_payment_no_invoice_documents_is_only_recorded_as_received(
        world: InMemoryLedger, webhooks: StripeWebhooks, paid: tuple[UUID, str, int],
        caplog: pytest.LogCaptureFixture) -> None:
    invoice_id, payment_intent, _ = paid
    # Metadata naming an invoice is not enough: the refund's payment must be that invoice's.
    stray = stripe_event("refund.created", refund_object("re_stray", "pi_elsewhere", 100,
                                                         metadata={"invoice_id": str(invoice_id)}))
    with caplog.at_level(logging.WARNING, logger="ledger.webhooks"):
        outcome = deliver(webhooks, stray)
    assert outcome.refunds_recorded == () and not outcome.duplicate
    assert refunds_on(world, invoice_id) == []
    assert "re_stray" in caplog.text


def test_a_refund_larger_than_what_is_left_is_not_recorded(world: InMemoryLedger, webhooks: StripeWebhooks,
                                                           paid: tuple[UUID, str, int]) -> None:
    invoice_id, payment_intent, total = paid
    outcome = deliver(webhooks, stripe_event("refund.created", refund_object("re_too_much", payment_intent,
                                                                             total + 1)))
    assert outcome.refunds_recorded == () and refunds_on(world, invoice_id) == []


# --- payments the ledger gave up on ----------------------------------------------------------------------


def test_a_payment_no_invoice_documents_is_recorded_as_unmatched(world: InMemoryLedger, webhooks: StripeWebhooks,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    unknown = uuid4()
    payload = stripe_event("payment_intent.succeeded",
                           payment_intent_object("pi_late", 4200, {"invoice_id": str(unknown)}), event_id="evt_late")
    with caplog.at_level(logging.WARNING, logger="ledger.webhooks"):
        outcome = deliver(webhooks, payload)
    assert outcome.unmatched_payment
    history = list(world.ledger.history(ProcessorEvent.id_for("stripe", "evt_late")))
    assert [events.type_name(e) for e in history] == ["ProcessorEventReceived", "UnmatchedPaymentRecorded"]
    assert (history[1].payment_reference, history[1].invoice_id, history[1].amount_cents) == (
        "pi_late", str(unknown), 4200)
    assert "pi_late" in caplog.text
    again = deliver(webhooks, payload)
    assert again.duplicate and len(list(world.ledger.history(history[0].originator_id))) == 2


def test_a_payment_whose_invoice_is_recorded_moments_later_is_matched(world: InMemoryLedger) -> None:
    invoice_id = uuid4()
    webhooks = StripeWebhooks(world.app, WEBHOOK_SECRET, clock=world.clock, invoice_paid_by=lambda _: None,
                              settle_seconds=5)
    # The webhook can overtake the ledger, which records the invoice just after the charge succeeds.
    recorder = threading.Timer(0.3, lambda: issue_document(world, "pi_racing", 1000, invoice_id=invoice_id))
    recorder.start()
    outcome = deliver(webhooks, stripe_event("payment_intent.succeeded",
                                             payment_intent_object("pi_racing", 1000, {"invoice_id": str(invoice_id)})))
    recorder.join()
    assert not outcome.unmatched_payment


def test_a_payment_of_a_documented_invoice_changes_nothing_else(world: InMemoryLedger, webhooks: StripeWebhooks,
                                                                paid: tuple[UUID, str, int]) -> None:
    invoice_id, payment_intent, total = paid
    position = log_position(world)
    outcome = deliver(webhooks, stripe_event("payment_intent.succeeded", payment_intent_object(
        payment_intent, total, {"invoice_id": str(invoice_id)})))
    assert not outcome.unmatched_payment and outcome.refunds_recorded == ()
    assert log_position(world) == position + 1  # the ProcessorEventReceived alone
