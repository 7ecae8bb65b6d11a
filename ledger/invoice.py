"""The Invoice aggregate: a billing document for one money movement and what later undid it."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.errors import InvalidState, ValidationFailed
from ledger.payments import Payment
from ledger.periods import require_instant
from ledger.pricing import Bill

SUBSCRIPTION_CREATED, SEATS_INCREASED, RENEWAL = "subscription_created", "seats_increased", "renewal"
PAID, PARTIALLY_REFUNDED, REFUNDED = "paid", "partially_refunded", "refunded"


class Invoice(Aggregate):
    TOPIC = "ledger:Invoice"

    class Created(Aggregate.Created):
        """InvoiceIssued: its topic names the type; the library calls a creation event class Created."""

        TOPIC = "ledger:Invoice.InvoiceIssued"
        reseller_org_id: str
        subscription_id: UUID
        purpose: str
        bill: Bill
        payment_reference: str
        actor: str

    class InvoiceRefunded(Aggregate.Event):
        TOPIC = "ledger:Invoice.InvoiceRefunded"
        amount_cents: int
        refund_reference: str
        reason: str
        actor: str

    @classmethod
    def issue_paid(cls, payment: Payment, *, reseller_org_id: str, subscription_id: UUID, purpose: str,
                   bill: Bill, at: datetime, actor: str) -> Invoice:
        return cls._create(cls.Created, id=payment.invoice_id, timestamp=require_instant(at),
                           reseller_org_id=reseller_org_id, subscription_id=subscription_id, purpose=purpose,
                           bill=bill, payment_reference=payment.reference, actor=actor)

    @event(Created)
    def __init__(self, reseller_org_id: str, subscription_id: UUID, purpose: str, bill: Bill,
                 payment_reference: str) -> None:
        self.reseller_org_id = reseller_org_id
        self.subscription_id = subscription_id
        self.purpose = purpose
        self.bill = bill
        self.payment_reference = payment_reference
        self.refunded_cents = 0
        self.refund_references: set[str] = set()

    @property
    def state(self) -> str:
        if self.refunded_cents == 0:
            return PAID
        return REFUNDED if self.refunded_cents == self.bill.total_cents else PARTIALLY_REFUNDED

    @property
    def refundable_cents(self) -> int:
        return self.bill.total_cents - self.refunded_cents

    def check_refund(self, amount_cents: int, refund_reference: str) -> None:
        if refund_reference in self.refund_references:
            raise InvalidState(f"refund {refund_reference} is already recorded on this invoice")
        if amount_cents <= 0:
            raise ValidationFailed("amount_cents", "a refund is a positive amount")
        if amount_cents > self.refundable_cents:
            raise InvalidState(f"only {self.refundable_cents} cents of this invoice are left to refund")

    def record_refund(self, *, amount_cents: int, refund_reference: str, reason: str, at: datetime,
                      actor: str) -> None:
        self.check_refund(amount_cents, refund_reference)
        self._refunded(amount_cents, refund_reference, reason, actor, require_instant(at))

    @event(InvoiceRefunded)
    def _refunded(self, amount_cents: int, refund_reference: str, reason: str, actor: str,
                  timestamp: datetime) -> None:
        self.refunded_cents += amount_cents
        self.refund_references.add(refund_reference)
