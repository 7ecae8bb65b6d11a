"""Delivering the invitation outbox, outside any command: the ledger never waits for mail.

Each invitation moves pending → sending → sent. The sender takes the due invitations a batch at a time:
one commit marks them ``sending``, one handover gives them to the mailer (one SMTP conversation, or one
append to the mailbox file), one commit records what became of each. ``sending`` is committed before
the messages are handed to the mailer, so a crash can never lose the fact that a delivery may have
happened; a failed delivery goes back to pending with a backoff, and a row found still ``sending``
after a grace period (its sender died mid-delivery) is delivered again.

That leaves one window nothing can close: the server has accepted the messages but the sender dies
before ``sent`` is recorded. The messages of that batch are then sent a second time, each the same
message as before: its Message-ID is derived from the invitation id alone
(``<invitation-id@invitations.reseller-ledger>``), so mail systems and the people reading them can
recognise a resend as a duplicate.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from commands.mail import Mailer, MailUnavailable
from commands.ports import Clock
from ledger import events
from projections.invitations import (
    OUTBOX_COLUMNS,
    PENDING,
    SENDING,
    SENT,
    UNSENT,
    Delivery,
    Invitation,
    OutboxRow,
    row_from,
)
from projections.store import ViewDatabase

log = logging.getLogger("ledger.invitations")

MESSAGE_ID_DOMAIN = "invitations.reseller-ledger"
DEFAULT_FROM_ADDRESS = "Lens <no-reply@lens.example>"
INTERRUPTED = "an earlier delivery was interrupted before its outcome was recorded"
_LONGEST_ERROR = 500
_LINE = policy.default.max_line_length  # EmailMessage's policy: the lines it writes out as they are


def message_id(invitation_id: str) -> str:
    """The same for every delivery of one invitation, whichever process sends it."""
    return f"<{invitation_id}@{MESSAGE_ID_DOMAIN}>"


def compose(invitation: Invitation, *, from_address: str) -> EmailMessage:
    """The letter, as the ``email`` package writes it (``EmailMessage``, ``set_content``), byte for byte. That
    package parses every header it is given, and the body's headers twice: 0.6 ms a letter, the most of what the
    sender spent under a load of creates. So the sender's address is parsed once, and a value of a header without
    structure (or made here) that the package would write out unchanged (short printable ASCII) is stored as it
    is, as is a short ASCII body with the headers ``set_content`` gives it; anything else goes through the package
    (which refuses a line break, encodes other characters, folds long lines). A test holds both ways to the same
    bytes."""
    message = EmailMessage()
    message["From"] = _address_header("From", from_address)
    message["To"] = invitation.recipient
    date = format_datetime(datetime.strptime(invitation.created_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC))
    for name, value in (("Subject", invitation.subject), ("Date", date),
                        ("Message-ID", message_id(invitation.invitation_id)),
                        # RFC 3834: out-of-office robots must not answer an automated message.
                        ("Auto-Submitted", "auto-generated")):
        if value and value.isascii() and value.isprintable() and len(name) + 2 + len(value) <= _LINE:
            message.set_raw(name, value)
        else:
            message[name] = value
    lines = invitation.body.encode("ascii").splitlines() if invitation.body.isascii() else None
    if lines is not None and all(len(line) <= _LINE for line in lines):
        message.set_raw("Content-Type", 'text/plain; charset="utf-8"')
        message.set_raw("Content-Transfer-Encoding", "7bit")
        message.set_raw("MIME-Version", "1.0")
        message.set_payload(b"\n".join(lines).decode("ascii") + "\n")
    else:
        message.set_content(invitation.body)
    return message


@functools.lru_cache(maxsize=16)
def _address_header(name: str, value: str) -> Any:
    return policy.default.header_store_parse(name, value)[1]


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
    WHERE {UNSENT} AND ((state = '{PENDING}' AND (next_attempt_at IS NULL OR next_attempt_at <= ?))
       OR (state = '{SENDING}' AND next_attempt_at <= ?))
    ORDER BY position LIMIT ?"""


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
        """Deliver up to ``limit`` due invitations in one handover to the mailer; returns how many were
        sent. Delivery failures are recorded for a later retry, never raised; a failing outbox database
        is raised."""
        claimed = self._claim_due(limit)
        if not claimed:
            return 0
        outcomes = self._hand_over(claimed)
        self._record(claimed, outcomes)
        return outcomes.count(None)

    def _claim_due(self, limit: int) -> list[OutboxRow]:
        """The next due invitations, marked ``sending`` in one committed transaction. A row another
        sender claimed between our read and our update is left to it."""
        at = self.clock.now()
        now = events.iso(at)
        claimed, interrupted = [], []
        with self.db.transaction() as cursor:
            cursor.execute(_SELECT_DUE, (now, now, limit))
            for row in [row_from(found) for found in cursor.fetchall()]:
                before = row.delivery
                was_interrupted = before.state == SENDING
                delivery = Delivery(SENDING, before.attempts + 1 if was_interrupted else before.attempts,
                                    events.iso(at + self.retry.sending_grace),
                                    INTERRUPTED if was_interrupted else before.last_error, None)
                cursor.execute(
                    "UPDATE invitation_outbox SET state = ?, attempts = ?, next_attempt_at = ?, last_error = ? "
                    "WHERE invitation_id = ? AND state = ? AND attempts = ?",
                    (delivery.state, delivery.attempts, delivery.next_attempt_at, delivery.last_error,
                     row.invitation.invitation_id, before.state, before.attempts))
                if cursor.rowcount == 1:
                    claimed.append(OutboxRow(row.invitation, delivery))
                    if was_interrupted:
                        interrupted.append(row.invitation.invitation_id)
        for invitation_id in interrupted:
            log.warning("invitation %s was left sending by an interrupted delivery; sending it again", invitation_id)
        return claimed

    def _hand_over(self, claimed: list[OutboxRow]) -> list[Exception | None]:
        """For each claimed invitation: None when the mailer took it, or what went wrong."""
        outcomes: list[Exception | None] = [None] * len(claimed)
        messages, composed = [], []
        for index, row in enumerate(claimed):
            try:
                messages.append(compose(row.invitation, from_address=self.from_address))
            except Exception as error:  # a letter that cannot be written waits for a retry, as the others go out
                outcomes[index] = error
            else:
                composed.append(index)
        try:
            handed_over: list[Exception | None] = list(self.mailer.send_all(messages))
        except Exception as error:  # whatever went wrong with the mail, the invitations wait for a retry
            handed_over = [error] * len(messages)
        for index, outcome in zip(composed, handed_over, strict=True):
            outcomes[index] = outcome
        return outcomes

    def _record(self, claimed: list[OutboxRow], outcomes: list[Exception | None]) -> None:
        """Every outcome of one handover in one committed transaction: sent, or back to pending with a
        backoff. Until it commits, a crash leaves the rows ``sending``, to be sent again after the grace."""
        now = self.clock.now()
        sent = [row for row, outcome in zip(claimed, outcomes, strict=True) if outcome is None]
        failed = [(row, outcome, Delivery(PENDING, row.delivery.attempts + 1,
                                          events.iso(now + self.retry.delay_after(row.delivery.attempts + 1)),
                                          f"{type(outcome).__name__}: {outcome}"[:_LONGEST_ERROR], None))
                  for row, outcome in zip(claimed, outcomes, strict=True) if outcome is not None]
        with self.db.transaction() as cursor:
            if sent:
                cursor.executemany("UPDATE invitation_outbox SET state = ?, sent_at = ?, next_attempt_at = NULL "
                                   "WHERE invitation_id = ?",
                                   [(SENT, events.iso(now), row.invitation.invitation_id) for row in sent])
            for row, _, retry in failed:
                cursor.execute(
                    "UPDATE invitation_outbox SET state = ?, attempts = ?, next_attempt_at = ?, last_error = ? "
                    "WHERE invitation_id = ? AND state = ? AND attempts = ?",
                    (retry.state, retry.attempts, retry.next_attempt_at, retry.last_error,
                     row.invitation.invitation_id, SENDING, row.delivery.attempts))
        for row in sent:
            log.info("invitation %s (%s, subscription %s) sent", row.invitation.invitation_id, row.invitation.kind,
                     row.invitation.subscription_id)
        for row, outcome, retry in failed:
            log.warning("invitation %s not sent (attempt %d): %s; next attempt at %s", row.invitation.invitation_id,
                        retry.attempts, retry.last_error, retry.next_attempt_at,
                        exc_info=None if isinstance(outcome, MailUnavailable) else outcome)


class SenderThread(threading.Thread):
    """Keeps sending due invitations until stopped. Nothing it meets stops it: a failing outbox
    database is logged and retried after a pause."""

    def __init__(self, sender: InvitationSender, *, poll_seconds: float = 0.25, batch_size: int = 10,
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
