"""Invitations over a real SMTP conversation (an aiosmtpd server on 127.0.0.1), across outages,
restarts and crashes; and the outbox on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from commands.mail import Mailer, MailUnavailable, SmtpMailer
from ledger.subscription import Order
from projections.invitations import PENDING, SENDING, SENT, Delivery, Invitations, invitation_id_for
from projections.invitations.sender import INTERRUPTED, InvitationSender, RetryPolicy, message_id
from projections.store import PostgresViews, SQLiteViews, ViewDatabase
from tests.invitations_support import create, follow, rows_of
from tests.support import InMemoryLedger

PLUS_ORDER = Order("plus", "monthly", end_user_email="ada@example.com", display_name="Ada Lovelace")
PRO_ORDER = Order("pro", "monthly", seats=12, organization_name="Initech", admin_email="admin@initech.example")
FROM = "Lens <invitations@lens.example>"
USER, PASSWORD = "ledger@lens.example", "s3cret/with:odd@chars"


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: bytes | None
    encrypted: bool
    session: Any
    """The server's session: one per connection."""


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts, refuses the recipients it is told to, and
    hangs up on the message to the ones it is told to."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.unknown_recipients: set[str] = set()
        self.hang_up_on: set[str] = set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address in self.unknown_recipients:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.hang_up_on & set(envelope.rcpt_tos):
            server.transport.close()
            return "421 4.3.0 Going away"
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        encrypted = server.transport.get_extra_info("ssl_object") is not None
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message, login, encrypted,
                                      session))
        return "250 Message accepted for delivery"

    @property
    def conversations(self) -> int:
        return len({id(r.session) for r in self.received})

    @property
    def message_ids(self) -> list[str]:
        return [r.message["Message-ID"] for r in self.received]


def accept_only_our_credentials(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def smtp_server(port: int | None = None, **options: Any) -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), port or free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@dataclass(frozen=True)
class Certificate:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, trusted by the client context only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return Certificate(server, ssl.create_default_context(cafile=str(folder / "cert.pem")))


class CrashAfterHandover(Mailer):
    """A mailer whose process dies right after the server accepted the messages, before the outbox
    could record them as sent."""

    def __init__(self, mailer: SmtpMailer) -> None:
        self.mailer = mailer

    def send_all(self, messages: Sequence[EmailMessage]) -> list[MailUnavailable | None]:
        self.mailer.send_all(messages)
        raise ProcessDied


class ProcessDied(BaseException):
    """Stands for the process being killed: nothing in the sender may catch it."""


def invite(world: InMemoryLedger, views: ViewDatabase, addresses: list[str]) -> None:
    """A Plus subscription for each address, in this order, and their invitations in the outbox."""
    for address in addresses:
        create(world, Order("plus", "monthly", end_user_email=address, display_name="Someone"))
    follow(world, views)


def deliveries_by_recipient(views: ViewDatabase) -> dict[str, Delivery]:
    return {r.invitation.recipient: r.delivery for r in rows_of(views)}


def sender(db: ViewDatabase, url: str, world: InMemoryLedger, **tls: Any) -> InvitationSender:
    return InvitationSender(db, SmtpMailer.from_url(url, timeout=5, **tls), world.clock, from_address=FROM)


# --- the SMTP conversation ---------------------------------------------------------------------------------


def test_an_invitation_arrives_over_smtp_as_written_in_the_outbox(world: InMemoryLedger, views: SQLiteViews) -> None:
    plus_id, pro_id = create(world, PLUS_ORDER), create(world, PRO_ORDER)
    follow(world, views)

    with smtp_server() as (inbox, port):
        assert sender(views, f"smtp://127.0.0.1:{port}", world).send_due() == 2

    activation, administration = inbox.received
    assert (activation.mail_from, activation.rcpt_tos, activation.login, activation.encrypted) == (
        "invitations@lens.example", ["ada@example.com"], None, False)
    assert activation.message["Subject"] == "Activate your Lens Plus subscription"
    assert activation.message["Message-ID"] == f"<{invitation_id_for(plus_id)}@invitations.reseller-ledger>"
    assert activation.message.get_content().replace("\r\n", "\n") == rows_of(views)[0].invitation.body
    assert "activate it under your Lens ID" in activation.message.get_content()
    assert administration.rcpt_tos == ["admin@initech.example"]
    assert administration.message["Subject"] == "Manage the Lens Business ID of Initech (Lens Pro)"
    assert administration.message["Message-ID"] == message_id(str(invitation_id_for(pro_id)))
    assert "12 seats" in administration.message.get_content()
    assert [r.delivery.state for r in rows_of(views)] == [SENT, SENT]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # a test server on loopback
def test_credentials_in_the_url_log_in_to_the_server(world: InMemoryLedger, views: SQLiteViews) -> None:
    create(world, PLUS_ORDER)
    follow(world, views)
    url = "smtp://ledger%40lens.example:s3cret%2Fwith%3Aodd%40chars@127.0.0.1:{port}"

    with smtp_server(authenticator=accept_only_our_credentials, auth_required=True,
                     auth_require_tls=False) as (inbox, port):
        refused = url.replace("s3cret", "wrong").format(port=port)
        assert sender(views, refused, world).send_due() == 0
        assert "SMTPAuthenticationError" in (rows_of(views)[0].delivery.last_error or "")
        world.clock.set(world.clock.now() + RetryPolicy().first_delay)
        assert sender(views, url.format(port=port), world).send_due() == 1

    [received] = inbox.received
    assert received.login == USER.encode()


@pytest.mark.parametrize("option", ["", "?starttls=require"])
def test_starttls_is_used_when_the_server_offers_it(world: InMemoryLedger, views: SQLiteViews,
                                                   certificate: Certificate, option: str) -> None:
    create(world, PLUS_ORDER)
    follow(world, views)

    with smtp_server(tls_context=certificate.server, require_starttls=True, authenticator=accept_only_our_credentials,
                     auth_required=True) as (inbox, port):
        url = f"smtp://ledger%40lens.example:s3cret%2Fwith%3Aodd%40chars@127.0.0.1:{port}{option}"
        assert sender(views, url, world, tls_context=certificate.client).send_due() == 1

    [received] = inbox.received
    assert (received.encrypted, received.login) == (True, USER.encode())


def test_smtps_speaks_tls_from_the_start(world: InMemoryLedger, views: SQLiteViews, certificate: Certificate) -> None:
    create(world, PLUS_ORDER)
    follow(world, views)

    with smtp_server(ssl_context=certificate.server) as (inbox, port):
        assert sender(views, f"smtps://127.0.0.1:{port}", world, tls_context=certificate.client).send_due() == 1

    [received] = inbox.received
    assert received.encrypted and received.rcpt_tos == ["ada@example.com"]


def test_a_server_with_an_untrusted_certificate_gets_nothing(world: InMemoryLedger, views: SQLiteViews,
                                                             certificate: Certificate) -> None:
    create(world, PLUS_ORDER)
    follow(world, views)

    with smtp_server(ssl_context=certificate.server) as (inbox, port):
        assert sender(views, f"smtps://127.0.0.1:{port}", world).send_due() == 0

    assert inbox.received == []
    assert "CERTIFICATE_VERIFY_FAILED" in (rows_of(views)[0].delivery.last_error or "")


def test_starttls_required_but_not_offered_sends_nothing_in_the_clear() -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = FROM, "ada@example.com", "hello"
    with smtp_server() as (inbox, port):
        with pytest.raises(MailUnavailable, match="does not offer STARTTLS"):
            SmtpMailer.from_url(f"smtp://127.0.0.1:{port}?starttls=require", timeout=5).send(message)
    assert inbox.received == []


def test_a_batch_goes_in_one_conversation_and_a_refused_recipient_does_not_hold_back_the_others(
        world: InMemoryLedger, views: SQLiteViews) -> None:
    invite(world, views, ["ada@example.com", "nobody@example.com", "grace@example.com"])

    with smtp_server() as (inbox, port):
        inbox.unknown_recipients.add("nobody@example.com")
        assert sender(views, f"smtp://127.0.0.1:{port}", world).send_due() == 2

    assert [r.rcpt_tos for r in inbox.received] == [["ada@example.com"], ["grace@example.com"]]
    assert inbox.conversations == 1
    rows = deliveries_by_recipient(views)
    assert (rows["ada@example.com"].state, rows["grace@example.com"].state) == (SENT, SENT)
    nobody = rows["nobody@example.com"]
    assert (nobody.state, nobody.attempts) == (PENDING, 1)
    assert "550" in (nobody.last_error or "") and "No such user" in (nobody.last_error or "")


def test_a_message_that_breaks_the_conversation_fails_alone_and_the_rest_go_in_a_new_one(
        world: InMemoryLedger, views: SQLiteViews) -> None:
    addresses = ["ada@example.com", "grace@example.com", "alan@example.com"]
    invite(world, views, addresses)

    with smtp_server() as (inbox, port):
        inbox.hang_up_on.add("grace@example.com")
        assert sender(views, f"smtp://127.0.0.1:{port}", world).send_due() == 2
        assert [r.rcpt_tos for r in inbox.received] == [["ada@example.com"], ["alan@example.com"]]
        assert inbox.conversations == 2
        rows = deliveries_by_recipient(views)
        assert (rows["grace@example.com"].state, rows["grace@example.com"].attempts) == (PENDING, 1)
        assert "did not take the message" in (rows["grace@example.com"].last_error or "")

        inbox.hang_up_on.clear()
        world.clock.set(world.clock.now() + RetryPolicy().first_delay)
        assert sender(views, f"smtp://127.0.0.1:{port}", world).send_due() == 1

    assert sorted(r.rcpt_tos[0] for r in inbox.received) == sorted(addresses)
    assert {r.delivery.state for r in rows_of(views)} == {SENT}


# --- each invitation once --------------------------------------------------------------------------------


def test_each_invitation_is_sent_once_across_outages_and_restarts(world: InMemoryLedger, tmp_path: Path) -> None:
    plus_id, pro_id = create(world, PLUS_ORDER), create(world, PRO_ORDER)
    port = free_port()  # nothing listens there yet: the mail server is down
    first = SQLiteViews(tmp_path / "views.sqlite")
    follow(world, first)

    assert sender(first, f"smtp://127.0.0.1:{port}", world).send_due() == 0
    for row in rows_of(first):
        assert (row.delivery.state, row.delivery.attempts) == (PENDING, 1)
        assert row.delivery.next_attempt_at == "2026-01-31T10:00:30Z"
        assert "cannot reach 127.0.0.1" in (row.delivery.last_error or "")
    first.close()

    with smtp_server(port) as (inbox, _):
        restarted = SQLiteViews(tmp_path / "views.sqlite")
        follow(world, restarted)
        again = sender(restarted, f"smtp://127.0.0.1:{port}", world)
        assert again.send_due() == 0  # the server is back, but the backoff has not passed
        world.clock.set(world.clock.now() + RetryPolicy().first_delay)
        assert again.send_due() == 2
        restarted.close()

        once_more = SQLiteViews(tmp_path / "views.sqlite")
        follow(world, once_more)
        world.clock.set(world.clock.now() + RetryPolicy().sending_grace)
        assert sender(once_more, f"smtp://127.0.0.1:{port}", world).send_due() == 0
        once_more.close()

    assert sorted(inbox.message_ids) == sorted(message_id(str(invitation_id_for(s))) for s in (plus_id, pro_id))


def test_a_delivery_cut_short_by_a_crash_is_resent_as_the_same_messages(world: InMemoryLedger, tmp_path: Path) -> None:
    subscriptions = [create(world, PLUS_ORDER), create(world, PRO_ORDER)]
    with smtp_server() as (inbox, port):
        dying = SQLiteViews(tmp_path / "views.sqlite")
        follow(world, dying)
        crashing = InvitationSender(dying, CrashAfterHandover(SmtpMailer.from_url(f"smtp://127.0.0.1:{port}")),
                                    world.clock, from_address=FROM)
        with pytest.raises(ProcessDied):
            crashing.send_due()
        dying.close()

        restarted = SQLiteViews(tmp_path / "views.sqlite")
        assert [r.delivery.state for r in rows_of(restarted)] == [SENDING, SENDING]
        again = sender(restarted, f"smtp://127.0.0.1:{port}", world)
        world.clock.set(world.clock.now() + RetryPolicy().sending_grace - dt.timedelta(seconds=1))
        assert again.send_due() == 0  # its sender might still be at work
        world.clock.set(world.clock.now() + dt.timedelta(seconds=1))
        assert again.send_due() == 2
        rows = rows_of(restarted)
        restarted.close()

    assert {(r.delivery.state, r.delivery.attempts, r.delivery.last_error) for r in rows} == {(SENT, 1, INTERRUPTED)}
    first_plus, first_pro, resent_plus, resent_pro = inbox.received
    assert [r.message["Message-ID"] for r in (first_plus, first_pro)] == [
        message_id(str(invitation_id_for(s))) for s in subscriptions]
    assert first_plus.message.as_bytes() == resent_plus.message.as_bytes()
    assert first_pro.message.as_bytes() == resent_pro.message.as_bytes()


# --- PostgreSQL --------------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_outbox_on_postgresql(world: InMemoryLedger, postgres_url: str, postgres_schema: str) -> None:
    subscriptions = [create(world, PLUS_ORDER if n % 2 else PRO_ORDER) for n in range(6)]
    first = PostgresViews(postgres_url, postgres_schema)
    try:
        follow(world, first)
    finally:
        first.close()
    views = PostgresViews(postgres_url, postgres_schema)
    try:
        follow(world, views)
        assert [r.invitation.subscription_id for r in rows_of(views)] == [str(s) for s in subscriptions]
        assert [r.delivery.state for r in rows_of(views)] == [PENDING] * 6

        with smtp_server() as (inbox, port):
            # Two senders on one outbox: each invitation is claimed by one of them only.
            senders = [sender(views, f"smtp://127.0.0.1:{port}", world) for _ in range(2)]
            sent: list[int] = []
            threads = [threading.Thread(target=lambda s=s: sent.append(s.send_due(limit=6))) for s in senders]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=10)

        assert sum(sent) == 6
        assert sorted(inbox.message_ids) == sorted(message_id(str(invitation_id_for(s))) for s in subscriptions)
        assert {r.delivery.state for r in rows_of(views)} == {SENT}
        with views.snapshot() as cursor:
            assert len(list(Invitations().rows(cursor))) == 6
    finally:
        views.close()
