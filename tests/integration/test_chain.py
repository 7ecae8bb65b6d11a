"""The tamper-evident log on SQLite and PostgreSQL: every stored event is chained in its own transaction;
`ledger verify` and the standalone verifier (tools/verify_export.py) find an edited, deleted, inserted or
moved event, in the store and in an export; a log written before the chain is brought under it once."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from cli.main import main
from commands.chain import CHAIN_TABLE, GENESIS, chain_table_sql, event_hash, link
from ledger.subscription import Order
from service.bootstrap import Services, bootstrap
from service.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
VERIFIER = ROOT / "tools" / "verify_export.py"


def _services(env: dict[str, str]) -> Services:
    return bootstrap(load_settings(**{key.removeprefix("LEDGER_").lower(): value for key, value in env.items()}))


def _populate(services: Services) -> None:
    ledger = services.ledger
    ledger.enable_reseller("org_chain", name="Chained", actor="support")
    ledger.set_billing_info("org_chain", payment_method="pm_card_visa", billing_email="b@chain.example",
                            country="DE", actor="admin")
    for seats in (3, 4):
        sub = ledger.create_subscription("org_chain", Order("pro", "monthly", seats=seats, organization_name="C",
                                                            admin_email="a@c.example"), actor="admin").aggregate
        ledger.change_seats("org_chain", sub.id, seats + 2, actor="admin")
        ledger.cancel("org_chain", sub.id, actor="admin")


@pytest.fixture
def env(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in service_env.items():
        monkeypatch.setenv(key, value)
    return service_env


@pytest.fixture
def populated(env: dict[str, str]) -> dict[str, str]:
    services = _services(env)
    try:
        _populate(services)
    finally:
        services.close()
    return env


def ledger(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


def verify_json(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code, out = ledger(capsys, "verify", "--json")
    return code, json.loads(out)


def verify_export(path: Path, *extra: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, str(VERIFIER), *extra, str(path)], capture_output=True, text=True,
                          timeout=60)
    return done.returncode, done.stdout + done.stderr


# --- the store's tables, by hand -------------------------------------------------------------------


class Store:
    """Direct access to the events table, as someone with the database's password would have."""

    def __init__(self, env: dict[str, str]) -> None:
        self.url = env.get("LEDGER_DATABASE_URL")
        if self.url:
            self.events, self.position = f'"{env["LEDGER_DATABASE_SCHEMA"]}".ledger_events', "notification_id"
        else:
            self.path = Path(env["LEDGER_DATA_DIR"]) / "ledger.sqlite"
            self.events, self.position = "stored_events", "rowid"

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.url:
            with psycopg.connect(self.url, autocommit=True) as connection:
                cursor = connection.execute(sql.replace("?", "%s"), params)
                return cursor.fetchall() if cursor.description else []
        import sqlite3

        connection = sqlite3.connect(self.path, isolation_level=None)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()

    def rows(self) -> list[tuple[Any, ...]]:
        return self.run(f"SELECT {self.position}, originator_id, originator_version, topic, state FROM {self.events} "
                        f"ORDER BY {self.position}")

    def position_of(self, topic_suffix: str) -> int:
        return next(row[0] for row in self.rows() if row[3].endswith(topic_suffix))

    def replace_state(self, position: int, old: str, new: str) -> None:
        state = bytes(next(row[4] for row in self.rows() if row[0] == position)).decode()
        assert old in state
        self.run(f"UPDATE {self.events} SET state = ? WHERE {self.position} = ?",
                 (state.replace(old, new).encode(), position))

    def delete(self, position: int) -> None:
        self.run(f"DELETE FROM {self.events} WHERE {self.position} = ?", (position,))

    def insert_copy(self, position: int) -> None:
        """A forged event: an existing one's content under a new version of its stream."""
        self.run(f"INSERT INTO {self.events} (originator_id, originator_version, topic, state) "
                 f"SELECT originator_id, originator_version + 100, topic, state FROM {self.events} "
                 f"WHERE {self.position} = ?", (position,))

    def swap(self, first: int, second: int) -> None:
        """Two rows exchange their contents; each keeps its position."""
        rows = {row[0]: row for row in self.rows() if row[0] in (first, second)}
        self.delete(first)
        self.delete(second)
        for position, source in ((first, second), (second, first)):
            _, originator_id, version, topic, state = rows[source]
            self.run(f"INSERT INTO {self.events} ({self.position}, originator_id, originator_version, topic, state) "
                     "VALUES (?, ?, ?, ?, ?)", (position, originator_id, version, topic, state))


def _edit(store: Store) -> tuple[int, str]:
    position = store.position_of("InvoiceIssued")
    store.replace_state(position, '"total_cents":10710', '"total_cents":10000')
    return position, "content_edited"


def _delete(store: Store) -> tuple[int, str]:
    position = store.position_of("SeatsIncreased")
    store.delete(position)
    return position, "event_deleted"


def _insert(store: Store) -> tuple[int, str]:
    store.insert_copy(store.position_of("SeatsIncreased"))
    return store.rows()[-1][0], "event_inserted"


def _swap(store: Store) -> tuple[int, str]:
    first, second = store.position_of("SubscriptionCreated"), store.position_of("CustomerAccountOpened")
    store.swap(first, second)
    return min(first, second), "order_changed"


TAMPERS: dict[str, Callable[[Store], tuple[int, str]]] = {
    "edit": _edit, "delete": _delete, "insert": _insert, "swap": _swap}


# --- the tests ----------------------------------------------------------------------------------------


def test_every_event_is_chained_and_verify_says_intact(populated: dict[str, str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    count = len(Store(populated).rows())
    code, out = ledger(capsys, "verify")
    assert code == 0 and out.startswith(f"intact: {count} events, head ")
    code, head = ledger(capsys, "verify", "--head")
    position, hashed = head.split()[1], head.split()[3]
    assert code == 0 and out.split()[-1] == hashed and int(position) == Store(populated).rows()[-1][0]
    assert ledger(capsys, "verify", "--anchor", f"{position}:{hashed}")[0] == 0
    assert ledger(capsys, "verify", "--anchor", f"{position}:{'f' * 64}")[0] == 1
    code, out = ledger(capsys, "verify", "--from", "5")
    assert code == 0 and out.startswith(f"intact: {count - 4} events, head {hashed}")


@pytest.mark.parametrize("tamper", TAMPERS)
def test_tampering_with_the_store_is_found_by_verify_and_in_an_export(
        tamper: str, populated: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    position, reason = TAMPERS[tamper](Store(populated))
    code, verdict = verify_json(capsys)
    assert code == 1 and not verdict["intact"]
    assert (verdict["failure"]["position"], verdict["failure"]["reason"]) == (position, reason), verdict
    assert verdict["head"]["position"] < position
    code, out = ledger(capsys, "verify")
    assert code == 1 and out.startswith(f"TAMPERED at position {position}, stream ")

    exported = tmp_path / "export.jsonl"
    assert ledger(capsys, "export-events", "--output", str(exported))[0] == 0
    code, out = verify_export(exported)
    assert code == 1 and "TAMPERED" in out, out
    expected = {"edit": "content edited", "delete": "event deleted", "insert": "event inserted",
                "swap": "order changed"}[tamper]
    assert expected in out, out


@pytest.fixture
def export_lines(populated: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> list[str]:
    exported = tmp_path / "export.jsonl"
    assert ledger(capsys, "export-events", "--output", str(exported))[0] == 0
    assert verify_export(exported)[0] == 0
    return exported.read_text().splitlines()


def _rehash(line: dict[str, Any], previous: str, previous_in_stream: str) -> dict[str, Any]:
    """What a forger who knows the algorithm writes: a line whose own hash is right."""
    line = {**line, "previous_hash": previous, "previous_stream_hash": previous_in_stream}
    line["hash"] = event_hash(line["position"], line["stream_id"], line["version"], line["stored"]["topic"],
                              line["stored"]["state"].encode(), previous, previous_in_stream)
    return line


def _edited(lines: list[str], how: str) -> list[str]:
    records = [json.loads(line) for line in lines]
    index = next(i for i, r in enumerate(records) if r["type"] == "InvoiceIssued")
    if how == "edit_data":
        records[index]["data"]["bill"]["total_cents"] += 1
    elif how == "edit_stored":
        records[index]["stored"]["state"] = records[index]["stored"]["state"].replace('"total_cents":10710',
                                                                                      '"total_cents":10000')
        records[index]["data"]["bill"]["total_cents"] = 10000
    elif how == "delete":
        del records[index]
    elif how == "insert":
        forged = _rehash({**records[index], "version": 7}, records[index]["hash"], records[index]["hash"])
        records.insert(index + 1, forged)
    elif how == "reorder":
        records[index], records[index + 1] = records[index + 1], records[index]
    return [json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in records]


@pytest.mark.parametrize("how, reason", [("edit_data", "content edited"), ("edit_stored", "content edited"),
                                         ("delete", "event deleted"), ("insert", "event inserted"),
                                         ("reorder", "order changed")])
def test_the_standalone_verifier_finds_an_edited_export(
        export_lines: list[str], how: str, reason: str, tmp_path: Path) -> None:
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join(_edited(export_lines, how)) + "\n")
    code, out = verify_export(edited)
    assert code == 1 and reason in out, out


def test_a_reseller_export_verifies_stream_by_stream(populated: dict[str, str], capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    exported = tmp_path / "reseller.jsonl"
    assert ledger(capsys, "export-events", "--reseller", "org_chain", "--output", str(exported))[0] == 0
    lines = exported.read_text().splitlines()
    assert verify_export(exported, "--part") == (0, f"intact: {len(lines)} events, head "
                                                    f"{json.loads(lines[-1])['hash']}\n")
    records = [json.loads(line) for line in lines]
    del records[next(i for i, r in enumerate(records) if r["type"] == "SeatsIncreased")]
    exported.write_text("".join(json.dumps(r) + "\n" for r in records))
    code, out = verify_export(exported, "--part")
    assert code == 1 and "event deleted" in out


def test_a_log_written_before_the_chain_is_upgraded_once(env: dict[str, str], capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    library = ("eventsourcing.postgres:PostgresApplicationRecorder" if "LEDGER_DATABASE_URL" in env
               else "eventsourcing.sqlite:SQLiteApplicationRecorder")
    monkeypatch.setenv("APPLICATION_RECORDER_TOPIC", library)  # the recorder before this change
    services = _services(env)
    _populate(services)
    services.close()
    count = len(Store(env).rows())
    monkeypatch.delenv("APPLICATION_RECORDER_TOPIC")

    code, verdict = verify_json(capsys)
    assert code == 1 and verdict["failure"]["reason"] == "not_chained"
    services = _services(env)  # the new version writes before the upgrade: its events wait too
    services.ledger.enable_reseller("org_later", name="Later", actor="support")
    services.close()
    assert verify_json(capsys)[1]["failure"]["reason"] == "not_chained"

    first, last = Store(env).rows()[0][0], Store(env).rows()[-1][0]
    assert ledger(capsys, "verify", "--upgrade") == (0, f"chained {count + 1} events from position {first} to "
                                                        f"{last}\n")
    code, out = ledger(capsys, "verify", "--upgrade")
    assert code == 0 and out.startswith("nothing to do")
    assert ledger(capsys, "verify")[1].startswith(f"intact: {count + 1} events")

    services = _services(env)
    services.ledger.enable_reseller("org_after", name="After", actor="support")
    services.close()
    assert ledger(capsys, "verify")[1].startswith(f"intact: {count + 2} events")


def test_an_event_whose_chain_row_cannot_be_written_is_not_stored(populated: dict[str, str]) -> None:
    store = Store(populated)
    before = store.rows()
    chain = store.events.replace("ledger_events", "ledger_chain").replace("stored_events", "ledger_chain")
    for position in range(before[-1][0] + 1, before[-1][0] + 50):  # PostgreSQL's sequence may have gaps
        store.run(f"INSERT INTO {chain} VALUES (?, ?, 1, ?, ?, ?)", (position, f"squatter-{position}", GENESIS,
                                                                      GENESIS, GENESIS))
    services = _services(populated)
    try:
        with pytest.raises(Exception):  # noqa: B017  the library's IntegrityError, whatever the handler makes of it
            services.ledger.enable_reseller("org_refused", name="Refused", actor="support")
    finally:
        services.close()
    assert store.rows() == before


def test_a_save_that_loses_a_version_race_stores_nothing_and_the_next_save_chains_on(
        populated: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(populated)
    before = store.rows()
    services = _services(populated)
    try:
        recorder = services.app.recorder
        taken = recorder.select_events(UUID(str(before[0][1])))[0]  # the first event of the log
        fresh = StoredEvent(originator_id=uuid4(), originator_version=1, topic=taken.topic, state=taken.state)
        with pytest.raises(IntegrityError):  # another save already took version 1 of that stream
            recorder.insert_events([fresh, taken])
        assert store.rows() == before and recorder.select_events(fresh.originator_id) == []
        for _ in range(3):  # the pool's connections were left clean
            recorder.insert_events([StoredEvent(uuid4(), 1, taken.topic, taken.state)])
        continued = StoredEvent(taken.originator_id, len(recorder.select_events(taken.originator_id)) + 1,
                                taken.topic, taken.state)
        recorder.insert_events([continued])
    finally:
        services.close()
    assert len(store.rows()) == len(before) + 4
    assert ledger(capsys, "verify")[1].startswith(f"intact: {len(before) + 4} events")


def test_a_checkpoint_notes_the_head_of_each_block_once(populated: dict[str, str],
                                                       capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from commands.checkpoints import record_checkpoint

    services = _services(populated)
    try:
        noted = record_checkpoint(services.app, every=5)
        assert noted is not None and noted.position <= (len(Store(populated).rows()) // 5) * 5
        assert record_checkpoint(services.app, every=5) is None  # that block is noted already
    finally:
        services.close()
    exported = tmp_path / "export.jsonl"
    assert ledger(capsys, "export-events", "--output", str(exported))[0] == 0
    records = {r["position"]: r for r in map(json.loads, exported.read_text().splitlines())}
    checkpoint = next(r for r in records.values() if r["type"] == "LogCheckpointed")
    assert checkpoint["actor"] == "system:scheduler" and checkpoint["stream_type"] == "LogCheckpoint"
    assert checkpoint["data"]["head_hash"] == records[checkpoint["data"]["position"]]["hash"]
    assert ledger(capsys, "verify")[0] == 0 and verify_export(exported)[0] == 0


def test_a_chain_rewritten_after_an_edit_is_caught_by_a_checkpoint(populated: dict[str, str],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from commands.checkpoints import record_checkpoint

    services = _services(populated)
    try:
        noted = record_checkpoint(services.app, every=5)
    finally:
        services.close()
    assert noted is not None
    store = Store(populated)
    edited = next(row[0] for row in store.rows() if row[0] <= noted.position and b'"actor":"admin"' in bytes(row[4]))
    store.replace_state(edited, '"actor":"admin"', '"actor":"someone-else"')
    chain = store.events.replace("ledger_events", "ledger_chain").replace("stored_events", "ledger_chain")
    store.run(f"DELETE FROM {chain}")  # the forger recomputes the whole chain over the edited log
    assert ledger(capsys, "verify", "--upgrade")[0] == 0
    code, verdict = verify_json(capsys)
    assert code == 1 and verdict["failure"]["reason"] == "checkpoint_mismatch", verdict
    assert verdict["failure"]["position"] == store.position_of("LogCheckpointed")


def test_chaining_an_event_of_an_existing_stream_looks_its_predecessor_up_by_index_on_sqlite() -> None:
    """Each save of a stream that has events (a seat increase, a renewal) looks up the hash of its last event:
    a scan of the whole chain there made every such save slower as the log grew."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE events (position INTEGER PRIMARY KEY)")
    for statement in chain_table_sql(CHAIN_TABLE):
        db.execute(statement)
    plans: list[str] = []

    def query(sql: str, params: Any) -> list[tuple[Any, ...]]:
        plans.extend(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        return db.execute(sql, params).fetchall()

    def insert_many(sql: str, rows: list[tuple[Any, ...]]) -> None:
        db.executemany(sql, rows)

    streams = [uuid4() for _ in range(3)]
    for version in (1, 2):
        stored = [StoredEvent(stream, version, "ledger:Subscription.SeatsIncreased", b"{}") for stream in streams]
        start = db.execute(f"SELECT COUNT(*) FROM {CHAIN_TABLE}").fetchone()[0] + 1
        link(query, insert_many, "events", "position", CHAIN_TABLE, list(range(start, start + 3)), stored)
    rows = db.execute(f"SELECT originator_version, previous_stream_hash FROM {CHAIN_TABLE} ORDER BY position")
    assert [(v, h == GENESIS) for v, h in rows] == [(1, True)] * 3 + [(2, False)] * 3  # the predecessors were found
    full_scans = [plan for plan in plans if plan in (f"SCAN {CHAIN_TABLE}", "SCAN c")]  # not "SCAN ... USING INDEX"
    assert not full_scans and any(plan.startswith("SEARCH c USING INDEX") for plan in plans), plans
