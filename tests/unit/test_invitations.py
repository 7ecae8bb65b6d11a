"""The invitation outbox: which events enqueue which invitations, and how the sender delivers them
(with an in-memory mailer here; the SMTP conversation is in tests/integration/test_invitations_smtp.py)."""

from __future__ import annotations

import mailbox
import sqlite3
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate
from hypothesis import given
from hypothesis import strategies as st

from commands.mail import OUTBOX_FILE_NAME, Mailer, MailUnavailable, MboxMailer, SmtpMailer, mailer_from_settings
from ledger import events
from ledger.subscription import Order
from projections.invitations import (
    ACTIVATE_SUBSCRIPTION,
    MANAGE_CUSTOMER_ACCOUNT,
    PENDING,
    SENT,
    Invitation,
    Invitations,
    OutboxRow,
    invitation_id_for,
)
from projections.invitations.letters import WIDTH, one_line, prose
from projections.invitations.sender import InvitationSender, RetryPolicy, SenderThread, compose, message_id
from projections.log import EventLog, Recorded
from projections.runner import UnhandledEvent
from projections.store import Cursor, SQLiteViews
from tests.invitations_support import create, follow, rows_of
from tests.support import ADMIN, T0, InMemoryLedger

PLUS_ORDER = Order("plus", "monthly", end_user_email="ada@example.com", display_name="Ada Lovelace")
PRO_ORDER = Order("pro", "annual", seats=3, organization_name="Initech", admin_email="admin@initech.example")
SECOND = timedelta(seconds=1)


class Postbox(Mailer):
    """A mailer that keeps what it is given, and can be out of order."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.handovers = 0
        self.down = False

    def send_all(self, messages: Sequence[EmailMessage]) -> list[MailUnavailable | None]:
        self.handovers += 1
        if self.down:
            return [MailUnavailable("the postbox is out of order")] * len(messages)
        self.messages.extend(messages)
        return [None] * len(messages)


class BuggyMailer(Mailer):
    def send_all(self, messages: Sequence[EmailMessage]) -> list[MailUnavailable | None]:
        raise RuntimeError("a bug in the mail adapter")


def the_row_of(db: SQLiteViews, subscription_id: UUID) -> OutboxRow:
    [row] = [r for r in rows_of(db) if r.invitation.subscription_id == str(subscription_id)]
    return row


def instant(iso: str | None) -> datetime:
    assert iso is not None
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def no_price_in(text: str) -> bool:
    """The recipient does not pay, the reseller does: no amount, currency or price appears."""
    return not any(sign in text.lower() for sign in ("30", "60", "$", "usd", "price", "cost", "tax"))


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# --- what the events enqueue ------------------------------------------------------------------------


def test_a_single_user_subscription_invites_its_end_user_to_activate_it(world: InMemoryLedger,
                                                                         views: SQLiteViews) -> None:
    subscription_id = create(world, PLUS_ORDER)
    follow(world, views)

    [row] = rows_of(views)
    invitation = row.invitation
    assert (invitation.invitation_id, invitation.kind, invitation.recipient) == (
        str(invitation_id_for(subscription_id)), ACTIVATE_SUBSCRIPTION, "ada@example.com")
    assert (invitation.subscription_id, invitation.customer_account_id, invitation.reseller_org_id,
            invitation.created_at) == (str(subscription_id), None, "org_1", events.iso(T0))
    assert invitation.subject == "Activate your Lens Plus subscription"
    assert invitation.body.startswith("Hello Ada Lovelace,\n")
    for fact in ("Lens Business ID org_1", "Lens Plus", "under your Lens ID", "ada@example.com", str(subscription_id)):
        assert fact in invitation.body
    assert no_price_in(invitation.body.replace(str(subscription_id), ""))
    assert (row.delivery.state, row.delivery.attempts, row.delivery.next_attempt_at, row.delivery.last_error,
            row.delivery.sent_at) == (PENDING, 0, None, None, None)


def test_an_organization_subscription_invites_its_administrator_to_manage_the_customer_account(
        world: InMemoryLedger, views: SQLiteViews) -> None:
    subscription_id = create(world, PRO_ORDER)
    account_id = world.ledger.subscription("org_1", subscription_id).customer_account_id
    follow(world, views)

    invitation = the_row_of(views, subscription_id).invitation
    assert (invitation.kind, invitation.recipient, invitation.customer_account_id) == (
        MANAGE_CUSTOMER_ACCOUNT, "admin@initech.example", str(account_id))
    assert invitation.subject == "Manage the Lens Business ID of Initech (Lens Pro)"
    for fact in ("Lens Business ID org_1", "Lens Pro", "3 seats", "Initech", f"Customer Lens Business ID: {account_id}",
                 "admin@initech.example", str(subscription_id)):
        assert fact in invitation.body
    assert no_price_in(invitation.body.replace(str(subscription_id), "").replace(str(account_id), ""))


def test_a_name_with_a_line_break_cannot_add_a_header(world: InMemoryLedger, views: SQLiteViews) -> None:
    subscription_id = create(world, Order("pro", "monthly", seats=1, organization_name="Evil\r\nBcc: x@evil.example",
                                          admin_email="admin@evil.example"))
    follow(world, views)
    assert the_row_of(views, subscription_id).invitation.subject == \
        "Manage the Lens Business ID of Evil Bcc: x@evil.example (Lens Pro)"


def test_nothing_but_the_creation_of_a_subscription_invites_anyone(world: InMemoryLedger, views: SQLiteViews) -> None:
    subscription_id = create(world, Order("pro", "monthly", seats=3, organization_name="Initech",
                                          admin_email="admin@initech.example"))
    ledger = world.ledger
    ledger.change_seats("org_1", subscription_id, 5, actor=ADMIN)
    ledger.change_seats("org_1", subscription_id, 2, actor=ADMIN)
    ledger.change_seats("org_1", subscription_id, 5, actor=ADMIN)
    ledger.cancel("org_1", subscription_id, actor=ADMIN)
    ledger.resume("org_1", subscription_id, actor=ADMIN)
    world.clock.set(T0 + timedelta(days=29))
    ledger.run_due(subscription_id)
    ledger.cancel("org_1", subscription_id, actor=ADMIN)
    world.clock.set(T0 + timedelta(days=60))
    ledger.run_due(subscription_id)
    assert world.types_of(subscription_id) == [
        "SubscriptionCreated", "SeatsIncreased", "SeatDecreaseScheduled", "SeatDecreaseWithdrawn", "Canceled",
        "Resumed", "Renewed", "Canceled", "Expired"]

    follower = follow(world, views)

    assert [r.invitation.subscription_id for r in rows_of(views)] == [str(subscription_id)]
    assert follower.position() == EventLog(world.app).head()  # reseller and customer account events too


class SeatsTransferred(Aggregate.Event):
    TOPIC = "ledger:Subscription.SeatsTransferred"


def test_an_unknown_subscription_event_stops_the_outbox_rather_than_being_skipped(views: SQLiteViews) -> None:
    unknown = SeatsTransferred(originator_id=uuid4(), originator_version=2, timestamp=T0)
    projection = Invitations()
    with views.transaction() as cursor:
        projection.create_tables(cursor)
    with pytest.raises(UnhandledEvent, match="SeatsTransferred"), views.transaction() as cursor:
        projection.apply(cursor, [Recorded(7, unknown)])


def test_following_the_log_again_enqueues_nothing_more(world: InMemoryLedger, tmp_path: Path) -> None:
    create(world, PLUS_ORDER)
    first = SQLiteViews(tmp_path / "views.sqlite")
    follow(world, first)
    first.close()
    create(world, PRO_ORDER)

    again = SQLiteViews(tmp_path / "views.sqlite")
    follow(world, again)
    follow(world, again)

    assert [r.invitation.kind for r in rows_of(again)] == [ACTIVATE_SUBSCRIPTION, MANAGE_CUSTOMER_ACCOUNT]
    again.close()


def test_a_replay_enqueues_the_same_invitations_whatever_was_sent(world: InMemoryLedger, views: SQLiteViews,
                                                                   tmp_path: Path) -> None:
    create(world, PLUS_ORDER)
    create(world, PRO_ORDER)
    live = follow(world, views)
    InvitationSender(views, Postbox(), world.clock).send_due()
    rebuilt = SQLiteViews(tmp_path / "rebuilt.sqlite")
    follow(world, rebuilt)

    with views.snapshot() as live_cursor, rebuilt.snapshot() as rebuilt_cursor:
        live_rows = list(live.projection.rows(live_cursor))
        assert live_rows == list(Invitations().rows(rebuilt_cursor)) and len(live_rows) == 2
    assert {r.delivery.state for r in rows_of(views)} == {SENT}
    assert {r.delivery.state for r in rows_of(rebuilt)} == {PENDING}
    rebuilt.close()


# --- delivery -----------------------------------------------------------------------------------------


def test_each_due_invitation_is_sent_once(world: InMemoryLedger, views: SQLiteViews, tmp_path: Path) -> None:
    plus_id, pro_id = create(world, PLUS_ORDER), create(world, PRO_ORDER)
    follow(world, views)
    postbox = Postbox()
    sender = InvitationSender(views, postbox, world.clock, from_address="Lens <invitations@lens.example>")

    assert sender.send_due(limit=10) == 2
    assert sender.send_due(limit=10) == 0
    restarted = SQLiteViews(tmp_path / "views.sqlite")
    assert InvitationSender(restarted, postbox, world.clock).send_due() == 0
    restarted.close()

    activation, administration = postbox.messages
    assert (activation["To"], activation["From"], activation["Subject"], activation["Message-ID"]) == (
        "ada@example.com", "Lens <invitations@lens.example>", "Activate your Lens Plus subscription",
        message_id(str(invitation_id_for(plus_id))))
    assert activation["Auto-Submitted"] == "auto-generated"
    assert activation.get_content() == the_row_of(views, plus_id).invitation.body
    assert (administration["To"], administration["Message-ID"]) == (
        "admin@initech.example", f"<{invitation_id_for(pro_id)}@invitations.reseller-ledger>")
    assert {(r.delivery.state, r.delivery.sent_at) for r in rows_of(views)} == {(SENT, events.iso(T0))}


def test_the_sender_sends_at_most_its_limit_at_a_time(world: InMemoryLedger, views: SQLiteViews) -> None:
    for _ in range(3):
        create(world, PLUS_ORDER)
    follow(world, views)
    sender = InvitationSender(views, Postbox(), world.clock)
    assert [sender.send_due(limit=2), sender.send_due(limit=2), sender.send_due(limit=2)] == [2, 1, 0]


def test_the_due_invitations_are_handed_over_together(world: InMemoryLedger, views: SQLiteViews) -> None:
    for _ in range(3):
        create(world, PLUS_ORDER)
    follow(world, views)
    postbox = Postbox()
    assert InvitationSender(views, postbox, world.clock).send_due(limit=10) == 3
    assert (postbox.handovers, len(postbox.messages)) == (1, 3)


def test_a_failed_delivery_is_retried_later_and_later_up_to_an_hour_apart(world: InMemoryLedger,
                                                                           views: SQLiteViews) -> None:
    subscription_id = create(world, PLUS_ORDER)
    follow(world, views)
    postbox = Postbox()
    postbox.down = True
    sender = InvitationSender(views, postbox, world.clock)

    waits = []
    for attempt in range(1, 10):
        assert sender.send_due() == 0
        delivery = the_row_of(views, subscription_id).delivery
        assert (delivery.state, delivery.attempts) == (PENDING, attempt)
        assert delivery.last_error == "MailUnavailable: the postbox is out of order"
        waits.append(int((instant(delivery.next_attempt_at) - world.clock.now()).total_seconds()))
        world.clock.set(world.clock.now() + timedelta(seconds=waits[-1]) - SECOND)
        assert sender.send_due() == 0 and the_row_of(views, subscription_id).delivery.attempts == attempt  # not yet
        world.clock.set(world.clock.now() + SECOND)
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]

    postbox.down = False
    assert sender.send_due() == 1
    delivery = the_row_of(views, subscription_id).delivery
    assert (delivery.state, delivery.attempts, delivery.sent_at) == (SENT, 9, events.iso(world.clock.now()))
    assert len(postbox.messages) == 1


def test_a_broken_mail_adapter_is_retried_like_an_unavailable_server(world: InMemoryLedger,
                                                                      views: SQLiteViews) -> None:
    subscription_id = create(world, PLUS_ORDER)
    follow(world, views)

    assert InvitationSender(views, BuggyMailer(), world.clock).send_due() == 0

    delivery = the_row_of(views, subscription_id).delivery
    assert (delivery.state, delivery.attempts, delivery.last_error) == (
        PENDING, 1, "RuntimeError: a bug in the mail adapter")


def test_the_backoff_is_configurable() -> None:
    policy = RetryPolicy(first_delay=timedelta(seconds=5), longest_delay=timedelta(seconds=12))
    assert [policy.delay_after(n).total_seconds() for n in (1, 2, 3, 1000)] == [5, 10, 12, 12]


# --- the sender thread -----------------------------------------------------------------------------------


def test_the_sender_thread_delivers_until_stopped(world: InMemoryLedger, views: SQLiteViews) -> None:
    create(world, PLUS_ORDER)
    follow(world, views)
    postbox = Postbox()
    thread = SenderThread(InvitationSender(views, postbox, world.clock), poll_seconds=0.01)
    thread.start()
    try:
        assert wait_until(lambda: len(postbox.messages) == 1)
        create(world, PRO_ORDER)
        follow(world, views)
        assert wait_until(lambda: len(postbox.messages) == 2)
    finally:
        thread.stop()
        thread.join(timeout=5)
    assert not thread.is_alive()


class UnreachableOutbox:
    """An outbox database that cannot be reached, and counts how often it was asked."""

    dialect = "sqlite"

    def __init__(self) -> None:
        self.tries = 0

    @contextmanager
    def transaction(self, *, rebuildable: bool = False) -> Iterator[Cursor]:
        self.tries += 1
        raise sqlite3.OperationalError("unable to open database file")
        yield  # pragma: no cover

    snapshot = transaction

    def close(self) -> None:
        pass


def test_the_sender_thread_survives_an_unreachable_outbox(world: InMemoryLedger) -> None:
    unreachable = UnreachableOutbox()
    thread = SenderThread(InvitationSender(unreachable, Postbox(), world.clock), retry_seconds=0.01)
    thread.start()
    try:
        assert wait_until(lambda: unreachable.tries >= 3)
        assert thread.is_alive()
    finally:
        thread.stop()
        thread.join(timeout=5)
    assert not thread.is_alive()


# --- the mailers -----------------------------------------------------------------------------------------


def test_without_an_smtp_url_invitations_are_appended_to_the_outbox_file(world: InMemoryLedger, views: SQLiteViews,
                                                                         tmp_path: Path) -> None:
    plus_id, pro_id = create(world, PLUS_ORDER), create(world, PRO_ORDER)
    follow(world, views)
    mailer = mailer_from_settings(None, tmp_path / "data")
    assert isinstance(mailer, MboxMailer) and mailer.path == tmp_path / "data" / OUTBOX_FILE_NAME

    assert InvitationSender(views, mailer, world.clock).send_due() == 2

    box = mailbox.mbox(tmp_path / "data" / "outbox.mbox")
    try:
        messages = list(box)
    finally:
        box.close()
    assert [(m["To"], m["Message-ID"]) for m in messages] == [
        ("ada@example.com", message_id(str(invitation_id_for(plus_id)))),
        ("admin@initech.example", message_id(str(invitation_id_for(pro_id))))]
    assert messages[0].get_payload(decode=True).decode() == the_row_of(views, plus_id).invitation.body


def test_the_outbox_file_takes_messages_from_many_threads_at_once(tmp_path: Path) -> None:
    mailer = MboxMailer(tmp_path / "outbox.mbox")

    def send_five(thread: int) -> None:
        for n in range(5):
            message = EmailMessage()
            message["Subject"] = f"{thread}-{n}"
            message.set_content("hello")
            mailer.send(message)

    threads = [threading.Thread(target=send_five, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    box = mailbox.mbox(tmp_path / "outbox.mbox")
    try:
        assert sorted(m["Subject"] for m in box) == sorted(f"{t}-{n}" for t in range(4) for n in range(5))
    finally:
        box.close()


def test_a_message_the_outbox_file_cannot_take_fails_alone(tmp_path: Path) -> None:
    mailer = MboxMailer(tmp_path / "outbox.mbox")
    good, bad, also_good = EmailMessage(), EmailMessage(), EmailMessage()
    for message, subject in ((good, "first"), (bad, "second"), (also_good, "third")):
        message["Subject"] = subject
        message.set_content("hello")
    bad.set_payload(12345)  # content the email generator cannot write out

    outcomes = mailer.send_all([good, bad, also_good])

    assert [outcome is None for outcome in outcomes] == [True, False, True]
    assert "cannot be written" in str(outcomes[1])
    box = mailbox.mbox(tmp_path / "outbox.mbox")
    try:
        assert [m["Subject"] for m in box] == ["first", "third"]
    finally:
        box.close()


def test_an_outbox_file_that_cannot_be_written_is_unavailable_mail(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("")
    with pytest.raises(MailUnavailable, match="cannot append"):
        MboxMailer(tmp_path / "not-a-folder" / "outbox.mbox").send(EmailMessage())


def test_the_smtp_url_names_the_server_the_tls_and_the_credentials(tmp_path: Path) -> None:
    mailer = mailer_from_settings("smtp://mail%40lens:p%40ss%2Fword@smtp.example:2525?starttls=require", tmp_path)
    assert isinstance(mailer, SmtpMailer)
    assert (mailer.host, mailer.port, mailer.implicit_tls, mailer.starttls, mailer.username, mailer.password) == (
        "smtp.example", 2525, False, "require", "mail@lens", "p@ss/word")
    assert "p@ss" not in repr(mailer)

    assert (SmtpMailer.from_url("smtps://smtp.example").port, SmtpMailer.from_url("smtps://smtp.example").implicit_tls,
            SmtpMailer.from_url("smtp://smtp.example").port, SmtpMailer.from_url("smtp://smtp.example").starttls) == (
        465, True, 25, "auto")
    assert SmtpMailer.from_url("smtp://smtp.example").username is None


@pytest.mark.parametrize(("url", "problem"), [
    ("http://user:secret@smtp.example", "smtp:// or smtps://"),
    ("smtp://user:secret@", "no host"),
    ("smtp://user:secret@smtp.example:http", "invalid port"),
    ("smtp://user:secret@smtp.example?tls=yes", "unknown options: tls"),
    ("smtp://user:secret@smtp.example?starttls=maybe", "auto or require"),
    ("smtps://user:secret@smtp.example?starttls=require", "smtp:// only"),
])
def test_a_wrong_smtp_url_is_refused_without_repeating_it(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as refused:
        SmtpMailer.from_url(url)
    assert "secret" not in str(refused.value)


WORDS = st.text(alphabet=st.sampled_from("ab-@.é \t\n\u00a0"), max_size=90)
LONG_WORDS = st.text(alphabet=st.sampled_from("ab-@.é"), min_size=60, max_size=160)


@given(st.lists(st.one_of(WORDS, LONG_WORDS), max_size=12).map(" ".join))
def test_a_paragraph_wraps_as_textwrap_would_without_breaking_words_or_hyphens(text: str) -> None:
    assert prose(text) == textwrap.fill(one_line(text), WIDTH, break_long_words=False, break_on_hyphens=False)


def the_email_packages_letter(invitation: Invitation, from_address: str) -> bytes:
    message = EmailMessage()
    message["From"] = from_address
    message["To"] = invitation.recipient
    message["Subject"] = invitation.subject
    message["Date"] = "Fri, 04 Dec 2026 10:00:00 +0000"
    message["Message-ID"] = message_id(invitation.invitation_id)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(invitation.body)
    return bytes(message)


TEXT = st.text(st.sampled_from("aZ09 .,:;<>@\"'()[]-_=+?!/\\\t\n\r\x0b\x0c\x1cé€ß\u2028"), max_size=120)


@given(sender=TEXT, recipient=TEXT, subject=TEXT, body=TEXT | st.text(max_size=300))
def test_a_letter_is_the_email_packages_byte_for_byte(sender: str, recipient: str, subject: str, body: str) -> None:
    invitation = Invitation("0f6a3c1e-4b7d-4f0e-9a51-2f3c8d9e7b10", ACTIVATE_SUBSCRIPTION, recipient, subject, body,
                            "s", None, "org", "2026-12-04T10:00:00Z", 1)

    def written(letter: Callable[[], object]) -> object:
        try:
            made = letter()
            return bytes(made) if isinstance(made, EmailMessage) else made
        except Exception as refused:  # noqa: BLE001 - a line break in a header, say: both must refuse it alike
            return type(refused)

    assert written(lambda: compose(invitation, from_address=sender)) == \
        written(lambda: the_email_packages_letter(invitation, sender))
