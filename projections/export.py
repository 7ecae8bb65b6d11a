"""Writing the event log as JSON lines, in the documented format of docs/event-export.md."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TextIO
from uuid import UUID

from ledger.reseller import Reseller
from projections.log import EventLog, Recorded
from projections.verify import RawLog

PAGE = 1000
# The streams that make up a reseller's history; request bookkeeping and the sandbox clock are not part of it.
RESELLER_STREAMS = frozenset({"Reseller", "Subscription", "CustomerAccount", "Invoice"})


def export_events(log: EventLog, out: TextIO, *, reseller_org_id: str | None = None,
                  subscription_id: UUID | None = None) -> int:
    """Write the log, or one reseller's or one subscription's part of it, oldest first, each event with its
    stored record and hashes (when the store keeps a hash chain). Returns the count."""
    if subscription_id is not None:
        chosen: Iterator[Recorded] = iter(log.history(subscription_id))
    elif reseller_org_id is not None:
        chosen = _of_reseller(log, reseller_org_id)
    else:
        chosen = _all(log)
    try:
        raw: RawLog | None = RawLog(log.app.recorder)
    except TypeError:
        raw = None  # a store without a chain (in memory)
    count = 0
    for page in _pages(chosen):
        stored = _stored(raw, [recorded.position for recorded in page])
        for recorded in page:
            record = recorded.as_record()
            if raw is not None:
                record.update(_hashes(stored.get(recorded.position)))
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
    return count


def _stored(raw: RawLog | None, positions: list[int]) -> dict[int, tuple[Any, ...]]:
    if raw is None or not positions:
        return {}
    with raw.snapshot() as query:
        return raw.stored_with_hashes(query, positions)


def _hashes(stored: tuple[Any, ...] | None) -> dict[str, Any]:
    if stored is None:
        return {"hash": None, "previous_hash": None, "previous_stream_hash": None, "stored": None}
    topic, state, hashed, previous, previous_in_stream = stored
    return {"hash": hashed, "previous_hash": previous, "previous_stream_hash": previous_in_stream,
            "stored": {"topic": topic, "state": state.decode("utf-8")}}


def _pages(recorded: Iterator[Recorded]) -> Iterator[list[Recorded]]:
    page: list[Recorded] = []
    for item in recorded:
        page.append(item)
        if len(page) == PAGE:
            yield page
            page = []
    if page:
        yield page


def _all(log: EventLog) -> Iterator[Recorded]:
    after = 0
    while batch := log.read(after, PAGE):
        yield from batch
        after = batch[-1].position


def _of_reseller(log: EventLog, org_id: str) -> Iterator[Recorded]:
    # A stream's first event names its reseller (or is the reseller), and comes before the rest of it.
    streams = {Reseller.id_for(org_id)}
    for recorded in _all(log):
        if recorded.stream_type not in RESELLER_STREAMS:
            continue
        if recorded.version == 1 and getattr(recorded.event, "reseller_org_id", None) == org_id:
            streams.add(recorded.stream_id)
        if recorded.stream_id in streams:
            yield recorded
