"""The scheduler: the part of the service that the clock drives. It finds what has fallen due in the
due-dates read model and issues the commands that follow (expire, renew, retry a renewal).

Running two schedulers at once is safe: each subscription is locked while it is handled, a renewal
is charged with a processor key derived from the subscription's version, and the event store accepts
only one change per version, so a period is never renewed or charged twice."""

from __future__ import annotations

import functools
import itertools
import logging
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from commands.at_once import each_at_once
from commands.checkpoints import record_checkpoint
from commands.clocks import SANDBOX_CLOCK, SandboxClock
from commands.handlers import SCHEDULER, DueBatch, Ledger
from commands.ports import Clock
from commands.recovery import ChargeRecovery
from ledger.errors import DomainError
from projections.due_dates import due_by
from projections.runner import Follower
from service.renewal_workers import RenewalWorkers

log = logging.getLogger("ledger.scheduler")

SCAN = 500
BATCH = 250
"""Subscriptions handled together: their charge intents saved in one transaction, their outcomes in another."""
BATCHES_AT_ONCE = 2
"""Batches in flight together: while one waits on the processor and on its commits, another computes."""


class NoProgress(RuntimeError):
    """The due dates say something is due that the ledger will not do: a bug to report, not to loop on."""


@dataclass
class Ran:
    changes: int = 0
    failures: int = 0


class Scheduler:
    def __init__(self, ledger: Ledger, due_dates: Follower, clock: Clock, *, batch: int = BATCH,
                 workers: RenewalWorkers | None = None) -> None:
        self.ledger = ledger
        self.batch = batch
        self.due_dates = due_dates
        self.clock = clock
        self.workers = workers
        """Worker processes for a backlog (a full page due at once), if the deployment has them."""
        self._one_run_at_a_time = threading.Lock()

    def run_due(self) -> Ran:
        """Handle everything due by now, period after period for a subscription that is behind."""
        with self._one_run_at_a_time:
            return self._run_due()

    def _run_due(self) -> Ran:
        ran, backlog = Ran(), False
        while True:
            # Each pass goes once through what the view says is due, page after page, without waiting for the
            # view to follow the pass's own renewals; the next pass, with the view caught up, finds what is
            # due again (a subscription behind by several periods) or was left for later.
            self.due_dates.catch_up()
            changes = ran.changes
            pages = self._due_pages(self.clock.now())
            first = next(pages, [])
            pages = itertools.chain([first], pages)
            if self.workers is not None and len(first) == SCAN:  # a backlog: page by page to the worker processes
                backlog = True
                # A page queued for each worker while it renews another, so that none waits for the next.
                failures = self._handle(pages, ran, actor=SCHEDULER, run=self._in_a_worker,
                                        at_most=2 * self.workers.processes)
            else:
                failures = self._handle((part for page in pages for part in self._in_batches(page)), ran,
                                        actor=SCHEDULER)
            for subscription_id, error in failures.items():  # a processor outage, say: the next run retries it
                ran.failures += 1
                log.warning("subscription %s is due but was not handled: %s", subscription_id, error)
            if ran.changes == changes:
                break
        if self.workers is not None and not backlog:
            self.workers.stop()  # the backlog they were started for is done
        return ran

    def _due_pages(self, at: datetime) -> Iterator[list[UUID]]:
        """What is due by ``at``, a page of the view read each time the work on the pages before it is taken."""
        after = None
        while due := due_by(self.due_dates.db, at, SCAN, after):
            after = due[-1]
            # All of these are due now: in shuffled order, two schedulers mostly work on different ones.
            subscription_ids = [subscription_id for subscription_id, _ in due]
            random.shuffle(subscription_ids)
            yield subscription_ids

    def _in_batches(self, subscription_ids: list[UUID]) -> list[list[UUID]]:
        return [subscription_ids[start:start + self.batch] for start in range(0, len(subscription_ids), self.batch)]

    def _in_a_worker(self, page: list[UUID]) -> DueBatch:
        assert self.workers is not None
        return self.workers.run_due(page, actor=SCHEDULER, batch=self.batch, at_most=BATCHES_AT_ONCE)

    def _handle(self, parts: Iterable[list[UUID]], ran: Ran, *, actor: str, at_most: int = BATCHES_AT_ONCE,
                run: Callable[[list[UUID]], DueBatch] | None = None) -> dict[UUID, Exception]:
        """Run what is due for these parts (batches of subscriptions, or pages for the worker processes), a few at
        once (one that another change holds alone, here, once it is free); returns why those not handled were
        not."""
        if run is None:
            run = functools.partial(self.ledger.run_due_batch, actor=actor)
        failures: dict[UUID, Exception] = {}
        for batch in each_at_once(run, parts, at_most=at_most, name="due-batch"):
            ran.changes += len(batch.changed)
            failures.update(batch.failed)
            for subscription_id in batch.busy:
                try:
                    if self.ledger.run_due(subscription_id, actor=actor).position is not None:
                        ran.changes += 1
                except DomainError as error:
                    failures[subscription_id] = error
        return failures

    def advance(self, clock: SandboxClock, target: datetime, *, actor: str) -> Ran:
        """Move the sandbox clock to ``target``, stopping at each instant where something falls due, in
        time order, and handling it there: so a year's advance sees twelve monthly renewals. The moves are
        recorded as ``actor``'s (who asked); what falls due on the way as the sandbox clock's."""
        with self._one_run_at_a_time:
            ran, stalled = Ran(), None
            while True:
                self.due_dates.catch_up()
                due = due_by(self.due_dates.db, target, SCAN)
                if not due:
                    break
                if due[0] == stalled:
                    raise NoProgress(f"subscription {due[0][0]}, due at {due[0][1].isoformat()}, was not "
                                     "changed by the ledger")
                at = max(due[0][1], clock.now())
                clock.set(at, actor=actor)
                changes = ran.changes
                now_due = [subscription_id for subscription_id, due_at in due if due_at <= at]
                failures = self._handle(self._in_batches(now_due), ran, actor=SANDBOX_CLOCK)
                if failures:  # whoever moves the clock is told (a processor outage, say), as before batches
                    raise next(iter(failures.values()))
                # Nothing changed: another scheduler may have done it; if the same is still due next
                # round, with the view caught up, the ledger refuses it: a bug to report, not to loop on.
                stalled = due[0] if ran.changes == changes else None
            clock.set(target, actor=actor)
            return ran


class SchedulerThread(threading.Thread):
    """Runs the scheduler every ``interval``, each time after settling the charges that a crash left open
    (so a renewal never starts while money of an earlier try is unaccounted for)."""

    def __init__(self, scheduler: Scheduler, recovery: ChargeRecovery, *,
                 interval: timedelta = timedelta(seconds=30)) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.scheduler = scheduler
        self.recovery = recovery
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.recovery.run()
            except Exception:
                log.exception("settling open charges failed; it runs again shortly")
            try:
                ran = self.scheduler.run_due()
                if ran.changes:
                    log.info("scheduler: %d renewals and expiries, %d left for later", ran.changes, ran.failures)
            except Exception:
                log.exception("the scheduler failed; it runs again shortly")
            try:
                record_checkpoint(self.scheduler.ledger.app)
            except Exception:
                log.exception("noting a checkpoint of the hash chain failed; it runs again shortly")
            self.stopping.wait(self.interval.total_seconds())

    def stop(self) -> None:
        self.stopping.set()
