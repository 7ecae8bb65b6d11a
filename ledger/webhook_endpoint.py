"""The WebhookEndpoint aggregate: where a reseller wants the ledger's news delivered, and for which types.

The signing secret is never recorded. Each registration and each roll records a random ``secret_salt``;
the secret itself is derived from it with a key that only the service holds (``commands.webhook_endpoints``),
so exports and histories, which show the salt, reveal nothing that signs.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.errors import InvalidState, ValidationFailed
from ledger.periods import require_instant

# The webhook event types, and the ledger events each one reports.
EVENT_TYPES: dict[str, tuple[str, str]] = {
    "subscription.created": ("Subscription", "SubscriptionCreated"),
    "subscription.seats_increased": ("Subscription", "SeatsIncreased"),
    "subscription.seat_decrease_scheduled": ("Subscription", "SeatDecreaseScheduled"),
    "subscription.seat_decrease_withdrawn": ("Subscription", "SeatDecreaseWithdrawn"),
    "subscription.canceled": ("Subscription", "Canceled"),
    "subscription.resumed": ("Subscription", "Resumed"),
    "subscription.renewed": ("Subscription", "Renewed"),
    "subscription.payment_failed": ("Subscription", "RenewalPaymentFailed"),
    "subscription.expired": ("Subscription", "Expired"),
    "invoice.issued": ("Invoice", "InvoiceIssued"),
    "invoice.refunded": ("Invoice", "InvoiceRefunded"),
}
WEBHOOK_TYPE_OF = {ledger_type: webhook_type for webhook_type, (_, ledger_type) in EVENT_TYPES.items()}

ENABLED, DISABLED, DELETED = "enabled", "disabled", "deleted"
LONGEST_URL = 2048
LONGEST_DESCRIPTION = 500


class WebhookEndpoint(Aggregate):
    TOPIC = "ledger:WebhookEndpoint"

    class Created(Aggregate.Created):
        """WebhookEndpointRegistered: its topic names the type; the library calls a creation event class Created."""

        TOPIC = "ledger:WebhookEndpoint.WebhookEndpointRegistered"
        reseller_org_id: str
        url: str
        event_types: list[str]
        description: str | None
        secret_salt: str
        actor: str

    class WebhookEndpointSecretRolled(Aggregate.Event):
        TOPIC = "ledger:WebhookEndpoint.WebhookEndpointSecretRolled"
        secret_salt: str
        actor: str

    class WebhookEndpointDisabled(Aggregate.Event):
        TOPIC = "ledger:WebhookEndpoint.WebhookEndpointDisabled"
        reason: str
        failing_since: datetime
        notified_email: str | None
        actor: str

    class WebhookEndpointDeleted(Aggregate.Event):
        TOPIC = "ledger:WebhookEndpoint.WebhookEndpointDeleted"
        actor: str

    @classmethod
    def register(cls, endpoint_id: UUID, *, reseller_org_id: str, url: str, event_types: list[str],
                 description: str | None, secret_salt: str, at: datetime, actor: str) -> WebhookEndpoint:
        return cls._create(cls.Created, id=endpoint_id, timestamp=require_instant(at),
                           reseller_org_id=reseller_org_id, url=url, event_types=checked_event_types(event_types),
                           description=description, secret_salt=secret_salt, actor=actor)

    @event(Created)
    def __init__(self, reseller_org_id: str, url: str, event_types: list[str], description: str | None,
                 secret_salt: str) -> None:
        self.reseller_org_id = reseller_org_id
        self.url = url
        self.event_types = list(event_types)
        self.description = description
        self.secret_salt = secret_salt
        self.state = ENABLED
        self.disabled_reason: str | None = None

    def roll_secret(self, *, secret_salt: str, at: datetime, actor: str) -> None:
        self._require_not_deleted()
        self._secret_rolled(secret_salt, actor, require_instant(at))

    @event(WebhookEndpointSecretRolled)
    def _secret_rolled(self, secret_salt: str, actor: str, timestamp: datetime) -> None:
        self.secret_salt = secret_salt

    def disable(self, *, reason: str, failing_since: datetime, notified_email: str | None, at: datetime,
                actor: str) -> None:
        if self.state != ENABLED:
            raise InvalidState(f"webhook endpoint {self.id} is {self.state}")
        self._disabled(reason, require_instant(failing_since), notified_email, actor, require_instant(at))

    @event(WebhookEndpointDisabled)
    def _disabled(self, reason: str, failing_since: datetime, notified_email: str | None, actor: str,
                  timestamp: datetime) -> None:
        self.state = DISABLED
        self.disabled_reason = reason

    def delete(self, *, at: datetime, actor: str) -> None:
        self._require_not_deleted()
        self._deleted(actor, require_instant(at))

    @event(WebhookEndpointDeleted)
    def _deleted(self, actor: str, timestamp: datetime) -> None:
        self.state = DELETED

    def _require_not_deleted(self) -> None:
        if self.state == DELETED:
            raise InvalidState(f"webhook endpoint {self.id} is deleted")


def checked_event_types(event_types: list[str]) -> list[str]:
    """The types, each known, without repeats, in the catalogue's order."""
    if not event_types:
        raise ValidationFailed("event_types", "name at least one event type")
    unknown = sorted(set(event_types) - EVENT_TYPES.keys())
    if unknown:
        raise ValidationFailed("event_types", f"unknown event types: {', '.join(unknown)}; known: "
                                              f"{', '.join(EVENT_TYPES)}")
    return [name for name in EVENT_TYPES if name in set(event_types)]
