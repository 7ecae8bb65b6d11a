"""The finance commands: `reconcile` and `export-billing` (docs/finance.md).

Exit codes, so that a scheduled job can tell a finding from a failure: 0 when done (for `reconcile`:
the books match), 1 when `reconcile` found mismatches, 2 for bad usage (an unknown option, a missing one, a
date that does not parse, --from not before --to, an output that cannot be written, a configuration error),
3 when the ledger's store or the payment processor could not be read. A failure is one line on standard
error; `--verbose` adds its trace.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from cli.common import (
    DONE,
    FOUND,
    UNREADABLE,
    DataDir,
    Json,
    Output,
    UsageError,
    add,
    exits,
    fail,
    output,
    print_json,
    settings,
)
from finance.clocks import SAME_CLOCK, ClockMap, SandboxReadings, sandbox_clock_map
from finance.export import export_billing as export
from finance.reconcile import Report, Unreadable, ledger_window, write_csv
from finance.reconcile import reconcile as reconcile_books
from ledger import events
from ledger.errors import DomainError
from projections import billing_documents
from projections.billing_documents import queries
from service.settings import SettingsError

if TYPE_CHECKING:
    from service.bootstrap import Services
    from service.settings import Settings


RECONCILE_EPILOG = """\
How the two sides pair: by identity, not by time. A billing document pairs with the charge whose
PaymentIntent id it recorded, a recorded refund with the processor's refund of the same id. The period
is on the ledger's clock, and a pair belongs to the period of its ledger side. A processor item the
ledger lacks belongs to the period in which the ledger's clock read the instant the processor made it:
with the sandbox clock, which only moves when told and may run days ahead of the processor's clock, the
sandbox's recorded reading at that instant. So a renewal that the sandbox dates next month pairs with
the charge the processor dated today, and the processor is asked for what it made while the sandbox read
the period (an hour beyond it on both sides). Exit codes: 0 the books match, 1 mismatches found, 2 bad
usage, 3 the ledger's store or the payment processor could not be read (--verbose for the trace).
See docs/finance.md."""

From = Annotated[str, typer.Option("--from", metavar="WHEN", show_default=False,
                                   help="start of the period, included: a date (UTC) or an ISO 8601 instant")]
To = Annotated[str, typer.Option("--to", metavar="WHEN", show_default=False,
                                 help="end of the period, excluded: a date (UTC) or an ISO 8601 instant")]
Verbose = Annotated[bool, typer.Option("--verbose", help="on a failure, print its trace too (and the payment "
                                                         "processor's requests)")]


class Format(StrEnum):
    csv = "csv"


def register(app: typer.Typer) -> None:
    add(app, "Finance", reconcile, epilog=RECONCILE_EPILOG)
    add(app, "Finance", export_billing)


def open_services(settings: Settings) -> Services:
    """The running parts the commands read (closed when they end)."""
    from service.bootstrap import bootstrap

    return bootstrap(settings)


@exits
def reconcile(period_from: From, period_to: To, verbose: Verbose = False,
              mismatches_csv: Annotated[Path | None, typer.Option("--csv", metavar="FILE", show_default=False,
                                                                  help="also write every mismatch to this CSV "
                                                                       "file")] = None,
              as_json: Json = False, output_path: Output = None, data_dir: DataDir = None) -> int:
    """compare the ledger's billing documents and refunds of a period with the payment processor's
    charges and refunds; exit 0 when they match, 1 when they do not, 3 when either side cannot be read"""
    start, end = period_of(period_from, period_to)
    try:
        with _quiet_processor(verbose), _services(settings(data_dir)) as services:
            with _reading("the ledger's store"):
                clocks = _clock_map(services)
                entries = queries.between(_caught_up_view(services), *ledger_window(start, end, clocks))
            report = reconcile_books(entries, services.gateway, start, end, clocks)
            processor = services.gateway.name
    except Unreadable as error:
        return _unreadable(error, verbose)
    if mismatches_csv:
        with output(mismatches_csv) as out:
            write_csv(report, out)
    with output(output_path) as out:
        if as_json:
            print_json(_report_json(report, start, end, processor, clocks), out)
        else:
            _write_report(out, report, start, end, processor, clocks)
    return DONE if report.matches else FOUND


def _write_report(out: TextIO, report: Report, start: datetime, end: datetime, processor: str,
                  clocks: ClockMap) -> None:
    print(f"Reconciled {events.iso(start)} to {events.iso(end)} with {processor} payments: "
          f"{report.documents} billing documents and {report.charges} charges, "
          f"{report.ledger_refunds} refunds recorded and {report.processor_refunds} made at the processor.", file=out)
    if isinstance(clocks, SandboxReadings):
        print(f"The ledger's clock is the sandbox's, {_duration(clocks.ahead_by)} the processor's. The processor "
              f"was asked for what it made from {events.iso(report.listed_from)} to {events.iso(report.listed_to)} "
              f"by its clock, while the sandbox read the period (give or take an hour); a charge or refund pairs "
              f"by its id and counts in the period of its ledger side, one the ledger lacks in the period the "
              f"sandbox read when the processor made it.", file=out)
    if report.matches:
        print("The books match.", file=out)
        return
    count = len(report.mismatches)
    print(f"{count} {'mismatch' if count == 1 else 'mismatches'}:", file=out)
    for m in report.mismatches:
        print(f"  {m.at}  {m.kind}  {m.payment_reference or '-'}  {m.refund_reference or '-'}  "
              f"ledger {_cents(m.ledger_cents)}  processor {_cents(m.processor_cents)}  {m.detail}", file=out)


def _report_json(report: Report, start: datetime, end: datetime, processor: str, clocks: ClockMap) -> dict[str, Any]:
    return {"verdict": "match" if report.matches else "mismatches", "matches": report.matches,
            "from": events.iso(start), "to": events.iso(end), "processor": processor,
            "documents": report.documents, "charges": report.charges, "ledger_refunds": report.ledger_refunds,
            "processor_refunds": report.processor_refunds,
            "processor_listed": {"from": events.iso(report.listed_from), "to": events.iso(report.listed_to)},
            "sandbox_ahead_seconds": (clocks.ahead_by.total_seconds() if isinstance(clocks, SandboxReadings)
                                      else None),
            "mismatches": [dataclasses.asdict(m) for m in report.mismatches]}


@exits
def export_billing(period_from: From, period_to: To, verbose: Verbose = False,
                   form: Annotated[Format, typer.Option("--format", help="the file format")] = Format.csv,
                   output_path: Output = None, data_dir: DataDir = None) -> int:
    """export the billing documents and refunds of a period for an accounting system; exit 3 when the
    ledger's store cannot be read"""
    start, end = period_of(period_from, period_to)
    try:
        with _services(settings(data_dir)) as services, _reading("the ledger's store"):
            entries = queries.between(_caught_up_view(services), start, end)
    except Unreadable as error:
        return _unreadable(error, verbose)
    with output(output_path) as out:
        rows = export(entries, out)
    if output_path:
        print(f"{rows} rows written to {output_path}", file=sys.stderr)
    return DONE


def parse_instant(text: str, option: str) -> datetime:
    """A date (midnight UTC) or an ISO 8601 instant; without a time zone it is UTC. Fractions of a second
    round up, as the ledger's instants are whole seconds."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a date or an ISO 8601 instant "
                         f"(for example 2026-01-01 or 2026-01-01T00:00:00Z)") from None
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    try:
        whole = at.astimezone(UTC).replace(microsecond=0)
        return whole + timedelta(seconds=1) if at.microsecond else whole
    except OverflowError:
        raise UsageError(f"{option} {text!r} is out of range") from None


def period_of(period_from: str, period_to: str) -> tuple[datetime, datetime]:
    start, end = parse_instant(period_from, "--from"), parse_instant(period_to, "--to")
    if start >= end:
        raise UsageError(f"--from ({events.iso(start)}) must be before --to ({events.iso(end)})")
    return start, end


def _caught_up_view(services: Services) -> Any:
    """The billing documents view, brought up to the end of the event log first."""
    follower = services.read_side.followers[billing_documents.NAME]
    follower.catch_up()
    return follower.db


def _clock_map(services: Services) -> ClockMap:
    """The simulated processor dates its charges by the ledger's clock; a real one, by its own."""
    if services.settings.clock == "sandbox" and services.settings.payments != "simulated":
        return sandbox_clock_map(services.app)
    return SAME_CLOCK


def _duration(ahead: timedelta) -> str:
    return f"{ahead} ahead of" if ahead >= timedelta(0) else f"{-ahead} behind"


def _unreadable(error: Unreadable, verbose: bool) -> int:
    cause = error.__cause__
    reason = cause.detail if isinstance(cause, DomainError) else f"{type(cause).__name__}: {cause}"
    if verbose:
        traceback.print_exception(error, file=sys.stderr)
    return fail(f"could not read {error.what}: {' '.join(reason.split())}", UNREADABLE)


@contextmanager
def _reading(what: str) -> Iterator[None]:
    """Any failure inside as ``Unreadable(what)``; a configuration error stays one (exit 2)."""
    try:
        yield
    except (SettingsError, Unreadable):
        raise
    except Exception as error:
        raise Unreadable(what) from error


@contextmanager
def _quiet_processor(verbose: bool) -> Iterator[None]:
    """The Stripe SDK logs each request at INFO: on standard error, that would bury the one line of a failure."""
    sdk = logging.getLogger("stripe")
    level = sdk.level
    if not verbose:
        sdk.setLevel(logging.WARNING)
    try:
        yield
    finally:
        sdk.setLevel(level)


def _cents(cents: int | None) -> str:
    return "-" if cents is None else str(cents)


@contextmanager
def _services(config: Settings) -> Iterator[Services]:
    with _reading("the ledger's store"):
        services = open_services(config)
    try:
        yield services
    finally:
        with _reading("the ledger's store"):
            services.close()

