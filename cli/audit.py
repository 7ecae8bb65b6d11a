"""The auditor's commands: `replay` (every read model against a replay of the log), `verify` (the log's hash
chain), `export-events` (the log as JSON lines) and `as-of` (a reseller's table as it was at an instant).

Exit codes: 0 done (for `replay` and `verify`: nothing found), 1 differences or a broken chain found (the
verdict says which; with --json as one JSON object), 2 bad usage (an option that does not parse, an instant in
the future, an output that cannot be written), 3 the store unreadable (or a replay whose processes could not
finish).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from cli.common import (
    UNREADABLE,
    DataDir,
    Json,
    Output,
    Progress,
    UsageError,
    add,
    exits,
    fail,
    output,
    print_json,
    settings,
)

if TYPE_CHECKING:
    from projections.replay import Verdict


COLUMNS = ("subscription_id", "customer", "type", "plan", "plan_name", "billing_cycle", "status", "seats",
           "pending_seats", "current_period_start", "current_period_end")
"""The columns of `as-of`'s CSV."""

VERIFY_EPILOG = """\
Anchoring: `ledger verify --head` prints the position and hash of the head of the chain; note it, or publish
it. Later, `ledger verify --anchor POSITION:HASH` checks the whole chain again and that the event at that
position still has that hash: then nothing at or before it has changed since it was noted."""


MAX_REPLAY_PROCESSES = 8
"""A replay's processes each read and decode the whole log for their part of the eight views: more than one a view
is waste, and past a few the reading outweighs what each saves."""
DEFAULT_REPLAY_PROCESSES = min(os.cpu_count() or 1, 4)


class Format(StrEnum):
    csv = "csv"
    json = "json"


def register(app: typer.Typer) -> None:
    add(app, "Audit", replay, export_events)
    add(app, "Audit", verify, epilog=VERIFY_EPILOG)
    add(app, "Audit", as_of)


@exits
def replay(quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar (there is one only when standard "
                                                               "error is a terminal)")] = False,
           processes: Annotated[int, typer.Option(min=1, max=MAX_REPLAY_PROCESSES,
                                                  help="processes to rebuild the views in (default: the machine's "
                                                       "cores, at most four)")] = DEFAULT_REPLAY_PROCESSES,
           as_json: Json = False, output_path: Output = None, data_dir: DataDir = None) -> int:
    """rebuild every read model from the event log into fresh tables and compare them with the live ones;
    exit 1 on any difference"""
    import functools

    import psycopg

    from projections.deployment import ViewLocation
    from projections.replay import PartFailed
    from projections.replay import replay as replay_log
    from service.bootstrap import bootstrap, event_store

    config = settings(data_dir)
    services = bootstrap(config)
    scratch = tempfile.TemporaryDirectory(prefix="replay-", dir=config.data_dir)
    schema = f"replay_{os.getpid()}_{int(time.time())}"
    fresh = (ViewLocation(conninfo=config.database_url, schema=schema) if config.database_url
             else ViewLocation(folder=Path(scratch.name)))
    try:
        head = services.read_side.log.head()
        with Progress(enabled=not quiet) as bars:
            verdicts = replay_log(services.read_side, fresh, progress=bars.show, processes=processes,
                                  open_store=functools.partial(event_store, config))
    except PartFailed as error:
        return fail(f"the replay could not finish, so there is no verdict: {error}", UNREADABLE)
    finally:
        fresh.close()
        if config.database_url:
            with psycopg.connect(config.database_url, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        scratch.cleanup()
        services.close()
    equal = all(v.equal for v in verdicts)
    with output(output_path) as out:
        if as_json:
            print_json(_replay_json(verdicts, head, equal), out)
        else:
            _write_replay(out, verdicts, head, equal)
    return 0 if equal else 1


def _write_replay(out: TextIO, verdicts: list[Verdict], head: int, equal: bool) -> None:
    for verdict in verdicts:
        print(f"{verdict.projection:<20} {verdict.state:<24} {verdict.live_rows} rows at log position "
              f"{verdict.position}", file=out)
        for difference in verdict.differences:
            print(f"    {difference}", file=out)
    print(f"the event log holds {head} events", file=out)
    print("verdict: every read model equals a replay of the event log" if equal
          else "verdict: DIFFERENCES FOUND: the read models do not equal a replay of the event log", file=out)


def _replay_json(verdicts: list[Verdict], head: int, equal: bool) -> dict[str, Any]:
    return {"verdict": "equal" if equal else "differences", "equal": equal, "events": head,
            "read_models": [{"name": v.projection, "equal": v.equal, "state": v.state, "position": v.position,
                             "head": v.head, "live_rows": v.live_rows, "rebuilt_rows": v.rebuilt_rows,
                             "different_rows": v.different_rows, "stopped": v.stopped,
                             "differences": v.differences} for v in verdicts]}


@exits
def export_events(reseller: Annotated[str | None, typer.Option(metavar="ORG", show_default=False,
                                                               help="only this reseller's streams")] = None,
                  subscription: Annotated[str | None, typer.Option(metavar="ID", show_default=False,
                                                                   help="only this subscription's stream")] = None,
                  output_path: Output = None, data_dir: DataDir = None) -> int:
    """write the event log as JSON lines (the format is in docs/event-export.md)"""
    from uuid import UUID

    from projections.export import export_events as export
    from service.bootstrap import bootstrap

    if reseller is not None and subscription is not None:
        raise UsageError("--reseller and --subscription cannot be used together")
    subscription_id = None
    if subscription:
        try:
            subscription_id = UUID(subscription)
        except ValueError:
            raise UsageError(f"--subscription {subscription!r} is not a subscription id") from None
    services = bootstrap(settings(data_dir))
    try:
        with output(output_path) as out:
            count = export(services.read_side.log, out, reseller_org_id=reseller, subscription_id=subscription_id)
    finally:
        services.close()
    print(f"exported {count} events", file=sys.stderr)
    return 0


@exits
def verify(start: Annotated[int, typer.Option("--from", metavar="POS",
                                              help="start at this position, trusting the chain before it")] = 1,
           anchor: Annotated[str | None, typer.Option(metavar="POS:HASH", show_default=False,
                                                      help="also check that the event at POS has hash HASH")] = None,
           head: Annotated[bool, typer.Option("--head", help="only print the position and hash of the chain's "
                                                             "head")] = False,
           upgrade: Annotated[bool, typer.Option("--upgrade", help="bring a log written before the chain under it, "
                                                                   "once (idempotent)")] = False,
           as_json: Json = False, output_path: Output = None, data_dir: DataDir = None) -> int:
    """recompute the event log's hash chain: exit 0 when intact, 1 naming the first event that fails and
    why"""
    from projections.verify import RawLog, UpgradeRefused
    from projections.verify import head as head_of
    from projections.verify import upgrade as upgrade_log
    from projections.verify import verify as verify_log
    from service.bootstrap import event_store

    if head and upgrade:
        raise UsageError("--head and --upgrade cannot be used together")
    if start < 1:
        raise UsageError("--from must be a position from 1")
    anchored = None
    if anchor:
        position, _, hashed = anchor.partition(":")
        if not position.isdigit() or len(hashed) != 64:
            raise UsageError(f"--anchor {anchor!r}: expected POSITION:HASH (64 hex digits)")
        anchored = (int(position), hashed.lower())
    config = settings(data_dir)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    app = event_store(config)
    try:
        raw = RawLog(app.recorder)
        if head:
            found = head_of(raw)
            position, hashed = found if found else (0, "0" * 64)
            with output(output_path) as out:
                print(json.dumps({"position": position, "hash": hashed}) if as_json
                      else f"position {position} head {hashed}", file=out)
            return 0
        if upgrade:
            try:
                done = upgrade_log(raw)
            except UpgradeRefused as refused:
                print(f"ledger: upgrade refused: {refused}", file=sys.stderr)
                return 1
            with output(output_path) as out:
                print(json.dumps(vars(done)) if as_json else done.message, file=out)
            return 0
        verdict = verify_log(raw, start=start, anchor=anchored)
    finally:
        app.close()
    with output(output_path) as out:
        if as_json:
            print_json({"verdict": "intact" if verdict.intact else "tampered"} | verdict.as_json(), out)
        elif verdict.failure is None:
            print(f"intact: {verdict.events} events, head {verdict.head_hash}", file=out)
        else:
            print(f"TAMPERED at {verdict.failure.describe()}", file=out)
    if verdict.failure is not None and not as_json:
        print(f"checked {verdict.events} events before it; the last good head is position "
              f"{verdict.head_position} {verdict.head_hash}", file=sys.stderr)
    return 0 if verdict.intact else 1


@exits
def as_of(instant: Annotated[str, typer.Argument(metavar="INSTANT", show_default=False,
                                                 help="an RFC 3339 instant, such as 2026-11-29T10:00:00Z")],
          reseller: Annotated[str, typer.Option(metavar="ORG", show_default=False, help="the reseller")],
          form: Annotated[Format, typer.Option("--format", help="the file format")] = Format.csv,
          output_path: Output = None, data_dir: DataDir = None) -> int:
    """write a reseller's customer table (and, in JSON, its summary cards) as it was at an instant"""
    from api.as_of import parse_instant
    from ledger import events
    from ledger.errors import ValidationFailed
    from projections import as_of as view
    from projections.as_of import queries
    from service.bootstrap import bootstrap

    services = bootstrap(settings(data_dir))
    try:
        try:
            at = parse_instant(instant, services.clock.now(), "INSTANT")
        except ValidationFailed as error:
            raise UsageError(error.detail) from None
        follower = services.read_side.followers[view.NAME]
        follower.catch_up()  # the view as far as the log goes now (another process may be following it too)
        db = services.read_side.db(view.NAME)
        rows = queries.every_row(db, reseller, at)
        cards = vars(queries.cards(db, reseller, at))
        with output(output_path) as out:
            write_as_of(out, form.value, reseller, events.iso(at), rows, cards)
        return 0
    finally:
        services.close()


def write_as_of(out: TextIO, form: str, reseller: str, at: str, rows: list[dict[str, Any]],
                cards: dict[str, int]) -> None:
    if form == "json":
        json.dump({"reseller": reseller, "as_of": at, "summary": cards, "total": len(rows), "items": rows}, out,
                  indent=2)
        out.write("\n")
        return
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
