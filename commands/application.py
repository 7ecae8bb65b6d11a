"""The event-sourced application: one event store for every aggregate of the ledger."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, Recording
from eventsourcing.utils import Environment, EnvType

# Every kind of aggregate stored here, imported so that every reader of the log knows its event topics.
from commands import clocks, idempotency, transcodings  # noqa: F401
from commands.chain import RECORDER_TOPICS
from ledger import charge, customer_account, invoice, processor_events, reseller, subscription  # noqa: F401


class LedgerApplication(Application[UUID]):
    # The name prefixes the PostgreSQL tables (ledger_events) and the library's own env keys.
    name = "ledger"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        self.news = threading.Condition()
        """Notified after every save in this process, so followers here need not poll."""

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        """On SQLite and PostgreSQL, the recorder also writes the hash chain (commands/chain.py)."""
        environment = super().construct_env(name, env)
        backend = environment.get("PERSISTENCE_MODULE", "").removeprefix("eventsourcing.")
        if backend in RECORDER_TOPICS and not environment.get("APPLICATION_RECORDER_TOPIC"):
            environment["APPLICATION_RECORDER_TOPIC"] = RECORDER_TOPICS[backend]
        return environment

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        with self.news:
            self.news.notify_all()

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        for transcoding in transcodings.ALL:
            transcoder.register(transcoding())
