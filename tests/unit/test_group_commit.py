"""Group commit: saves that arrive while a commit is in progress share the next transaction, and each caller
is told what it would have been told alone; and an aggregate loads as the library's own projector rebuilds it."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.application import AggregateNotFoundError, project_aggregate
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError

from commands.application import LedgerApplication
from commands.group_commit import GroupCommit


class Counter(Aggregate):
    def __init__(self) -> None:
        self.count = 0

    def increment(self) -> None:
        self._incremented()

    @event("Incremented")
    def _incremented(self) -> None:
        self.count += 1


class GatedStore:
    """Records into a real application, but holds the first commit until told, so that others queue."""

    def __init__(self, app: LedgerApplication) -> None:
        self.app = app
        self.commits: list[int] = []
        self.first_started = threading.Event()
        self.release = threading.Event()

    def record(self, events: Sequence[Any]) -> list[Any]:
        if not self.commits:
            self.commits.append(len(events))
            self.first_started.set()
            self.release.wait(5)
        else:
            self.commits.append(len(events))
        return self.app._record_events(events)


@pytest.fixture
def app() -> LedgerApplication:
    return LedgerApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def run_concurrently(saves: list[Any], group: GroupCommit, store: GatedStore) -> list[Any]:
    """The first save starts a commit; the rest arrive while it is held, then it is released."""
    results: list[Any] = [None] * len(saves)

    def save(i: int) -> None:
        try:
            results[i] = group.save(saves[i])
        except BaseException as error:  # noqa: BLE001 - the test inspects what each caller got
            results[i] = error

    first = threading.Thread(target=save, args=(0,))
    first.start()
    assert store.first_started.wait(5)
    rest = [threading.Thread(target=save, args=(i,)) for i in range(1, len(saves))]
    for thread in rest:
        thread.start()
    while group.queued() < len(rest):  # every later save is queued behind the held commit
        threading.Event().wait(0.01)
    store.release.set()
    for thread in [first, *rest]:
        thread.join(5)
    return results


def test_saves_arriving_during_a_commit_share_the_next_one_and_each_gets_its_own_recordings(
        app: LedgerApplication) -> None:
    store = GatedStore(app)
    group = GroupCommit(store.record)
    counters = [Counter() for _ in range(6)]
    for counter in counters[1:]:
        counter.increment()

    results = run_concurrently([c.collect_events() for c in counters], group, store)

    assert store.commits == [1, 10]  # the first alone, then the five others (two events each) together
    for counter, recordings in zip(counters, results):
        assert [r.domain_event.originator_id for r in recordings] == [counter.id] * len(recordings)
        assert app.repository.get(counter.id).count == counter.count


def test_a_conflict_in_a_batch_fails_only_the_save_that_lost(app: LedgerApplication) -> None:
    original = Counter()
    app.save(original)
    twin_a, twin_b = app.repository.get(original.id), app.repository.get(original.id)
    twin_a.increment()
    twin_b.increment()
    other = Counter()
    store = GatedStore(app)
    group = GroupCommit(store.record)

    results = run_concurrently([Counter().collect_events(), twin_a.collect_events(), twin_b.collect_events(),
                                other.collect_events()], group, store)

    assert isinstance(results[2], IntegrityError)
    assert not any(isinstance(r, BaseException) for i, r in enumerate(results) if i != 2)
    assert app.repository.get(original.id).version == 2
    assert other.id in app.repository
    assert store.commits == [1, 3, 1, 1, 1]  # the batch of three failed, then each was recorded alone


def test_a_lone_save_commits_at_once(app: LedgerApplication) -> None:
    counter = Counter()
    recordings = app.save(counter)
    assert [r.notification.id for r in recordings] == [1]


def test_an_aggregate_loads_as_the_librarys_projector_rebuilds_it_at_any_version(app: LedgerApplication) -> None:
    counter = Counter()
    for _ in range(3):
        counter.increment()
    app.save(counter)
    for version in (None, 1, 2, 4):
        loaded = app.repository.get(counter.id, version=version)
        rebuilt = app.repository.get(counter.id, version=version, projector_func=project_aggregate)
        assert (loaded.version, loaded.count) == (rebuilt.version, rebuilt.count)
    assert app.repository.get(counter.id).count == 3 and app.repository.get(counter.id, version=2).count == 1
    with pytest.raises(AggregateNotFoundError):
        app.repository.get(uuid4())
