"""Delivering the webhook outbox over HTTP, outside any command: the ledger never waits for a receiver.

A delivery moves pending → sending → delivered. ``sending`` is committed before the request goes out, so a
crash never loses the fact that a delivery may have happened: a row found still ``sending`` after the grace
period (its sender died mid-delivery) is sent again. Receivers may therefore see an event twice, and
deduplicate by its ``id``. A timeout or an answer other than 2xx is retried with exponential backoff for
``give_up_after`` (3 days) from the first attempt; an endpoint whose deliveries have all failed for
``disable_after`` (3 days) is disabled (an event in the log), and the mail that tells its owner goes out
from this outbox too.

One delivery at a time per endpoint, several endpoints at once (``concurrency`` workers), each request
bounded by a timeout: a slow receiver holds up only itself.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from commands.application import LedgerApplication
from commands.mail import Mailer
from commands.ports import Clock
from commands.webhook_endpoints import Destination, UrlGuard, WebhookSecrets
from ledger import events
from ledger.errors import DomainError
from projections.store import ViewDatabase
from projections.webhooks import (
    DELIVERED,
    DELIVERY_COLUMNS,
    FAILED,
    NOTICE_COLUMNS,
    PENDING,
    SENDING,
    SENT,
    Delivery,
    delivery_from,
)
from projections.webhooks.resources import render

log = logging.getLogger("ledger.webhooks")

SIGNATURE_HEADER = "Ledger-Signature"
USER_AGENT = "reseller-ledger-webhooks/1"
INTERRUPTED = "an earlier attempt was interrupted before its outcome was recorded"
NOTICE_MESSAGE_DOMAIN = "webhooks.reseller-ledger"
_LONGEST_ERROR = 500
_LONGEST_BODY_READ = 4096


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def payload(app: LedgerApplication, delivery: Delivery) -> str:
    """The body of every attempt at this delivery: the event's id, type and time, and the resource as the API
    showed it right after the event."""
    body = {
        "id": delivery.event_id,
        "type": delivery.event_type,
        "created_at": delivery.occurred_at,
        "reseller_id": delivery.reseller_org_id,
        "ledger_event": {"position": delivery.position, "stream_id": delivery.stream_id,
                         "stream_type": delivery.stream_type, "version": delivery.stream_version},
        "data": {"object": render(app, delivery.stream_type, UUID(delivery.stream_id), delivery.stream_version)},
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Answer:
    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def post(destination: Destination, url: str, headers: dict[str, str], body: bytes, timeout: float) -> Answer:
    """POST to the checked address (no redirects followed), within ``timeout`` per network step."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    last_error = "no address"
    for address in destination.addresses:
        connection: http.client.HTTPConnection
        if destination.scheme == "https":
            connection = _PinnedHTTPS(destination.host, destination.port, address, timeout,
                                      ssl.create_default_context())
        else:
            connection = _PinnedHTTP(destination.host, destination.port, address, timeout)
        try:
            connection.request("POST", target, body=body, headers=headers)
            response = connection.getresponse()
            response.read(_LONGEST_BODY_READ)
            return Answer(response.status, None if 200 <= response.status < 300 else f"HTTP {response.status}")
        except (OSError, http.client.HTTPException) as error:
            last_error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            if not isinstance(error, ConnectionRefusedError):
                break  # the request may have reached the receiver: do not send it to another address
        finally:
            connection.close()
    return Answer(None, last_error[:_LONGEST_ERROR])


@dataclass(frozen=True)
class RetryPolicy:
    first_delay: timedelta = timedelta(minutes=1)
    longest_delay: timedelta = timedelta(hours=6)
    give_up_after: timedelta = timedelta(days=3)
    """A delivery still failing this long after its first attempt is abandoned (it can be resent)."""
    disable_after: timedelta = timedelta(days=3)
    """An endpoint whose every delivery failed for this long is disabled and its owner told."""

    def delay_after(self, failed_attempts: int) -> timedelta:
        doublings = min(max(failed_attempts - 1, 0), 32)
        return min(self.first_delay * 2 ** doublings, self.longest_delay)


_DUE = (f"((d.state = '{PENDING}' AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= ?)) "
        f"OR (d.state = '{SENDING}' AND d.next_attempt_at <= ?))")


@dataclass(frozen=True)
class Claimed:
    delivery: Delivery
    url: str
    secret_salt: str
    interrupted: bool


class WebhookSender:
    """Claims due deliveries and sends them. Give it the system clock even when the ledger runs on the
    sandbox clock: backoffs, the grace period and signature times are real time."""

    def __init__(self, db: ViewDatabase, app: LedgerApplication, secrets: WebhookSecrets, guard: UrlGuard,
                 clock: Clock, *, disable: Callable[[UUID, str, datetime], Any], mailer: Mailer | None = None,
                 timeout_seconds: float = 10.0, retry: RetryPolicy = RetryPolicy(),
                 from_address: str = "Lens <no-reply@lens.example>") -> None:
        self.db = db
        self.app = app
        self.secrets = secrets
        self.guard = guard
        self.clock = clock
        self.disable = disable
        self.mailer = mailer
        self.timeout_seconds = timeout_seconds
        self.retry = retry
        self.from_address = from_address
        # Longer than any attempt can take: a row still sending after this was left by a dead sender.
        self.sending_grace = timedelta(seconds=3 * timeout_seconds + 5)

    # --- deliveries ---------------------------------------------------------------------------

    def claim(self, busy_endpoints: frozenset[str] = frozenset()) -> Claimed | None:
        """The next due delivery of an enabled endpoint not busy here, marked ``sending`` and committed."""
        at = self.clock.now()
        now = events.iso(at)
        columns = ", ".join(f"d.{c}" for c in DELIVERY_COLUMNS)
        excluded = (f" AND d.endpoint_id NOT IN ({', '.join('?' * len(busy_endpoints))})" if busy_endpoints else "")
        with self.db.transaction() as cursor:
            while True:
                cursor.execute(f"SELECT {columns}, e.url, e.secret_salt FROM webhook_deliveries d JOIN "
                               f"webhook_endpoints e ON e.endpoint_id = d.endpoint_id WHERE e.state = 'enabled' AND "
                               f"{_DUE}{excluded} ORDER BY d.position LIMIT 1", (now, now, *sorted(busy_endpoints)))
                found = cursor.fetchone()
                if found is None:
                    return None
                found = tuple(found)
                delivery = delivery_from(found[:len(DELIVERY_COLUMNS)])
                interrupted = delivery.state == SENDING
                attempts = delivery.attempts + 1 if interrupted else delivery.attempts
                cursor.execute(
                    "UPDATE webhook_deliveries SET state = ?, attempts = ?, next_attempt_at = ?, "
                    "first_attempt_at = COALESCE(first_attempt_at, ?) "
                    "WHERE delivery_id = ? AND state = ? AND attempts = ?",
                    (SENDING, attempts, events.iso(at + self.sending_grace), now, delivery.delivery_id, delivery.state,
                     delivery.attempts))
                if cursor.rowcount == 1:
                    if interrupted:
                        cursor.execute("INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, "
                                       "status_code, error) VALUES (?, ?, ?, NULL, NULL, ?) ON CONFLICT DO NOTHING",
                                       (delivery.delivery_id, attempts, now, INTERRUPTED))
                    break
        if interrupted:
            log.warning("webhook delivery %s was left sending by an interrupted attempt; sending it again",
                        delivery.delivery_id)
        claimed = replace(delivery, state=SENDING, attempts=attempts, first_attempt_at=delivery.first_attempt_at or now)
        return Claimed(claimed, found[-2], found[-1], interrupted)

    def deliver(self, claimed: Claimed) -> bool:
        delivery = claimed.delivery
        started = self.clock.now()
        clock_started = time.monotonic()
        body_text = delivery.payload
        try:
            if body_text is None:
                body_text = payload(self.app, delivery)
            destination = self.guard.destination(claimed.url)
            body = body_text.encode()
            secret = self.secrets.secret(UUID(delivery.endpoint_id), claimed.secret_salt)
            headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                       SIGNATURE_HEADER: signature(secret, int(self.clock.now().timestamp()), body),
                       "Ledger-Event-Id": delivery.event_id, "Ledger-Delivery-Id": delivery.delivery_id}
            answer = post(destination, claimed.url, headers, body, self.timeout_seconds)
        except DomainError as refused:  # the URL now resolves where webhooks may not go
            answer = Answer(None, refused.detail[:_LONGEST_ERROR])
        except Exception as error:  # noqa: BLE001 - whatever it was, the delivery waits for a retry
            log.exception("webhook delivery %s could not be attempted", delivery.delivery_id)
            answer = Answer(None, f"{type(error).__name__}: {error}"[:_LONGEST_ERROR])
        self._record(claimed, answer, body_text, started, int((time.monotonic() - clock_started) * 1000))
        return answer.ok

    def _record(self, claimed: Claimed, answer: Answer, body_text: str | None, started: datetime,
                duration_ms: int) -> None:
        delivery = claimed.delivery
        attempt = delivery.attempts + 1
        now_at = self.clock.now()
        now = events.iso(now_at)
        disable_since: datetime | None = None
        with self.db.transaction() as cursor:
            cursor.execute("INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, status_code, "
                           "error) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                           (delivery.delivery_id, attempt, events.iso(started), duration_ms, answer.status,
                            answer.error))
            if answer.ok:
                cursor.execute("UPDATE webhook_deliveries SET state = ?, attempts = ?, next_attempt_at = NULL, "
                               "last_status = ?, last_error = NULL, delivered_at = ?, payload = COALESCE(payload, ?) "
                               "WHERE delivery_id = ? AND state = ? AND attempts = ?",
                               (DELIVERED, attempt, answer.status, now, body_text, delivery.delivery_id, SENDING,
                                delivery.attempts))
                cursor.execute("INSERT INTO webhook_endpoint_health (endpoint_id, failing_since, last_success_at, "
                               "disabling) VALUES (?, NULL, ?, 0) ON CONFLICT (endpoint_id) DO UPDATE SET "
                               "failing_since = NULL, last_success_at = excluded.last_success_at",
                               (delivery.endpoint_id, now))
            else:
                first = datetime.fromisoformat((delivery.first_attempt_at or now).replace("Z", "+00:00"))
                give_up = now_at - first >= self.retry.give_up_after
                retry_at = None if give_up else events.iso(now_at + self.retry.delay_after(attempt))
                cursor.execute("UPDATE webhook_deliveries SET state = ?, attempts = ?, next_attempt_at = ?, "
                               "last_status = ?, last_error = ?, payload = COALESCE(payload, ?) "
                               "WHERE delivery_id = ? AND state = ? AND attempts = ?",
                               (FAILED if give_up else PENDING, attempt, retry_at, answer.status, answer.error,
                                body_text, delivery.delivery_id, SENDING, delivery.attempts))
                cursor.execute("INSERT INTO webhook_endpoint_health (endpoint_id, failing_since, last_success_at, "
                               "disabling) VALUES (?, ?, NULL, 0) ON CONFLICT (endpoint_id) DO UPDATE SET "
                               "failing_since = COALESCE(webhook_endpoint_health.failing_since, "
                               "excluded.failing_since)",
                               (delivery.endpoint_id, events.iso(started)))
                cursor.execute("SELECT failing_since FROM webhook_endpoint_health WHERE endpoint_id = ?",
                               (delivery.endpoint_id,))
                since = datetime.fromisoformat(cursor.fetchone()[0].replace("Z", "+00:00"))
                if now_at - since >= self.retry.disable_after:
                    disable_since = since
        if answer.ok:
            log.info("webhook %s (%s) delivered to endpoint %s: HTTP %s", delivery.event_id, delivery.event_type,
                     delivery.endpoint_id, answer.status)
            return
        log.warning("webhook %s (%s) to endpoint %s failed (attempt %d): %s", delivery.event_id, delivery.event_type,
                    delivery.endpoint_id, attempt, answer.error)
        if disable_since is not None:
            self._disable(delivery.endpoint_id, disable_since, answer.error or "failing")

    def _disable(self, endpoint_id: str, since: datetime, last_error: str) -> None:
        reason = (f"every delivery failed for {_span(self.retry.disable_after)} (since {events.iso(since)}); "
                  f"last error: {last_error}")[:_LONGEST_ERROR]
        try:
            self.disable(UUID(endpoint_id), reason, since)
        except DomainError as error:  # already disabled or deleted meanwhile
            log.info("webhook endpoint %s not disabled: %s", endpoint_id, error.detail)
            return
        log.warning("webhook endpoint %s disabled: %s", endpoint_id, reason)

    def send_due(self, limit: int = 50) -> int:
        """Deliver up to ``limit`` due deliveries one after the other (tests and one-shot use); returns how
        many were attempted. ``SenderThread`` delivers several endpoints at once."""
        done = 0
        for _ in range(limit):
            claimed = self.claim()
            if claimed is None:
                break
            self.deliver(claimed)
            done += 1
        self.send_notices()
        return done

    # --- the owners' mail ---------------------------------------------------------------------

    def send_notices(self, limit: int = 10) -> int:
        if self.mailer is None:
            return 0
        sent = 0
        for _ in range(limit):
            row = self._claim_notice()
            if row is None:
                break
            notice = dict(zip(NOTICE_COLUMNS, row, strict=True))
            try:
                self.mailer.send(self._compose(notice))
            except Exception as error:  # noqa: BLE001 - the notice waits for a retry
                attempts = notice["attempts"] + 1
                retry_at = self.clock.now() + self.retry.delay_after(attempts)
                with self.db.transaction() as cursor:
                    cursor.execute("UPDATE webhook_notices SET state = ?, attempts = ?, next_attempt_at = ?, "
                                   "last_error = ? WHERE notice_id = ?",
                                   (PENDING, attempts, events.iso(retry_at), f"{type(error).__name__}: {error}"[:500],
                                    notice["notice_id"]))
                continue
            with self.db.transaction() as cursor:
                cursor.execute("UPDATE webhook_notices SET state = ?, sent_at = ?, next_attempt_at = NULL "
                               "WHERE notice_id = ?", (SENT, events.iso(self.clock.now()), notice["notice_id"]))
            sent += 1
        return sent

    def _claim_notice(self) -> tuple[Any, ...] | None:
        at = self.clock.now()
        now = events.iso(at)
        with self.db.transaction() as cursor:
            cursor.execute(f"SELECT {', '.join(NOTICE_COLUMNS)} FROM webhook_notices WHERE "
                           f"(state = '{PENDING}' AND (next_attempt_at IS NULL OR next_attempt_at <= ?)) OR "
                           f"(state = '{SENDING}' AND next_attempt_at <= ?) ORDER BY position LIMIT 1", (now, now))
            found = cursor.fetchone()
            if found is None:
                return None
            cursor.execute("UPDATE webhook_notices SET state = ?, next_attempt_at = ? WHERE notice_id = ?",
                           (SENDING, events.iso(at + timedelta(minutes=10)), found[0]))
            return tuple(found)

    def _compose(self, notice: dict[str, Any]) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.from_address
        message["To"] = notice["recipient"]
        message["Subject"] = notice["subject"]
        message["Date"] = format_datetime(datetime.strptime(notice["created_at"], "%Y-%m-%dT%H:%M:%SZ")
                                          .replace(tzinfo=UTC))
        message["Message-ID"] = f"<{notice['notice_id']}@{NOTICE_MESSAGE_DOMAIN}>"
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(notice["body"])
        return message


def _span(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours / 24:g} days" if hours >= 24 else f"{hours:g} hours"


class WebhookSenderThread(threading.Thread):
    """Keeps delivering: up to ``concurrency`` endpoints at once, one delivery at a time per endpoint. Nothing
    it meets stops it: a failing outbox database is logged and retried after a pause."""

    def __init__(self, sender: WebhookSender, *, concurrency: int = 8, poll_seconds: float = 1.0,
                 retry_seconds: float = 30.0) -> None:
        super().__init__(name="webhook-sender", daemon=True)
        self.sender = sender
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._busy: dict[str, Future[bool]] = {}
        self._lock = threading.Lock()

    def run(self) -> None:
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook-delivery") as pool:
            while not self.stopping.is_set():
                try:
                    started = self._dispatch(pool)
                    self.sender.send_notices()
                except Exception:
                    log.exception("the webhook outbox cannot be read or updated; retrying in %s s", self.retry_seconds)
                    self.stopping.wait(self.retry_seconds)
                    continue
                if not started:
                    self._wake.wait(self.poll_seconds)
                    self._wake.clear()

    def _dispatch(self, pool: ThreadPoolExecutor) -> int:
        started = 0
        while not self.stopping.is_set():
            with self._lock:
                if len(self._busy) >= self.concurrency:
                    return started
                busy = frozenset(self._busy)
            claimed = self.sender.claim(busy)
            if claimed is None:
                return started
            endpoint = claimed.delivery.endpoint_id
            with self._lock:
                future = pool.submit(self.sender.deliver, claimed)
                self._busy[endpoint] = future
            future.add_done_callback(lambda _, endpoint=endpoint: self._done(endpoint))
            started += 1
        return started

    def _done(self, endpoint: str) -> None:
        with self._lock:
            self._busy.pop(endpoint, None)
        self._wake.set()

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()
