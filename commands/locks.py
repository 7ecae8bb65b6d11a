"""Locks that serialise work on one subscription (or one idempotency key), so that two concurrent
changes never both charge on the same basis. Optimistic concurrency in the event store stays the
final guard; these locks only keep the losers from charging a card first."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from commands.errors import ConcurrentChange


class ThreadLocks:
    """Named locks within one process (the embedded default runs one process)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(name, (threading.Lock(), 0))
            self._locks[name] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[name]
                if users == 1:
                    del self._locks[name]
                else:
                    self._locks[name] = (lock, users - 1)


class PostgresAdvisoryLocks:
    """Named locks across processes: PostgreSQL session advisory locks, behind the in-process ones."""

    def __init__(self, conninfo: str, *, wait_seconds: float = 10.0, pool_size: int = 4) -> None:
        self._local = ThreadLocks()
        self._pool = ConnectionPool(conninfo, min_size=1, max_size=pool_size, open=True, name="ledger-locks",
                                    kwargs={"autocommit": True,
                                            "options": f"-c lock_timeout={int(wait_seconds * 1000)}"})
        self._sessions = threading.local()

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        with self._local.hold(name), self._session() as connection:
            try:
                connection.execute("SELECT pg_advisory_lock(%s)", (key,))
            except psycopg.errors.LockNotAvailable:
                raise ConcurrentChange(f"{name} is busy with another change; retry shortly") from None
            try:
                yield
            finally:
                connection.execute("SELECT pg_advisory_unlock(%s)", (key,))

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection[Any]]:
        """The thread's one connection for all the locks it holds: a command that nests locks (a subscription,
        then its charge) must never wait for a second connection while the pool is drained by its peers."""
        connection = getattr(self._sessions, "connection", None)
        if connection is not None:
            yield connection
            return
        with self._pool.connection() as connection:
            self._sessions.connection = connection
            try:
                yield connection
            finally:
                self._sessions.connection = None

    def close(self) -> None:
        self._pool.close()
