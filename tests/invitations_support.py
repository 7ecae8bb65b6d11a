"""What the invitation tests share: subscriptions to invite for, and the outbox that follows them."""

from __future__ import annotations

from uuid import UUID

from ledger.subscription import Order
from projections.invitations import Invitations, OutboxRow, outbox
from projections.log import EventLog
from projections.runner import Follower
from projections.store import ViewDatabase
from tests.support import ADMIN, InMemoryLedger


def create(world: InMemoryLedger, order: Order) -> UUID:
    return world.ledger.create_subscription("org_1", order, actor=ADMIN).aggregate.id


def follow(world: InMemoryLedger, db: ViewDatabase) -> Follower:
    follower = Follower(EventLog(world.app), Invitations(), db)
    follower.catch_up()
    return follower


def rows_of(db: ViewDatabase) -> list[OutboxRow]:
    with db.snapshot() as cursor:
        return outbox(cursor)
