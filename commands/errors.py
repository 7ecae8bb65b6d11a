"""Errors of the command layer (the domain's own live in ``ledger.errors``)."""

from __future__ import annotations

from ledger.errors import DomainError


class NotFound(DomainError):
    code = "not_found"


class Forbidden(DomainError):
    code = "forbidden"


class QuoteStale(DomainError):
    code = "quote_stale"


class IdempotencyConflict(DomainError):
    code = "idempotency_conflict"


class ConcurrentChange(DomainError):
    """Another change of the same aggregate was recorded first; nothing of this one was kept."""

    code = "invalid_state"


class PaymentUnavailable(DomainError):
    """The payment processor could not be reached or asked us to slow down; nothing was charged."""

    code = "payment_unavailable"

    def __init__(self, detail: str, retry_after_seconds: int = 5) -> None:
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds
