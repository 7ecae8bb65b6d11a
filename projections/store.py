"""Where read models live: a SQLite file per view (the embedded default) or a PostgreSQL schema.

Views write SQL once, with ``?`` placeholders and the SQL that SQLite and PostgreSQL share
(``INSERT ... ON CONFLICT``, row-value comparisons); the PostgreSQL cursor translates placeholders, and sends
the rows of an ``executemany`` of an INSERT or a DELETE by key as one statement over arrays (``unnest``).
Each view's position in the event log lives in the same database, so a batch of rows and the
position they bring the view to commit together.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import fields
from functools import cache
from operator import attrgetter
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg_pool import ConnectionPool

_POSITIONS = """CREATE TABLE IF NOT EXISTS projection_positions (
    projection TEXT PRIMARY KEY, position BIGINT NOT NULL)"""


_STOPS = """CREATE TABLE IF NOT EXISTS projection_stops (
    projection TEXT PRIMARY KEY, reason TEXT NOT NULL)"""


class PositionConflict(Exception):
    """Another follower already brought the view past this batch."""


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    @property
    def rowcount(self) -> int: ...


class ViewDatabase(Protocol):
    dialect: str

    def transaction(self, *, rebuildable: bool = False) -> AbstractContextManager[Cursor]:
        """A write transaction: everything in it commits together, or nothing does. A ``rebuildable`` one
        (a view's rows with its position) need not wait for the disk at commit: a power cut can only take
        the view back to an earlier position, which its follower reads on from."""

    def snapshot(self) -> AbstractContextManager[Cursor]:
        """A read-only transaction that sees one consistent state."""

    def read(self) -> AbstractContextManager[Cursor]:
        """A cursor for one query outside a transaction, which sees one consistent state by itself: the followers
        read their positions once a round, and a transaction around the query cost two more statements."""

    def schema_change(self) -> AbstractContextManager[Cursor]:
        """A write transaction for creating tables, one process at a time (see ``schema_lock``)."""

    def batch(self) -> AbstractContextManager[None]:
        """One commit for the write transactions made in it by this thread, where that saves commits: a round
        of the followers of every view in one SQLite file commits once, not once per view. Each transaction in
        it still commits or fails alone (a savepoint); a failure of the database itself fails the batch."""

    def close(self) -> None: ...


class SQLiteViews:
    """One SQLite file, with a connection per thread (readers never wait for the writer in WAL mode)."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
            with self._guard:
                self._all.append(connection)
        return connection

    @contextmanager
    def transaction(self, *, rebuildable: bool = False) -> Iterator[Cursor]:
        # No commit here waits for the disk (WAL with synchronous=NORMAL), so nothing is left to relax.
        connection = self._connection()
        if getattr(self._local, "batched", False):
            connection.execute("SAVEPOINT view")
            try:
                yield connection.cursor()
            except BaseException:
                connection.execute("ROLLBACK TO view")
                connection.execute("RELEASE view")
                raise
            connection.execute("RELEASE view")
            return
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection.cursor()
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def schema_change(self) -> AbstractContextManager[Cursor]:
        return self.transaction()  # BEGIN IMMEDIATE already admits one writer at a time

    @contextmanager
    def batch(self) -> Iterator[None]:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        self._local.batched = True
        try:
            yield
        except sqlite3.Error:
            connection.execute("ROLLBACK")
            raise
        finally:
            self._local.batched = False
            # Whatever else stopped the batch (a projection that stopped), its transactions that had finished
            # are whole (the one it was in rolled back to its savepoint): they commit.
            if connection.in_transaction:
                connection.execute("COMMIT")

    def take_in(self, old: Path) -> None:
        """Move a view kept in a file of its own (every view had one, before they shared a file) into this
        file: its tables, rows, indexes and position, in one transaction; then remove the old file. The rows of
        the outboxes carry what was sent already, so they must move: rebuilt, they would send it all again.
        Several processes may start at once: the move is recorded in the same transaction, and done once."""
        if not old.exists():
            return
        connection = self._connection()
        connection.execute("ATTACH DATABASE ? AS moving", (str(old),))  # not allowed inside a transaction
        try:
            with self.transaction() as cursor:
                cursor.execute("CREATE TABLE IF NOT EXISTS moved_view_files (name TEXT PRIMARY KEY)")
                if cursor.execute("SELECT 1 FROM moved_view_files WHERE name = ?", (old.name,)).fetchone() is None:
                    _copy_attached(cursor, "moving")
                    cursor.execute("INSERT INTO moved_view_files VALUES (?)", (old.name,))
        finally:
            connection.execute("DETACH DATABASE moving")
        for leftover in (old, old.with_name(f"{old.name}-wal"), old.with_name(f"{old.name}-shm")):
            leftover.unlink(missing_ok=True)

    @contextmanager
    def snapshot(self) -> Iterator[Cursor]:
        connection = self._connection()
        if getattr(self._local, "batched", False):
            yield connection.cursor()  # within a batch: what it wrote so far, which only this thread sees
            return
        connection.execute("BEGIN")
        try:
            yield connection.cursor()
        finally:
            connection.execute("ROLLBACK")

    def read(self) -> AbstractContextManager[Cursor]:
        return self.snapshot()  # the file is in this process: its BEGIN and ROLLBACK cost no round trip

    def close(self) -> None:
        with self._guard:
            for connection in self._all:
                connection.close()
            self._all.clear()
        self._local = threading.local()


def _copy_attached(cursor: Cursor, schema: str) -> None:
    """Every table of an attached database, with its rows and indexes, into the main one (positions added to
    the main one's)."""
    cursor.execute(_POSITIONS)
    cursor.execute(f"SELECT type, name, sql FROM {schema}.sqlite_master WHERE sql IS NOT NULL "
                   f"AND name NOT LIKE 'sqlite%' ORDER BY type = 'index'")
    for kind, name, sql in cursor.fetchall():
        if name == "projection_positions":
            cursor.execute(f"INSERT OR REPLACE INTO projection_positions SELECT * FROM {schema}.{name}")
        elif kind == "table":
            cursor.execute(f"DROP TABLE IF EXISTS main.{name}")  # made empty by a start that did not move it
            cursor.execute(sql)
            cursor.execute(f"INSERT INTO main.{name} SELECT * FROM {schema}.{name}")
        elif kind == "index":
            cursor.execute(f"DROP INDEX IF EXISTS main.{name}")
            cursor.execute(sql)


_INSERT = re.compile(r"INSERT INTO (?P<table>\w+)(?P<alias> AS \w+)?\s+(?:\((?P<columns>[^)]*)\)\s+)?"
                     r"VALUES\s+\((?P<marks>\?(?:,\s*\?)*)\)(?P<rest>[^?]*)", re.S)
_CONFLICT_TARGET = re.compile(r"\s*ON CONFLICT\s+\((?P<target>[^)]*)\)")
_DELETE_BY_KEY = re.compile(r"DELETE FROM (?P<table>\w+) WHERE (?P<key>\w+) = \?(?P<rest>[^?]*)", re.S)


def over_arrays(sql: str, rows: Sequence[Sequence[Any]], types_of: Callable[[str], dict[str, str]]) -> str | None:
    """A PostgreSQL statement over one array per column (``%b`` parameters, the rows' columns in order) that
    does what running ``sql`` once per row does, for an INSERT (upsert or not) or a DELETE by one key. None
    where that is not sure: a statement of another form, or an upsert whose rows repeat a key (row by row,
    each would see the one before). ``types_of`` tells a table's columns, in order, with their types."""
    if (insert := _INSERT.fullmatch(sql)) is not None:
        types = types_of(insert["table"])
        columns = [c.strip() for c in insert["columns"].split(",")] if insert["columns"] else list(types)
        if insert["marks"].count("?") != len(columns) or any(c not in types for c in columns):
            return None
        if (conflict := _CONFLICT_TARGET.match(insert["rest"])) is not None:
            target = [c.strip() for c in conflict["target"].split(",")]
            if any(c not in columns for c in target):
                return None
            keys = [columns.index(c) for c in target]
            if len({tuple(row[k] for k in keys) for row in rows}) != len(rows):
                return None
        arrays = ", ".join(f"%b::{types[c]}[]" for c in columns)
        return (f"INSERT INTO {insert['table']}{insert['alias'] or ''} ({', '.join(columns)}) "
                f"SELECT * FROM unnest({arrays}){insert['rest']}")
    if (delete := _DELETE_BY_KEY.fullmatch(sql)) is not None:
        types = types_of(delete["table"])
        if delete["key"] not in types:
            return None
        key = delete["key"]
        return f"DELETE FROM {delete['table']} WHERE {key} = ANY(%b::{types[key]}[]){delete['rest']}"
    return None


class _PostgresCursor:
    def __init__(self, cursor: psycopg.Cursor[Any], column_types: dict[str, dict[str, str]],
                 pipeline: psycopg.Pipeline | None = None) -> None:
        self._cursor = cursor
        self._column_types = column_types
        self._pipeline = pipeline

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cursor.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        # One statement over one array per column instead of a statement per row: PostgreSQL plans and runs
        # it once (a rebuild writes thousands of rows a batch), and psycopg dumps the arrays in C.
        statement = over_arrays(sql, rows, self._types) if len(rows) > 1 else None
        if statement is None:
            return self._cursor.executemany(sql.replace("?", "%s"), rows)
        return self._cursor.execute(statement, [list(column) for column in zip(*rows, strict=True)])

    def _types(self, table: str) -> dict[str, str]:
        """The table's columns, in order, with their types (scalar types only: an array column is left out)."""
        if table not in self._column_types:
            self._cursor.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                                 "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                                 (table,))
            self._column_types[table] = {name: kind for name, kind in self._cursor.fetchall()
                                         if not kind.endswith("]")}
        return self._column_types[table]

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        if self._pipeline is not None and self._cursor.pgresult is None:
            self._pipeline.sync()  # in a pipeline, a statement's count is known once its result has come back
        return self._cursor.rowcount


class PostgresViews:
    """The views' tables in one schema of a PostgreSQL database."""

    dialect = "postgres"

    def __init__(self, conninfo: str, schema: str, *, pool_size: int = 4) -> None:
        self.schema = schema
        with schema_lock(conninfo, schema) as connection:
            create_schema(connection, schema)
        # A view's queries are prepared once a connection has run them a few times (psycopg's default), and
        # PostgreSQL may then keep one generic plan for good. A view grows from empty (a rebuild, a new
        # deployment): a plan made for an empty table, a scan, once took a rebuild's batch 1.3 s instead of
        # 5 ms. Planning each execution for its table as it is costs well under a millisecond. Commits do not wait
        # for the disk unless a transaction asks to (see ``transaction``).
        self._pool = ConnectionPool(conninfo, min_size=1, max_size=pool_size, open=True, name=f"views-{schema}",
                                    kwargs={"options": f"-c search_path={schema} -c plan_cache_mode=force_custom_plan "
                                                       "-c synchronous_commit=off"})
        self._column_types: dict[str, dict[str, str]] = {}

    @contextmanager
    def transaction(self, *, rebuildable: bool = False) -> Iterator[Cursor]:
        with self._pool.connection() as connection, _refused_moves_as_conflicts():
            if not rebuildable:
                with connection.transaction(), connection.cursor() as cursor:
                    # A rebuildable commit is visible at once and reaches the disk within a few hundred
                    # milliseconds; the write-ahead log is sequential, so any later durable commit (a letter marked
                    # sent, say) makes it durable first. The connections' default is that one: the followers'
                    # view transactions, a dozen a create, are spared a statement each, and the rarer durable
                    # ones (marks of letters and webhooks sent, schema changes, noted stops) ask for the wait.
                    cursor.execute("SET LOCAL synchronous_commit = on")
                    yield _PostgresCursor(cursor, self._column_types)
                return
            with _pipelined(connection, self._column_types) as cursor:
                yield cursor

    def batch(self) -> AbstractContextManager[None]:
        return nullcontext()  # each view's transaction stays its own: they run in two threads (views_pool)

    @contextmanager
    def schema_change(self) -> Iterator[Cursor]:
        with self.transaction() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(?)", (schema_lock_key(self.schema),))
            yield cursor

    @contextmanager
    def snapshot(self) -> Iterator[Cursor]:
        with self._pool.connection() as connection:
            connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            try:
                with connection.transaction(), connection.cursor() as cursor:
                    yield _PostgresCursor(cursor, self._column_types)
            finally:
                connection.isolation_level = None

    @contextmanager
    def read(self) -> Iterator[Cursor]:
        with self._pool.connection() as connection:
            connection.autocommit = True
            try:
                with connection.cursor() as cursor:
                    yield _PostgresCursor(cursor, self._column_types)
            finally:
                if not connection.broken:
                    connection.autocommit = False

    def close(self) -> None:
        self._pool.close()


@contextmanager
def _pipelined(connection: psycopg.Connection[Any], column_types: dict[str, dict[str, str]]) -> Iterator[Cursor]:
    """A view's transaction, its statements pipelined: they go to the database together, and only what the view
    reads waits for an answer. BEGIN, the move of its position and its reads take one round trip, its writes and
    COMMIT another (there was one for each statement: four to eight). (Not ``connection.transaction()``, which
    in a pipeline logs a warning at each error.)"""
    with connection.pipeline() as pipeline, connection.cursor() as cursor:
        try:
            yield _PostgresCursor(cursor, column_types, pipeline)
            connection.commit()
        except BaseException as error:
            cause = error
            if not connection.broken:
                try:
                    pipeline.sync()
                except psycopg.errors.PipelineAborted:
                    pass  # the statements queued after the one that failed, which the database skipped
                except psycopg.Error as unread:  # a statement failed before what the view raised
                    cause = unread
                connection.rollback()
            if cause is not error:
                raise cause from error
            raise


@contextmanager
def _refused_moves_as_conflicts() -> Iterator[None]:
    """The database's refusal to move a view that is no longer where it was (see ``advance_position``), raised as
    ``PositionConflict``. (In a pipeline it comes later than the move: at the view's next read, or at COMMIT.)"""
    try:
        yield
    except psycopg.errors.NotNullViolation as refused:
        if refused.diag.table_name != "projection_positions":
            raise
        raise PositionConflict(f"the view is no longer where it was: {refused.diag.message_primary}") from refused


def schema_lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(f"ledger schema changes: {schema}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def schema_lock(conninfo: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    """Holds the lock that every process takes to create tables, indexes, types or functions in a schema of
    PostgreSQL. Without it, processes starting together collide in the catalog even on ``IF NOT EXISTS``
    and ``CREATE OR REPLACE`` (a duplicate ``pg_type`` row, "tuple concurrently updated"). Yields an
    autocommit connection holding the lock; closing it releases the lock."""
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (schema_lock_key(schema),))
        yield connection


def create_schema(connection: psycopg.Connection[Any], schema: str) -> None:
    connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')


def create_positions_table(cursor: Cursor) -> None:
    cursor.execute(_POSITIONS)
    cursor.execute(_STOPS)


def note_stop(cursor: Cursor, projection: str, reason: str | None) -> None:
    """Note that the view stopped on an event, and why, for every process to see (the API answers health
    checks, while its followers may run in another process); None: it goes on again."""
    if reason is None:
        cursor.execute("DELETE FROM projection_stops WHERE projection = ?", (projection,))
    else:
        cursor.execute("INSERT INTO projection_stops (projection, reason) VALUES (?, ?) "
                       "ON CONFLICT (projection) DO UPDATE SET reason = excluded.reason", (projection, reason))


def stops_of(cursor: Cursor, projections: Sequence[str]) -> dict[str, str]:
    """The views among these that stopped on an event, and why."""
    cursor.execute(f"SELECT projection, reason FROM projection_stops WHERE projection IN "
                   f"({', '.join('?' * len(projections))})", tuple(projections))
    return {str(name): str(reason) for name, reason in cursor.fetchall()}


def position_of(cursor: Cursor, projection: str) -> int:
    cursor.execute("SELECT position FROM projection_positions WHERE projection = ?", (projection,))
    row = cursor.fetchone()
    return int(row[0]) if row else 0


def positions_of(cursor: Cursor, projections: Sequence[str]) -> dict[str, int]:
    """Several views' positions in one query (0 for a view that has processed nothing yet)."""
    cursor.execute(f"SELECT projection, position FROM projection_positions WHERE projection IN "
                   f"({', '.join('?' * len(projections))})", tuple(projections))
    found = {str(name): int(position) for name, position in cursor.fetchall()}
    return {name: found.get(name, 0) for name in projections}


def advance_position(cursor: Cursor, projection: str, before: int, after: int) -> None:
    """Move the view from ``before`` to ``after`` in the current transaction, or refuse if it is not at
    ``before`` any more (a second follower got there first). The database refuses the move (a position cannot be
    NULL), which fails the transaction with ``PositionConflict``: that way a view's transaction does not wait
    here for an answer (on PostgreSQL its statements are pipelined). A view's row of position, once there, is
    never deleted."""
    if before == 0:
        cursor.execute("INSERT INTO projection_positions (projection, position) VALUES (?, 0) "
                       "ON CONFLICT (projection) DO NOTHING", (projection,))
    try:
        cursor.execute("UPDATE projection_positions SET position = CASE WHEN position = ? THEN ? END "
                       "WHERE projection = ?", (before, after, projection))
    except sqlite3.IntegrityError as refused:  # SQLite answers at once
        raise PositionConflict(f"{projection} is no longer at position {before}") from refused


def select_by_keys(cursor: Cursor, select_where_key_in: str, keys: Iterable[str], chunk: int = 500) -> list[Any]:
    """Rows for many keys, a chunk of keys per query: ``select_where_key_in`` ends with ``WHERE key IN``. On
    PostgreSQL, one query over an array of them: psycopg parses anew each query of over 50 parameters, and
    a rebuild spent a tenth of its time there."""
    if isinstance(cursor, _PostgresCursor):
        if not (wanted := list(keys)):
            return []
        cursor.execute(f"{select_where_key_in.removesuffix('IN')}= ANY(?)", (wanted,))
        return cursor.fetchall()
    ordered, rows = sorted(keys), []
    for start in range(0, len(ordered), chunk):
        part = ordered[start:start + chunk]
        cursor.execute(f"{select_where_key_in} ({', '.join('?' * len(part))})", part)
        rows.extend(cursor.fetchall())
    return rows


def row_values(row: Any) -> tuple[Any, ...]:
    """A dataclass row's field values in order, as SQL parameters. (``dataclasses.astuple`` deep-copies
    every value: most of a rebuild's time went there.)"""
    return _getter(type(row))(row)


@cache
def _getter(cls: type) -> Any:
    names = [f.name for f in fields(cls)]
    getter = attrgetter(*names)
    return getter if len(names) > 1 else lambda row: (getter(row),)
