"""The hash chain of the event log (see docs/event-export.md, "Hashes").

Every stored event gets a row in ``ledger_chain``, written in the transaction that inserts the event:
its hash over the stored record (position, stream id, version, topic, SHA-256 of the stored state bytes)
and over two predecessors' hashes: the previous event of the whole log (by position) and the previous
event of its own stream. The recorders below are the library's application recorders with that one
addition (on PostgreSQL, its insert also sent in fewer round trips). On PostgreSQL the EXCLUSIVE lock on the
events table is taken before the chain's head is read, and on SQLite the insert holds the database's write
lock, so the head read here is the head of the log and positions are chained in order.

A log written before the chain existed stays unchained (new writes add no chain rows while the chain
is empty and earlier events exist) until ``ledger verify --upgrade`` chains it once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow
from psycopg.sql import SQL

from ledger import checkpoint  # noqa: F401  registers the LogCheckpoint topics for every reader of the log

CHAIN_TABLE = "ledger_chain"
GENESIS = "0" * 64
"""The predecessor of the first event of the log, and of the first event of every stream."""

STREAMS_PER_QUERY = 500

_COLUMNS = "position, originator_id, originator_version, event_hash, previous_hash, previous_stream_hash"


def canonical(record: dict[str, Any]) -> bytes:
    """Canonical JSON: keys sorted, no whitespace, UTF-8 (non-ASCII characters unescaped)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def event_hash(position: int, stream_id: str, version: int, topic: str, state: bytes,
               previous_hash: str, previous_stream_hash: str) -> str:
    """SHA-256 (hex) of the canonical JSON of the stored record and its two predecessors' hashes."""
    state_sha256 = hashlib.sha256(state).hexdigest()
    if _HEX64.match(previous_hash) and _HEX64.match(previous_stream_hash) and _UUID.match(stream_id):
        # The same bytes as canonical() writes for these values (none needs escaping), made faster.
        text = (f'{{"position":{int(position)},"previous_hash":"{previous_hash}","previous_stream_hash":'
                f'"{previous_stream_hash}","state_sha256":"{state_sha256}","stream_id":"{stream_id}",'
                f'"topic":{_json_string(topic)},"version":{int(version)}}}').encode()
    else:
        text = canonical({"position": position, "previous_hash": previous_hash,
                          "previous_stream_hash": previous_stream_hash, "state_sha256": state_sha256,
                          "stream_id": stream_id, "topic": topic, "version": version})
    return hashlib.sha256(text).hexdigest()


_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


@functools.lru_cache(maxsize=1024)
def _json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def stream_key(originator_id: UUID | str) -> str:
    """A stream id as the chain and the export write it: the hyphenated lowercase UUID."""
    if isinstance(originator_id, str) and len(originator_id) == 32:  # SQLite keeps the bare hex
        h = originator_id.lower()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    try:
        return str(originator_id if isinstance(originator_id, UUID) else UUID(originator_id))
    except ValueError:
        return str(originator_id)  # not an id at all (an edited row): its hash will not match


Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
InsertMany = Callable[[str, list[tuple[Any, ...]]], None]


def link(query: Query, insert_many: InsertMany, events_table: str, position_column: str, chain_table: str,
         positions: Sequence[int], stored_events: Sequence[StoredEvent], *, arrays: bool = False) -> None:
    """Add the chain rows of events just inserted at ``positions`` (in the same transaction, under the
    write lock). SQL uses ``?`` placeholders; the callables adapt them to the database. With ``arrays``
    (PostgreSQL), the predecessors and the rows are sent as one binary array per column: psycopg adapts
    each of hundreds of placeholders in Python (a renewal batch's chain was a seventh of its save)."""
    if not positions:
        return
    head = query(head_sql(chain_table), ())
    if not head and query(*older_events_sql(events_table, position_column, positions)):
        return  # a log written before the chain: it waits for its explicit upgrade
    wanted = predecessors(stored_events)
    streams: dict[str, str] = {}
    if wanted:
        streams.update(query(*predecessors_sql(chain_table, wanted, arrays=arrays)))
    chained = chain_rows(head[0][0] if head else GENESIS, streams, positions, stored_events)
    if arrays:
        insert_many(chain_insert_sql(chain_table, arrays=True), [tuple(as_columns(chained))])
    else:
        insert_many(chain_insert_sql(chain_table), chained)


def head_sql(chain_table: str) -> str:
    return f"SELECT event_hash FROM {chain_table} ORDER BY position DESC LIMIT 1"


def older_events_sql(events_table: str, position_column: str, positions: Sequence[int]) -> tuple[str, list[Any]]:
    """Whether the log holds events before ``positions`` (asked when the chain is empty)."""
    return f"SELECT 1 FROM {events_table} WHERE {position_column} < ? LIMIT 1", [min(positions)]


def predecessors(stored_events: Sequence[StoredEvent]) -> dict[str, int]:
    """The version before the first of ``stored_events`` in each stream they continue, by stream key."""
    first_versions: dict[str, int] = {}
    for stored in stored_events:
        key = stream_key(stored.originator_id)
        first_versions[key] = min(first_versions.get(key, stored.originator_version), stored.originator_version)
    return {key: version - 1 for key, version in first_versions.items() if version > 1}


def predecessors_sql(chain_table: str, wanted: dict[str, int], *, arrays: bool = False) -> tuple[str, list[Any]]:
    """The chain's stream id and hash of each of the ``wanted`` predecessors."""
    if arrays:
        return (f"SELECT c.originator_id, c.event_hash FROM unnest(?::text[], ?::bigint[]) AS wanted (id, v) "
                f"JOIN {chain_table} AS c ON c.originator_id = wanted.id AND c.originator_version = wanted.v",
                [list(wanted), list(wanted.values())])
    # A join, which both databases run by the stream index: SQLite ran ``(id, version) IN (VALUES ...)`` as a
    # scan of the whole chain, on each save of an existing stream (a seat increase at 2,000 subscriptions:
    # half its time).
    values = ", ".join("(?, ?)" for _ in wanted)
    return (f"SELECT c.originator_id, c.event_hash FROM (VALUES {values}) AS wanted "
            f"JOIN {chain_table} AS c ON c.originator_id = wanted.column1 "
            f"AND c.originator_version = CAST(wanted.column2 AS BIGINT)",
            [part for pair in wanted.items() for part in pair])


def chain_rows(previous: str, streams: dict[str, str], positions: Sequence[int],
               stored_events: Sequence[StoredEvent]) -> list[tuple[Any, ...]]:
    """The chain rows of the events at ``positions``, in the order of the log, after the head hash ``previous``;
    ``streams`` holds the hash of each continued stream's predecessor (a missing one is left for verify to
    report)."""
    chained = []
    streams = dict(streams)
    for position, stored in sorted(zip(positions, stored_events, strict=True), key=lambda pair: pair[0]):
        key = stream_key(stored.originator_id)
        previous_in_stream = streams.get(key, GENESIS)
        hashed = event_hash(position, key, stored.originator_version, stored.topic, bytes(stored.state),
                            previous, previous_in_stream)
        chained.append((position, key, stored.originator_version, hashed, previous, previous_in_stream))
        previous = streams[key] = hashed
    return chained


def as_columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as one list per column: the parameters of an insert over arrays."""
    return [list(column) for column in zip(*rows)]


def chain_insert_sql(chain_table: str, *, arrays: bool = False) -> str:
    if arrays:
        return (f"INSERT INTO {chain_table} ({_COLUMNS}) SELECT * FROM "
                "unnest(?::bigint[], ?::text[], ?::bigint[], ?::text[], ?::text[], ?::text[])")
    return f"INSERT INTO {chain_table} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"


def chain_table_sql(chain_table: str) -> list[str]:
    """The chain table and its index by stream (an index name is never schema-qualified)."""
    return [
        f"CREATE TABLE IF NOT EXISTS {chain_table} ("
        "position BIGINT PRIMARY KEY, originator_id TEXT NOT NULL, originator_version BIGINT NOT NULL, "
        "event_hash TEXT NOT NULL, previous_hash TEXT NOT NULL, previous_stream_hash TEXT NOT NULL)",
        f"CREATE UNIQUE INDEX IF NOT EXISTS {CHAIN_TABLE}_stream "
        f"ON {chain_table} (originator_id, originator_version)",
    ]


class ChainedSQLiteRecorder(SQLiteApplicationRecorder):
    """The library's SQLite application recorder, adding chain rows in each insert's transaction."""

    chain_table = CHAIN_TABLE
    position_column = "rowid"

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *chain_table_sql(self.chain_table)]

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        positions = super()._insert_events(c, stored_events, **kwargs)

        def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            c.execute(sql, params)
            return [tuple(row) for row in c.fetchall()]

        link(query, c.executemany, self.events_table_name, self.position_column, self.chain_table,
             list(positions or ()), stored_events)
        return positions

    def select_streams(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        """Every event of these streams, stream by stream in version order, in one query per chunk."""
        found: list[StoredEvent] = []
        for start in range(0, len(originator_ids), STREAMS_PER_QUERY):
            chunk = [originator_id.hex for originator_id in originator_ids[start:start + STREAMS_PER_QUERY]]
            with self.datastore.transaction(commit=False) as c:
                c.execute(f"SELECT originator_id, originator_version, topic, state FROM {self.events_table_name} "
                          f"WHERE originator_id IN ({', '.join('?' * len(chunk))}) "
                          "ORDER BY originator_id, originator_version", chunk)
                found.extend(StoredEvent(self.convert_originator_id(row["originator_id"]), row["originator_version"],
                                         row["topic"], row["state"]) for row in c.fetchall())
        return found


class ChainedPostgresRecorder(PostgresApplicationRecorder):
    """The library's PostgreSQL application recorder, adding chain rows in each insert's transaction,
    once the notification ids are known and while the EXCLUSIVE lock on the events table is held."""

    position_column = "notification_id"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        schema = self.datastore.schema
        self.events_table = f'"{schema}"."{self.events_table_name}"'
        self.chain_table = f'"{schema}"."{CHAIN_TABLE}"'
        for statement in chain_table_sql(self.chain_table):
            self.sql_create_statements.append(SQL(statement))  # type: ignore[arg-type]
        id_type = self.datastore.originator_id_type
        self.insert_columns_statement = SQL(  # type: ignore[call-overload]
            f"INSERT INTO {self.events_table} (originator_id, originator_version, topic, state) "
            f"SELECT * FROM unnest(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[]) RETURNING notification_id")

    def _insert_stored_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent],
                              **kwargs: Any) -> None:
        """The library's insert (table lock, notify, insert returning positions), its rows sent as one binary array
        per column: the library sends an array of a composite type, which psycopg writes as text in Python, about
        35 µs of CPU per event against 3 µs."""
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(self.insert_columns_statement, (
            [stored.originator_id for stored in stored_events],
            [stored.originator_version for stored in stored_events],
            [stored.topic for stored in stored_events],
            [bytes(stored.state) for stored in stored_events],
        ))

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """The library's insert and the chain rows in one transaction, in two round trips to the database: the
        transaction's start, the table lock, the insert and the reads the chain needs (its head, the streams'
        predecessors) sent together, then the chain rows and the commit. The library's transaction took six
        (a sync for its BEGIN, one after the insert, one per read, one before and one for the COMMIT), each of
        them under the lock that every save of every process waits for."""
        if not stored_events:
            return []
        wanted = predecessors(stored_events)
        with self.datastore.get_connection() as connection:
            try:
                with connection.pipeline() as pipeline, connection.cursor() as insert, \
                        connection.cursor() as head, connection.cursor() as previous:
                    insert.execute("BEGIN")
                    self._insert_events(insert, stored_events, **kwargs)
                    self._insert_stored_events(insert, stored_events, **kwargs)
                    head.execute(head_sql(self.chain_table))
                    if wanted:
                        previous.execute(*_binary(predecessors_sql(self.chain_table, wanted, arrays=True)))
                    pipeline.sync()  # a conflict (a version already taken) is raised here
                    positions = [row["notification_id"] for row in insert.fetchall()]
                    heads = head.fetchall()
                    if heads or not self._older_events(insert, positions):
                        streams = {row["originator_id"]: row["event_hash"] for row in previous.fetchall()} \
                            if wanted else {}
                        chained = chain_rows(heads[0]["event_hash"] if heads else GENESIS, streams, positions,
                                             stored_events)
                        insert.execute(*_binary((chain_insert_sql(self.chain_table, arrays=True),
                                                 as_columns(chained))))
                    insert.execute("COMMIT")
            except BaseException:
                # A conflict leaves the transaction aborted: the connection goes back to the pool clean.
                if not connection.broken and connection.info.transaction_status in _OPEN:
                    connection.rollback()
                raise
        return positions

    def _older_events(self, curs: Cursor[DictRow], positions: Sequence[int]) -> bool:
        """Whether the log holds events written before the chain began (asked while the chain is empty): a log
        written before the chain waits for its explicit upgrade, and new events add no chain rows meanwhile."""
        curs.execute(*_binary(older_events_sql(self.events_table, self.position_column, positions)))
        return bool(curs.fetchall())

    def select_streams(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        """Every event of these streams, stream by stream in version order, in one query per chunk."""
        statement = SQL(f"SELECT originator_id, originator_version, topic, state FROM {self.events_table} "  # type: ignore[arg-type]
                        "WHERE originator_id = ANY(%b) ORDER BY originator_id, originator_version")
        found: list[StoredEvent] = []
        with self.datastore.get_connection() as connection, connection.cursor() as curs:
            for start in range(0, len(originator_ids), STREAMS_PER_QUERY):
                curs.execute(statement, (list(originator_ids[start:start + STREAMS_PER_QUERY]),))
                found.extend(StoredEvent(row["originator_id"], row["originator_version"], row["topic"],
                                         bytes(row["state"])) for row in curs.fetchall())
        return found


_OPEN = (TransactionStatus.INTRANS, TransactionStatus.INERROR)


def _binary(statement: tuple[str, list[Any]]) -> tuple[Any, list[Any]]:
    """A statement with ``?`` placeholders as psycopg's binary parameters: psycopg writes a text array in Python,
    element by element (a batch of 1,250 chain rows: 16 ms of CPU as text, 1.6 ms in binary)."""
    sql, params = statement
    return sql.replace("?", "%b"), params


RECORDER_TOPICS = {
    "sqlite": "commands.chain:ChainedSQLiteRecorder",
    "postgres": "commands.chain:ChainedPostgresRecorder",
}
