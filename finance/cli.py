"""The finance commands of the `ledger` CLI: `reconcile` and `export-billing`.

Exit codes, so that a scheduled job can tell a finding from a failure: 0 when done (for `reconcile`:
the books match), 1 when `reconcile` found mismatches, 2 for bad usage (an unknown option, a date that
does not parse, --from not before --to, an output that cannot be written; argparse and configuration
errors exit 2 too), 3 when the ledger's store or the payment processor could not be read. A failure is
one line on standard error; `--verbose` adds its trace.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from finance.clocks import SAME_CLOCK, ClockMap, SandboxReadings, sandbox_clock_map
from finance.export import export_billing
from finance.reconcile import Report, Unreadable, ledger_window, reconcile, write_csv
from ledger import events
from ledger.errors import DomainError
from projections import billing_documents
from projections.billing_documents import queries
from service.settings import SettingsError

if TYPE_CHECKING:
    from service.bootstrap import Services
    from service.settings import Settings

MATCH, MISMATCHES, BAD_INPUT, UNREADABLE = 0, 1, 2, 3

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

Run = Callable[[argparse.Namespace, "Settings"], int]
CommandFactory = Callable[[Any, str, Run, str], argparse.ArgumentParser]
"""How `service/cli.py` declares a command: ``_command(subparsers, name, run, help_text)``."""
ServicesFactory = Callable[["Settings"], "Services"]


class BadInput(Exception):
    """An argument the command cannot use: exit 2, with the message and no traceback."""


def register(subparsers: Any, command_factory: CommandFactory,
             open_services: ServicesFactory | None = None) -> None:
    """Add `reconcile` and `export-billing`. ``open_services`` builds the running parts from the settings
    (by default ``service.bootstrap.bootstrap``); they are closed when the command ends."""
    opener = open_services or _bootstrap
    check = command_factory(subparsers, "reconcile", partial(_reconcile, opener),
                            "compare the ledger's billing documents and refunds of a period with the payment "
                            "processor's charges and refunds; exit 0 when they match, 1 when they do not, "
                            "3 when either side cannot be read")
    check.epilog = RECONCILE_EPILOG
    _period_arguments(check)
    check.add_argument("--csv", type=Path, metavar="FILE", help="also write every mismatch to this CSV file")
    export = command_factory(subparsers, "export-billing", partial(_export, opener),
                             "export the billing documents and refunds of a period for an accounting system; "
                             "exit 3 when the ledger's store cannot be read")
    _period_arguments(export)
    export.add_argument("--format", choices=["csv"], default="csv", help="the file format (csv)")
    export.add_argument("--output", "-o", type=Path, metavar="FILE",
                        help="where to write it (default: standard output)")


def parse_instant(text: str, option: str) -> datetime:
    """A date (midnight UTC) or an ISO 8601 instant; without a time zone it is UTC. Fractions of a second
    round up, as the ledger's instants are whole seconds."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadInput(f"{option} {text!r} is not a date or an ISO 8601 instant "
                       f"(for example 2026-01-01 or 2026-01-01T00:00:00Z)") from None
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    try:
        whole = at.astimezone(UTC).replace(microsecond=0)
        return whole + timedelta(seconds=1) if at.microsecond else whole
    except OverflowError:
        raise BadInput(f"{option} {text!r} is out of range") from None


def period_of(args: argparse.Namespace) -> tuple[datetime, datetime]:
    start, end = parse_instant(args.period_from, "--from"), parse_instant(args.period_to, "--to")
    if start >= end:
        raise BadInput(f"--from ({events.iso(start)}) must be before --to ({events.iso(end)})")
    return start, end


def _period_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--from", dest="period_from", required=True, metavar="WHEN",
                         help="start of the period, included: a date (UTC) or an ISO 8601 instant")
    command.add_argument("--to", dest="period_to", required=True, metavar="WHEN",
                         help="end of the period, excluded: a date (UTC) or an ISO 8601 instant")
    command.add_argument("--verbose", action="store_true",
                         help="on a failure, print its trace too (and the payment processor's requests)")


def _reconcile(open_services: ServicesFactory, args: argparse.Namespace, settings: Settings) -> int:
    try:
        start, end = period_of(args)
    except BadInput as error:
        return _bad_input(error)
    try:
        with _quiet_processor(args.verbose), _services(open_services, settings) as services:
            with _reading("the ledger's store"):
                clocks = _clock_map(services)
                entries = queries.between(_caught_up_view(services), *ledger_window(start, end, clocks))
            report = reconcile(entries, services.gateway, start, end, clocks)
            processor = services.gateway.name
    except Unreadable as error:
        return _unreadable(error, args.verbose)
    if args.csv:
        try:
            with _output(args.csv) as out:
                write_csv(report, out)
        except OSError as error:
            return _bad_input(BadInput(f"cannot write {args.csv}: {error.strerror}"))
    print(f"Reconciled {events.iso(start)} to {events.iso(end)} with {processor} payments: "
          f"{report.documents} billing documents and {report.charges} charges, "
          f"{report.ledger_refunds} refunds recorded and {report.processor_refunds} made at the processor.")
    if isinstance(clocks, SandboxReadings):
        _explain_sandbox_pairing(clocks, report)
    if report.matches:
        print("The books match.")
        return MATCH
    count = len(report.mismatches)
    print(f"{count} {'mismatch' if count == 1 else 'mismatches'}:")
    for m in report.mismatches:
        print(f"  {m.at}  {m.kind}  {m.payment_reference or '-'}  {m.refund_reference or '-'}  "
              f"ledger {_cents(m.ledger_cents)}  processor {_cents(m.processor_cents)}  {m.detail}")
    return MISMATCHES


def _export(open_services: ServicesFactory, args: argparse.Namespace, settings: Settings) -> int:
    try:
        start, end = period_of(args)
    except BadInput as error:
        return _bad_input(error)
    try:
        with _services(open_services, settings) as services, _reading("the ledger's store"):
            entries = queries.between(_caught_up_view(services), start, end)
    except Unreadable as error:
        return _unreadable(error, args.verbose)
    try:
        with _output(args.output) as out:
            rows = export_billing(entries, out)
    except OSError as error:
        return _bad_input(BadInput(f"cannot write {args.output}: {error.strerror}"))
    if args.output:
        print(f"{rows} rows written to {args.output}", file=sys.stderr)
    return MATCH


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


def _explain_sandbox_pairing(clocks: SandboxReadings, report: Report) -> None:
    print(f"The ledger's clock is the sandbox's, {_duration(clocks.ahead_by)} the processor's. The processor "
          f"was asked for what it made from {events.iso(report.listed_from)} to {events.iso(report.listed_to)} "
          f"by its clock, while the sandbox read the period (give or take an hour); a charge or refund pairs by "
          f"its id and counts in the period of its ledger side, one the ledger lacks in the period the sandbox "
          f"read when the processor made it.")


def _duration(ahead: timedelta) -> str:
    return f"{ahead} ahead of" if ahead >= timedelta(0) else f"{-ahead} behind"


def _bad_input(error: BadInput) -> int:
    print(f"ledger: {error}", file=sys.stderr)
    return BAD_INPUT


def _unreadable(error: Unreadable, verbose: bool) -> int:
    cause = error.__cause__
    reason = cause.detail if isinstance(cause, DomainError) else f"{type(cause).__name__}: {cause}"
    if verbose:
        traceback.print_exception(error, file=sys.stderr)
    print(f"ledger: could not read {error.what}: {' '.join(reason.split())}", file=sys.stderr)
    return UNREADABLE


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
def _services(open_services: ServicesFactory, settings: Settings) -> Iterator[Services]:
    with _reading("the ledger's store"):
        services = open_services(settings)
    try:
        yield services
    finally:
        with _reading("the ledger's store"):
            services.close()


@contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with path.open("w", newline="", encoding="utf-8") as file:
        yield file


def _bootstrap(settings: Settings) -> Services:
    from service.bootstrap import bootstrap

    return bootstrap(settings)
