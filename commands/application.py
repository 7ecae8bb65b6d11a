"""The event-sourced application: one event store for every aggregate of the ledger."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, Recording

import commands.webhooks  # noqa: F401  registers the ProcessorEvent topics for every reader of the log
from commands import transcodings
from ledger import charge  # noqa: F401  registers the Charge topics for every reader of the log


class LedgerApplication(Application[UUID]):
    # The name prefixes the PostgreSQL tables (ledger_events) and the library's own env keys.
    name = "ledger"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        self.news = threading.Condition()
        """Notified after every save in this process, so followers here need not poll."""

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        with self.news:
            self.news.notify_all()

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        for transcoding in transcodings.ALL:
            transcoder.register(transcoding())
