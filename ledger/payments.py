"""How the domain asks to be paid. The aggregate calls ``pay`` with a bill once it has checked
and priced a change, and records the change only if the payment succeeded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from ledger.pricing import Bill


@dataclass(frozen=True)
class Payment:
    """A successful charge: the billing document it belongs to and the processor's reference."""

    invoice_id: UUID
    reference: str


class Pay(Protocol):
    def __call__(self, bill: Bill) -> Payment | None:
        """Charge the bill's total (None when there was nothing to charge) or raise ``PaymentDeclined``."""
