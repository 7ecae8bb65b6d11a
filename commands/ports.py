"""The ports through which the command handlers reach the outside world."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ledger.reseller import CardOnFile


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant: UTC, whole seconds."""


@dataclass(frozen=True)
class ProcessorCharge:
    """A charge as the payment processor knows it (for reconciliation)."""

    reference: str
    amount_cents: int
    currency: str
    status: str
    created: datetime
    metadata: Mapping[str, str]
    refunded_cents: int


@dataclass(frozen=True)
class ProcessorRefund:
    reference: str
    charge_reference: str
    amount_cents: int
    currency: str
    created: datetime
    metadata: Mapping[str, str]


class PaymentGateway(Protocol):
    """Cards and charges. Implementations raise ``ledger.errors.PaymentDeclined`` when the processor
    refuses, and ``commands.errors.PaymentUnavailable`` when it cannot be reached."""

    name: str

    def save_card(self, *, reseller_org_id: str, payment_method: str, billing_email: str,
                  customer: str | None, idempotency_key: str) -> CardOnFile:
        """Attach the payment method to the reseller's processor customer as its default card. When
        ``customer`` is None one is created, once per idempotency key, so a retry or a refused card
        never leaves a second customer behind."""

    def charge(self, *, customer: str, payment_method: str, amount_cents: int, currency: str,
               idempotency_key: str, metadata: Mapping[str, str]) -> str:
        """Charge off-session; the same idempotency key never charges twice. Returns the reference."""

    def find_charge(self, *, customer: str, idempotency_key: str) -> str | None:
        """The reference of the successful charge made with this idempotency key for this customer, or
        None when the processor holds none. A charge still in progress raises PaymentUnavailable (ask again later)."""

    def refund(self, *, payment_reference: str, amount_cents: int, idempotency_key: str,
               metadata: Mapping[str, str]) -> str:
        """Refund part or all of a charge. Returns the refund's reference."""

    def list_charges(self, *, created_from: datetime, created_to: datetime) -> list[ProcessorCharge]:
        """Successful charges created in [from, to), oldest first."""

    def list_refunds(self, *, created_from: datetime, created_to: datetime) -> list[ProcessorRefund]:
        """Refunds created in [from, to), oldest first."""

    def close(self) -> None: ...


class Locks(Protocol):
    def hold(self, name: str) -> AbstractContextManager[None]:
        """Serialise work on one name (a subscription, an idempotency key) across the deployment."""

    def hold_free(self, names: Sequence[str]) -> AbstractContextManager[list[str]]:
        """Take, without waiting, those of ``names`` that nobody holds; yields the names taken."""
