"""PostgreSQL advisory locks: they serialise work on one name across processes, give up with a clear error
when held too long, and let one thread nest locks on a single connection."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from commands.errors import ConcurrentChange
from commands.locks import PostgresAdvisoryLocks
from tests.e2e.processes import ROOT, environment

pytestmark = pytest.mark.postgres

HOLDER = """
import sys, time
from commands.locks import PostgresAdvisoryLocks
locks = PostgresAdvisoryLocks(sys.argv[1])
with locks.hold(sys.argv[2]):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
locks.close()
"""


def hold_in_another_process(url: str, name: str, seconds: float) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, url, name, str(seconds)], env=environment({}),
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_a_lock_held_by_another_process_is_waited_for(postgres_url: str) -> None:
    holder = hold_in_another_process(postgres_url, "subscription:contended", 1.0)
    locks = PostgresAdvisoryLocks(postgres_url, wait_seconds=10)
    try:
        started = time.monotonic()
        with locks.hold("subscription:contended"):
            waited = time.monotonic() - started
            assert holder.poll() is not None or waited > 0.5
        assert 0.5 < waited < 9
    finally:
        locks.close()
        holder.wait(timeout=10)


def test_a_lock_held_too_long_elsewhere_is_a_concurrent_change_and_other_names_are_free(postgres_url: str) -> None:
    holder = hold_in_another_process(postgres_url, "subscription:busy", 3.0)
    locks = PostgresAdvisoryLocks(postgres_url, wait_seconds=0.3)
    try:
        with pytest.raises(ConcurrentChange, match="busy"), locks.hold("subscription:busy"):
            pass
        with locks.hold("subscription:another"):
            pass
    finally:
        locks.close()
        holder.wait(timeout=10)


def test_a_batch_takes_the_free_names_at_once_and_leaves_the_busy_ones_without_waiting(postgres_url: str) -> None:
    holder = hold_in_another_process(postgres_url, "subscription:held-elsewhere", 3.0)
    locks = PostgresAdvisoryLocks(postgres_url, wait_seconds=10)
    rival = PostgresAdvisoryLocks(postgres_url, wait_seconds=0.2)
    try:
        started = time.monotonic()
        with locks.hold_free(["subscription:a", "subscription:held-elsewhere", "subscription:b"]) as taken:
            assert time.monotonic() - started < 2
            assert taken == ["subscription:a", "subscription:b"]
            with pytest.raises(ConcurrentChange), rival.hold("subscription:b"):
                pass
        with rival.hold("subscription:b"):  # released with the batch
            pass
    finally:
        locks.close()
        rival.close()
        holder.wait(timeout=10)


def test_a_killed_holder_releases_its_locks(postgres_url: str) -> None:
    holder = hold_in_another_process(postgres_url, "charge:orphaned", 60.0)
    holder.kill()
    holder.wait()
    locks = PostgresAdvisoryLocks(postgres_url, wait_seconds=5)
    try:
        with locks.hold("charge:orphaned"):
            pass
    finally:
        locks.close()


def test_nested_locks_of_one_thread_share_its_connection_so_a_small_pool_never_starves(postgres_url: str) -> None:
    locks = PostgresAdvisoryLocks(postgres_url, wait_seconds=2, pool_size=1)
    try:
        started = time.monotonic()
        with locks.hold("subscription:a"), locks.hold("charge:a"), locks.hold("charge:b"):
            pass
        assert time.monotonic() - started < 1.5
    finally:
        locks.close()
