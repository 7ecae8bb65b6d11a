"""The webhook outbox: endpoints as registered, and one delivery per event and subscribed endpoint,
enqueued by a follower of the event log and sent by ``projections.webhooks.sender``.

Each delivery row is written in the follower's transaction, with the log position it brings the view to,
so each event is enqueued exactly once per endpoint subscribed to its type *when the event happened* (an
endpoint registered later does not receive earlier events). Like the invitation outbox this view is not
disposable: its rows carry the delivery state. The disabling of an endpoint enqueues the mail that tells its
owner, in the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger import events
from ledger.webhook_endpoint import DELETED, DISABLED, ENABLED, WEBHOOK_TYPE_OF
from projections.log import Recorded
from projections.runner import UnhandledEvent
from projections.store import Cursor, select_by_keys

NAME = "webhooks"

PENDING, SENDING, DELIVERED, FAILED = "pending", "sending", "delivered", "failed"
SENT = "sent"

_EVENT_IDS = uuid5(NAMESPACE_URL, "/events")
_DELIVERY_IDS = uuid5(NAMESPACE_URL, "/webhook-deliveries")
_NOTICE_IDS = uuid5(NAMESPACE_URL, "/webhook-notices")

ENDPOINT_COLUMNS = ("endpoint_id", "reseller_org_id", "url", "event_types", "description", "state", "secret_salt",
                    "created_at", "updated_at", "version", "disabled_reason")
DELIVERY_KEY_COLUMNS = ("delivery_id", "endpoint_id", "reseller_org_id", "event_id", "event_type", "stream_id",
                        "stream_type", "stream_version", "position", "occurred_at")
DELIVERY_STATE_COLUMNS = ("state", "attempts", "next_attempt_at", "first_attempt_at", "last_status", "last_error",
                          "delivered_at", "payload")
DELIVERY_COLUMNS = DELIVERY_KEY_COLUMNS + DELIVERY_STATE_COLUMNS
NOTICE_KEY_COLUMNS = ("notice_id", "endpoint_id", "recipient", "subject", "body", "created_at", "position")
NOTICE_COLUMNS = NOTICE_KEY_COLUMNS + ("state", "attempts", "next_attempt_at", "last_error", "sent_at")


def event_id_for(stream_id: UUID, version: int) -> str:
    """The id an integrator deduplicates by: the same for every delivery of one event, to every endpoint."""
    return str(uuid5(_EVENT_IDS, f"{stream_id}/{version}"))


def delivery_id_for(endpoint_id: str, event_id: str) -> str:
    return str(uuid5(_DELIVERY_IDS, f"{endpoint_id}/{event_id}"))


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    endpoint_id: str
    reseller_org_id: str
    event_id: str
    event_type: str
    stream_id: str
    stream_type: str
    stream_version: int
    position: int
    occurred_at: str
    state: str
    attempts: int
    next_attempt_at: str | None
    first_attempt_at: str | None
    last_status: int | None
    last_error: str | None
    delivered_at: str | None
    payload: str | None


def disabled_notice(recorded: Recorded, url: str, recipient: str) -> tuple[Any, ...]:
    e = recorded.event
    subject = "A webhook endpoint was disabled after failing for days"
    body = (f"Webhooks to {url} (endpoint {e.originator_id}) have failed since {events.iso(e.failing_since)}, "
            f"so the endpoint was disabled at {events.iso(e.timestamp)}.\n\nReason: {e.reason}\n\n"
            "No more events are sent to it. Fix the receiver, then register the endpoint again and resend the "
            "deliveries it missed (GET /v1/resellers/{org}/webhook-endpoints/{id}/deliveries lists them), or read "
            "them from the event feed (GET /v1/resellers/{org}/events).\n")
    notice_id = str(uuid5(_NOTICE_IDS, f"{e.originator_id}/{e.originator_version}"))
    return (notice_id, str(e.originator_id), recipient, subject, body, events.iso(e.timestamp), recorded.position)


class Webhooks:
    name = NAME
    streams = frozenset({"WebhookEndpoint", "Subscription", "Invoice"})

    def create_tables(self, cursor: Cursor) -> None:
        cursor.execute("""CREATE TABLE IF NOT EXISTS webhook_endpoints (
            endpoint_id TEXT PRIMARY KEY, reseller_org_id TEXT NOT NULL, url TEXT NOT NULL,
            event_types TEXT NOT NULL, description TEXT, state TEXT NOT NULL, secret_salt TEXT NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, version INTEGER NOT NULL, disabled_reason TEXT)""")
        cursor.execute("CREATE INDEX IF NOT EXISTS webhook_endpoints_by_reseller "
                       "ON webhook_endpoints (reseller_org_id, state)")
        cursor.execute("""CREATE TABLE IF NOT EXISTS webhook_streams (
            stream_id TEXT PRIMARY KEY, reseller_org_id TEXT NOT NULL)""")
        cursor.execute("""CREATE TABLE IF NOT EXISTS webhook_deliveries (
            delivery_id TEXT PRIMARY KEY, endpoint_id TEXT NOT NULL, reseller_org_id TEXT NOT NULL,
            event_id TEXT NOT NULL, event_type TEXT NOT NULL, stream_id TEXT NOT NULL, stream_type TEXT NOT NULL,
            stream_version INTEGER NOT NULL, position BIGINT NOT NULL, occurred_at TEXT NOT NULL,
            state TEXT NOT NULL, attempts INTEGER NOT NULL, next_attempt_at TEXT, first_attempt_at TEXT,
            last_status INTEGER, last_error TEXT, delivered_at TEXT, payload TEXT)""")
        cursor.execute("CREATE INDEX IF NOT EXISTS webhook_deliveries_by_state "
                       "ON webhook_deliveries (state, next_attempt_at)")
        cursor.execute("CREATE INDEX IF NOT EXISTS webhook_deliveries_by_endpoint "
                       "ON webhook_deliveries (endpoint_id, position)")
        cursor.execute("""CREATE TABLE IF NOT EXISTS webhook_attempts (
            delivery_id TEXT NOT NULL, attempt INTEGER NOT NULL, started_at TEXT NOT NULL, duration_ms INTEGER,
            status_code INTEGER, error TEXT, PRIMARY KEY (delivery_id, attempt))""")
        cursor.execute("""CREATE TABLE IF NOT EXISTS webhook_endpoint_health (
            endpoint_id TEXT PRIMARY KEY, failing_since TEXT, last_success_at TEXT, disabling INTEGER NOT NULL)""")
        cursor.execute("""CREATE TABLE IF NOT EXISTS webhook_notices (
            notice_id TEXT PRIMARY KEY, endpoint_id TEXT NOT NULL, recipient TEXT NOT NULL, subject TEXT NOT NULL,
            body TEXT NOT NULL, created_at TEXT NOT NULL, position BIGINT NOT NULL, state TEXT NOT NULL,
            attempts INTEGER NOT NULL, next_attempt_at TEXT, last_error TEXT, sent_at TEXT)""")

    def create_indexes(self, cursor: Cursor) -> None:
        """None to wait for: its own writes and the sender's polls use every index it has."""

    def apply(self, cursor: Cursor, batch: list[Recorded]) -> None:
        resources: list[Recorded] = []
        for recorded in batch:
            if recorded.stream_type == "WebhookEndpoint":
                self._resource_events(cursor, resources)  # those before it, under the endpoints as they were
                resources = []
                self._endpoint_event(cursor, recorded)
            elif recorded.stream_type in ("Subscription", "Invoice"):
                resources.append(recorded)
        self._resource_events(cursor, resources)

    def _endpoint_event(self, cursor: Cursor, recorded: Recorded) -> None:
        e, key, at = recorded.event, recorded.stream_key, events.iso(recorded.event.timestamp)
        if recorded.type == "WebhookEndpointRegistered":
            cursor.execute(f"INSERT INTO webhook_endpoints ({', '.join(ENDPOINT_COLUMNS)}) VALUES "
                           f"({', '.join('?' * len(ENDPOINT_COLUMNS))}) ON CONFLICT (endpoint_id) DO NOTHING",
                           (key, e.reseller_org_id, e.url, ",".join(e.event_types), e.description, ENABLED,
                            e.secret_salt, at, at, recorded.version, None))
            return
        changes: dict[str, Any]
        if recorded.type == "WebhookEndpointSecretRolled":
            changes = {"secret_salt": e.secret_salt}
        elif recorded.type == "WebhookEndpointDeleted":
            changes = {"state": DELETED}
        elif recorded.type == "WebhookEndpointDisabled":
            changes = {"state": DISABLED, "disabled_reason": e.reason}
            if e.notified_email:
                cursor.execute("SELECT url FROM webhook_endpoints WHERE endpoint_id = ?", (key,))
                found = cursor.fetchone()
                cursor.execute(f"INSERT INTO webhook_notices ({', '.join(NOTICE_COLUMNS)}) VALUES "
                               f"({', '.join('?' * len(NOTICE_COLUMNS))}) ON CONFLICT (notice_id) DO NOTHING",
                               (*disabled_notice(recorded, found[0] if found else "?", e.notified_email),
                                PENDING, 0, None, None, None))
        else:
            raise UnhandledEvent(f"the webhooks do not know {recorded.type} events")
        assignments = ", ".join(f"{column} = ?" for column in changes)
        cursor.execute(f"UPDATE webhook_endpoints SET {assignments}, updated_at = ?, version = ? WHERE endpoint_id = ?",
                       (*changes.values(), at, recorded.version, key))
        if cursor.rowcount != 1:
            raise UnhandledEvent(f"no webhook endpoint {key}: its registration was never seen")

    def _resource_events(self, cursor: Cursor, batch: list[Recorded]) -> None:
        """Enqueue a delivery of each of these events (no endpoint changed between them) to every endpoint of its
        reseller subscribed to its type, with a few queries for the whole run."""
        if not batch:
            return
        owners: dict[str, str] = {}
        for recorded in batch:
            if WEBHOOK_TYPE_OF.get(recorded.type) is None:
                raise UnhandledEvent(f"the webhooks do not know {recorded.type} events")
            if recorded.version == 1:
                owners.setdefault(recorded.stream_key, recorded.event.reseller_org_id)
        new_streams = list(owners.items())
        unknown = {r.stream_key for r in batch} - owners.keys()
        known = select_by_keys(cursor, "SELECT stream_id, reseller_org_id FROM webhook_streams WHERE stream_id IN",
                               unknown)
        owners.update({row[0]: row[1] for row in known})
        if new_streams:
            cursor.executemany("INSERT INTO webhook_streams (stream_id, reseller_org_id) VALUES (?, ?) "
                               "ON CONFLICT (stream_id) DO NOTHING", new_streams)
        endpoints: dict[str, list[tuple[str, list[str]]]] = {}
        for endpoint_id, owner, event_types in select_by_keys(
                cursor, f"SELECT endpoint_id, reseller_org_id, event_types FROM webhook_endpoints WHERE state = "
                        f"'{ENABLED}' AND reseller_org_id IN", set(owners.values())):
            endpoints.setdefault(owner, []).append((endpoint_id, event_types.split(",")))
        deliveries = []
        for recorded in batch:
            key = recorded.stream_key
            owner = owners.get(key)
            if owner is None:
                raise UnhandledEvent(f"no reseller known for {recorded.stream_type} {key}: its first event was never "
                                     "seen")
            webhook_type = WEBHOOK_TYPE_OF[recorded.type]
            subscribed = [endpoint_id for endpoint_id, types in endpoints.get(owner, []) if webhook_type in types]
            if not subscribed:
                continue
            event_id = event_id_for(recorded.stream_id, recorded.version)
            occurred_at = events.iso(recorded.event.timestamp)
            deliveries.extend(
                (delivery_id_for(endpoint_id, event_id), endpoint_id, owner, event_id, webhook_type, key,
                 recorded.stream_type, recorded.version, recorded.position, occurred_at,
                 PENDING, 0, None, None, None, None, None, None) for endpoint_id in subscribed)
        if deliveries:
            cursor.executemany(
                f"INSERT INTO webhook_deliveries ({', '.join(DELIVERY_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(DELIVERY_COLUMNS))}) ON CONFLICT (delivery_id) DO NOTHING", deliveries)

    def rows(self, cursor: Cursor) -> Iterable[tuple[Any, ...]]:
        """What the events decided, without the delivery state (a replay sends nothing)."""
        cursor.execute(f"SELECT 'endpoint', {', '.join(ENDPOINT_COLUMNS)} FROM webhook_endpoints ORDER BY endpoint_id")
        found = [tuple(row) for row in cursor.fetchall()]
        cursor.execute(f"SELECT 'delivery', {', '.join(DELIVERY_KEY_COLUMNS)} FROM webhook_deliveries "
                       "ORDER BY delivery_id")
        found += [tuple(row) for row in cursor.fetchall()]
        cursor.execute(f"SELECT 'notice', {', '.join(NOTICE_KEY_COLUMNS)} FROM webhook_notices ORDER BY notice_id")
        return found + [tuple(row) for row in cursor.fetchall()]


def delivery_from(values: Iterable[Any]) -> Delivery:
    return Delivery(*values)
