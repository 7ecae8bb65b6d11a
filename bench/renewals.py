"""Renewals per second when every subscription of a store falls due at once: the scheduler's
`run_due` charging the simulated gateway (or, with --localstripe, the Stripe adapter against localstripe on
loopback), on a sandbox clock moved to the common period end.

    python bench/renewals.py [--backend sqlite|postgres|both] [--quick] [--size SUBSCRIPTIONS]
                             [--localstripe [--far-stripe]] [--processes N]

With --processes N (PostgreSQL), the scheduler hands the backlog to N renewal worker processes
(LEDGER_SCHEDULER_PROCESSES); their start is part of the time measured, and the CPU figure is then the scheduler's
process's alone.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the project, not bench/ (bench/commands.py would shadow it)

from bench import common
from commands.clocks import SandboxClock
from ledger.periods import period
from service.bootstrap import Services
from tests import localstripe_server

SUBSCRIPTIONS, QUICK_SUBSCRIPTIONS = 100_000, 2_000
READ_BATCH = 5_000
FAR_STRIPE = 0.1
"""Seconds added to each localstripe answer with --far-stripe: an internet round trip and a remote processor's
own work (a real charge's takes longer)."""


def renewed_since(services: Services, position: int) -> int:
    """How many Renewed events the log holds after ``position``."""
    renewed = 0
    while batch := services.read_side.log.read(position, READ_BATCH):
        renewed += sum(recorded.type == "Renewed" for recorded in batch)
        position = batch[-1].position
    return renewed


@contextmanager
def processor(localstripe: bool, latency: float) -> Iterator[dict[str, str]]:
    """The deployment's settings for its payment processor: the simulated one, or localstripe started here
    (answering each request ``latency`` seconds later)."""
    if not localstripe:
        yield {}
        return
    server = localstripe_server.start(latency_seconds=latency)
    try:
        yield {"LEDGER_PAYMENTS": "stripe", "LEDGER_STRIPE_SECRET_KEY": "sk_test_bench",
               "LEDGER_STRIPE_API_BASE": server.url}
    finally:
        server.stop()


def renewals(backend: str, subscriptions: int, localstripe: bool, latency: float, processes: int) -> None:
    mode = "scheduler.run_due, simulated"
    if localstripe:
        mode = f"run_due, localstripe +{latency * 1000:.0f} ms" if latency else "run_due, SDK -> localstripe"
    settings = {}
    if processes and backend == "postgres":
        mode = f"run_due, {processes} worker processes"
        settings["LEDGER_SCHEDULER_PROCESSES"] = str(processes)
    with (processor(localstripe, latency) as processor_settings,
          common.deployment(backend, LEDGER_CLOCK="sandbox", **settings, **processor_settings) as services):
        clock = services.clock
        assert isinstance(clock, SandboxClock)
        created_at = clock.now()
        start = time.perf_counter()
        saved = common.populate(services, subscriptions, at=created_at, cancels=False)
        common.show(common.rate("populate (bulk save)", backend, f"{common.SAVE_BATCH} aggregates/tx",
                                sum(saved.values()), time.perf_counter() - start, "events/s"))
        common.note(common.describe(saved))
        start = time.perf_counter()
        services.read_side.catch_up()
        common.show(common.rate("catch up every projection", backend, "before the clock moves",
                                services.read_side.log.head(), time.perf_counter() - start, "events/s"))
        clock.set(period(created_at, "monthly", 0)[1], actor=common.ACTOR)
        before = services.read_side.log.head()
        start, cpu = time.perf_counter(), time.process_time()
        ran = services.scheduler.run_due()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        renewed = renewed_since(services, before)
        common.show(common.rate("renewal", backend, mode, renewed, seconds))
        common.note(f"{renewed} Renewed events for {subscriptions} subscriptions due "
                    f"(the scheduler counted {ran.changes} changes, {ran.failures} failures); "
                    f"this process's CPU: {1000 * cpu / max(renewed, 1):.2f} ms a renewal"
                    f"{' (the workers not counted)' if 'LEDGER_SCHEDULER_PROCESSES' in settings else ''}")
        if renewed != subscriptions:
            raise SystemExit(f"{backend}: {renewed} renewals for {subscriptions} subscriptions due")


def main() -> int:
    options = common.options(__doc__ or "", flags={
        "localstripe": "charge through the Stripe adapter against localstripe (slow: use a --size of a few hundred)",
        "far-stripe": f"with --localstripe, each request answered {FAR_STRIPE * 1000:.0f} ms later, for a round trip "
                      "to a remote processor"},
        numbers={"processes": (0, "renewal worker processes on PostgreSQL (LEDGER_SCHEDULER_PROCESSES)")})
    subscriptions = options.size or (QUICK_SUBSCRIPTIONS if options.quick else SUBSCRIPTIONS)
    common.header(f"renewals of {subscriptions} subscriptions due at once{' (quick sizes)' if options.quick else ''}")
    for backend in options.backends:
        renewals(backend, subscriptions, "localstripe" in options.flags,
                 FAR_STRIPE if "far-stripe" in options.flags else 0.0, options.numbers["processes"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
