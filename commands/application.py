"""The event-sourced application: one event store for every aggregate of the ledger."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent, Repository
from eventsourcing.persistence import JSONTranscoder, Recording
from eventsourcing.utils import Environment, EnvType

# Every kind of aggregate stored here, imported so that every reader of the log knows its event topics.
from commands import clocks, idempotency, transcodings  # noqa: F401
from commands.chain import RECORDER_TOPICS
from commands.group_commit import GroupCommit
from ledger import (  # noqa: F401
    charge,
    customer_account,
    invoice,
    processor_events,
    reseller,
    subscription,
    webhook_endpoint,
)


class LedgerApplication(Application[UUID]):
    # The name prefixes the PostgreSQL tables (ledger_events) and the library's own env keys.
    name = "ledger"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        self._group_commit = GroupCommit(self._record_events)
        self.news = threading.Condition()
        """Notified after every save in this process, so followers here need not poll."""
        self.saves = 0
        """How many saves this process has made (counted under ``news``): a waiter that remembers the count it
        last saw knows whether a save came while it was not waiting."""
        self.on_save: list[Callable[[], None]] = []
        """Called after every save in this process: tells followers in other processes (see ``NewsWaiter``)."""

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        """On SQLite and PostgreSQL, the recorder also writes the hash chain (commands/chain.py)."""
        environment = super().construct_env(name, env)
        backend = environment.get("PERSISTENCE_MODULE", "").removeprefix("eventsourcing.")
        if backend in RECORDER_TOPICS and not environment.get("APPLICATION_RECORDER_TOPIC"):
            environment["APPLICATION_RECORDER_TOPIC"] = RECORDER_TOPICS[backend]
        return environment

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """Concurrent saves share one transaction (see commands.group_commit); a save that records a
        tracking position (a follower's) is its own transaction, as the library makes it."""
        if kwargs:
            return super().save(*objs, **kwargs)
        events: list[Any] = []
        for obj in objs:
            # An aggregate is told by its collect_events (events have none): isinstance against the runtime-
            # checkable event protocol inspects every attribute of the protocol, each time.
            collect = getattr(obj, "collect_events", None)
            if collect is not None:
                events.extend(collect())
            elif obj is not None:
                events.append(obj)
        return self._group_commit.save(events)

    def construct_repository(self) -> Repository[UUID]:
        """The library's repository, rebuilding aggregates without its test of every event against the
        runtime-checkable mutate protocol (it inspects every attribute of the protocol: 4 % of a command's CPU on
        the embedded default). A caller may still pass a projector of its own."""
        repository = super().construct_repository()
        repository.get = functools.partial(repository.get, projector_func=_mutated)  # type: ignore[method-assign]
        return repository

    def get_many(self, aggregate_ids: Sequence[UUID]) -> dict[UUID, Any]:
        """The aggregates of these ids that exist, by id: on SQLite and PostgreSQL read in one query (a batch of
        commands loads its aggregates at once), elsewhere one by one as the repository reads them."""
        select_streams = getattr(self.recorder, "select_streams", None)
        if select_streams is None or self.snapshots is not None:
            found = {}
            for aggregate_id in aggregate_ids:
                try:
                    found[aggregate_id] = self.repository.get(aggregate_id)
                except AggregateNotFoundError:
                    continue
            return found
        aggregates: dict[UUID, Any] = {}
        for stored in select_streams(list(dict.fromkeys(aggregate_ids))):
            event = self.mapper.to_domain_event(stored)
            aggregates[event.originator_id] = event.mutate(aggregates.get(event.originator_id))
        return aggregates

    def _record_events(self, events: Sequence[Any]) -> list[Recording[UUID]]:
        # What the library's save does with events alone, without its isinstance test of each object against the
        # runtime-checkable event protocol (it inspects every attribute of the protocol: 5 % of a renewal).
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        processing_event.events.extend(events)
        recordings = self._record(processing_event)
        self._notify(recordings)
        return recordings

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        with self.news:
            self.saves += 1
            self.news.notify_all()
        for tell in self.on_save:
            tell()

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        for transcoding in transcodings.ALL:
            transcoder.register(transcoding())


def _mutated(aggregate: Any, events: Iterable[Any]) -> Any:
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate
