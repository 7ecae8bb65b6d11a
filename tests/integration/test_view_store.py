"""The views' stores: PostgreSQL runs a view's many rows as one statement over arrays, with the effect of
running the statement once per row (and of SQLite's executemany); a view's own transaction does not wait
for the disk at commit, others do, and runs its statements in a pipeline on PostgreSQL; a view that is no longer
where its follower found it is not moved, nor are its rows changed; positions are read for several views at once."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.store import (
    Cursor,
    PositionConflict,
    PostgresViews,
    SQLiteViews,
    ViewDatabase,
    advance_position,
    create_positions_table,
    over_arrays,
    positions_of,
)

TABLES = ("CREATE TABLE items (k TEXT PRIMARY KEY, n INTEGER, big BIGINT NOT NULL, note TEXT)",
          "CREATE TABLE counts (k TEXT PRIMARY KEY, total INTEGER NOT NULL)")
TYPES = {"items": {"k": "text", "n": "integer", "big": "bigint", "note": "text"},
         "counts": {"k": "text", "total": "integer"}}

INSERT_IGNORING = "INSERT INTO items (k, n, big, note) VALUES (?, ?, ?, ?) ON CONFLICT (k) DO NOTHING"
UPSERT = "INSERT INTO items VALUES (?, ?, ?, ?) ON CONFLICT (k) DO UPDATE SET n = excluded.n, note = excluded.note"
ACCUMULATE = "INSERT INTO counts AS c VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET total = c.total + excluded.total"
DELETE = "DELETE FROM items WHERE k = ?"
DELETE_SOME = "DELETE FROM items WHERE k = ? AND n IS NOT NULL"

keys = st.sampled_from(["a", "b", "c", "d", "é ünï", "x'y"])
item = st.tuples(keys, st.none() | st.integers(-2**31, 2**31 - 1), st.integers(-2**63, 2**63 - 1),
                 st.none() | st.text(max_size=8).filter(lambda t: "\x00" not in t))
operations = st.lists(st.one_of(
    st.tuples(st.sampled_from([INSERT_IGNORING, UPSERT]), st.lists(item, max_size=6)),
    st.tuples(st.just(ACCUMULATE), st.lists(st.tuples(keys, st.integers(-1000, 1000)), max_size=6)),
    st.tuples(st.sampled_from([DELETE, DELETE_SOME]), st.lists(st.tuples(keys), max_size=4)),
), max_size=6)


def test_inserts_and_deletes_by_key_become_one_statement_over_arrays() -> None:
    rows = [("a", 1, 2, None), ("b", None, 3, "x")]
    assert over_arrays(INSERT_IGNORING, rows, TYPES.__getitem__) == (
        "INSERT INTO items (k, n, big, note) SELECT * FROM unnest(%b::text[], %b::integer[], %b::bigint[], "
        "%b::text[]) ON CONFLICT (k) DO NOTHING")
    assert over_arrays(UPSERT, rows, TYPES.__getitem__) == (
        "INSERT INTO items (k, n, big, note) SELECT * FROM unnest(%b::text[], %b::integer[], %b::bigint[], "
        "%b::text[]) ON CONFLICT (k) DO UPDATE SET n = excluded.n, note = excluded.note")
    assert over_arrays(ACCUMULATE, [("a", 1), ("b", 2)], TYPES.__getitem__) == (
        "INSERT INTO counts AS c (k, total) SELECT * FROM unnest(%b::text[], %b::integer[]) "
        "ON CONFLICT (k) DO UPDATE SET total = c.total + excluded.total")
    assert over_arrays(DELETE_SOME, [("a",), ("b",)], TYPES.__getitem__) == (
        "DELETE FROM items WHERE k = ANY(%b::text[]) AND n IS NOT NULL")


def test_what_is_not_sure_to_mean_the_same_stays_row_by_row() -> None:
    # An upsert whose rows repeat a key: row by row, the second sees the first.
    assert over_arrays(ACCUMULATE, [("a", 1), ("a", 2)], TYPES.__getitem__) is None
    # Other forms: an UPDATE, a DELETE by two keys, a placeholder after VALUES, an unknown column.
    assert over_arrays("UPDATE items SET n = ? WHERE k = ?", [(1, "a"), (2, "b")], TYPES.__getitem__) is None
    assert over_arrays("DELETE FROM items WHERE k = ? AND n = ?", [("a", 1), ("b", 2)], TYPES.__getitem__) is None
    assert over_arrays("INSERT INTO counts VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET total = ?",
                       [("a", 1, 1), ("b", 2, 2)], TYPES.__getitem__) is None
    assert over_arrays("INSERT INTO counts (k, other) VALUES (?, ?)", [("a", 1), ("b", 2)],
                       TYPES.__getitem__) is None


def _contents(cursor: Cursor) -> tuple[list[Any], list[Any]]:
    cursor.execute("SELECT k, n, big, note FROM items ORDER BY k")
    items = [tuple(row) for row in cursor.fetchall()]
    cursor.execute("SELECT k, total FROM counts ORDER BY k")
    return items, [tuple(row) for row in cursor.fetchall()]


def _run(db: ViewDatabase, steps: list[tuple[str, list[tuple[Any, ...]]]], *, row_by_row: bool) -> Any:
    """The tables after the steps, each in its own transaction; a step that fails leaves nothing behind
    and is reported by its error's class."""
    outcomes = []
    for sql, rows in steps:
        try:
            with db.transaction() as cursor:
                if row_by_row:
                    for row in rows:
                        cursor.execute(sql, row)
                elif rows:
                    cursor.executemany(sql, rows)
            outcomes.append("ok")
        except (psycopg.IntegrityError, psycopg.errors.CardinalityViolation) as error:
            outcomes.append(type(error).__name__)
    with db.snapshot() as cursor:
        return outcomes, _contents(cursor)


@pytest.fixture
def postgres_views(postgres_url: str, postgres_schema: str) -> Iterator[PostgresViews]:
    db = PostgresViews(postgres_url, postgres_schema)
    yield db
    db.close()


def _clear(db: ViewDatabase) -> None:
    with db.transaction() as cursor:
        cursor.execute("DELETE FROM items")
        cursor.execute("DELETE FROM counts")


@pytest.mark.postgres
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=operations)
def test_statements_over_arrays_do_what_the_rows_one_by_one_do(postgres_views: PostgresViews, tmp_path: Path,
                                                               steps: list[tuple[str, list[tuple[Any, ...]]]]
                                                               ) -> None:
    sqlite = SQLiteViews(tmp_path / "views.sqlite")
    try:
        for db in (postgres_views, sqlite):
            with db.transaction() as cursor:
                for table in TABLES:
                    cursor.execute(table.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
            _clear(db)
        one_by_one = _run(postgres_views, steps, row_by_row=True)
        _clear(postgres_views)
        at_once = _run(postgres_views, steps, row_by_row=False)
        _clear(postgres_views)
        assert at_once == one_by_one
        on_sqlite = _run(sqlite, steps, row_by_row=False)
        assert on_sqlite[1] == one_by_one[1]
    finally:
        sqlite.close()


@pytest.mark.postgres
def test_a_views_own_transaction_does_not_wait_for_the_disk_and_others_do(postgres_views: PostgresViews) -> None:
    with postgres_views.transaction(rebuildable=True) as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "off"
    with postgres_views.transaction() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"


@pytest.mark.postgres
def test_a_read_runs_its_query_outside_a_transaction_and_gives_the_connection_back_as_it_was(
        postgres_url: str, postgres_schema: str) -> None:
    db = PostgresViews(postgres_url, postgres_schema, pool_size=1)  # one connection: each step below reuses it
    try:
        with db.transaction() as cursor:
            cursor.execute("CREATE TABLE kept (n integer)")
        with db.read() as cursor:  # its own transaction: the statement began it
            cursor.execute("SELECT now() = statement_timestamp()")
            assert cursor.fetchone()[0] is True
        with pytest.raises(psycopg.errors.UndefinedTable), db.read() as cursor:
            cursor.execute("SELECT * FROM missing")
        with db._pool.connection() as connection:
            assert connection.autocommit is False
        with pytest.raises(RuntimeError), db.transaction() as cursor:  # still all or nothing
            cursor.execute("INSERT INTO kept VALUES (1)")
            raise RuntimeError("the change fails half way")
        with db.snapshot() as cursor:
            cursor.execute("SELECT count(*) FROM kept")
            assert cursor.fetchone()[0] == 0
    finally:
        db.close()


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_positions_of_several_views_at_once(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    db: ViewDatabase = (request.getfixturevalue("postgres_views") if store == "postgres"
                        else SQLiteViews(tmp_path / "views.sqlite"))
    with db.transaction() as cursor:
        create_positions_table(cursor)
        advance_position(cursor, "customer_table", 0, 42)
        advance_position(cursor, "summary", 0, 7)
    with db.snapshot() as cursor:
        assert positions_of(cursor, ["summary", "customer_table", "never_ran"]) == {
            "summary": 7, "customer_table": 42, "never_ran": 0}
    if store == "sqlite":
        db.close()


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_view_no_longer_where_it_was_is_neither_moved_nor_changed_and_the_store_goes_on(
        store: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    db: ViewDatabase = (request.getfixturevalue("postgres_views") if store == "postgres"
                        else SQLiteViews(tmp_path / "views.sqlite"))
    with db.transaction() as cursor:
        create_positions_table(cursor)
        cursor.execute(TABLES[0])
    with db.transaction(rebuildable=True) as cursor:
        advance_position(cursor, "items", 0, 5)
        cursor.execute("INSERT INTO items VALUES ('a', 1, 1, NULL)")

    def stale_move(before: int, *, reads: bool) -> None:
        with db.transaction(rebuildable=True) as cursor:
            advance_position(cursor, "items", before, 9)
            if reads:  # on PostgreSQL the refusal comes back with the view's first read...
                cursor.execute("SELECT k FROM items WHERE k = ?", ("a",))
                cursor.fetchall()
            cursor.execute("INSERT INTO items VALUES ('b', 2, 2, NULL)")  # ...or at COMMIT when it reads nothing

    for before in (0, 3, 7):
        for reads in (True, False):
            with pytest.raises(PositionConflict):
                stale_move(before, reads=reads)
    with db.transaction(rebuildable=True) as cursor:  # the refusals left the connections as they were
        advance_position(cursor, "items", 5, 6)
        cursor.execute("UPDATE items SET n = 3 WHERE k = ?", ("missing",))
        assert cursor.rowcount == 0  # known once it has come back, in a pipeline too
        cursor.execute("UPDATE items SET n = 3 WHERE k = ?", ("a",))
        assert cursor.rowcount == 1
    with pytest.raises((psycopg.errors.UniqueViolation, sqlite3.IntegrityError)), \
            db.transaction(rebuildable=True) as cursor:  # another failure is the view's, as it was
        advance_position(cursor, "items", 6, 7)
        cursor.execute("INSERT INTO items VALUES ('a', 1, 1, NULL)")
    with db.snapshot() as cursor:
        assert positions_of(cursor, ["items"]) == {"items": 6}
        cursor.execute("SELECT k, n FROM items ORDER BY k")
        assert [tuple(row) for row in cursor.fetchall()] == [("a", 3)]
    if store == "sqlite":
        db.close()
