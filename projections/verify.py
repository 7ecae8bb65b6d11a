"""`ledger verify`: recompute the hash chain of the event log (commands/chain.py) and name the first event
that does not fit, and the explicit upgrade that brings a log written before the chain under it.

The events table and the chain table are read side by side in position order, a batch at a time, each
batch in one snapshot of the database (so an event and its chain row, committed together, are seen
together); memory does not grow with the log. A stream's previous hash is checked against the chain row
of the stream's previous version, which the batch query joins (by the chain's index on stream and
version): that row sits at an earlier position, which the walk has already checked.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.rows import tuple_row

from commands.chain import CHAIN_TABLE, GENESIS, event_hash, link, stream_key

BATCH = 5000
CHECKPOINT_TOPIC = "ledger:LogCheckpoint.LogCheckpointed"

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


class RawLog:
    """The events table and the chain table of the ledger's store, read without decoding events."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        if isinstance(recorder, PostgresApplicationRecorder):
            self.dialect = "postgres"
            schema = recorder.datastore.schema
            self.events = f'"{schema}"."{recorder.events_table_name}"'
            self.chain = f'"{schema}"."{CHAIN_TABLE}"'
            self.position = "notification_id"
        elif isinstance(recorder, SQLiteApplicationRecorder):
            self.dialect = "sqlite"
            self.events, self.chain, self.position = recorder.events_table_name, CHAIN_TABLE, "rowid"
        else:
            raise TypeError(f"no hash chain in a {type(recorder).__name__}")

    @contextmanager
    def snapshot(self) -> Iterator[Query]:
        """A read-only transaction that sees one committed state of both tables."""
        if self.dialect == "sqlite":
            with self.recorder.datastore.transaction(commit=False) as cursor:
                def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                    cursor.execute(sql, params)
                    return [tuple(row) for row in cursor.fetchall()]
                yield query
            return
        with self.recorder.datastore.get_connection() as connection, connection.transaction(force_rollback=True):
            cursor = connection.cursor(row_factory=tuple_row)
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

            def pg_query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                cursor.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
                return cursor.fetchall()
            yield pg_query

    @contextmanager
    def writing(self) -> Iterator[tuple[Query, Callable[[str, list[tuple[Any, ...]]], None]]]:
        """A write transaction holding the log's write lock (as the recorder's inserts do)."""
        if self.dialect == "sqlite":
            connection = sqlite3.connect(self.recorder.datastore.pool.db_name, isolation_level=None, timeout=30)
            try:
                connection.execute("BEGIN IMMEDIATE")

                def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                    return connection.execute(sql, params).fetchall()
                try:
                    yield query, connection.executemany  # type: ignore[misc]
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
            finally:
                connection.close()
            return
        with self.recorder.datastore.get_connection() as connection, connection.transaction():
            cursor = connection.cursor(row_factory=tuple_row)
            cursor.execute(f"LOCK TABLE {self.events} IN EXCLUSIVE MODE")

            def pg_query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                cursor.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
                return cursor.fetchall()

            def insert_many(sql: str, rows: list[tuple[Any, ...]]) -> None:
                cursor.executemany(sql.replace("?", "%s"), rows)  # type: ignore[arg-type]
            yield pg_query, insert_many

    # --- reading ------------------------------------------------------------------------------

    def read_events(self, query: Query, after: int, limit: int) -> list[tuple[Any, ...]]:
        """(position, stream id, version, topic, state) of the next events."""
        rows = query(f"SELECT {self.position}, originator_id, originator_version, topic, state FROM {self.events} "
                     f"WHERE {self.position} > ? ORDER BY {self.position} LIMIT ?", (after, limit))
        return [(r[0], stream_key(r[1]), r[2], r[3], r[4].encode() if isinstance(r[4], str) else bytes(r[4]))
                for r in rows]

    def read_chain(self, query: Query, after: int, upto: int | None, limit: int) -> list[tuple[Any, ...]]:
        """(position, stream id, version, hash, previous hash, previous stream hash, position and hash of the
        stream's previous version) of the next chain rows."""
        bound = "AND c.position <= ? " if upto is not None else ""
        params = (after, upto, limit) if upto is not None else (after, limit)
        return query(
            "SELECT c.position, c.originator_id, c.originator_version, c.event_hash, c.previous_hash, "
            f"c.previous_stream_hash, p.position, p.event_hash FROM {self.chain} c LEFT JOIN {self.chain} p "
            "ON p.originator_id = c.originator_id AND p.originator_version = c.originator_version - 1 "
            f"WHERE c.position > ? {bound}ORDER BY c.position LIMIT ?", params)

    def chain_head(self, query: Query, before: int | None = None) -> tuple[int, str] | None:
        where = "WHERE position < ? " if before is not None else ""
        rows = query(f"SELECT position, event_hash FROM {self.chain} {where}ORDER BY position DESC LIMIT 1",
                     (before,) if before is not None else ())
        return (int(rows[0][0]), rows[0][1]) if rows else None

    def event_head(self, query: Query) -> int:
        rows = query(f"SELECT MAX({self.position}) FROM {self.events}", ())
        return int(rows[0][0] or 0)

    def chain_row_of(self, query: Query, stream: str, version: int) -> tuple[Any, ...] | None:
        rows = query(f"SELECT position, event_hash, previous_hash, previous_stream_hash FROM {self.chain} "
                     "WHERE originator_id = ? AND originator_version = ?", (stream, version))
        return rows[0] if rows else None

    def stored_with_hashes(self, query: Query, positions: Sequence[int]) -> dict[int, tuple[Any, ...]]:
        """Position → (topic, state, hash, previous hash, previous stream hash) for exports; the hashes are
        None where the chain has no row."""
        found: dict[int, tuple[Any, ...]] = {}
        for start in range(0, len(positions), 500):
            part = list(positions[start:start + 500])
            rows = query(f"SELECT e.{self.position}, e.topic, e.state, c.event_hash, c.previous_hash, "
                         f"c.previous_stream_hash FROM {self.events} e LEFT JOIN {self.chain} c "
                         f"ON c.position = e.{self.position} "
                         f"WHERE e.{self.position} IN ({', '.join('?' * len(part))})", part)
            found.update({int(r[0]): (r[1], r[2].encode() if isinstance(r[2], str) else bytes(r[2]), *r[3:])
                          for r in rows})
        return found


# --- verification -----------------------------------------------------------------------------------

REASONS = {
    "content_edited": "content edited: the stored event no longer matches its hash",
    "event_deleted": "event deleted: the chain records an event here that the log no longer holds",
    "event_inserted": "event inserted: the log holds an event here that the chain never recorded",
    "order_changed": "order changed: this event was recorded at another position",
    "chain_altered": "chain altered: the chain's own record does not link to its predecessor",
    "stream_broken": "stream broken: the stream's previous event is missing from the chain",
    "checkpoint_mismatch": "checkpoint mismatch: the chain was rewritten since this checkpoint noted its head",
    "anchor_mismatch": "anchor mismatch: the hash at the anchored position differs from the one noted",
    "not_chained": "the log is not under the hash chain yet: run `ledger verify --upgrade` once",
}


@dataclass(frozen=True)
class Failure:
    position: int
    stream_id: str | None
    version: int | None
    reason: str
    detail: str = ""

    def describe(self) -> str:
        where = f"position {self.position}"
        if self.stream_id is not None:
            where += f", stream {self.stream_id} version {self.version}"
        return f"{where}: {REASONS[self.reason]}{f' ({self.detail})' if self.detail else ''}"


@dataclass(frozen=True)
class Verdict:
    events: int
    """How many events were checked."""
    head_position: int
    head_hash: str
    failure: Failure | None = None

    @property
    def intact(self) -> bool:
        return self.failure is None

    def as_json(self) -> dict[str, Any]:
        verdict: dict[str, Any] = {"intact": self.intact, "events": self.events,
                                   "head": {"position": self.head_position, "hash": self.head_hash}}
        if self.failure is not None:
            f = self.failure
            verdict["failure"] = {"position": f.position, "stream_id": f.stream_id, "version": f.version,
                                  "reason": f.reason, "message": REASONS[f.reason], "detail": f.detail}
        return verdict


def verify(raw: RawLog, *, start: int = 1, batch: int = BATCH, anchor: tuple[int, str] | None = None,
           progress: Callable[[int], None] | None = None) -> Verdict:
    """Walk the log from position ``start`` (trusting the chain before it) to the head as it was when the
    walk began."""
    with raw.snapshot() as query:
        stop = max(raw.event_head(query), (raw.chain_head(query) or (0, ""))[0])
        before = raw.chain_head(query, start)
        if raw.chain_head(query) is None and stop > 0:
            return Verdict(0, 0, GENESIS, Failure(start, None, None, "not_chained", f"{stop} events"))
    previous = before[1] if before else GENESIS
    head_position = before[0] if before else 0
    after, checked = start - 1, 0
    while after < stop:
        with raw.snapshot() as query:
            events = raw.read_events(query, after, batch)
            upto = events[-1][0] if len(events) == batch else stop
            chain = raw.read_chain(query, after, upto, batch * 4)
            if len(chain) == batch * 4:  # many deleted events in a row: check this part first
                upto = chain[-1][0]
                events = [e for e in events if e[0] <= upto]
            count, last, failure = _check_batch(raw, query, events, chain, previous, anchor)
        checked += count
        if last is not None:
            head_position, previous = last
        if failure is not None:
            return Verdict(checked, head_position, previous, failure)
        after = upto
        if progress:
            progress(checked)
    if anchor is not None and anchor[0] > head_position:
        return Verdict(checked, head_position, previous,
                       Failure(anchor[0], None, None, "anchor_mismatch", "the log ends before the anchor"))
    return Verdict(checked, head_position, previous)


def _check_batch(raw: RawLog, query: Query, events: list[tuple[Any, ...]], chain: list[tuple[Any, ...]],
                 previous: str, anchor: tuple[int, str] | None
                 ) -> tuple[int, tuple[int, str] | None, Failure | None]:
    """How many events fit the chain, the last that did, and the first that did not."""
    count = 0
    last: tuple[int, str] | None = None
    e_index = c_index = 0
    while e_index < len(events) or c_index < len(chain):
        event = events[e_index] if e_index < len(events) else None
        row = chain[c_index] if c_index < len(chain) else None
        if row is None or (event is not None and event[0] < row[0]):
            assert event is not None
            return count, last, (_misplaced(raw, query, event)
                                 or Failure(event[0], event[1], event[2], "event_inserted"))
        if event is None or row[0] < event[0]:
            return count, last, Failure(row[0], row[1], row[2], "event_deleted")
        position, stream, version, topic, state = event
        _, chained_stream, chained_version, hashed, previous_hash, previous_stream_hash, pred_position, \
            pred_hash = row
        if previous_hash != previous:
            return count, last, Failure(position, stream, version, "chain_altered")
        if (stream, version) != (chained_stream, int(chained_version)):
            return count, last, _misplaced(raw, query, event) or Failure(
                position, stream, version, "event_inserted",
                f"the chain records {chained_stream} version {chained_version} here")
        if event_hash(position, stream, version, topic, state, previous_hash, previous_stream_hash) != hashed:
            return count, last, Failure(position, stream, version, "content_edited")
        if version == 1:
            if previous_stream_hash != GENESIS:
                return count, last, Failure(position, stream, version, "chain_altered")
        elif pred_hash is None or pred_position >= position:
            return count, last, Failure(position, stream, version, "stream_broken")
        elif pred_hash != previous_stream_hash:
            return count, last, Failure(position, stream, version, "chain_altered")
        if topic == CHECKPOINT_TOPIC and (found := _checkpoint_differs(raw, query, state)):
            return count, last, Failure(position, stream, version, "checkpoint_mismatch", found)
        if anchor is not None and anchor[0] == position and anchor[1] != hashed:
            return count, last, Failure(position, stream, version, "anchor_mismatch",
                                        f"noted {anchor[1]}, now {hashed}")
        previous, last = hashed, (position, hashed)
        count += 1
        e_index += 1
        c_index += 1
    return count, last, None


def _checkpoint_differs(raw: RawLog, query: Query, state: bytes) -> str | None:
    """What differs between a LogCheckpointed event and the chain at the position it noted, if anything."""
    noted = json.loads(state)
    rows = query(f"SELECT event_hash FROM {raw.chain} WHERE position = ?", (noted["position"],))
    now = rows[0][0] if rows else None
    return None if now == noted["head_hash"] else f"noted {noted['head_hash']} at {noted['position']}, now {now}"


def _misplaced(raw: RawLog, query: Query, event: tuple[Any, ...]) -> Failure | None:
    """The failure of an event found where the chain does not expect it, if the chain recorded this very
    event (same stream, version and content) at another position."""
    position, stream, version, topic, state = event
    recorded = raw.chain_row_of(query, stream, version)
    if recorded is None or recorded[0] == position:
        return None
    if event_hash(int(recorded[0]), stream, version, topic, state, recorded[2], recorded[3]) == recorded[1]:
        return Failure(position, stream, version, "order_changed", f"recorded at position {recorded[0]}")
    return Failure(position, stream, version, "content_edited",
                   f"and moved: the chain records this event at position {recorded[0]}")


def head(raw: RawLog) -> tuple[int, str] | None:
    with raw.snapshot() as query:
        return raw.chain_head(query)


# --- the upgrade --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Upgrade:
    chained: int
    first: int
    last: int
    message: str


def upgrade(raw: RawLog, *, batch: int = BATCH) -> Upgrade:
    """Chain a log written before the chain, once, under the log's write lock. Refuses to chain events
    after an existing chain: every write since the chain began chains itself, so those events were written
    around it (an older version of the service, or by hand), and `ledger verify` names them."""
    with raw.writing() as (query, insert_many):
        existing = raw.chain_head(query)
        if existing is not None:
            unchained = raw.read_events(query, existing[0], 1)
            if not unchained:
                return Upgrade(0, 0, 0, f"nothing to do: the log is under the chain up to position {existing[0]}")
            raise UpgradeRefused(f"the chain ends at position {existing[0]} but the log holds events after it "
                                 f"(from position {unchained[0][0]}): they were not written by this service; "
                                 "see `ledger verify`")
        after = first = last = chained = 0
        while rows := raw.read_events(query, after, batch):
            stored = [StoredEvent(originator_id=r[1], originator_version=r[2], topic=r[3], state=r[4]) for r in rows]
            link(query, insert_many, raw.events, raw.position, raw.chain, [r[0] for r in rows], stored,
                 arrays=raw.dialect == "postgres")
            first, last, chained, after = first or rows[0][0], rows[-1][0], chained + len(rows), rows[-1][0]
    if not chained:
        return Upgrade(0, 0, 0, "nothing to do: the log is empty")
    return Upgrade(chained, first, last, f"chained {chained} events from position {first} to {last}")


class UpgradeRefused(Exception):
    pass
