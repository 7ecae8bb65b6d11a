"""``?as_of=``: the portal's read routes answered as they would have been at an instant, by the times
the ledger recorded (the ``as_of`` read model, and for one subscription its aggregate at that instant)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Query

from api.deps import ServicesDep
from commands.errors import NotFound
from commands.handlers import Ledger
from ledger.errors import ValidationFailed
from ledger.subscription import Subscription


def parse_instant(text: str, now: datetime, field: str = "as_of") -> datetime:
    """An RFC 3339 instant with its offset, not after ``now``; else a validation error naming the field."""
    try:
        at = datetime.fromisoformat(text.strip())
        if at.utcoffset() is None:
            raise ValueError("no offset")
        at = at.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValidationFailed(field, f"{field} must be an RFC 3339 instant with its offset, such as "
                                      "2026-11-29T10:00:00Z") from None
    if at > now:
        raise ValidationFailed(field, f"{field} is in the future: the ledger's clock reads "
                                      f"{now.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}")
    return at


def as_of_instant(
    services: ServicesDep,
    as_of: Annotated[str | None, Query(max_length=100, description="Answer as the portal would have at this "
                                                                   "instant (RFC 3339, such as 2026-11-29T10:00:00Z),"
                                                                   " by the times the ledger recorded. Not in the "
                                                                   "future")] = None,
) -> datetime | None:
    if as_of is None:
        return None
    return parse_instant(as_of, services.clock.now())


AsOf = Annotated[datetime | None, Depends(as_of_instant)]


def subscription_at(ledger: Ledger, org_id: str, subscription_id: UUID, as_of: datetime) -> Subscription:
    """The subscription as it was at ``as_of``: its aggregate at the last version recorded by then (a
    version's time is its event's, or its predecessor's if that is later, as in the as_of view). Not
    found before it was created, as for another reseller's."""
    ledger.subscription(org_id, subscription_id)  # another reseller's is not found
    version, latest = None, None
    for domain_event in ledger.history(subscription_id):
        latest = domain_event.timestamp if latest is None else max(latest, domain_event.timestamp)
        if latest > as_of:
            break
        version = domain_event.originator_version
    if version is None:
        raise NotFound(f"no subscription {subscription_id} at {as_of.strftime('%Y-%m-%dT%H:%M:%SZ')}")
    return ledger.app.repository.get(subscription_id, version=version)
