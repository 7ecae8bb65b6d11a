"""Start-up in any order and at once: the processes of a PostgreSQL deployment on an empty database, a
process that starts before its database exists, and one that waits for it in vain."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from cli.main import main
from service import bootstrap
from tests.e2e.processes import free_port, serving, started

pytestmark = pytest.mark.e2e

READY = {"projections": "following the event log into", "scheduler": "scheduler running"}


def database_url(server_url: str, name: str) -> str:
    return urlsplit(server_url)._replace(path=f"/{name}").geturl()


@pytest.fixture
def empty_database(postgres_url: str) -> Iterator[str]:
    """The name of a database for this test (the test makes it), dropped afterwards."""
    name = f"ledger_startup_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_database(postgres_url: str, name: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.05)


@pytest.mark.postgres
@pytest.mark.parametrize("attempt", range(10))
def test_serve_projections_and_scheduler_start_together_on_an_empty_database(
        attempt: int, postgres_url: str, empty_database: str, tmp_path: Path) -> None:
    create_database(postgres_url, empty_database)
    env = {"LEDGER_DATA_DIR": str(tmp_path / "data"),
           "LEDGER_DATABASE_URL": database_url(postgres_url, empty_database)}
    logs = {name: tmp_path / f"{name}.log" for name in ("projections", "scheduler", "serve")}
    with ExitStack() as running:
        # Popen returns at once: the three processes start within microseconds of each other.
        followers = {name: running.enter_context(started(name, env=env, output=logs[name])) for name in READY}
        running.enter_context(serving(env, output=logs["serve"]))
        for name, process in followers.items():
            wait_until(lambda name=name, process=process: READY[name] in logs[name].read_text()
                       or process.poll() is not None, f"ledger {name} said it runs")
        time.sleep(0.3)  # the scheduler's first run, and a moment for anything that fails late
        said = {name: log.read_text() for name, log in logs.items()}
        for name, process in followers.items():
            assert process.poll() is None, f"ledger {name} exited:\n{said[name]}"
        for name, text in said.items():
            assert "Traceback" not in text and " ERROR " not in text, f"ledger {name}:\n{text}"


@pytest.mark.postgres
def test_a_process_waits_for_its_database_and_says_so(postgres_url: str, empty_database: str,
                                                      tmp_path: Path) -> None:
    env = {"LEDGER_DATA_DIR": str(tmp_path / "data"),
           "LEDGER_DATABASE_URL": database_url(postgres_url, empty_database)}
    log = tmp_path / "scheduler.log"
    with started("scheduler", env=env, output=log) as process:
        wait_until(lambda: "waiting for PostgreSQL at " in log.read_text() or process.poll() is not None,
                   "the scheduler said it waits")
        assert process.poll() is None, log.read_text()
        assert f'database "{empty_database}" does not exist' in log.read_text()
        create_database(postgres_url, empty_database)
        wait_until(lambda: READY["scheduler"] in log.read_text() or process.poll() is not None,
                   "the scheduler started once the database was there")
        assert process.poll() is None and "Traceback" not in log.read_text(), log.read_text()


def test_a_process_that_waited_in_vain_says_why_in_one_line_and_exits_3(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setattr(bootstrap, "STORE_WAIT_SECONDS", 1.0)
    for key in [key for key in os.environ if key.startswith("LEDGER_")]:
        monkeypatch.delenv(key)
    port = free_port()  # nothing listens there
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{port}/ledger")

    assert main(["scheduler"]) == 3

    said = capsys.readouterr().err
    assert said.startswith(f"ledger: PostgreSQL at 127.0.0.1:{port} did not answer within 1 s: ")
    assert "refused" in said
