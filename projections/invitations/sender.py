"""Delivering the invitation outbox, outside any command: the ledger never waits for mail.

Each invitation moves pending → sending → sent. ``sending`` is committed before the message is handed
to the mailer, so a crash can never lose the fact that a delivery may have happened; a failed delivery
goes back to pending with a backoff, and a row found still ``sending`` after a grace period (its sender
died mid-delivery) is delivered again.

That leaves one window nothing can close: the server has accepted the message but the sender dies
before ``sent`` is recorded. The message is then sent a second time. It is the same message: its
Message-ID is derived from the invitation id alone (``<invitation-id@invitations.reseller-ledger>``),
so mail systems and the people reading them can recognise the resend as a duplicate.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

from commands.mail import Mailer, MailUnavailable
from commands.ports import Clock
from ledger import events
from projections.invitations import OUTBOX_COLUMNS, PENDING, SENDING, SENT, Delivery, Invitation, OutboxRow, row_from
from projections.store import ViewDatabase

log = logging.getLogger("ledger.invitations")

MESSAGE_ID_DOMAIN = "invitations.reseller-ledger"
DEFAULT_FROM_ADDRESS = "Lens <no-reply@lens.example>"
INTERRUPTED = "an earlier delivery was interrupted before its outcome was recorded"
_LONGEST_ERROR = 500


def message_id(invitation_id: str) -> str:
    """The same for every delivery of one invitation, whichever process sends it."""
    return f"<{invitation_id}@{MESSAGE_ID_DOMAIN}>"


def compose(invitation: Invitation, *, from_address: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = from_address
    message["To"] = invitation.recipient
    message["Subject"] = invitation.subject
    message["Date"] = format_datetime(datetime.strptime(invitation.created_at, "%Y-%m-%dT%H:%M:%SZ")
                                      .replace(tzinfo=UTC))
    message["Message-ID"] = message_id(invitation.invitation_id)
    # RFC 3834: out-of-office robots must not answer an automated message.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(invitation.body)
    return message


@dataclass(frozen=True)
class RetryPolicy:
    first_delay: timedelta = timedelta(seconds=30)
    longest_delay: timedelta = timedelta(hours=1)
    sending_grace: timedelta = timedelta(minutes=10)
    """How long a row may stay ``sending`` before its sender is presumed dead. Longer than any
    delivery can take (the SMTP adapter gives up on a silent server after 30 s per step)."""

    def delay_after(self, failed_attempts: int) -> timedelta:
        doublings = min(max(failed_attempts - 1, 0), 32)
        return min(self.first_delay * 2 ** doublings, self.longest_delay)


_SELECT_DUE = f"""SELECT {', '.join(OUTBOX_COLUMNS)} FROM invitation_outbox
    WHERE (state = '{PENDING}' AND (next_attempt_at IS NULL OR next_attempt_at <= ?))
       OR (state = '{SENDING}' AND next_attempt_at <= ?)
    ORDER BY position LIMIT 1"""


class InvitationSender:
    """Sends the invitations that are due. Several senders may share an outbox: a row is claimed by a
    conditional update, so only one of them hands it over.

    Give it the system clock even when the ledger runs on the sandbox clock: backoffs and the grace
    period are real time, and a sandbox clock only moves when told."""

    def __init__(self, db: ViewDatabase, mailer: Mailer, clock: Clock, *,
                 from_address: str = DEFAULT_FROM_ADDRESS, retry: RetryPolicy = RetryPolicy()) -> None:
        self.db = db
        self.mailer = mailer
        self.clock = clock
        self.from_address = from_address
        self.retry = retry

    def send_due(self, limit: int = 10) -> int:
        """Deliver up to ``limit`` due invitations; returns how many were sent. Delivery failures are
        recorded for a later retry, never raised; a failing outbox database is raised."""
        sent = 0
        for _ in range(limit):
            claimed = self._claim_next()
            if claimed is None:
                break
            sent += self._deliver(claimed)
        return sent

    def _claim_next(self) -> OutboxRow | None:
        """The next due invitation, marked ``sending`` and committed; None when none is due."""
        at = self.clock.now()
        now = events.iso(at)
        with self.db.transaction() as cursor:
            while True:
                cursor.execute(_SELECT_DUE, (now, now))
                found = cursor.fetchone()
                if found is None:
                    return None
                row = row_from(found)
                before = row.delivery
                interrupted = before.state == SENDING
                claimed = Delivery(SENDING, before.attempts + 1 if interrupted else before.attempts,
                                   events.iso(at + self.retry.sending_grace),
                                   INTERRUPTED if interrupted else before.last_error, None)
                cursor.execute(
                    "UPDATE invitation_outbox SET state = ?, attempts = ?, next_attempt_at = ?, last_error = ? "
                    "WHERE invitation_id = ? AND state = ? AND attempts = ?",
                    (claimed.state, claimed.attempts, claimed.next_attempt_at, claimed.last_error,
                     row.invitation.invitation_id, before.state, before.attempts))
                if cursor.rowcount == 1:
                    break
                # Another sender claimed it between our read and our update: look for the next one.
        if interrupted:
            log.warning("invitation %s was left sending by an interrupted delivery; sending it again",
                        row.invitation.invitation_id)
        return OutboxRow(row.invitation, claimed)

    def _deliver(self, claimed: OutboxRow) -> int:
        invitation = claimed.invitation
        try:
            self.mailer.send(compose(invitation, from_address=self.from_address))
        except Exception as error:  # whatever went wrong with the mail, the invitation waits for a retry
            self._failed(claimed, error)
            return 0
        with self.db.transaction() as cursor:
            cursor.execute("UPDATE invitation_outbox SET state = ?, sent_at = ?, next_attempt_at = NULL "
                           "WHERE invitation_id = ?", (SENT, events.iso(self.clock.now()), invitation.invitation_id))
        log.info("invitation %s (%s, subscription %s) sent", invitation.invitation_id, invitation.kind,
                 invitation.subscription_id)
        return 1

    def _failed(self, claimed: OutboxRow, error: Exception) -> None:
        attempts = claimed.delivery.attempts + 1
        retry_at = self.clock.now() + self.retry.delay_after(attempts)
        reason = f"{type(error).__name__}: {error}"[:_LONGEST_ERROR]
        with self.db.transaction() as cursor:
            cursor.execute(
                "UPDATE invitation_outbox SET state = ?, attempts = ?, next_attempt_at = ?, last_error = ? "
                "WHERE invitation_id = ? AND state = ? AND attempts = ?",
                (PENDING, attempts, events.iso(retry_at), reason, claimed.invitation.invitation_id, SENDING,
                 claimed.delivery.attempts))
        log.warning("invitation %s not sent (attempt %d): %s; next attempt at %s", claimed.invitation.invitation_id,
                    attempts, reason, events.iso(retry_at), exc_info=not isinstance(error, MailUnavailable))


class SenderThread(threading.Thread):
    """Keeps sending due invitations until stopped. Nothing it meets stops it: a failing outbox
    database is logged and retried after a pause."""

    def __init__(self, sender: InvitationSender, *, poll_seconds: float = 2.0, batch_size: int = 10,
                 retry_seconds: float = 30.0) -> None:
        super().__init__(name="invitation-sender", daemon=True)
        self.sender = sender
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.retry_seconds = retry_seconds
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                sent = self.sender.send_due(self.batch_size)
            except Exception:
                log.exception("the invitation outbox cannot be read or updated; retrying in %s s", self.retry_seconds)
                self.stopping.wait(self.retry_seconds)
                continue
            if sent < self.batch_size:
                self.stopping.wait(self.poll_seconds)

    def stop(self) -> None:
        self.stopping.set()
