"""Sending email: the port the invitation sender hands messages to, and its two adapters: an SMTP
server (``LEDGER_SMTP_URL``), or an mbox file in the data dir when no server is configured."""

from __future__ import annotations

import fcntl
import io
import os
import smtplib
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import EmailMessage
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

OUTBOX_FILE_NAME = "outbox.mbox"
DEFAULT_TIMEOUT_SECONDS = 30.0

StartTls = Literal["auto", "require"]


class MailUnavailable(Exception):
    """The message was not handed over: the server could not be reached, refused it, or the outbox
    file could not be written. Sending the same message again later is the remedy."""


class Mailer(Protocol):
    """Adapters implement ``send_all``; ``send`` comes with it when they subclass this port."""

    def send_all(self, messages: Sequence[EmailMessage]) -> list[MailUnavailable | None]:
        """Hand the messages over for delivery, in order, as one handover where the adapter can (one
        connection, one write to disk). For each message: None when it was taken, or why it was not."""
        ...

    def send(self, message: EmailMessage) -> None:
        """Hand one message over for delivery, or raise ``MailUnavailable``."""
        [outcome] = self.send_all([message])
        if outcome is not None:
            raise outcome


@dataclass(frozen=True)
class SmtpMailer(Mailer):
    """One SMTP conversation per handover (a new one if it breaks), one mail transaction per message in
    it. ``smtp://`` upgrades to TLS with STARTTLS when the server offers it (``starttls="require"`` refuses
    to go on without it); ``smtps://`` speaks TLS from the first byte. Credentials in the URL log in after
    the upgrade; without ``starttls=require`` they may cross an unencrypted connection if the server offers
    no STARTTLS."""

    host: str
    port: int
    implicit_tls: bool = False
    starttls: StartTls = "auto"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    tls_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_url(cls, url: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 tls_context: ssl.SSLContext | None = None) -> SmtpMailer:
        """``smtp://user:pass@host:port`` (port 25 by default), ``smtps://…`` (port 465 by default),
        optionally ``?starttls=require``. User and password are percent-encoded in the URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("the SMTP URL must start with smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("the SMTP URL names no host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the SMTP URL has an invalid port") from None
        options = parse_qs(parts.query, keep_blank_values=True)
        unknown = set(options) - {"starttls"}
        if unknown:
            raise ValueError(f"the SMTP URL has unknown options: {', '.join(sorted(unknown))}")
        starttls = options.get("starttls", ["auto"])[-1]
        if starttls not in ("auto", "require"):
            raise ValueError("starttls in the SMTP URL must be auto or require")
        if parts.scheme == "smtps" and starttls == "require":
            raise ValueError("smtps:// is TLS from the start: starttls=require applies to smtp:// only")
        implicit_tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=port or (465 if implicit_tls else 25),
            implicit_tls=implicit_tls,
            starttls="require" if starttls == "require" else "auto",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            timeout=timeout,
            tls_context=tls_context,
        )

    def send_all(self, messages: Sequence[EmailMessage]) -> list[MailUnavailable | None]:
        outcomes: list[MailUnavailable | None] = []
        connection: smtplib.SMTP | None = None
        try:
            for message in messages:
                if connection is None:
                    opened = self._open()
                    if isinstance(opened, MailUnavailable):
                        return outcomes + [opened] * (len(messages) - len(outcomes))
                    connection = opened
                try:
                    outcomes.append(self._deliver(connection, message))
                except (smtplib.SMTPException, OSError) as error:
                    # The conversation broke on this message: it failed, and the next ones go in a new
                    # conversation (a message that always breaks it must not hold back the rest of the batch).
                    connection.close()
                    connection = None
                    outcomes.append(MailUnavailable(f"{self.host}:{self.port} did not take the message: "
                                                    f"{_describe(error)}"))
        except BaseException:
            if connection is not None:
                connection.close()
            raise
        if connection is not None:
            _quit_quietly(connection)
        return outcomes

    def _open(self) -> smtplib.SMTP | MailUnavailable:
        """A conversation ready for mail (connected, upgraded, logged in), or why there is none."""
        try:
            connection = self._connect()
        except (smtplib.SMTPException, OSError) as error:
            return MailUnavailable(f"cannot reach {self.host}:{self.port}: {_describe(error)}")
        if self.username is None:
            return connection
        try:
            connection.login(self.username, self.password or "")
        except (smtplib.SMTPException, OSError) as error:
            connection.close()
            return MailUnavailable(f"{self.host}:{self.port} did not accept the login: {_describe(error)}")
        except BaseException:
            connection.close()
            raise
        return connection

    def _connect(self) -> smtplib.SMTP:
        context = self.tls_context or ssl.create_default_context()
        if self.implicit_tls:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        connection = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            connection.ehlo()
            if connection.has_extn("starttls"):
                connection.starttls(context=context)
                connection.ehlo()
            elif self.starttls == "require":
                raise smtplib.SMTPNotSupportedError("the server does not offer STARTTLS, which the URL requires")
        except BaseException:
            connection.close()
            raise
        return connection

    def _deliver(self, connection: smtplib.SMTP, message: EmailMessage) -> MailUnavailable | None:
        """Whether the server took one message. A refusal of this message leaves the conversation open
        for the next (smtplib resets the mail transaction, or refuses a message it cannot send before
        starting one); a broken conversation is raised."""
        try:
            refused = connection.send_message(message)
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError,
                smtplib.SMTPNotSupportedError) as error:
            return MailUnavailable(f"{self.host}:{self.port} did not take the message: {_describe(error)}")
        if refused:
            return MailUnavailable(f"{self.host}:{self.port} did not take the message: "
                                   f"{_describe(smtplib.SMTPRecipientsRefused(refused))}")
        return None


def _quit_quietly(connection: smtplib.SMTP) -> None:
    # Once the server has taken the message, a failed QUIT must not turn the delivery into a failure.
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class MboxMailer(Mailer):
    """Appends messages to an mbox file: the outbox when no SMTP server is configured. Readable with
    any mail client or ``mailbox.mbox``. A handover is one append and one fsync, however many messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The mbox file lock keeps other processes out; this one keeps this process's threads apart.
        self._guard = threading.Lock()
        self._folder_made = False

    def send_all(self, messages: Sequence[EmailMessage]) -> list[MailUnavailable | None]:
        # A message that cannot be written out fails alone; the others are appended at the end under an
        # exclusive lock, as mbox writers do (``mailbox.mbox.add`` would read the whole file first, each time).
        stamp = f"From MAILER-DAEMON {time.asctime(time.gmtime())}\n".encode()
        outcomes: list[MailUnavailable | None] = []
        entries = []
        for message in messages:
            try:
                entries.append(stamp + _flattened(message).rstrip(b"\n") + b"\n")
            except Exception as error:  # the email generator's, on this message alone (it does no I/O)
                outcomes.append(MailUnavailable(f"the message cannot be written: {_describe(error)}"))
            else:
                outcomes.append(None)
        if not entries:
            return outcomes
        with self._guard:
            try:
                if not self._folder_made:  # once (again after a failure): it took ms a message on a loaded disk
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._folder_made = True
                with open(self.path, "ab") as box:
                    fcntl.flock(box, fcntl.LOCK_EX)
                    try:
                        box.write((b"\n" if box.tell() > 0 else b"") + b"\n".join(entries))
                        box.flush()
                        os.fsync(box.fileno())
                    finally:
                        fcntl.flock(box, fcntl.LOCK_UN)
            except OSError as error:
                self._folder_made = False
                unwritable = MailUnavailable(f"cannot append to {self.path}: {_describe(error)}")
                return [outcome or unwritable for outcome in outcomes]
        return outcomes

    def __repr__(self) -> str:
        return f"MboxMailer({str(self.path)!r})"


def _flattened(message: EmailMessage) -> bytes:
    entry = io.BytesIO()
    BytesGenerator(entry, mangle_from_=True, policy=message.policy.clone(linesep="\n")).flatten(message)
    return entry.getvalue()


def mailer_from_settings(smtp_url: str | None, data_dir: Path) -> Mailer:
    """The SMTP server of ``LEDGER_SMTP_URL`` when it is set, else ``outbox.mbox`` in the data dir."""
    if smtp_url:
        return SmtpMailer.from_url(smtp_url)
    return MboxMailer(data_dir / OUTBOX_FILE_NAME)
