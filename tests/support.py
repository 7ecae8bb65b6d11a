"""Building blocks of the tests: a ledger wired in memory, and given/when/then for aggregates."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any
from uuid import UUID

from commands.application import LedgerApplication
from commands.clocks import ManualClock
from commands.gateways.simulated import SimulatedGateway
from commands.handlers import Ledger
from commands.locks import ThreadLocks
from commands.quotes import QuoteSigner
from ledger import events
from ledger.catalog import Catalog

T0 = datetime(2026, 1, 31, 10, 0, 0, tzinfo=UTC)
CATALOG = Catalog.from_toml(files("ledger").joinpath("catalog.toml").read_text())
ADMIN = "user-admin"


@dataclass
class InMemoryLedger:
    """The command side with every port in memory: the event store, the clock, the processor."""

    ledger: Ledger
    clock: ManualClock
    gateway: SimulatedGateway

    @property
    def app(self) -> LedgerApplication:
        return self.ledger.app

    def types_of(self, aggregate_id: UUID) -> list[str]:
        return [events.type_name(e) for e in self.ledger.history(aggregate_id)]


def in_memory_ledger(now: datetime = T0) -> InMemoryLedger:
    clock = ManualClock(now)
    app = LedgerApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    gateway = SimulatedGateway(":memory:", clock)
    ledger = Ledger(app, catalog=CATALOG, clock=clock, gateway=gateway, locks=ThreadLocks(),
                    quotes=QuoteSigner(b"test quotes"))
    return InMemoryLedger(ledger, clock, gateway)


def reseller_with_card(world: InMemoryLedger, org_id: str = "org_1", *, country: str = "US",
                       payment_method: str = "pm_card_visa") -> None:
    world.ledger.enable_reseller(org_id, name=f"Reseller {org_id}", actor="support-user")
    world.ledger.set_billing_info(org_id, payment_method=payment_method, billing_email="billing@reseller.example",
                                  country=country, actor=ADMIN)


def replay(aggregate_class: type, domain_events: Iterable[Any]) -> Any:
    """Rebuild an aggregate from its events, as the repository does."""
    aggregate = None
    for domain_event in domain_events:
        aggregate = domain_event.mutate(aggregate)
    return aggregate


def pending_types(aggregate: Any) -> list[str]:
    return [events.type_name(e) for e in aggregate.pending_events]


@dataclass
class SandboxWorld:
    """A ledger on a sandbox clock with its read side (SQLite views) and scheduler: the lifecycle in time."""

    ledger: Ledger
    clock: Any
    gateway: SimulatedGateway
    read_side: Any
    scheduler: Any

    def advance(self, **delta: float) -> int:
        return self.scheduler.advance(self.clock, self.clock.now() + timedelta(**delta), actor="tester").changes

    def types_of(self, aggregate_id: UUID) -> list[str]:
        return [events.type_name(e) for e in self.ledger.history(aggregate_id)]

    def close(self) -> None:
        self.read_side.close()


def sandbox_world(views: Path, now: datetime = T0) -> SandboxWorld:
    from commands.clocks import SandboxClock
    from projections.deployment import ReadSide, ViewLocation
    from service.scheduler import Scheduler

    app = LedgerApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    clock = SandboxClock(app, lambda: now)
    gateway = SimulatedGateway(":memory:", clock)
    ledger = Ledger(app, catalog=CATALOG, clock=clock, gateway=gateway, locks=ThreadLocks(),
                    quotes=QuoteSigner(b"test quotes"))
    read_side = ReadSide(app, ViewLocation(folder=views))
    scheduler = Scheduler(ledger, read_side.followers["due_dates"], clock)
    return SandboxWorld(ledger, clock, gateway, read_side, scheduler)
