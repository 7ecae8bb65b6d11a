"""Clocks: the system's, and one that only moves when told (tests and the sandbox)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError

from ledger.errors import ValidationFailed
from ledger.events import UNKNOWN_BEFORE_V2
from ledger.periods import require_instant

SANDBOX_CLOCK = "system:sandbox-clock"
"""The actor of what the sandbox clock does by itself: starting, and what falls due while it is moved."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC).replace(microsecond=0)


class ManualClock:
    def __init__(self, now: datetime) -> None:
        self._now = require_instant(now)
        self._guard = threading.Lock()

    def now(self) -> datetime:
        with self._guard:
            return self._now

    def set(self, now: datetime) -> None:
        with self._guard:
            self._now = require_instant(now)


class SandboxClock:
    """A clock that only moves when told, persisted in the event log so it survives restarts and
    every process of a deployment reads the same time. It starts at the system time of its first use."""

    # Another process's move is seen within this long; this process's own moves at once.
    REREAD_SECONDS = 1.0

    def __init__(self, app: Application[UUID], start: Callable[[], datetime]) -> None:
        self._app = app
        self._start = start
        self._guard = threading.Lock()
        self._cached: tuple[float, datetime] | None = None

    def now(self) -> datetime:
        with self._guard:
            if self._cached is None or time.monotonic() - self._cached[0] > self.REREAD_SECONDS:
                self._cached = (time.monotonic(), self._reading().now)
            return self._cached[1]

    def set(self, now: datetime, *, actor: str) -> tuple[datetime, datetime]:
        """Move to ``now`` (never backwards). Returns the times before and after."""
        with self._guard:
            reading = self._reading()
            before = reading.now
            reading.move_to(require_instant(now), actor=actor)
            self._app.save(reading)
            self._cached = (time.monotonic(), reading.now)
            return before, reading.now

    def _reading(self) -> SandboxTime:
        try:
            return self._app.repository.get(SandboxTime.ID)
        except AggregateNotFoundError:
            reading = SandboxTime.start(self._start())
            try:
                self._app.save(reading)
            except IntegrityError:  # another process started it first
                return self._app.repository.get(SandboxTime.ID)
            return reading


class SandboxTime(Aggregate):
    TOPIC = "ledger:SandboxClock"
    ID = uuid5(NAMESPACE_URL, "/sandbox/clock")

    class Created(Aggregate.Created):
        """SandboxClockStarted: its topic names the type; the library calls a creation event class Created."""

        TOPIC = "ledger:SandboxClock.SandboxClockStarted"
        class_version = 2
        now: datetime
        actor: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """Version 1 did not record who started the clock: an old record says so rather than guess."""
            state["actor"] = UNKNOWN_BEFORE_V2

    class SandboxClockMoved(Aggregate.Event):
        TOPIC = "ledger:SandboxClock.SandboxClockMoved"
        before: datetime
        now: datetime
        actor: str

    @classmethod
    def start(cls, now: datetime) -> SandboxTime:
        return cls._create(cls.Created, id=cls.ID, now=require_instant(now), actor=SANDBOX_CLOCK)

    @event(Created)
    def __init__(self, now: datetime) -> None:
        self.now = now

    def move_to(self, now: datetime, *, actor: str) -> None:
        if now < self.now:
            raise ValidationFailed("now", f"the sandbox clock never goes back: it is already {self.now.isoformat()}")
        if now != self.now:
            self._moved(self.now, now, actor)

    @event(SandboxClockMoved)
    def _moved(self, before: datetime, now: datetime, actor: str) -> None:
        self.now = now
