"""The event feed: a reseller's history over HTTP, in the export's format, with a cursor."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ResellerAdmin, ServicesDep
from api.schemas import EXAMPLE_EVENT, EventOut
from ledger.errors import ValidationFailed
from projections import feed, reseller_events

router = APIRouter(prefix="/v1/resellers/{org_id}", tags=["events"])

_KNOWN_TYPES = reseller_events.event_type_names()

EXAMPLE_STORED: dict[str, Any] = {
    "topic": "ledger:Subscription.Canceled",
    "state": '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-10T14:30:00+00:00"},"effective_at":'
             '{"_type_":"datetime_iso","_data_":"2026-12-29T10:00:00+00:00"},"pending_seats":null,"actor":"user-42"}',
}
EXAMPLE_FEED_EVENT: dict[str, Any] = {
    **EXAMPLE_EVENT, "hash": "5d1c0a8e3f2b47a69c0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d",
    "previous_hash": "9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b",
    "previous_stream_hash": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "stored": EXAMPLE_STORED,
}


class StoredOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_STORED]})
    topic: str
    state: str = Field(description="The stored state bytes as UTF-8 text, exactly as the hash covers them")


class FeedEventOut(EventOut):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_FEED_EVENT]})
    hash: str | None = Field(None, description="The event's hash in the log's chain (docs/event-export.md)")
    previous_hash: str | None = None
    previous_stream_hash: str | None = None
    stored: StoredOut | None = None


class FeedOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EXAMPLE_FEED_EVENT], "next_after": 42,
        "has_more": False}]})
    items: list[FeedEventOut]
    next_after: int = Field(description="Pass as `after` to read on: the position of the last item, or the "
                                        "`after` given when there was none")
    has_more: bool = Field(description="Whether more events were already there beyond this page")


def _types(types: str | None) -> list[str] | None:
    if types is None:
        return None
    chosen = sorted({name.strip() for name in types.split(",") if name.strip()})
    unknown = [name for name in chosen if name not in _KNOWN_TYPES]
    if not chosen or unknown:
        raise ValidationFailed("types", f"types: unknown event types {', '.join(unknown) or '(none given)'}; "
                                        f"known: {', '.join(sorted(_KNOWN_TYPES))}")
    return chosen


@router.get("/events", response_model=FeedOut, summary="The reseller's events after a position, oldest first",
            description="The reseller's history (its reseller stream, subscriptions, customer accounts and "
                        "invoices) in the format of `ledger export-events` (docs/event-export.md), each event with "
                        "its hashes. Follow it by passing `next_after` as `after`. An event appears once the "
                        "feed's index has reached it (usually within a second of its recording).")
def events(
    access: ResellerAdmin,
    services: ServicesDep,
    after: Annotated[int, Query(ge=0, description="A log position: events after it. Past the head of the log "
                                                  "is 422")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="1 to 1000")] = 100,
    types: Annotated[str | None, Query(max_length=2000, description="Comma-separated event types, such as "
                                                                    "SubscriptionCreated,SeatsIncreased")] = None,
) -> Any:
    log = services.read_side.log
    head = log.head()
    if after > head:
        raise ValidationFailed("after", f"after: position {after} is beyond the head of the event log ({head})")
    found = feed.page(log, services.read_side.db(reseller_events.NAME), access.org_id, after=after, limit=limit,
                      types=_types(types))
    return FeedOut(items=[FeedEventOut(**item) for item in found.items], next_after=found.next_after,
                   has_more=found.has_more)
