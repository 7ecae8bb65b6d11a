"""LogCheckpoint: the head of the event log's hash chain, noted in the log itself every N positions.

One small aggregate per checkpoint, made by its only event ``LogCheckpointed``; its id follows from its
block number, so two schedulers noting the same checkpoint record it once."""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event


class LogCheckpoint(Aggregate):
    TOPIC = "ledger:LogCheckpoint"

    class Created(Aggregate.Created):
        """LogCheckpointed: its topic names the type; the library calls a creation event class Created."""

        TOPIC = "ledger:LogCheckpoint.LogCheckpointed"
        block: int
        every: int
        position: int
        head_hash: str
        actor: str

    @staticmethod
    def id_for(block: int, every: int) -> UUID:
        return uuid5(NAMESPACE_URL, f"/log-checkpoints/{every}/{block}")

    @classmethod
    def note(cls, *, block: int, every: int, position: int, head_hash: str, at: datetime,
             actor: str) -> LogCheckpoint:
        return cls._create(cls.Created, id=cls.id_for(block, every), timestamp=at, block=block, every=every,
                           position=position, head_hash=head_hash, actor=actor)

    @event(Created)
    def __init__(self, block: int, every: int, position: int, head_hash: str) -> None:
        self.block, self.every, self.position, self.head_hash = block, every, position, head_hash
