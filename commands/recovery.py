"""Recovery of money left in flight: charge intents whose command died before recording an outcome.

A process that charges runs this at start-up and then now and then. It follows the log's Charge events
(only those: the read is filtered by topic) to know which attempts are open, and settles each one that has
been open longer than a grace period: long enough that no live command still works on it, nor a request of a
dead one is still in flight at the processor. Settling asks the processor with the attempt's own key, so it
never guesses; it holds the charge's lock and reloads under it, so two processes may run it at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from uuid import UUID

from commands.errors import PaymentUnavailable
from commands.handlers import Ledger
from ledger.charge import Charge

log = logging.getLogger("ledger.recovery")

READ_BATCH = 1000
OPENED = Charge.ChargeIntended.TOPIC
ENDED = frozenset(cls.TOPIC for cls in (Charge.ChargeCompleted, Charge.ChargeAttemptDeclined, Charge.ChargeReversed,
                                        Charge.ChargeAbandoned))


@dataclass
class Settled:
    reversed: int = 0
    abandoned: int = 0
    left_open: list[UUID] = field(default_factory=list)


class ChargeRecovery:
    def __init__(self, ledger: Ledger, *, grace: timedelta = timedelta(seconds=60),
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._ledger = ledger
        self._grace = grace
        self._monotonic = monotonic
        self._position = 0
        self._open: dict[UUID, float] = {}
        """Open attempts by charge, with when this process first saw them open (its own clock)."""

    def run(self) -> Settled:
        self._follow_log()
        settled = Settled()
        now_ledger, now_here = self._ledger.clock.now(), self._monotonic()
        for charge_id, seen_at in list(self._open.items()):
            charge = self._ledger.app.repository.get(charge_id)
            if not charge.is_open:
                del self._open[charge_id]
                continue
            # Old by the ledger's clock (what a restarted process finds), or seen open here for the grace.
            old_enough = (charge.intended_at is not None and now_ledger - charge.intended_at >= self._grace)
            if not old_enough and now_here - seen_at < self._grace.total_seconds():
                settled.left_open.append(charge_id)
                continue
            try:
                state = self._ledger.settle_charge(charge_id)
            except PaymentUnavailable as unavailable:
                log.warning("charge %s is still open: the processor cannot say what it took (%s); will ask again",
                            charge_id, unavailable.detail)
                settled.left_open.append(charge_id)
                continue
            if state == "reversed":
                settled.reversed += 1
                log.warning("charge %s: the processor had taken %s cents for a change that was never recorded; "
                            "refunded and documented", charge_id, charge.bill.total_cents if charge.bill else "?")
            elif state == "abandoned":
                settled.abandoned += 1
                log.info("charge %s: the processor took nothing for it; closed", charge_id)
            self._open.pop(charge_id, None)
        return settled

    def _follow_log(self) -> None:
        recorder = self._ledger.app.recorder
        topics = [OPENED, *ENDED]
        while True:
            notifications = recorder.select_notifications(start=self._position, limit=READ_BATCH, topics=topics,
                                                          inclusive_of_start=False)
            for notification in notifications:
                if notification.topic == OPENED:
                    self._open.setdefault(notification.originator_id, self._monotonic())
                else:
                    self._open.pop(notification.originator_id, None)
            if notifications:
                self._position = notifications[-1].id
            if len(notifications) < READ_BATCH:
                return
