"""The finance commands of the `ledger` CLI: `reconcile` and `export-billing`.

Exit codes: 0 when done (for `reconcile`: the books match), 1 when `reconcile` found mismatches,
2 for bad input (a date that does not parse, or --from not before --to).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from finance.export import export_billing
from finance.reconcile import MARGIN, reconcile, write_csv
from ledger import events
from projections import billing_documents
from projections.billing_documents import queries

if TYPE_CHECKING:
    from service.bootstrap import Services
    from service.settings import Settings

MATCH, MISMATCHES, BAD_INPUT = 0, 1, 2

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
                            "processor's charges and refunds; exit 0 when they match, 1 when they do not")
    _period_arguments(check)
    check.add_argument("--csv", type=Path, metavar="FILE", help="also write every mismatch to this CSV file")
    export = command_factory(subparsers, "export-billing", partial(_export, opener),
                             "export the billing documents and refunds of a period for an accounting system")
    _period_arguments(export)
    export.add_argument("--format", choices=["csv"], default="csv", help="the file format (csv)")
    export.add_argument("--output", type=Path, metavar="FILE", help="where to write it (default: standard output)")


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


def _reconcile(open_services: ServicesFactory, args: argparse.Namespace, settings: Settings) -> int:
    try:
        start, end = period_of(args)
    except BadInput as error:
        return _bad_input(error)
    with _services(open_services, settings) as services:
        entries = queries.between(_caught_up_view(services), start - MARGIN, end + MARGIN)
        report = reconcile(entries, services.gateway, start, end)
        processor = services.gateway.name
    if args.csv:
        try:
            with _output(args.csv) as out:
                write_csv(report, out)
        except OSError as error:
            return _bad_input(BadInput(f"cannot write {args.csv}: {error.strerror}"))
    print(f"Reconciled {events.iso(start)} to {events.iso(end)} with {processor} payments: "
          f"{report.documents} billing documents and {report.charges} charges, "
          f"{report.ledger_refunds} refunds recorded and {report.processor_refunds} made at the processor.")
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
    with _services(open_services, settings) as services:
        entries = queries.between(_caught_up_view(services), start, end)
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


def _bad_input(error: BadInput) -> int:
    print(f"ledger: {error}", file=sys.stderr)
    return BAD_INPUT


def _cents(cents: int | None) -> str:
    return "-" if cents is None else str(cents)


@contextmanager
def _services(open_services: ServicesFactory, settings: Settings) -> Iterator[Services]:
    services = open_services(settings)
    try:
        yield services
    finally:
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
