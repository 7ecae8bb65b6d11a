"""Worker processes for a backlog of renewals. One process renews about a thousand subscriptions a second, most of
it computing under one interpreter lock (planning, the domain, encoding events and the hash chain), while the
event store takes more. With a backlog, the scheduler hands pages of due subscriptions to these processes; each
renews its page in batches exactly as the scheduler's own threads would (``Ledger.run_due_batch``: intents,
charges, outcomes), under the same locks, so a page lost with a worker is settled by charge recovery like any
crash. The processes live while a backlog does: started for the first page that needs them, stopped by the first
run that does not."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from uuid import UUID

from commands.at_once import each_at_once
from commands.handlers import DueBatch, Ledger
from ledger.errors import DomainError
from service import metrics

log = logging.getLogger("ledger.scheduler")


class WorkerFailure(Exception):
    """What a worker process said went wrong (the error itself stays in that process, which logged it)."""


class RenewalWorkers:
    """``processes`` worker processes, each with the ledger that ``build`` makes there (a top-level function, so
    that it can be sent to a new process)."""

    def __init__(self, build: Callable[[], Ledger], processes: int) -> None:
        self.processes = processes
        self._build = build
        self._pool: ProcessPoolExecutor | None = None
        self._guard = threading.Lock()

    def run_due(self, page: list[UUID], *, actor: str, batch: int, at_most: int) -> DueBatch:
        """``Ledger.run_due_batch`` over ``page`` in a worker process, in batches of ``batch``, ``at_most`` at once
        there; what it did with each subscription (a failure as a ``WorkerFailure``). The worker's counts of
        commands and charges are added to this process's metrics."""
        try:
            done, counts = self._started().submit(_run_page, page, actor, batch, at_most).result()
        except BrokenProcessPool:  # a worker ended (killed, out of memory): start afresh next time
            self.stop()
            raise WorkerFailure("a renewal worker process ended while renewing; its open charges are settled by "
                                "recovery, and the next run starts new workers") from None
        metrics.add_counts(counts)
        return done

    @property
    def started(self) -> bool:
        """Whether worker processes are running (or starting)."""
        return self._pool is not None

    def stop(self) -> None:
        """End the worker processes once the pages they were given are done; the next page starts new ones."""
        with self._guard:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            log.info("renewal worker processes stopped")


    def _started(self) -> ProcessPoolExecutor:
        with self._guard:
            if self._pool is None:
                # Spawned, not forked: a fork would copy this process's threads' locks and its open connections.
                self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_start_worker, initargs=(self._build,))
                log.info("%d renewal worker processes started for a backlog", self.processes)
            return self._pool


_ledger: Ledger | None = None
"""In a worker process: its ledger, made once when the process starts."""


def _start_worker(build: Callable[[], Ledger]) -> None:
    global _ledger
    # Ctrl-C in a terminal reaches the whole process group: the scheduler ends its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _ledger = build()


def _run_page(page: list[UUID], actor: str, batch: int, at_most: int) -> tuple[DueBatch, metrics.Counts]:
    ledger = _ledger
    assert ledger is not None, "the worker's initializer makes the ledger"
    done = DueBatch()
    try:
        parts = [page[start:start + batch] for start in range(0, len(page), batch)]
        for part in each_at_once(lambda ids: ledger.run_due_batch(ids, actor=actor), parts, at_most=at_most,
                                 name="due-batch"):
            done.changed.extend(part.changed)
            done.not_due.extend(part.not_due)
            done.busy.extend(part.busy)
            done.failed.update(part.failed)
    except Exception as error:  # sent back as text: not every error can be rebuilt in another process
        log.exception("a renewal worker failed on a page of %d subscriptions", len(page))
        raise WorkerFailure(f"{type(error).__name__}: {error}") from None
    done.failed = {subscription_id: WorkerFailure(_described(error)) for subscription_id, error in done.failed.items()}
    return done, metrics.counts_to_hand_on()


def _described(error: Exception) -> str:
    return f"{error.code}: {error}" if isinstance(error, DomainError) else f"{type(error).__name__}: {error}"
