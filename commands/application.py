"""The event-sourced application: one event store for every aggregate of the ledger."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder

from commands import transcodings


class LedgerApplication(Application[UUID]):
    # The name prefixes the PostgreSQL tables (ledger_events) and the library's own env keys.
    name = "ledger"

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        for transcoding in transcodings.ALL:
            transcoder.register(transcoding())
