"""Locks that serialise work on one subscription (or one idempotency key), so that two concurrent
changes never both charge on the same basis. Optimistic concurrency in the event store stays the
final guard; these locks only keep the losers from charging a card first."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
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
                self._forget(name, lock, users)

    @contextmanager
    def hold_free(self, names: Sequence[str]) -> Iterator[list[str]]:
        """Take those of ``names`` that nobody holds, without waiting; yields the names taken."""
        taken: list[tuple[str, threading.Lock]] = []
        with self._guard:
            for name in dict.fromkeys(names):
                lock, users = self._locks.get(name) or (threading.Lock(), 0)
                if lock.acquire(blocking=False):
                    self._locks[name] = (lock, users + 1)
                    taken.append((name, lock))
        try:
            yield [name for name, _ in taken]
        finally:
            with self._guard:
                for name, lock in taken:
                    lock.release()
                    self._forget(name, *self._locks[name])

    def _forget(self, name: str, lock: threading.Lock, users: int) -> None:
        if users == 1:
            del self._locks[name]
        else:
            self._locks[name] = (lock, users - 1)


SESSIONS = 16
"""Connections per process for the advisory locks. A command keeps its thread's connection from its first lock to
its last release, so this caps the commands of one process that run at once: with 4, sixteen HTTP clients made
128-130 creates/s and with 16, 188-209 (bench/README.md). Connections are opened as concurrent commands need them."""


class PostgresAdvisoryLocks:
    """Named locks across processes: PostgreSQL session advisory locks, behind the in-process ones."""

    def __init__(self, conninfo: str, *, wait_seconds: float = 10.0, pool_size: int = SESSIONS) -> None:
        self._local = ThreadLocks()
        self._pool = ConnectionPool(conninfo, min_size=1, max_size=pool_size, open=True, name="ledger-locks",
                                    kwargs={"autocommit": True,
                                            "options": f"-c lock_timeout={int(wait_seconds * 1000)}"})
        self._sessions = threading.local()

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        key = _key(name)
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
    def hold_free(self, names: Sequence[str]) -> Iterator[list[str]]:
        """Take those of ``names`` that nobody holds, in this process or another, without waiting, in one round
        trip; yields the names taken (a batch's busy members are left for later)."""
        with ExitStack() as held:
            local = held.enter_context(self._local.hold_free(names))
            if not local:
                yield []
                return
            connection = held.enter_context(self._session())
            keys = {_key(name): name for name in local}
            rows = connection.execute("SELECT k FROM unnest(%b::bigint[]) AS k WHERE pg_try_advisory_lock(k)",
                                      (list(keys),)).fetchall()
            taken = [row[0] for row in rows]
            try:
                yield [keys[key] for key in taken]
            finally:
                connection.execute("SELECT pg_advisory_unlock(k) FROM unnest(%b::bigint[]) AS k", (taken,))

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


def _key(name: str) -> int:
    """A lock's name as an advisory lock key (64 bits of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
