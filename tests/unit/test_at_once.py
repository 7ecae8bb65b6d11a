"""Work on several items at once: results in order, a lone item in the caller's thread, errors raised."""

from __future__ import annotations

import threading
import time

import pytest

from commands.at_once import map_at_once


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
