"""Prometheus metrics of the service (``GET /metrics``).

Two kinds:

- counted where things happen: HTTP requests (``api.observability``), commands by type and outcome, charges
  by outcome and declines by code. With ``ledger serve --workers N`` the workers are separate processes behind
  one port, so these use prometheus-client's multiprocess mode: ``ledger serve`` points
  ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start, each worker writes its counts
  there, and whichever worker answers a scrape adds them all up. A single process counts in memory.
- read at scrape time from the stores, so every process that answers gives the same figures: the log's head,
  each read model's position, lag behind the head and whether it stopped (as its followers noted), the scheduler's
  due backlog and the depth of each outbox.

Commands and charges are counted in the process that runs them. In the embedded default that is ``ledger serve``
for all of them. In the PostgreSQL layout the renewals, retries and expiries are run, and charged, by ``ledger
scheduler``: with ``LEDGER_SCHEDULER_METRICS_PORT`` set, the process that runs the scheduler serves its own
metrics on that port (``MetricsServer``), its counts and the same figures read from the stores.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ledger.errors import DomainError, PaymentDeclined

if TYPE_CHECKING:
    from service.bootstrap import Services

log = logging.getLogger("ledger.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter("ledger_http_requests_total", "HTTP requests answered, by route template and status",
                        ["method", "route", "status"])
HTTP_DURATION = Histogram("ledger_http_request_duration_seconds",
                          "Time from a request's arrival to the end of its answer, by route template and status",
                          ["method", "route", "status"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
COMMANDS = Counter("ledger_commands_total",
                   "Commands run, by type and outcome (ok, replayed, or the error's problem code)",
                   ["command", "outcome"])
CHARGES = Counter("ledger_charges_total", "Charges asked of the payment processor, by outcome "
                                          "(succeeded, declined, unavailable, error)", ["outcome"])
DECLINES = Counter("ledger_payment_declines_total", "Charges and cards the processor declined, by decline code",
                   ["decline_code"])

COMMAND_METHODS = ("enable_reseller", "disable_reseller", "set_tax_exemption", "set_billing_info",
                   "create_subscription", "change_seats", "cancel", "resume", "run_due", "settle_charge")
"""The Ledger's commands, counted under their method's name."""

OUTBOX_DEPTHS: dict[str, Callable[[Services], int]] = {}
"""Outboxes whose depth (messages not yet delivered) ``ledger_outbox_depth{outbox=...}`` reports, by name: the
invitations and the webhook deliveries (below); another outbox adds its count here."""


# --- counted where it happens ------------------------------------------------------------------------


def instrument_ledger(ledger: Any) -> None:
    """Count every command the Ledger runs, by wrapping its command methods on this instance."""
    for name in COMMAND_METHODS:
        method = getattr(ledger, name, None)
        if method is not None:
            setattr(ledger, name, _counted_command(name, method))
    run_due_batch = ledger.run_due_batch

    @functools.wraps(run_due_batch)
    def counted_batch(*args: Any, **kwargs: Any) -> Any:
        """Each subscription of a batch counts as one ``run_due`` (a busy one counts when it runs alone)."""
        batch = run_due_batch(*args, **kwargs)
        COMMANDS.labels("run_due", "ok").inc(len(batch.changed) + len(batch.not_due))
        for error in batch.failed.values():
            COMMANDS.labels("run_due", error.code if isinstance(error, DomainError) else "error").inc()
        return batch

    ledger.run_due_batch = counted_batch


def _counted_command(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            outcome = method(*args, **kwargs)
        except DomainError as error:
            COMMANDS.labels(name, error.code).inc()
            raise
        except Exception:
            COMMANDS.labels(name, "error").inc()
            raise
        COMMANDS.labels(name, "replayed" if getattr(outcome, "replayed", False) else "ok").inc()
        return outcome

    return counted


def instrument_gateway(gateway: Any) -> None:
    """Count charges by outcome, and declines (of charges and of cards) by code."""
    charge, save_card = gateway.charge, gateway.save_card

    @functools.wraps(charge)
    def counted_charge(*args: Any, **kwargs: Any) -> Any:
        try:
            reference = charge(*args, **kwargs)
        except PaymentDeclined as declined:
            CHARGES.labels("declined").inc()
            DECLINES.labels(declined.decline_code or "unknown").inc()
            raise
        except DomainError as error:  # PaymentUnavailable
            CHARGES.labels("unavailable" if error.code == "payment_unavailable" else error.code).inc()
            raise
        except Exception:
            CHARGES.labels("error").inc()
            raise
        CHARGES.labels("succeeded").inc()
        return reference

    @functools.wraps(save_card)
    def counted_save_card(*args: Any, **kwargs: Any) -> Any:
        try:
            return save_card(*args, **kwargs)
        except PaymentDeclined as declined:
            DECLINES.labels(declined.decline_code or "unknown").inc()
            raise

    gateway.charge = counted_charge
    gateway.save_card = counted_save_card


Counts = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Counter increments by metric name and labels, from one process to another."""

_HANDED_ON: Counts = {}
"""What ``counts_to_hand_on`` has handed on so far, in this process."""


def counts_to_hand_on() -> Counts:
    """In a renewal worker process: its counts of commands and charges since it last handed them on, for the
    scheduler's process to add to its own (``add_counts``). None in multiprocess mode, where each process's counts
    are already summed at scrape time."""
    if os.environ.get(MULTIPROC_ENV):
        return {}
    increments: Counts = {}
    for counter in (COMMANDS, CHARGES, DECLINES):
        for metric in counter.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    key = (metric.name, tuple(sample.labels.items()))
                    increments[key] = sample.value - _HANDED_ON.get(key, 0.0)
                    _HANDED_ON[key] = sample.value
    return {key: value for key, value in increments.items() if value}


def add_counts(counts: Counts) -> None:
    """Add another process's ``counts_to_hand_on`` to this process's counters."""
    counters = {metric.name: counter for counter in (COMMANDS, CHARGES, DECLINES) for metric in counter.collect()}
    for (name, labels), value in counts.items():
        counters[name].labels(**dict(labels)).inc(value)


# --- read at scrape time -----------------------------------------------------------------------------


class ServiceCollector(Collector):
    """The figures read from the stores when Prometheus asks."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterable[Metric]:
        from projections import due_dates

        services = self.services
        read_side = services.read_side
        try:
            head = read_side.log.head()
        except Exception:
            log.exception("metrics: the event log cannot be read")
            up = GaugeMetricFamily("ledger_store_up", "1 when the event store answered this scrape")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily("ledger_store_up", "1 when the event store answered this scrape")
        up.add_metric([], 1)
        yield up
        head_metric = GaugeMetricFamily("ledger_event_log_head", "Position of the last event in the log")
        head_metric.add_metric([], head)
        yield head_metric

        position = GaugeMetricFamily("ledger_read_model_position", "Log position each read model has reached",
                                     labels=["read_model"])
        lag = GaugeMetricFamily("ledger_read_model_lag_events", "Events each read model is behind the log's head",
                                labels=["read_model"])
        stopped = GaugeMetricFamily("ledger_read_model_stopped",
                                    "1 when the read model's follower stopped on an event it cannot handle",
                                    labels=["read_model"])
        halted = read_side.stopped_projections()
        for name, follower in read_side.followers.items():
            try:
                reached = follower.position()
            except Exception:
                log.exception("metrics: the position of %s cannot be read", name)
                continue
            position.add_metric([name], reached)
            lag.add_metric([name], max(0, head - reached))
            stopped.add_metric([name], 1 if name in halted else 0)
        yield position
        yield lag
        yield stopped

        backlog = GaugeMetricFamily("ledger_scheduler_due_backlog",
                                    "Subscriptions whose renewal or expiry is due now and not yet handled")
        try:
            backlog.add_metric([], due_dates.count_due(read_side.db(due_dates.NAME), services.clock.now()))
            yield backlog
        except Exception:
            log.exception("metrics: the due backlog cannot be read")

        depth = GaugeMetricFamily("ledger_outbox_depth", "Messages of each outbox not yet delivered",
                                  labels=["outbox"])
        for name, count in sorted(OUTBOX_DEPTHS.items()):
            try:
                depth.add_metric([name], count(services))
            except Exception:
                log.exception("metrics: the depth of the %s outbox cannot be read", name)
        yield depth


def _invitation_outbox_depth(services: Services) -> int:
    from projections import invitations

    with services.read_side.db(invitations.NAME).snapshot() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM invitation_outbox WHERE {invitations.UNSENT}")
        return int(cursor.fetchone()[0])


def _webhook_outbox_depth(services: Services) -> int:
    """Deliveries to enabled endpoints not yet delivered nor given up (those of a disabled or deleted endpoint
    are never sent, and would otherwise count for ever)."""
    from ledger.webhook_endpoint import ENABLED
    from projections import webhooks

    with services.read_side.db(webhooks.NAME).snapshot() as cursor:
        cursor.execute("SELECT COUNT(*) FROM webhook_deliveries d JOIN webhook_endpoints e "
                       "ON e.endpoint_id = d.endpoint_id WHERE e.state = ? AND d.state IN (?, ?)",
                       (ENABLED, webhooks.PENDING, webhooks.SENDING))
        return int(cursor.fetchone()[0])


OUTBOX_DEPTHS["invitations"] = _invitation_outbox_depth
OUTBOX_DEPTHS["webhooks"] = _webhook_outbox_depth


def registry_of(services: Services) -> CollectorRegistry:
    """Every metric: this process's counts (or all workers', in multiprocess mode) and the figures read from the
    stores at each collection."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)
    else:
        for collector in (HTTP_REQUESTS, HTTP_DURATION, COMMANDS, CHARGES, DECLINES):
            registry.register(collector)
    registry.register(ServiceCollector(services))
    return registry


def exposition(services: Services) -> bytes:
    """The text exposition of every metric, for ``GET /metrics``."""
    return generate_latest(registry_of(services))


class MetricsServer:
    """The metrics over HTTP from a daemon thread, for a process that serves no API (the scheduler's): any path
    answers the exposition."""

    def __init__(self, services: Services, port: int, host: str = "127.0.0.1") -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=registry_of(services))
        self.port = int(self._server.server_port)  # port 0 takes a free one
        log.info("metrics served on http://%s:%d/metrics", host, self.port, extra={"metrics_port": self.port})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def prepare_multiprocess_dir() -> Path:
    """For ``ledger serve --workers N``, before the workers start: an empty directory for their counts (the
    one in PROMETHEUS_MULTIPROC_DIR, emptied, or a new temporary one), named in the environment they inherit."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
    else:
        folder = Path(tempfile.mkdtemp(prefix="ledger-metrics-"))
        os.environ[MULTIPROC_ENV] = str(folder)
    return folder


def remove_multiprocess_dir(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)

