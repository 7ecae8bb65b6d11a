"""The sandbox clock (LEDGER_CLOCK=sandbox): time moves only when told, and everything that falls due
on the way happens, in time order, before the answer."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from api.deps import CurrentUser, ServicesDep, SupportUser
from api.docs import problems
from api.schemas import RequestBody
from commands.clocks import SandboxClock

router = APIRouter(prefix="/v1/sandbox", tags=["sandbox"])
_one_at_a_time = threading.Lock()
TEN_YEARS = 10 * 366 * 24 * 3600


class MoveClockIn(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"advance_seconds": 86400},
        {"now": "2027-01-01T00:00:00Z"}]})
    advance_seconds: StrictInt | None = Field(None, ge=0, le=TEN_YEARS)
    now: datetime | None = Field(None, description="An ISO 8601 instant with a timezone, not before the clock")

    @model_validator(mode="after")
    def _exactly_one(self) -> MoveClockIn:
        if (self.advance_seconds is None) == (self.now is None):
            raise ValueError("give either advance_seconds or now")
        if self.now is not None and self.now.tzinfo is None:
            raise ValueError("now needs a timezone, for example 2027-01-01T00:00:00Z")
        return self


class ClockOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"now": "2026-12-29T10:00:00Z", "changes": 3}]})
    now: datetime
    changes: int = Field(0, description="Renewals, failed renewals and expiries that fell due on the way")


def _sandbox_clock(services: ServicesDep) -> SandboxClock:
    clock = services.clock
    assert isinstance(clock, SandboxClock), "the sandbox routes exist only with LEDGER_CLOCK=sandbox"
    return clock


@router.get("/clock", response_model=ClockOut, summary="The sandbox clock's time")
def read_clock(_: CurrentUser, services: ServicesDep) -> ClockOut:
    """The sandbox clock's time: with `LEDGER_CLOCK=sandbox` the service's clock moves only when told (`POST
    /v1/sandbox/clock`). Any authenticated user; with the system clock this route does not exist (404)."""
    return ClockOut(now=_sandbox_clock(services).now())


@router.post("/clock", response_model=ClockOut, responses=problems("payment_unavailable"),
             summary="Move the sandbox clock forward, running every renewal and expiry that falls due (support)")
def move_clock(body: MoveClockIn, user: SupportUser, services: ServicesDep) -> ClockOut:
    """Support role. Moves the sandbox clock forward, by `advance_seconds` (0 to about 10 years) or to `now` (an
    instant with a time zone, not before the clock; give exactly one), and before answering runs, in time order,
    every renewal, failed renewal and expiry that falls due on the way; `changes` counts them. Moves are taken
    one at a time. Problems: 403 `forbidden` (no support role), 422 `validation_error`, 503
    `payment_unavailable` (a renewal could not reach the processor)."""
    clock = _sandbox_clock(services)
    with _one_at_a_time:
        start = clock.now()
        target = (start + timedelta(seconds=body.advance_seconds) if body.advance_seconds is not None
                  else body.now.astimezone(UTC).replace(microsecond=0))  # type: ignore[union-attr]
        ran = services.scheduler.advance(clock, target, actor=user.user_id)
        return ClockOut(now=clock.now(), changes=ran.changes)
