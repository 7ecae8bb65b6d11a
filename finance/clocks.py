"""The ledger's clock against the payment processor's, so that the two sides of a period pair up.

The ledger dates its billing documents by its own clock and the processor dates its charges by its own.
With the system clock both read real time. The sandbox clock only moves when told: after an advance it
runs ahead of real time (and it falls behind while it stands still), so a renewal that the sandbox dates
2027-03-01 is charged, and dated by the processor, today. The sandbox records each of its moves in the
event log with the real instant it was made (the event's timestamp): together they say what the ledger's
clock read at any real instant, which maps one clock onto the other.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from uuid import UUID

from eventsourcing.application import Application

from commands.clocks import SandboxTime

# How far the processor's clock may be from this host's, which dated the sandbox's moves.
DRIFT = timedelta(minutes=5)
PRECISION = timedelta(seconds=1)  # of the processor's dates


class SameClock:
    """The processor dates by the ledger's clock: the system clock, or the simulated processor."""

    def ledger_time(self, processor_at: datetime) -> datetime:
        return processor_at

    def processor_window(self, ledger_from: datetime, ledger_to: datetime) -> tuple[datetime, datetime]:
        return ledger_from, ledger_to

    def ledger_window(self, processor_from: datetime, processor_to: datetime) -> tuple[datetime, datetime]:
        return processor_from, processor_to


@dataclass(frozen=True)
class SandboxReadings:
    """``readings``: (real instant, what the sandbox clock read from then on), oldest first; before the
    first, the ledger's clock was the system's. ``read_at``: the real instant they were taken."""

    readings: tuple[tuple[datetime, datetime], ...]
    read_at: datetime

    def ledger_time(self, processor_at: datetime) -> datetime:
        """What the ledger's clock read when the processor's read ``processor_at``. The processor dates to
        the second, rounding down: an item it dates ``t`` was made before ``t + 1s``, so after any move
        made before then (a renewal is charged just after the move that made it due)."""
        at = bisect_left(self._reals, processor_at + PRECISION)
        return processor_at if at == 0 else self.readings[at - 1][1]

    def processor_window(self, ledger_from: datetime, ledger_to: datetime) -> tuple[datetime, datetime]:
        """When, by the processor's clock, the ledger's clock read [ledger_from, ledger_to), give or take DRIFT."""
        return self._processor_time(ledger_from) - DRIFT, self._processor_time(ledger_to) + DRIFT

    def ledger_window(self, processor_from: datetime, processor_to: datetime) -> tuple[datetime, datetime]:
        """What the ledger's clock read while the processor's read [processor_from, processor_to), give or
        take DRIFT: an item the processor dates beside a move (to the second, by its own clock) may belong
        to the reading before it or to the one after. Every reading in between counts, as a sandbox started
        behind real time goes back at its start."""
        start, end = processor_from - DRIFT, processor_to + DRIFT
        read = [self.ledger_time(start), self.ledger_time(end),
                *(reading for real, reading in self.readings if start <= real < end + PRECISION)]
        return min(read), max(read)

    @property
    def ahead_by(self) -> timedelta:
        """How far the sandbox clock is ahead of real time (negative: behind) when the readings were taken."""
        return self.readings[-1][1] - self.read_at.replace(microsecond=0)

    @cached_property
    def _reals(self) -> list[datetime]:
        return [real for real, _ in self.readings]

    def _processor_time(self, ledger_at: datetime) -> datetime:
        """The first real instant when the ledger's clock read ``ledger_at`` or later (``read_at`` if not yet)."""
        first_real, first_reading = self.readings[0]
        if ledger_at <= first_reading:
            return min(ledger_at, first_real)
        return next((real for real, reading in self.readings if reading >= ledger_at), self.read_at)


ClockMap = SameClock | SandboxReadings
SAME_CLOCK = SameClock()


def sandbox_clock_map(app: Application[UUID]) -> ClockMap:
    """The sandbox clock's moves as recorded; the same clock when it was never started."""
    readings = tuple((event.timestamp.astimezone(UTC), event.now)  # type: ignore[attr-defined]
                     for event in app.events.get(SandboxTime.ID))
    return SandboxReadings(readings, read_at=datetime.now(UTC)) if readings else SAME_CLOCK
