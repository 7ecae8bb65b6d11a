"""The ProcessorEvent aggregate: one event of the payment processor, as the ledger received and recorded it.
Pure: what to do about the event is decided in commands.webhooks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger.periods import require_instant


@dataclass(frozen=True)
class ReceivedFacts:
    """What a Stripe event says, as the ledger keeps it."""

    event_id: str
    event_type: str
    object_id: str | None
    payment_reference: str | None
    status: str | None
    amount_cents: int | None
    currency: str | None
    metadata: dict[str, str]
    processor_created_at: datetime | None


class ProcessorEvent(Aggregate):
    """One event of the payment processor, recorded once: its id is derived from the processor's event id."""

    TOPIC = "ledger:ProcessorEvent"

    class Created(Aggregate.Created):
        """ProcessorEventReceived: its topic names the type; the library calls a creation event class Created."""

        TOPIC = "ledger:ProcessorEvent.ProcessorEventReceived"
        processor: str
        event_id: str
        event_type: str
        object_id: str | None
        payment_reference: str | None
        status: str | None
        amount_cents: int | None
        currency: str | None
        metadata: dict[str, str]
        processor_created_at: datetime | None
        actor: str

    class UnmatchedPaymentRecorded(Aggregate.Event):
        TOPIC = "ledger:ProcessorEvent.UnmatchedPaymentRecorded"
        payment_reference: str | None
        invoice_id: str | None
        amount_cents: int | None
        currency: str | None
        actor: str

    @staticmethod
    def id_for(processor: str, event_id: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/processor-events/{processor}/{event_id}")

    @classmethod
    def receive(cls, processor: str, facts: ReceivedFacts, *, at: datetime, actor: str) -> ProcessorEvent:
        # The event's fields are the facts' (its class spells them out: it is the stored schema).
        return cls._create(cls.Created, id=cls.id_for(processor, facts.event_id), timestamp=require_instant(at),
                           processor=processor, actor=actor, **asdict(facts))

    @event(Created)
    def __init__(self, processor: str, event_id: str, event_type: str, object_id: str | None,
                 payment_reference: str | None, status: str | None, amount_cents: int | None, currency: str | None,
                 metadata: dict[str, str], processor_created_at: datetime | None) -> None:
        self.processor = processor
        self.event_id = event_id
        self.event_type = event_type
        self.object_id = object_id
        self.payment_reference = payment_reference
        self.status = status
        self.amount_cents = amount_cents
        self.currency = currency
        self.metadata = metadata
        self.unmatched_payment = False

    def record_unmatched_payment(self, *, invoice_id: str | None, at: datetime, actor: str) -> None:
        self._unmatched(self.payment_reference, invoice_id, self.amount_cents, self.currency, actor,
                        require_instant(at))

    @event(UnmatchedPaymentRecorded)
    def _unmatched(self, payment_reference: str | None, invoice_id: str | None, amount_cents: int | None,
                   currency: str | None, actor: str, timestamp: datetime) -> None:
        self.unmatched_payment = True
