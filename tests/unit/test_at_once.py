"""Work on several items at once: results in order, a lone item in the caller's thread, errors raised; and items
taken from a lazy source only as threads come free for them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from commands.at_once import each_at_once, map_at_once


def test_results_come_in_the_items_order_however_the_work_ends() -> None:
    def slower_first(n: int) -> int:
        time.sleep(0.01 * (5 - n))
        return n * n
    assert map_at_once(slower_first, [0, 1, 2, 3, 4], at_most=3, name="t") == [0, 1, 4, 9, 16]


def test_no_more_than_at_most_run_together() -> None:
    running, most, guard = 0, 0, threading.Lock()

    def work(_: int) -> None:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with guard:
            running -= 1
    map_at_once(work, list(range(12)), at_most=3, name="t")
    assert 1 < most <= 3


def test_a_lone_item_runs_in_the_callers_thread() -> None:
    assert map_at_once(lambda _: threading.current_thread(), ["x"], at_most=8, name="t") == [threading.current_thread()]


def test_an_error_is_raised_after_every_item_has_ended() -> None:
    ended: list[int] = []

    def work(n: int) -> int:
        if n == 0:
            raise ValueError("the first item failed")
        time.sleep(0.005)
        ended.append(n)
        return n
    # Most items are still waiting for a thread when the first fails: every one of them runs all the same.
    with pytest.raises(ValueError, match="first item"):
        map_at_once(work, list(range(20)), at_most=2, name="t")
    assert sorted(ended) == list(range(1, 20))


def test_each_at_once_takes_an_item_from_its_source_only_once_a_thread_is_free_for_it() -> None:
    taken: list[int] = []
    release = threading.Event()

    def source() -> Iterator[int]:
        for n in range(10):
            taken.append(n)
            yield n

    def work(n: int) -> int:
        release.wait(5)
        return n * n
    results: list[int] = []
    collector = threading.Thread(target=lambda: results.extend(each_at_once(work, source(), at_most=3, name="t")))
    collector.start()
    deadline = time.monotonic() + 5
    while len(taken) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)
    assert taken == [0, 1, 2]  # three running, the fourth not read yet
    release.set()
    collector.join(5)
    assert taken == list(range(10))
    assert sorted(results) == [n * n for n in range(10)]


def test_each_at_once_takes_no_more_items_after_an_error_and_raises_it_once_the_begun_ones_have_ended() -> None:
    taken: list[int] = []
    ended: list[int] = []

    def source() -> Iterator[int]:
        for n in range(100):
            taken.append(n)
            yield n

    def work(n: int) -> int:
        if n == 0:
            raise ValueError("the first item failed")
        time.sleep(0.02)
        ended.append(n)
        return n
    with pytest.raises(ValueError, match="first item"):
        list(each_at_once(work, source(), at_most=2, name="t"))
    assert (taken, ended) == ([0, 1], [1])


def test_each_at_once_raises_what_its_source_raises_once_the_begun_items_have_ended() -> None:
    ended: list[int] = []

    def source() -> Iterator[int]:
        yield 1
        raise LookupError("the source failed")

    def work(n: int) -> int:
        time.sleep(0.02)
        ended.append(n)
        return n
    with pytest.raises(LookupError, match="source failed"):
        list(each_at_once(work, source(), at_most=2, name="t"))
    assert ended == [1]
