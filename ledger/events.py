"""The public face of the ledger's events: their stable type names and their facts as plain data.
This is what auditors read and what an export writes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

_ENVELOPE = frozenset({"originator_id", "originator_version", "originator_topic", "timestamp", "actor"})


def type_name(domain_event: Any) -> str:
    """The stable type name of an event: the last part of its explicit topic."""
    return type(domain_event).TOPIC.rsplit(".", 1)[-1]


def aggregate_name(domain_event: Any) -> str:
    """The kind of stream the event belongs to, such as Subscription."""
    return aggregate_name_of(type(domain_event))


def aggregate_name_of(event_class: type) -> str:
    return event_class.TOPIC.split(":", 1)[1].split(".", 1)[0]  # type: ignore[attr-defined, no-any-return]


# What an event recorded before its type had an actor says instead (filled in by the type's upcaster).
UNKNOWN_BEFORE_V2 = "unknown:before-v2"


def actor_of(domain_event: Any) -> str | None:
    """Who caused the event: a token subject, ``support:<login>``, or ``system:…`` / ``processor:…``. Every
    event type records one (older records of a type that lacked it are upcast to ``unknown:before-v2``);
    None only for a type that breaks that rule, which the tests refuse."""
    return getattr(domain_event, "actor", None)


def schema_version(domain_event: Any) -> int:
    """The version of its type's schema that the event's facts follow: older records are upcast when read."""
    return int(getattr(type(domain_event), "class_version", 1))


def facts(domain_event: Any) -> dict[str, Any]:
    """The event's own fields as JSON-ready data (times as ISO 8601 UTC, ids as strings)."""
    return {name: plain(value) for name, value in vars(domain_event).items() if name not in _ENVELOPE}


def iso(at: datetime) -> str:
    """An instant to the second, in UTC: ``2026-01-31T09:00:00Z``. (Every view writes several per event: this
    is a third faster than ``strftime``.)"""
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    return f"{at.isoformat(timespec='seconds')[:19]}Z"


def plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    return value
