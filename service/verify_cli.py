"""`ledger verify`: check the event log's hash chain (projections/verify.py).

Exit codes: 0 intact (or the upgrade done, or nothing to do), 1 a failure found (the first position, stream,
version and reason on one line; with --json the verdict as JSON), 2 bad usage, 3 the store unreadable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.settings import Settings

EPILOG = """\
Anchoring: `ledger verify --head` prints the position and hash of the head of the chain; note it, or publish
it. Later, `ledger verify --anchor POSITION:HASH` checks the whole chain again and that the event at that
position still has that hash: then nothing at or before it has changed since it was noted."""


def register(commands: argparse._SubParsersAction, command: Callable[..., argparse.ArgumentParser]) -> None:
    verify = command(commands, "verify", run,
                     "recompute the event log's hash chain: exit 0 when intact, 1 naming the first event that "
                     "fails and why")
    verify.epilog = EPILOG
    verify.formatter_class = argparse.RawDescriptionHelpFormatter
    verify.add_argument("--from", dest="start", type=int, default=1, metavar="POS",
                        help="start at this position, trusting the chain before it")
    verify.add_argument("--anchor", metavar="POS:HASH", help="also check that the event at POS has hash HASH")
    mode = verify.add_mutually_exclusive_group()
    mode.add_argument("--head", action="store_true", help="only print the position and hash of the chain's head")
    mode.add_argument("--upgrade", action="store_true",
                      help="bring a log written before the chain under it, once (idempotent)")
    verify.add_argument("--json", action="store_true", help="the verdict as JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from projections.verify import RawLog, UpgradeRefused, head, upgrade, verify
    from service.bootstrap import event_store

    if args.start < 1:
        print("ledger: --from must be a position from 1", file=sys.stderr)
        return 2
    anchor = None
    if args.anchor:
        position, _, hashed = args.anchor.partition(":")
        if not position.isdigit() or len(hashed) != 64:
            print(f"ledger: --anchor {args.anchor!r}: expected POSITION:HASH (64 hex digits)", file=sys.stderr)
            return 2
        anchor = (int(position), hashed.lower())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = event_store(settings)
    try:
        raw = RawLog(app.recorder)
        if args.head:
            found = head(raw)
            position, hashed = found if found else (0, "0" * 64)
            print(json.dumps({"position": position, "hash": hashed}) if args.json
                  else f"position {position} head {hashed}")
            return 0
        if args.upgrade:
            try:
                done = upgrade(raw)
            except UpgradeRefused as refused:
                print(f"ledger: upgrade refused: {refused}", file=sys.stderr)
                return 1
            print(json.dumps(vars(done)) if args.json else done.message)
            return 0
        verdict = verify(raw, start=args.start, anchor=anchor)
    finally:
        app.close()
    if args.json:
        print(json.dumps(verdict.as_json()))
    elif verdict.failure is None:
        print(f"intact: {verdict.events} events, head {verdict.head_hash}")
    else:
        print(f"TAMPERED at {verdict.failure.describe()}")
        print(f"checked {verdict.events} events before it; the last good head is position "
              f"{verdict.head_position} {verdict.head_hash}", file=sys.stderr)
    return 0 if verdict.intact else 1
