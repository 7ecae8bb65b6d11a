"""What the benchmarks share: the command line, a deployment on a temporary data dir or a fresh
PostgreSQL schema, bulk population of the event store, percentiles and the table of figures."""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from uuid import uuid4

import psycopg
from eventsourcing.domain import Aggregate

from ledger import events
from ledger.catalog import ORGANIZATION
from ledger.customer_account import CustomerAccount
from ledger.payments import Payment
from ledger.pricing import Bill
from ledger.subscription import Order, Subscription
from service.bootstrap import Services, bootstrap
from service.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("LEDGER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ("sqlite", "postgres")
ORG = "org_bench"
ACTOR = "bench"
SAVE_BATCH = 300
"""Aggregates per ``app.save`` call (one transaction) when populating."""


@dataclass(frozen=True)
class Options:
    backends: list[str]
    quick: bool
    size: int | None
    """The script's main size (subscriptions, documents) when given, instead of its default."""
    flags: frozenset[str] = frozenset()
    """The script's own switches that were given (see ``options``)."""
    numbers: dict[str, int] = field(default_factory=dict)
    """The script's own whole-number options, given or their defaults (see ``options``)."""


def options(description: str, *, flags: Mapping[str, str] | None = None,
            numbers: Mapping[str, tuple[int, str]] | None = None) -> Options:
    """The common options, and the script's own switches (``flags``: name to help) and whole numbers (``numbers``:
    name to default and help)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="small sizes: only checks that the script works")
    parser.add_argument("--size", type=int, help="the script's main size instead of its default (or --quick's)")
    for flag, explained in (flags or {}).items():
        parser.add_argument(f"--{flag}", action="store_true", help=explained)
    for name, (default, explained) in (numbers or {}).items():
        parser.add_argument(f"--{name}", type=int, default=default, help=f"{explained} (default {default})")
    args = parser.parse_args()
    if args.size is not None and args.size < 1:
        parser.error("--size must be at least 1")
    given = frozenset(flag for flag in flags or {} if getattr(args, flag.replace("-", "_")))
    for name in numbers or {}:
        if getattr(args, name.replace("-", "_")) < 0:
            parser.error(f"--{name} cannot be negative")
    return Options(list(BACKENDS) if args.backend == "both" else [args.backend], args.quick, args.size, given,
                   {name: getattr(args, name.replace("-", "_")) for name in numbers or {}})


# --- deployments ----------------------------------------------------------------------------------


@contextmanager
def ledger_env(backend: str, **extra: str) -> Iterator[dict[str, str]]:
    """The LEDGER_* settings of a fresh deployment: a temporary data dir and, on PostgreSQL, a fresh
    schema, dropped afterwards (so whatever uses it must be closed or stopped first)."""
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as data_dir:
        env = {"LEDGER_DATA_DIR": data_dir, "LEDGER_SANDBOX_DATA": "false", "LEDGER_CLOCK": "system",
               "LEDGER_PAYMENTS": "simulated", **extra}
        if backend == "sqlite":
            yield env
            return
        schema = f"bench_{uuid4().hex[:12]}"
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield {**env, "LEDGER_DATABASE_URL": POSTGRES_URL, "LEDGER_DATABASE_SCHEMA": schema}
        finally:
            with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextmanager
def deployment(backend: str, **extra: str) -> Iterator[Services]:
    """The services of a fresh deployment, in this process, with a reseller that has a card on file."""
    with ledger_env(backend, **extra) as env, services_on(env) as services:
        yield services


@contextmanager
def services_on(env: dict[str, str]) -> Iterator[Services]:
    """The services of the deployment that ``env`` (LEDGER_* settings) describes, in this process, with the
    benchmark's reseller enabled and a card on file."""
    services = bootstrap(load_settings(**{key.removeprefix("LEDGER_").lower(): value for key, value in env.items()}))
    try:
        services.ledger.enable_reseller(ORG, name="Bench Reseller", actor=ACTOR)
        services.ledger.set_billing_info(ORG, payment_method="pm_card_visa", billing_email="billing@bench.example",
                                         country="DE", actor=ACTOR)
        yield services
    finally:
        services.close()


# --- bulk population ------------------------------------------------------------------------------


def org_order(i: int) -> Order:
    return Order("pro", "monthly", seats=1, organization_name=f"Customer {i:06d}",
                 admin_email=f"admin{i:06d}@customer.example")


def _paid(bill: Bill) -> Payment:
    return Payment(uuid4(), f"pi_bench_{uuid4().hex}")


def _subscription(services: Services, i: int, at: datetime, tax_rate_bps: int, org: str) -> list[Aggregate]:
    """The i-th subscription of the mix, created at ``at`` (all monthly, so they fall due together):
    one in 5 Plus, the rest Pro or (one in 10) Enterprise with their customer accounts."""
    if i % 5 == 0:
        order = Order("plus", "monthly", end_user_email=f"user{i:06d}@customer.example")
    else:
        order = Order("enterprise" if i % 10 == 1 else "pro", "monthly", seats=1 + i % 25,
                      organization_name=f"Customer {i:06d}", admin_email=f"admin{i:06d}@customer.example")
    plan = services.catalog.plan(order.plan)
    subscription_id = uuid4()
    account_id = uuid4() if plan.kind == ORGANIZATION else None
    subscription = Subscription.create(subscription_id, order, reseller_org_id=org, plan=plan, at=at,
                                       currency=services.catalog.currency, tax_rate_bps=tax_rate_bps,
                                       customer_account_id=account_id, actor=ACTOR, pay=_paid)
    if account_id is None:
        return [subscription]
    assert order.organization_name and order.admin_email
    account = CustomerAccount.open(account_id, reseller_org_id=org, organization_name=order.organization_name,
                                   admin_email=order.admin_email, subscription_id=subscription_id, at=at, actor=ACTOR)
    return [subscription, account]


def populate(services: Services, count: int, *, at: datetime, cancels: bool = True,
             owner: Callable[[int], str] = lambda i: ORG,
             progress: Callable[[int], None] | None = None) -> Counter[str]:
    """Save ``count`` subscriptions straight through the domain, a few hundred aggregates per transaction:
    the i-th for the reseller ``owner(i)`` (an enabled one; by default the benchmark's reseller). One in 5
    organization subscriptions also gets a seat increase and, when ``cancels``, one in 20 subscriptions is
    canceled. ``progress`` is told how many are saved after each transaction. Returns the events saved, by type."""
    tax_rates: dict[str, int] = {}
    saved: Counter[str] = Counter()
    batch: list[Aggregate] = []
    for i in range(count):
        org = owner(i)
        if org not in tax_rates:
            tax_rates[org] = services.ledger.tax_rate_of(services.ledger.enabled_reseller(org))
        subscription, *account = _subscription(services, i, at, tax_rates[org], org)
        assert isinstance(subscription, Subscription)
        if i % 4 == 1 and account:
            subscription.change_seats(subscription.seats + 1, plan=services.catalog.plan(subscription.plan), at=at,
                                      priced_at=at, tax_rate_bps=tax_rates[org], actor=ACTOR, pay=_paid)
        if cancels and i % 20 == 3:
            subscription.cancel(at=at, actor=ACTOR)
        batch += [subscription, *account]
        if len(batch) >= SAVE_BATCH or i == count - 1:
            saved.update(events.type_name(e) for aggregate in batch for e in aggregate.pending_events)
            services.app.save(*batch)
            batch = []
            if progress:
                progress(i + 1)
    return saved


def describe(saved: Counter[str]) -> str:
    return f"{sum(saved.values())} events: " + ", ".join(f"{n} {kind}" for kind, n in saved.most_common())


# --- figures --------------------------------------------------------------------------------------


def percentile(samples: Sequence[float], p: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Figure:
    operation: str
    backend: str
    mode: str
    count: int
    seconds: float
    result: str


def rate(operation: str, backend: str, mode: str, count: int, seconds: float, unit: str = "/s") -> Figure:
    return Figure(operation, backend, mode, count, seconds, f"{count / seconds:,.0f} {unit}")


def latency(operation: str, backend: str, mode: str, samples: Sequence[float]) -> Figure:
    return Figure(operation, backend, mode, len(samples), sum(samples),
                  f"median {statistics.median(samples) * 1000:.2f} ms, p99 {percentile(samples, 99) * 1000:.2f} ms")


def time_each(calls: int, call: Callable[..., object], *args: object) -> list[float]:
    """The seconds of each of ``calls`` calls of ``call(*args)``."""
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        call(*args)
        samples.append(time.perf_counter() - start)
    return samples


_WIDTHS = (36, 9, 30, 9, 10)


def header(title: str) -> None:
    print(title, flush=True)
    names = ("operation", "backend", "mode", "count", "seconds")
    print("".join(f"{n:<{w}}" for n, w in zip(names, _WIDTHS)) + "rate or latency")
    print("-" * (sum(_WIDTHS) + 36), flush=True)


def show(figure: Figure) -> None:
    """One row of the table, printed as soon as it is measured."""
    cells = (figure.operation, figure.backend, figure.mode, str(figure.count), f"{figure.seconds:.2f}")
    print("".join(f"{c:<{w}}" for c, w in zip(cells, _WIDTHS)) + figure.result, flush=True)


def note(text: str) -> None:
    print(f"  # {text}", flush=True)
