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


class VersionMismatch(DomainError):
    """The caller's expected version (``If-Match``) is not the subscription's: it changed since they read it."""

    code = "version_mismatch"


class ConcurrentChange(DomainError):
    """Another change of the same aggregate was recorded first; nothing of this one was kept."""

    code = "invalid_state"


class PaymentUnavailable(DomainError):
    """The payment processor could not be reached, or asked us to slow down. The charge may or may not
    have happened: retrying the same request (same basis, so the same processor idempotency key) is safe
    and settles it; a charge nobody retries is found by reconciliation."""

    code = "payment_unavailable"

    def __init__(self, detail: str, retry_after_seconds: int = 5) -> None:
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds


class ProjectionLagging(DomainError):
    """A read asked to include a change that the read model has not reached within the wait."""

    code = "projection_lagging"
