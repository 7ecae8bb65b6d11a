"""Domain errors. Each carries a stable code; the HTTP layer maps codes to statuses in one place."""

from __future__ import annotations


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ValidationFailed(DomainError):
    code = "validation_error"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field


class SeatsFixed(DomainError):
    code = "seats_fixed"


class NoChange(DomainError):
    code = "no_change"


class InvalidState(DomainError):
    code = "invalid_state"


class BillingInfoRequired(DomainError):
    code = "billing_info_required"


class PaymentDeclined(DomainError):
    """The payment processor refused the charge; nothing was charged."""

    code = "payment_declined"

    def __init__(self, detail: str, decline_code: str) -> None:
        super().__init__(detail)
        self.decline_code = decline_code
