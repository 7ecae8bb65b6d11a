"""`ledger as-of INSTANT --reseller ORG`: the customer table and summary cards of a reseller as the portal
would have shown them at INSTANT, by the times the ledger recorded (the as_of read model).

Exit codes: 0 written, 2 bad usage (an instant that does not parse or is in the future, an output that
cannot be written), 3 the store unreadable.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ledger import events

if TYPE_CHECKING:
    from service.settings import Settings

COLUMNS = ("subscription_id", "customer", "type", "plan", "plan_name", "billing_cycle", "status", "seats",
           "pending_seats", "current_period_start", "current_period_end")


def register(commands: argparse._SubParsersAction, command: Callable[..., argparse.ArgumentParser]) -> None:
    as_of = command(commands, "as-of", run,
                    "write a reseller's customer table (and, in JSON, its summary cards) as it was at an instant")
    as_of.add_argument("instant", metavar="INSTANT", help="an RFC 3339 instant, such as 2026-11-29T10:00:00Z")
    as_of.add_argument("--reseller", required=True, metavar="ORG")
    as_of.add_argument("--format", choices=["csv", "json"], default="csv")
    as_of.add_argument("--output", "-o", type=Path, metavar="FILE", help="where to write it (default: standard output)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from api.as_of import parse_instant
    from ledger.errors import ValidationFailed
    from projections import as_of
    from projections.as_of import queries
    from service.bootstrap import bootstrap

    services = bootstrap(settings)
    try:
        try:
            at = parse_instant(args.instant, services.clock.now(), "INSTANT")
        except ValidationFailed as error:
            print(f"ledger: {error.detail}", file=sys.stderr)
            return 2
        follower = services.read_side.followers[as_of.NAME]
        follower.catch_up()  # the view as far as the log goes now (another process may be following it too)
        db = services.read_side.db(as_of.NAME)
        rows = queries.every_row(db, args.reseller, at)
        cards = vars(queries.cards(db, args.reseller, at))
        try:
            out: TextIO = args.output.open("w", newline="") if args.output else sys.stdout
        except OSError as error:
            print(f"ledger: cannot write {args.output}: {error.strerror}", file=sys.stderr)
            return 2
        try:
            write(out, args.format, args.reseller, events.iso(at), rows, cards)
        finally:
            if args.output:
                out.close()
        return 0
    finally:
        services.close()


def write(out: TextIO, form: str, reseller: str, at: str, rows: list[dict[str, Any]], cards: dict[str, int]) -> None:
    if form == "json":
        json.dump({"reseller": reseller, "as_of": at, "summary": cards, "total": len(rows), "items": rows}, out,
                  indent=2)
        out.write("\n")
        return
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
