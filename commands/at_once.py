"""Work on several items at once, in threads, when each mostly waits (on a processor, on a commit)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
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


def each_at_once(work: Callable[[T], R], items: Iterable[T], *, at_most: int, name: str) -> Iterator[R]:
    """``work`` of each item, up to ``at_most`` at once, an item taken from ``items`` only once a thread is free for
    it (so a lazy source is read while the work runs), the results as each ends. After an error no more items are
    taken; the first is raised once the items begun have ended."""
    source = iter(items)
    error: BaseException | None = None
    with ThreadPoolExecutor(at_most, thread_name_prefix=name) as running:
        in_flight: set[Future[R]] = set()
        while True:
            while error is None and len(in_flight) < at_most:
                try:
                    item = next(source)
                except StopIteration:
                    break
                except BaseException as failure:  # a failing source ends the work as a failing item does
                    error = failure
                    break
                in_flight.add(running.submit(work, item))
            if not in_flight:
                break
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                failure = future.exception()
                if failure is None:
                    yield future.result()
                elif error is None:
                    error = failure
    if error is not None:
        raise error
