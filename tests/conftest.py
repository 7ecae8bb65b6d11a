"""Fixtures shared by the suites. PostgreSQL tests skip when no server answers, except in CI
(LEDGER_REQUIRE_POSTGRES=1), where a missing server fails them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from projections.store import SQLiteViews
from service.bootstrap import Services, bootstrap
from service.settings import load_settings
from tests.support import InMemoryLedger, in_memory_ledger, reseller_with_card

POSTGRES_URL = os.environ.get("LEDGER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_answers() -> str | None:
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return None
    except psycopg.Error as error:
        return str(error).strip()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    problem = _postgres_answers()
    if problem:
        if os.environ.get("LEDGER_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here but does not answer at {POSTGRES_URL}: {problem}")
        pytest.skip(f"PostgreSQL does not answer at {POSTGRES_URL}")
    return POSTGRES_URL


@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[str]:
    """A fresh schema for one test, dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    yield schema
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def service_env(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings (as LEDGER_* variables) for one deployment on the given backend."""
    env = {"LEDGER_DATA_DIR": str(tmp_path / "data"), "LEDGER_SANDBOX_DATA": "false"}
    if backend == "postgres":
        env["LEDGER_DATABASE_URL"] = request.getfixturevalue("postgres_url")
        env["LEDGER_DATABASE_SCHEMA"] = request.getfixturevalue("postgres_schema")
    return env


@pytest.fixture
def services(service_env: dict[str, str]) -> Iterator[Services]:
    overrides = {key.removeprefix("LEDGER_").lower(): value for key, value in service_env.items()}
    built = bootstrap(load_settings(**overrides))
    yield built
    built.close()


@pytest.fixture
def world() -> InMemoryLedger:
    """An in-memory ledger with one reseller, org_1, billing from Germany (19 % tax) with a Visa card."""
    world = in_memory_ledger()
    reseller_with_card(world, "org_1", country="DE")
    return world


@pytest.fixture
def views(tmp_path: Path) -> Iterator[SQLiteViews]:
    """A SQLite database for read models, in this test's folder."""
    db = SQLiteViews(tmp_path / "views.sqlite")
    yield db
    db.close()
