"""The composition root: turns Settings into the running parts of the service."""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.resources import files
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from commands.application import LedgerApplication
from commands.clocks import SandboxClock, SystemClock
from commands.gateways.simulated import SimulatedGateway
from commands.handlers import Ledger
from commands.locks import PostgresAdvisoryLocks, ThreadLocks
from commands.mail import Mailer, mailer_from_settings
from commands.ports import Clock, Locks, PaymentGateway
from commands.quotes import QuoteSigner
from commands.recovery import ChargeRecovery
from commands.webhook_endpoints import UrlGuard, WebhookEndpoints, WebhookSecrets
from ledger.catalog import Catalog, CatalogError
from projections import due_dates, invitations, webhooks
from projections.cursors import CursorSigner
from projections.deployment import ReadSide, ViewLocation
from projections.invitations.sender import InvitationSender, SenderThread
from projections.store import create_schema, schema_lock
from projections.webhooks.sender import WebhookSender, WebhookSenderThread
from service import logs, metrics
from service.renewal_workers import RenewalWorkers
from service.scheduler import Scheduler, SchedulerThread
from service.settings import Settings, SettingsError

log = logging.getLogger("ledger.startup")

STORE_WAIT_SECONDS = 60.0


class StoreUnavailable(Exception):
    """The event store did not answer at start-up, however long the process waited for it."""


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    clock: Clock
    app: LedgerApplication
    gateway: PaymentGateway
    ledger: Ledger
    read_side: ReadSide
    scheduler: Scheduler
    invitations: InvitationSender
    cursors: CursorSigner
    development_secret: bytes
    _closers: list[Callable[[], None]] = field(default_factory=list)

    webhooks: WebhookSender | None = None
    webhook_endpoints: WebhookEndpoints | None = None

    _threads: list[SchedulerThread | SenderThread | WebhookSenderThread] = field(default_factory=list)
    metrics_server: metrics.MetricsServer | None = None
    """The scheduler's metrics over HTTP, when ``scheduler_metrics_port`` is set."""
    recovery: ChargeRecovery = field(init=False)

    def __post_init__(self) -> None:
        self.recovery = ChargeRecovery(self.ledger, grace=timedelta(seconds=self.settings.recovery_grace_seconds))

    def settle_open_charges_soon(self) -> None:
        """At the start of a process that charges but runs no scheduler (an API worker on PostgreSQL):
        one pass of charge recovery, in the background so that serving does not wait for the processor."""
        threading.Thread(target=self.recovery.run, name="charge-recovery", daemon=True).start()

    def start_background(self, *, scheduler: bool = True, followers: bool = True, senders: bool = True,
                         news_fd: int | None = None) -> None:
        """Keep the read models following the log (woken by ``news_fd`` too: see ``NewsWaiter``), the scheduler
        running (with its metrics served when ``scheduler_metrics_port`` is set) and the outboxes sending, in
        this process. On PostgreSQL the senders run beside the scheduler, not the read models: composing and
        sending a backlog of mail is seconds of CPU, and in the followers' process it held the interpreter lock
        that each view's next commit waited for."""
        if followers:
            self.read_side.start(poll_seconds=self.settings.projection_poll_seconds, news_fd=news_fd)
        if senders:
            self._threads.append(SenderThread(self.invitations))
            if self.webhooks is not None:
                self._threads.append(WebhookSenderThread(self.webhooks,
                                                         concurrency=self.settings.webhooks_concurrency))
        if scheduler:
            self._threads.append(SchedulerThread(self.scheduler, self.recovery))
            port = self.settings.scheduler_metrics_port
            if port is not None and self.metrics_server is None:
                self.metrics_server = metrics.MetricsServer(self, port, self.settings.scheduler_metrics_host)
        for thread in self._threads:
            if not thread.is_alive():
                thread.start()

    def stop_background(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None
        for thread in self._threads:
            thread.stop()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()
        self.read_side.stop()

    def close(self) -> None:
        self.stop_background()
        while self._closers:
            self._closers.pop()()


def bootstrap(settings: Settings) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = load_catalog(settings.catalog)
    secret = development_secret(settings.data_dir)
    closers: list[Callable[[], None]] = []
    ledger = command_side(settings, catalog, secret, closers)
    app, clock, gateway = ledger.app, ledger.clock, ledger.gateway
    system_clock = SystemClock()
    quote_key = quote_secret(settings, secret)
    read_side = ReadSide(app, view_location(settings), batch_size=settings.projection_batch_size)
    closers.append(read_side.close)
    cursors = CursorSigner(hmac.new(quote_key, b"ledger cursors", hashlib.sha256).digest())
    workers = None
    if settings.scheduler_processes:
        workers = RenewalWorkers(functools.partial(renewal_worker_ledger, settings), settings.scheduler_processes)
        closers.append(workers.stop)
    scheduler = Scheduler(ledger, read_side.followers[due_dates.NAME], clock, workers=workers)
    # Mail retries follow real time, even when the ledger's clock is the sandbox's.
    sender = InvitationSender(read_side.db(invitations.NAME), mailer(settings), system_clock,
                              from_address=settings.mail_from)
    guard = UrlGuard(allow_private=settings.webhooks_allow_private)
    endpoints = WebhookEndpoints(
        ledger, WebhookSecrets(hmac.new(quote_key, b"ledger webhook secrets", hashlib.sha256).digest()), guard)
    # Like mail, webhook retries and signature times follow real time.
    webhook_sender = WebhookSender(
        read_side.db(webhooks.NAME), app, endpoints.secrets, guard, system_clock,
        disable=lambda endpoint_id, reason, since: endpoints.disable(endpoint_id, reason=reason, failing_since=since),
        mailer=mailer(settings), timeout_seconds=settings.webhooks_timeout_seconds, from_address=settings.mail_from)
    return Services(settings, catalog, clock, app, gateway, ledger, read_side, scheduler, sender, cursors, secret,
                    closers, webhooks=webhook_sender, webhook_endpoints=endpoints)


def command_side(settings: Settings, catalog: Catalog, secret: bytes, closers: list[Callable[[], None]]) -> Ledger:
    """The ledger's command handling over its event store, clock, processor and locks (counted in the metrics),
    their closers added to ``closers``: what every process of a deployment that runs commands builds."""
    app = event_store(settings)
    closers.append(app.close)
    clock: Clock = SandboxClock(app, SystemClock().now) if settings.clock == "sandbox" else SystemClock()
    gateway = payment_gateway(settings, clock)
    metrics.instrument_gateway(gateway)
    closers.append(gateway.close)  # type: ignore[attr-defined]
    locks: Locks
    if settings.database_url:
        advisory = PostgresAdvisoryLocks(settings.database_url)
        closers.append(advisory.close)
        locks = advisory
    else:
        locks = ThreadLocks()
    quotes = QuoteSigner(hmac.new(quote_secret(settings, secret), b"ledger quotes", hashlib.sha256).digest())
    ledger = Ledger(app, catalog=catalog, clock=clock, gateway=gateway, locks=locks, quotes=quotes)
    metrics.instrument_ledger(ledger)
    return ledger


def renewal_worker_ledger(settings: Settings) -> Ledger:
    """The ledger of a renewal worker process (``RenewalWorkers``), which logs as the scheduler does. Its connections
    end with the process: the scheduler ends it once the backlog is done."""
    logs.configure(settings.log_format)
    return command_side(settings, load_catalog(settings.catalog), development_secret(settings.data_dir), [])


def quote_secret(settings: Settings, development: bytes) -> bytes:
    """The key that quotes, cursors and webhook secrets are derived from."""
    return settings.quote_secret.get_secret_value().encode() if settings.quote_secret else development


def mailer(settings: Settings) -> Mailer:
    try:
        return mailer_from_settings(settings.smtp_url, settings.data_dir)
    except ValueError as error:
        raise SettingsError(f"LEDGER_SMTP_URL: {error}") from None


def view_location(settings: Settings) -> ViewLocation:
    if settings.database_url:
        return ViewLocation(conninfo=settings.database_url, schema=settings.database_schema)
    return ViewLocation(folder=settings.data_dir / "views")


def load_catalog(path: Path | None) -> Catalog:
    try:
        text = path.read_text() if path else files("ledger").joinpath("catalog.toml").read_text()
        return Catalog.from_toml(text)
    except OSError as error:
        raise SettingsError(f"LEDGER_CATALOG: cannot read {path}: {error.strerror}") from None
    except CatalogError as error:
        raise SettingsError(f"LEDGER_CATALOG: {path or 'built-in catalog'}: {error}") from None


def event_store(settings: Settings) -> LedgerApplication:
    """The event-sourced application over its store. On PostgreSQL, the process first waits for the server,
    then makes the library's tables itself, under the schema lock, so that processes starting together
    do not collide in the catalog (its own creation is switched off in ``event_store_env``)."""
    if not settings.database_url:
        return LedgerApplication(env=event_store_env(settings))
    wait_for_postgres(settings.database_url, timeout=STORE_WAIT_SECONDS)
    app = LedgerApplication(env=event_store_env(settings))
    try:
        with schema_lock(settings.database_url, settings.database_schema) as connection:
            create_schema(connection, settings.database_schema)
            app.recorder.create_table()
            if app.snapshots is not None:  # IS_SNAPSHOTTING_ENABLED in the environment
                app.snapshots.recorder.create_table()  # type: ignore[attr-defined]
    except BaseException:
        app.close()
        raise
    return app


def wait_for_postgres(conninfo: str, *, timeout: float) -> None:
    """Retry with backoff until PostgreSQL accepts a connection: processes may start before their database."""
    parts = conninfo_to_dict(conninfo)
    where = f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}"
    deadline, pause = time.monotonic() + timeout, 0.25
    while True:
        try:
            with psycopg.connect(conninfo, connect_timeout=5):
                return
        except psycopg.OperationalError as error:
            reason = " ".join(str(error).split())
        if time.monotonic() + pause > deadline:
            raise StoreUnavailable(f"PostgreSQL at {where} did not answer within {timeout:g} s: {reason}")
        log.warning("waiting for PostgreSQL at %s: %s", where, reason)
        time.sleep(pause)
        pause = min(pause * 2, 5.0)


def event_store_env(settings: Settings) -> dict[str, str]:
    if not settings.database_url:
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(settings.data_dir / "ledger.sqlite")}
    parts = conninfo_to_dict(settings.database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(parts.get("dbname", "postgres")),
        "POSTGRES_HOST": str(parts.get("host", "127.0.0.1")),
        "POSTGRES_PORT": str(parts.get("port", "5432")),
        "POSTGRES_USER": str(parts.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(parts.get("password", "")),
        "POSTGRES_SCHEMA": settings.database_schema,
        "POSTGRES_POOL_SIZE": "4",
        "POSTGRES_MAX_OVERFLOW": "8",
        "CREATE_TABLE": "n",
    }


def payment_gateway(settings: Settings, clock: Clock) -> PaymentGateway:
    if settings.payments == "stripe":
        from commands.gateways.stripe import StripeGateway

        assert settings.stripe_secret_key is not None
        return StripeGateway.from_settings(settings.stripe_secret_key.get_secret_value(),
                                           api_base=settings.stripe_api_base)
    return SimulatedGateway(settings.data_dir / "simulated-payments.sqlite", clock)


def development_secret(data_dir: Path) -> bytes:
    """A random secret made once into the data dir: signs development tokens when no JWT key is
    configured, and quotes and cursors when no quote secret is. Several processes may start at once:
    the secret is written aside and published with a hard link, so nobody reads it half-written."""
    path = data_dir / "secret"
    if not path.exists():
        draft = data_dir / f".secret-{os.getpid()}-{secrets.token_hex(4)}"
        draft.write_text(secrets.token_hex(32))
        draft.chmod(0o600)
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process published its secret first: that one is the secret
        finally:
            draft.unlink()
    return path.read_bytes().strip()
