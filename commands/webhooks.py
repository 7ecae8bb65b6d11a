"""Stripe's webhooks: every event verified, recorded once, and its effect on the ledger applied once,
whatever the order in which Stripe delivers (or redelivers) them.

Effects:
- a refund that succeeded at Stripe but that the ledger did not make (one made in Stripe's dashboard) is
  recorded on the invoice its payment belongs to, unless that refund reference is already recorded;
- a successful payment that no invoice documents (it succeeded after the ledger gave up on it, say after a
  timeout) is recorded as unmatched and logged, for finance to settle; reconciliation reports it too.
Every other event is only recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import stripe
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from commands.application import LedgerApplication
from commands.errors import ConcurrentChange
from commands.ports import Clock
from ledger.errors import DomainError
from ledger.invoice import Invoice
from ledger.periods import require_instant
from ledger.processor_events import ProcessorEvent, ReceivedFacts

log = logging.getLogger("ledger.webhooks")

STRIPE = "stripe"
ACTOR = "processor:stripe"
TOLERANCE_SECONDS = stripe.Webhook.DEFAULT_TOLERANCE
REFUND_EVENTS = frozenset({"charge.refunded", "refund.created", "refund.updated"})
PAYMENT_SUCCEEDED = "payment_intent.succeeded"
REFUNDED_AT_PROCESSOR = "refunded_at_processor"
ATTEMPTS = 3


class InvalidSignature(DomainError):
    """The body is not signed with the endpoint's secret, or was signed too long ago (a replay)."""

    code = "invalid_signature"


class InvalidPayload(DomainError):
    """A correctly signed body that is not a Stripe event this ledger can read."""

    code = "invalid_payload"


@dataclass(frozen=True)
class WebhookOutcome:
    event_id: str
    event_type: str
    duplicate: bool
    refunds_recorded: tuple[str, ...] = ()
    unmatched_payment: bool = False


@dataclass(frozen=True)
class _SucceededRefund:
    reference: str
    amount_cents: int
    payment_reference: str | None
    invoice_hint: str | None
    reason: str


@dataclass
class _Attempt:
    invoices: dict[UUID, Invoice] = field(default_factory=dict)
    recorded: list[str] = field(default_factory=list)


InvoiceFinder = Callable[[str], UUID | None]


class StripeWebhooks:
    """``invoice_paid_by`` finds the invoice of a PaymentIntent (the billing_documents view answers it);
    a refund event does not carry the PaymentIntent's metadata. ``settle_seconds``: how long a successful
    payment may wait for the ledger to record its invoice, which it does right after the charge."""

    def __init__(self, app: LedgerApplication, secret: str, *, clock: Clock, invoice_paid_by: InvoiceFinder,
                 tolerance_seconds: int = TOLERANCE_SECONDS, settle_seconds: float = 5.0) -> None:
        self._app = app
        self._secret = secret
        self._clock = clock
        self._invoice_paid_by = invoice_paid_by
        self._tolerance = tolerance_seconds
        self._settle_seconds = settle_seconds

    def receive(self, payload: bytes, signature: str | None) -> WebhookOutcome:
        stripe_event = self._verified(payload, signature)
        facts = _facts(stripe_event)
        record_id = ProcessorEvent.id_for(STRIPE, facts.event_id)
        if record_id in self._app.repository:
            return WebhookOutcome(facts.event_id, facts.event_type, duplicate=True)
        unmatched = self._unmatched_payment(facts)
        named_invoice = facts.metadata.get("invoice_id")
        refunds = _succeeded_refunds(stripe_event)
        for _ in range(ATTEMPTS):
            at = require_instant(self._clock.now())
            record = ProcessorEvent.receive(STRIPE, facts, at=at, actor=ACTOR)
            if unmatched:
                record.record_unmatched_payment(invoice_id=named_invoice, at=at, actor=ACTOR)
            attempt = _Attempt()
            for refund in refunds:
                self._record_refund(refund, attempt, at)
            try:
                self._app.save(record, *attempt.invoices.values())
            except IntegrityError:
                if record_id in self._app.repository:
                    return WebhookOutcome(facts.event_id, facts.event_type, duplicate=True)
                continue  # an invoice changed meanwhile: look again
            if unmatched:
                log.warning("payment %s (%s %s) succeeded at Stripe but no invoice documents it (invoice_id %s); "
                            "finance must settle it", facts.payment_reference, facts.amount_cents, facts.currency,
                            named_invoice or "missing")
            for reference in attempt.recorded:
                log.info("refund %s made at Stripe is recorded on its invoice", reference)
            return WebhookOutcome(facts.event_id, facts.event_type, duplicate=False,
                                  refunds_recorded=tuple(attempt.recorded),
                                  unmatched_payment=unmatched)
        raise ConcurrentChange("the invoice of this event kept changing; Stripe will deliver it again")

    # --- verification -------------------------------------------------------------------------------

    def _verified(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        # Stripe's library refuses only a timestamp too old; one in the future is checked here, and both
        # against the host's clock, as Stripe signs with real time (the sandbox clock is not Stripe's).
        try:
            verified = stripe.Webhook.construct_event(payload, signature, self._secret, tolerance=None)
        except (stripe.SignatureVerificationError, UnicodeDecodeError) as error:
            raise InvalidSignature(f"the Stripe-Signature does not verify: {_first_line(error)}") from None
        except (ValueError, TypeError, AttributeError, KeyError):
            raise InvalidPayload("the body is not a Stripe event") from None
        skew = _signed_at(signature or "") - time.time()
        if abs(skew) > self._tolerance:
            raise InvalidSignature(f"the Stripe-Signature was made {abs(skew):.0f} s "
                                   f"{'in the future' if skew > 0 else 'ago'}, outside the tolerance of "
                                   f"{self._tolerance} s")
        body = verified.to_dict()
        data = body.get("data")
        if not (isinstance(body.get("id"), str) and isinstance(body.get("type"), str) and isinstance(data, dict)
                and isinstance(data.get("object"), dict)):
            raise InvalidPayload("a Stripe event has an id, a type and a data object")
        return body

    # --- effects ------------------------------------------------------------------------------------

    def _unmatched_payment(self, facts: ReceivedFacts) -> bool:
        """Whether this is a successful payment that no invoice of the ledger documents."""
        if facts.event_type != PAYMENT_SUCCEEDED:
            return False
        invoice_id = _uuid(facts.metadata.get("invoice_id", ""))
        if invoice_id is None:
            return True
        deadline = time.monotonic() + self._settle_seconds
        while self._find_invoice(invoice_id) is None:
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.1)
        return False

    def _record_refund(self, refund: _SucceededRefund, attempt: _Attempt, at: datetime) -> None:
        invoice = self._invoice_refunded_by(refund, attempt)
        if invoice is None:
            log.warning("refund %s of payment %s matches no invoice; reconciliation will report it",
                        refund.reference, refund.payment_reference)
            return
        if refund.reference in invoice.refund_references:  # the ledger's own refund, or one seen before
            return
        try:
            invoice.record_refund(amount_cents=refund.amount_cents, refund_reference=refund.reference,
                                  reason=refund.reason, at=at, actor=ACTOR)
        except DomainError as refused:
            log.error("refund %s of invoice %s cannot be recorded: %s; reconciliation will report it",
                      refund.reference, invoice.id, refused.detail)
            return
        attempt.invoices[invoice.id] = invoice
        attempt.recorded.append(refund.reference)

    def _invoice_refunded_by(self, refund: _SucceededRefund, attempt: _Attempt) -> Invoice | None:
        candidates = [_uuid(refund.invoice_hint or "")]
        if refund.payment_reference:
            candidates.append(self._invoice_paid_by(refund.payment_reference))
        for invoice_id in candidates:
            if invoice_id is None:
                continue
            invoice = attempt.invoices.get(invoice_id) or self._find_invoice(invoice_id)
            # The payment must be the invoice's own: metadata alone could name any invoice.
            if invoice is not None and invoice.payment_reference == refund.payment_reference:
                return invoice
        return None

    def _find_invoice(self, invoice_id: UUID) -> Invoice | None:
        try:
            found: object = self._app.repository.get(invoice_id)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, Invoice) else None


def _facts(body: dict[str, Any]) -> ReceivedFacts:
    obj: dict[str, Any] = body["data"]["object"]
    kind = obj.get("object")
    if kind == "payment_intent":
        payment_reference, amount = _text(obj, "id"), _cents(obj, "amount_received") or _cents(obj, "amount")
    elif kind == "charge":
        payment_reference, amount = _text(obj, "payment_intent") or _text(obj, "id"), _cents(obj, "amount")
    elif kind == "refund":
        payment_reference, amount = _text(obj, "payment_intent") or _text(obj, "charge"), _cents(obj, "amount")
    else:
        payment_reference, amount = None, _cents(obj, "amount")
    currency = _text(obj, "currency")
    created = _cents(body, "created")
    return ReceivedFacts(
        event_id=body["id"], event_type=body["type"], object_id=_text(obj, "id"), payment_reference=payment_reference,
        status=_text(obj, "status"), amount_cents=amount, currency=currency.upper() if currency else None,
        metadata=_metadata(obj),
        processor_created_at=datetime.fromtimestamp(created, UTC) if created is not None else None,
    )


def _succeeded_refunds(body: dict[str, Any]) -> list[_SucceededRefund]:
    event_type, obj = body["type"], body["data"]["object"]
    if event_type not in REFUND_EVENTS:
        return []
    if event_type == "charge.refunded":
        # The charge lists its refunds on API versions before 2022-11-15; on later ones the refund.*
        # events carry them.
        listed = obj.get("refunds")
        refunds = listed.get("data") if isinstance(listed, dict) else None
        candidates = [r for r in refunds if isinstance(r, dict)] if isinstance(refunds, list) else []
        payment_reference = _text(obj, "payment_intent")
        invoice_hint = _metadata(obj).get("invoice_id")
    else:
        candidates, payment_reference, invoice_hint = [obj], None, None
    found: list[_SucceededRefund] = []
    for refund in candidates:
        reference, amount = _text(refund, "id"), _cents(refund, "amount")
        if refund.get("status") != "succeeded" or reference is None or amount is None:
            continue
        stripe_reason = _text(refund, "reason")
        found.append(_SucceededRefund(
            reference=reference, amount_cents=amount,
            payment_reference=_text(refund, "payment_intent") or payment_reference,
            invoice_hint=_metadata(refund).get("invoice_id") or invoice_hint,
            reason=f"{REFUNDED_AT_PROCESSOR}: {stripe_reason}" if stripe_reason else REFUNDED_AT_PROCESSOR,
        ))
    return found


def _text(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _cents(obj: Mapping[str, Any], key: str) -> int | None:
    """An integer field (Stripe's amounts are cents, its times Unix seconds)."""
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _metadata(obj: Mapping[str, Any]) -> dict[str, str]:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return {}
    return {str(key): str(value) for key, value in metadata.items()}


def _uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


def _signed_at(signature: str) -> int:
    """The ``t=`` of a Stripe-Signature that has verified, read as Stripe's library reads it."""
    pairs = [item.split("=", 2) for item in signature.split(",")]
    return int(next(pair[1] for pair in pairs if pair[0] == "t"))


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
