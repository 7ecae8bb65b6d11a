"""Idempotency keys: the first response to a key is the answer to every retry with that key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from commands.errors import IdempotencyConflict
from ledger.errors import ValidationFailed
from ledger.events import UNKNOWN_BEFORE_V2

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's key, the scope it lives in (a reseller, or support) and the request it was sent with."""

    scope: str
    key: str
    fingerprint: str

    @classmethod
    def for_request(cls, scope: str, key: str, method: str, path: str, body: Any) -> IdempotencyKey:
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise ValidationFailed("Idempotency-Key",
                                   f"an Idempotency-Key is 1 to {MAX_KEY_LENGTH} printable characters")
        canonical = json.dumps([method.upper(), path, body], sort_keys=True, separators=(",", ":"), default=str)
        return cls(scope, key, hashlib.sha256(canonical.encode()).hexdigest())

    @property
    def record_id(self) -> UUID:
        return IdempotentRequest.id_for(self.scope, self.key)


class IdempotentRequest(Aggregate):
    """Saved in the same transaction as the change it answered, so either both exist or neither."""

    TOPIC = "ledger:IdempotentRequest"

    class Created(Aggregate.Created):
        """IdempotentRequestRecorded: its topic names the type; the library calls a creation event class Created."""

        TOPIC = "ledger:IdempotentRequest.IdempotentRequestRecorded"
        class_version = 2
        scope: str
        key: str
        fingerprint: str
        resource_id: UUID
        resource_version: int
        actor: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """Version 1 did not record who sent the request. The stored record does not say, so an old
            record says so rather than guess (the change it answered, resource_id at resource_version,
            names its own actor)."""
            state["actor"] = UNKNOWN_BEFORE_V2

    @staticmethod
    def id_for(scope: str, key: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/idempotency/{scope}/{key}")

    @classmethod
    def record(cls, key: IdempotencyKey, *, resource_id: UUID, resource_version: int,
               at: datetime, actor: str) -> IdempotentRequest:
        return cls._create(cls.Created, id=key.record_id, timestamp=at, scope=key.scope,
                           key=key.key, fingerprint=key.fingerprint, resource_id=resource_id,
                           resource_version=resource_version, actor=actor)

    @event(Created)
    def __init__(self, scope: str, key: str, fingerprint: str, resource_id: UUID, resource_version: int) -> None:
        self.scope = scope
        self.key = key
        self.fingerprint = fingerprint
        self.resource_id = resource_id
        self.resource_version = resource_version

    def check_same_request(self, key: IdempotencyKey) -> None:
        if key.fingerprint != self.fingerprint:
            raise IdempotencyConflict(
                f"Idempotency-Key {key.key!r} was first used with a different request; use a new key"
            )
