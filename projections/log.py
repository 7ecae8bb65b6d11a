"""Reading the event log in order, for followers, exports and auditors."""

from __future__ import annotations

import functools
import logging
import os
import select
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import resolve_topic
from psycopg.sql import SQL, Identifier

from commands.application import LedgerApplication
from ledger import events

log = logging.getLogger("ledger.log")


class UndecodableEvent(Exception):
    """An event in the log that this version of the service cannot read."""

    def __init__(self, position: int, topic: str, reason: str) -> None:
        super().__init__(f"event #{position} ({topic}) cannot be read: {reason}")
        self.position = position
        self.topic = topic


@dataclass(frozen=True)
class Recorded:
    """A domain event and where it sits: its global position, its stream and its version there."""

    position: int
    event: Any

    @property
    def stream_id(self) -> UUID:
        return self.event.originator_id

    @property
    def version(self) -> int:
        return self.event.originator_version

    @cached_property  # asked by several projections of every event in a rebuild
    def stream_key(self) -> str:
        """The stream's id as the views store it."""
        return str(self.event.originator_id)

    @cached_property  # asked by every projection of every event in a rebuild
    def type(self) -> str:
        return events.type_name(self.event)

    @cached_property
    def stream_type(self) -> str:
        return events.aggregate_name(self.event)

    def describe(self) -> str:
        return f"#{self.position} {self.type} of {self.stream_type} {self.stream_id} v{self.version}"

    def as_record(self) -> dict[str, Any]:
        """The documented, stable export format of one event (see docs/event-export.md)."""
        return {
            "position": self.position,
            "stream_id": self.stream_key,
            "stream_type": self.stream_type,
            "version": self.version,
            "type": self.type,
            "schema_version": events.schema_version(self.event),
            "occurred_at": events.iso(self.event.timestamp),
            "actor": events.actor_of(self.event),
            "data": events.facts(self.event),
        }


class EventLog:
    def __init__(self, app: LedgerApplication) -> None:
        self.app = app

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def read(self, after: int, limit: int) -> list[Recorded]:
        return self._decode(self.app.recorder.select_notifications(start=after, limit=limit, inclusive_of_start=False))

    def _decode(self, notifications: Sequence[Notification]) -> list[Recorded]:
        recorded = []
        for notification in notifications:
            try:
                domain_event = self.app.mapper.to_domain_event(notification)
            except Exception as error:  # any failure to decode is reported with the event's place
                reason = f"{type(error).__name__}: {error}"
                raise UndecodableEvent(notification.id, notification.topic, reason) from error
            recorded.append(Recorded(notification.id, domain_event))
        return recorded

    def read_streams(self, after: int, limit: int, streams: frozenset[str] | None) -> tuple[list[Recorded], int]:
        """Like ``read``, but only the events of these kinds of stream are decoded and returned (all of them when
        ``streams`` is None); with the position of the last event read, which a follower reaches even when the
        batch held nothing for it."""
        if streams is None:
            recorded = self.read(after, limit)
            return recorded, recorded[-1].position if recorded else after
        notifications = self.app.recorder.select_notifications(start=after, limit=limit, inclusive_of_start=False)
        # An unknown topic is decoded anyway: its failure stops the follower there, as ``read`` would.
        accepted: set[str | None] = {*streams, None}
        wanted = [notification for notification in notifications
                  if _stream_type_of_topic(notification.topic) in accepted]
        return self._decode(wanted), notifications[-1].id if notifications else after

    def positions_of(self, stream_id: UUID) -> dict[int, int]:
        """Version → global position for one stream. The library has no query for this, so it reads
        its tables: the SQLite rowid and the PostgreSQL notification_id are the positions."""
        recorder = self.app.recorder
        if isinstance(recorder, SQLiteApplicationRecorder):
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(f"SELECT originator_version, rowid FROM {recorder.events_table_name} "
                               "WHERE originator_id = ?", (stream_id.hex,))
                return {row[0]: row[1] for row in cursor.fetchall()}
        if isinstance(recorder, PostgresApplicationRecorder):
            table = SQL("{0}.{1}").format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(SQL("SELECT originator_version, notification_id FROM {0} WHERE originator_id = %s")
                               .format(table), (stream_id,))
                return {row["originator_version"]: row["notification_id"] for row in cursor.fetchall()}
        raise TypeError(f"no positions from a {type(recorder).__name__}")

    def history(self, stream_id: UUID) -> list[Recorded]:
        positions = self.positions_of(stream_id)
        return [Recorded(positions[e.originator_version], e) for e in self.app.events.get(stream_id)]


class NewsWaiter:
    """Waits for new events: saves in this process wake it at once; on PostgreSQL, so do other
    processes' saves (LISTEN on the events table's channel); on SQLite, so do the saves of the process that
    started this one and hands it ``news_fd``, a pipe it writes a byte to after each save (`ledger serve`'s
    ``FollowersProcess``), and then only those; otherwise it times out and the caller polls."""

    def __init__(self, app: LedgerApplication, conninfo: str | None = None, news_fd: int | None = None) -> None:
        self._app = app
        self._seen = app.saves
        self._listener: psycopg.Connection[Any] | None = None
        self._channel: str | None = None
        self._news_fd = news_fd
        if news_fd is not None:
            os.set_blocking(news_fd, False)
        if conninfo and isinstance(app.recorder, PostgresApplicationRecorder):
            self._conninfo, self._channel = conninfo, app.recorder.channel_name

    def listen(self) -> None:
        """Start listening before the first catch-up, so no save between the two goes unnoticed."""
        with self._app.news:
            self._seen = self._app.saves
        if self._channel is not None:
            try:
                self._listen()
            except psycopg.Error as error:
                log.warning("cannot listen for new events (%s); polling instead", error)

    def wait(self, timeout: float) -> None:
        if self._news_fd is not None:
            self._wait_on_pipe(self._news_fd, timeout)
            return
        if self._channel is None:
            with self._app.news:
                # A save made while the caller was catching up has notified nobody: it must not wait for the
                # next one (that cost a command up to the poll's quarter of a second before its row showed).
                self._app.news.wait_for(lambda: self._app.saves != self._seen, timeout)
                self._seen = self._app.saves
            return
        try:
            listener = self._listen()
            for _ in listener.notifies(timeout=timeout, stop_after=1):
                pass
        except psycopg.Error as error:
            log.warning("listening for new events failed (%s); polling instead", error)
            self.close()

    def _wait_on_pipe(self, fd: int, timeout: float) -> None:
        # Bytes written while the caller was catching up wait in the pipe: they wake this wait at once.
        readable, _, _ = select.select([fd], [], [], timeout)
        if not readable:
            return
        try:
            news = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not news:  # the writer is gone (its process ended): poll from now on
            os.close(fd)
            self._news_fd = None

    def _listen(self) -> psycopg.Connection[Any]:
        if self._listener is None or self._listener.closed:
            self._listener = psycopg.connect(self._conninfo, autocommit=True)
            self._listener.execute(f'LISTEN "{self._channel}"')
        return self._listener

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None


@functools.lru_cache(maxsize=256)
def _stream_type_of_topic(topic: str) -> str | None:
    """The kind of stream a stored topic's events belong to (the topic may be an older name of its type), or
    None when this version of the service does not know the topic (decoding it reports the event)."""
    try:
        return events.aggregate_name_of(resolve_topic(topic))
    except Exception:
        return None
