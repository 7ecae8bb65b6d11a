"""Group commit: concurrent saves share one transaction.

Each save is a commit, and a commit waits for the disk (on PostgreSQL the event store also takes a table
lock per transaction), so commands saving one by one are capped near one per commit latency. Here the first
caller to find no commit in progress records, in one transaction, everything queued until then, and the
callers that queued meanwhile wait for it; then one of those leads the next batch. A lone caller commits at
once, as before. If the batch fails on a conflict (two callers changed the same aggregate version), every
save of the batch is recorded again alone, so each caller is told exactly what it would have been told
without the batching: its own recordings, or its own conflict.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import IntegrityError, Recording

MAX_BATCH_EVENTS = 2000

Record = Callable[[Sequence[Any]], list[Recording[Any]]]


@dataclass
class _Save:
    events: list[Any]
    done: bool = False
    recordings: list[Recording[Any]] = field(default_factory=list)
    error: BaseException | None = None


class GroupCommit:
    def __init__(self, record: Record, *, max_batch_events: int = MAX_BATCH_EVENTS) -> None:
        self._record = record
        self._max_batch_events = max_batch_events
        self._turn = threading.Condition()
        self._queue: list[_Save] = []
        self._leading = False

    def save(self, events: list[Any]) -> list[Recording[Any]]:
        save = _Save(events)
        with self._turn:
            self._queue.append(save)
        while True:
            with self._turn:
                while not save.done and self._leading:
                    self._turn.wait()
                if save.done:
                    return self._answer(save)
                self._leading = True
                batch = self._take_batch()
            try:
                self._commit(batch)
            finally:
                with self._turn:
                    self._leading = False
                    self._turn.notify_all()

    def _take_batch(self) -> list[_Save]:
        batch, size = [], 0
        while self._queue and (not batch or size + len(self._queue[0].events) <= self._max_batch_events):
            save = self._queue.pop(0)
            batch.append(save)
            size += len(save.events)
        return batch

    def _commit(self, batch: list[_Save]) -> None:
        if len(batch) > 1:
            try:
                recordings = self._record([event for save in batch for event in save.events])
            except IntegrityError:
                pass  # someone in the batch lost a race: find out who, by recording each alone
            except BaseException as error:
                for save in batch:
                    save.error, save.done = error, True
                return
            else:
                start = 0
                for save in batch:
                    save.recordings, save.done = recordings[start:start + len(save.events)], True
                    start += len(save.events)
                return
        for save in batch:
            try:
                save.recordings = self._record(save.events)
            except BaseException as error:
                save.error = error
            save.done = True

    @staticmethod
    def _answer(save: _Save) -> list[Recording[Any]]:
        if save.error is not None:
            raise save.error
        return save.recordings
