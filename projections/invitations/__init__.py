"""The invitation outbox: one invitation per new subscription, enqueued by a follower of the event
log and delivered by ``projections.invitations.sender``.

A single-user subscription invites its end user to activate it under their Lens ID; an organization
subscription invites its administrator to manage the new customer account. The row is written in the
follower's transaction, together with the log position it brings the view to, so each invitation is
enqueued exactly once. Unlike the other views this one is not disposable: its rows carry the delivery
state, and a view rebuilt from an empty table would send every invitation again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger import events
from ledger.catalog import ORGANIZATION, SINGLE_USER
from projections.invitations.letters import Letter, activation_letter, administration_letter
from projections.log import Recorded
from projections.runner import UnhandledEvent
from projections.store import Cursor, row_values

NAME = "invitations"

ACTIVATE_SUBSCRIPTION = "activate_subscription"
MANAGE_CUSTOMER_ACCOUNT = "manage_customer_account"

PENDING, SENDING, SENT = "pending", "sending", "sent"
UNSENT = f"state IN ('{PENDING}', '{SENDING}')"
"""The condition of the unsent invitations' index; a query uses that index when it says this, word for word."""

# Subscription events that invite nobody: only the creation of a subscription does.
IGNORED = frozenset({"SeatsIncreased", "SeatDecreaseScheduled", "SeatDecreaseWithdrawn", "Canceled", "Resumed",
                     "Renewed", "RenewalPaymentFailed", "Expired"})

_INVITATION_IDS = uuid5(NAMESPACE_URL, "/invitations")


def invitation_id_for(subscription_id: UUID) -> UUID:
    return uuid5(_INVITATION_IDS, str(subscription_id))


@dataclass(frozen=True)
class Invitation:
    """What the event decided: who is invited to what, in which words. It never changes once enqueued."""

    invitation_id: str
    kind: str
    recipient: str
    subject: str
    body: str
    subscription_id: str
    customer_account_id: str | None
    reseller_org_id: str
    created_at: str
    position: int
    """Where the subscription's creation sits in the event log: invitations go out in this order."""


@dataclass(frozen=True)
class Delivery:
    """How far the delivery of one invitation has come; only the sender changes it."""

    state: str
    attempts: int
    next_attempt_at: str | None
    """None: due at once. A new invitation is due whatever the clock of the ledger said when it was
    created (a sandbox clock may be far ahead of the sender's)."""
    last_error: str | None
    sent_at: str | None


@dataclass(frozen=True)
class OutboxRow:
    invitation: Invitation
    delivery: Delivery


INVITATION_COLUMNS = tuple(f.name for f in fields(Invitation))
DELIVERY_COLUMNS = tuple(f.name for f in fields(Delivery))
OUTBOX_COLUMNS = INVITATION_COLUMNS + DELIVERY_COLUMNS
NEW_DELIVERY = Delivery(PENDING, 0, None, None, None)


def invitation_for(recorded: Recorded) -> Invitation:
    """The invitation that a SubscriptionCreated event calls for."""
    created = recorded.event
    subscription_id = str(created.originator_id)
    if created.subscription_type == SINGLE_USER:
        kind, recipient, account_id = ACTIVATE_SUBSCRIPTION, created.end_user_email, None
        letter: Letter = activation_letter(
            reseller_org_id=created.reseller_org_id, plan_name=created.plan_name,
            end_user_email=created.end_user_email, display_name=created.display_name,
            subscription_id=subscription_id)
    elif created.subscription_type == ORGANIZATION:
        kind, recipient, account_id = MANAGE_CUSTOMER_ACCOUNT, created.admin_email, str(created.customer_account_id)
        letter = administration_letter(
            reseller_org_id=created.reseller_org_id, plan_name=created.plan_name,
            organization_name=created.organization_name, admin_email=created.admin_email, seats=created.seats,
            customer_account_id=account_id, subscription_id=subscription_id)
    else:
        raise UnhandledEvent(f"the invitations do not know subscriptions of type {created.subscription_type!r}")
    return Invitation(str(invitation_id_for(created.originator_id)), kind, recipient, letter.subject, letter.body,
                      subscription_id, account_id, created.reseller_org_id, events.iso(created.timestamp),
                      recorded.position)


class Invitations:
    name = NAME
    streams = frozenset({"Subscription"})

    def create_tables(self, cursor: Cursor) -> None:
        cursor.execute("""CREATE TABLE IF NOT EXISTS invitation_outbox (
            invitation_id TEXT PRIMARY KEY, kind TEXT NOT NULL, recipient TEXT NOT NULL, subject TEXT NOT NULL,
            body TEXT NOT NULL, subscription_id TEXT NOT NULL UNIQUE, customer_account_id TEXT,
            reseller_org_id TEXT NOT NULL, created_at TEXT NOT NULL, position BIGINT NOT NULL,
            state TEXT NOT NULL, attempts INTEGER NOT NULL, next_attempt_at TEXT, last_error TEXT, sent_at TEXT)""")
        # The sender takes the unsent invitations in the order of the log: this index holds them alone, in
        # that order, so a claim reads its next few rows however long the backlog or the sent history. (It
        # replaces an index by state, with which a claim sorted the whole backlog each time.)
        cursor.execute(f"CREATE INDEX IF NOT EXISTS invitation_outbox_unsent ON invitation_outbox (position) "
                       f"WHERE {UNSENT}")
        cursor.execute("DROP INDEX IF EXISTS invitation_outbox_by_state")

    def create_indexes(self, cursor: Cursor) -> None:
        """None to wait for: the sender polls the unsent invitations even while the view is rebuilt."""

    def apply(self, cursor: Cursor, batch: list[Recorded]) -> None:
        invitations = []
        for recorded in batch:
            if recorded.stream_type != "Subscription" or recorded.type in IGNORED:
                continue
            if recorded.type != "SubscriptionCreated":
                raise UnhandledEvent(f"the invitations do not know {recorded.type} events")
            invitations.append(invitation_for(recorded))
        if invitations:
            # DO NOTHING: an invitation already enqueued keeps its delivery state, even if the view's
            # position were ever reset and the log read again.
            cursor.executemany(
                f"INSERT INTO invitation_outbox ({', '.join(OUTBOX_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(OUTBOX_COLUMNS))}) ON CONFLICT (invitation_id) DO NOTHING",
                [row_values(invitation) + row_values(NEW_DELIVERY) for invitation in invitations])

    def rows(self, cursor: Cursor) -> Iterable[tuple[Any, ...]]:
        """The invitations, without their delivery state: a replay enqueues the same invitations but
        sends none, so only what the events decided can be compared."""
        cursor.execute(f"SELECT {', '.join(INVITATION_COLUMNS)} FROM invitation_outbox ORDER BY invitation_id")
        return [tuple(row) for row in cursor.fetchall()]


def outbox(cursor: Cursor) -> list[OutboxRow]:
    """Every invitation with its delivery state, in the order of the log (for operators and tests)."""
    cursor.execute(f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM invitation_outbox ORDER BY position")
    return [row_from(values) for values in cursor.fetchall()]


def row_from(values: Iterable[Any]) -> OutboxRow:
    values = tuple(values)
    split = len(INVITATION_COLUMNS)
    return OutboxRow(Invitation(*values[:split]), Delivery(*values[split:]))
