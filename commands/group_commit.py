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
from typing import Any, Generic, Protocol, TypeVar

from eventsourcing.persistence import IntegrityError, Recording

MAX_BATCH_EVENTS = 2000

Record = Callable[[Sequence[Any]], list[Recording[Any]]]


class Job(Protocol):
    done: bool


J = TypeVar("J", bound=Job)


class Turns(Generic[J]):
    """Callers queue jobs; the first to find no batch running leads: it takes a batch from the queue (``take``,
    by default everything queued) and runs it (``run``, which marks each job done), while the others wait; then it
    wakes the callers whose jobs it ran and hands the lead to the caller of the first job still queued. A lone
    caller runs its job at once. Each waiting caller is woken once, for its result or for its turn to lead: waking
    every waiter at every batch (one condition for all) cost each of them a wake-up and the interpreter lock, per
    batch, and showed in profiles of renewals charging many at once."""

    def __init__(self, run: Callable[[list[J]], None],
                 take: Callable[[list[J]], list[J]] | None = None) -> None:
        self._run, self._take = run, take
        self._guard = threading.Lock()
        self._queue: list[J] = []
        self._wakes: dict[int, threading.Lock] = {}
        """For each queued job (by id), a lock held until its caller is to wake."""
        self._leading = False

    def submit(self, job: J) -> None:
        """Returns once ``job`` is done."""
        wake = threading.Lock()
        wake.acquire()
        with self._guard:
            self._queue.append(job)
            self._wakes[id(job)] = wake
            leads, self._leading = not self._leading, True
        if not leads:
            wake.acquire()  # released once the job is done, or once it is first in the queue and its turn to lead
            if job.done:
                return
        with self._guard:  # the job is first in the queue: the batch taken holds it
            if self._take is None:
                batch, self._queue = self._queue, []
            else:
                batch = self._take(self._queue)
            ran = [self._wakes.pop(id(taken)) for taken in batch]
        try:
            self._run(batch)
        finally:
            with self._guard:
                next_leader = self._wakes[id(self._queue[0])] if self._queue else None
                self._leading = next_leader is not None
            for woken in ran:
                if woken is not wake:
                    woken.release()
            if next_leader is not None:
                next_leader.release()

    def queued(self) -> int:
        with self._guard:
            return len(self._queue)


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
        self._turns: Turns[_Save] = Turns(self._commit, self._take_batch)

    def save(self, events: list[Any]) -> list[Recording[Any]]:
        save = _Save(events)
        self._turns.submit(save)
        if save.error is not None:
            raise save.error
        return save.recordings

    def queued(self) -> int:
        """How many saves wait for their turn."""
        return self._turns.queued()

    def _take_batch(self, queue: list[_Save]) -> list[_Save]:
        batch, size = [], 0
        while queue and (not batch or size + len(queue[0].events) <= self._max_batch_events):
            save = queue.pop(0)
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
