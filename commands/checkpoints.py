"""Checkpoints of the hash chain, recorded by the scheduler (never inside a command): when the chain's head
has passed the end of a block of ``every`` positions (``LEDGER_CHECKPOINT_EVERY``, 1000 by default), a
``LogCheckpointed`` event notes the position and hash of the last chained event of that block. Only the
latest completed block is noted on each run (a scheduler that was down does not back-fill the blocks it
missed): each checkpoint is an anchor, and the latest one anchors everything before it."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

from eventsourcing.persistence import IntegrityError

from commands.application import LedgerApplication
from ledger.checkpoint import LogCheckpoint
from projections.verify import RawLog

log = logging.getLogger("ledger.checkpoints")

DEFAULT_EVERY = 1000
ACTOR = "system:scheduler"


def checkpoint_every() -> int:
    value = os.environ.get("LEDGER_CHECKPOINT_EVERY", "").strip()
    return int(value) if value else DEFAULT_EVERY


def record_checkpoint(app: LedgerApplication, *, every: int | None = None,
                      now: datetime | None = None) -> LogCheckpoint | None:
    """Note the latest completed block's head, unless it is noted already. Returns the new checkpoint."""
    every = every or checkpoint_every()
    try:
        raw = RawLog(app.recorder)
    except TypeError:
        return None  # a store without a chain
    with raw.snapshot() as query:
        head = raw.chain_head(query)
        if head is None or head[0] < every:
            return None
        block = head[0] // every
        if app.recorder.select_events(LogCheckpoint.id_for(block, every), limit=1):
            return None
        position, head_hash = raw.chain_head(query, block * every + 1)  # type: ignore[misc]
    at = (now or datetime.now(UTC)).replace(microsecond=0)
    checkpoint = LogCheckpoint.note(block=block, every=every, position=position, head_hash=head_hash, at=at,
                                    actor=ACTOR)
    try:
        app.save(checkpoint)
    except IntegrityError:
        return None  # another scheduler noted it first
    log.info("checkpoint: position %d head %s", position, head_hash)
    return checkpoint
