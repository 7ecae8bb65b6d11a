"""Work on several items at once, in threads, when each mostly waits (on a processor, on a commit)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_at_once(work: Callable[[T], R], items: Sequence[T], *, at_most: int, name: str) -> list[R]:
    """``work`` of each item, up to ``at_most`` at once, the results in the items' order; a lone item runs in the
    caller's thread. The first error raised is raised here, once every item has ended."""
    if len(items) < 2:
        return [work(item) for item in items]
    with ThreadPoolExecutor(min(at_most, len(items)), thread_name_prefix=name) as running:
        # Not ``running.map``: at its first error it cancels the items not yet started, which then never run.
        started = [running.submit(work, item) for item in items]
    return [future.result() for future in started]
