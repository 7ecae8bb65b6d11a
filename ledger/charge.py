"""The Charge aggregate: the ledger's durable word that it is about to take money, and how that ended.

A command that charges records ``ChargeIntended`` (and commits it) before it asks the processor for the
money. The outcome is recorded with what the money paid for: ``ChargeCompleted`` in the same transaction as
the change and its billing document, or ``ChargeDeclined`` with the decline. When the change could not be
recorded (it lost a race, or its process died), the money is given back and documented (``ChargeReversed``),
or the processor turns out never to have taken it (``ChargeAbandoned``). So every intent ends with an outcome,
and every cent taken has exactly one billing document.

There is one Charge per basis: a subscription at one version, charged for one purpose. A retry of the same
change on the same basis finds it and reuses its processor key, so the processor never takes the money twice.
Each try is an attempt with its own key and billing document id; an attempt starts only when the one before it
has ended, so two attempts of one basis never hold money at once.
"""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger.errors import InvalidState
from ledger.periods import require_instant
from ledger.pricing import Bill

IDLE, OPEN, COMPLETED, DECLINED, REVERSED, ABANDONED = "idle", "open", "completed", "declined", "reversed", "abandoned"


class Charge(Aggregate):
    TOPIC = "ledger:Charge"

    class Created(Aggregate.Created):
        """ChargeOpened: its topic names the type; the library calls a creation event class Created."""

        TOPIC = "ledger:Charge.ChargeOpened"
        reseller_org_id: str
        subscription_id: UUID
        purpose: str
        basis_version: int
        actor: str

    class ChargeIntended(Aggregate.Event):
        TOPIC = "ledger:Charge.ChargeIntended"
        attempt: int
        invoice_id: UUID
        idempotency_key: str
        bill: Bill
        customer: str
        payment_method: str
        actor: str

    class ChargeCompleted(Aggregate.Event):
        TOPIC = "ledger:Charge.ChargeCompleted"
        attempt: int
        payment_reference: str
        actor: str

    class ChargeAttemptDeclined(Aggregate.Event):
        TOPIC = "ledger:Charge.ChargeAttemptDeclined"
        attempt: int
        decline_code: str
        message: str
        actor: str

    class ChargeReversed(Aggregate.Event):
        TOPIC = "ledger:Charge.ChargeReversed"
        attempt: int
        payment_reference: str
        refund_reference: str
        reason: str
        actor: str

    class ChargeAbandoned(Aggregate.Event):
        TOPIC = "ledger:Charge.ChargeAbandoned"
        attempt: int
        reason: str
        actor: str

    @staticmethod
    def id_for(subscription_id: UUID, basis_version: int, purpose: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/charges/{subscription_id}/{basis_version}/{purpose}")

    @classmethod
    def open(cls, *, reseller_org_id: str, subscription_id: UUID, basis_version: int, purpose: str,
             at: datetime, actor: str) -> Charge:
        return cls._create(cls.Created, id=cls.id_for(subscription_id, basis_version, purpose),
                           timestamp=require_instant(at), reseller_org_id=reseller_org_id,
                           subscription_id=subscription_id, purpose=purpose, basis_version=basis_version, actor=actor)

    @event(Created)
    def __init__(self, reseller_org_id: str, subscription_id: UUID, purpose: str, basis_version: int) -> None:
        self.reseller_org_id = reseller_org_id
        self.subscription_id = subscription_id
        self.purpose = purpose
        self.basis_version = basis_version
        self.attempt = 0
        self.state = IDLE
        self.invoice_id: UUID | None = None
        self.idempotency_key = ""
        self.bill: Bill | None = None
        self.customer = ""
        self.payment_method = ""
        self.intended_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    def matches(self, bill: Bill, *, customer: str, payment_method: str) -> bool:
        """Whether the open attempt charges exactly this, so a retry may reuse its processor key."""
        return (self.is_open and self.bill is not None and customer == self.customer
                and payment_method == self.payment_method and bill.total_cents == self.bill.total_cents
                and bill.currency == self.bill.currency and bill.quantity == self.bill.quantity)

    def intend(self, bill: Bill, *, customer: str, payment_method: str, at: datetime, actor: str) -> None:
        if self.is_open:
            raise InvalidState(f"attempt {self.attempt} of charge {self.id} has not ended")
        if bill.total_cents <= 0:
            raise InvalidState("only a positive amount is charged")
        attempt = self.attempt + 1
        self._intended(attempt, uuid5(NAMESPACE_URL, f"/charges/{self.id}/{attempt}"),
                       f"ledger-charge-{self.id}-{attempt}", bill, customer, payment_method, actor,
                       require_instant(at))

    @event(ChargeIntended)
    def _intended(self, attempt: int, invoice_id: UUID, idempotency_key: str, bill: Bill, customer: str,
                  payment_method: str, actor: str, timestamp: datetime) -> None:
        self.attempt = attempt
        self.state = OPEN
        self.invoice_id = invoice_id
        self.idempotency_key = idempotency_key
        self.bill = bill
        self.customer = customer
        self.payment_method = payment_method
        self.intended_at = timestamp

    def complete(self, payment_reference: str, *, at: datetime, actor: str) -> None:
        self._require_open()
        self._completed(self.attempt, payment_reference, actor, require_instant(at))

    @event(ChargeCompleted)
    def _completed(self, attempt: int, payment_reference: str, actor: str, timestamp: datetime) -> None:
        self.state = COMPLETED

    def decline(self, decline_code: str, message: str, *, at: datetime, actor: str) -> None:
        self._require_open()
        self._declined(self.attempt, decline_code, message, actor, require_instant(at))

    @event(ChargeAttemptDeclined)
    def _declined(self, attempt: int, decline_code: str, message: str, actor: str, timestamp: datetime) -> None:
        self.state = DECLINED

    def reverse(self, payment_reference: str, refund_reference: str, *, reason: str, at: datetime,
                actor: str) -> None:
        self._require_open()
        self._reversed(self.attempt, payment_reference, refund_reference, reason, actor, require_instant(at))

    @event(ChargeReversed)
    def _reversed(self, attempt: int, payment_reference: str, refund_reference: str, reason: str, actor: str,
                  timestamp: datetime) -> None:
        self.state = REVERSED

    def abandon(self, reason: str, *, at: datetime, actor: str) -> None:
        self._require_open()
        self._abandoned(self.attempt, reason, actor, require_instant(at))

    @event(ChargeAbandoned)
    def _abandoned(self, attempt: int, reason: str, actor: str, timestamp: datetime) -> None:
        self.state = ABANDONED

    def _require_open(self) -> None:
        if not self.is_open:
            raise InvalidState(f"charge {self.id} has no attempt in progress")
