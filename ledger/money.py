"""Money is integer minor units (cents). This module holds the ledger's one rounding rule."""

from __future__ import annotations

from fractions import Fraction
from math import floor

BASIS_POINTS = 10_000


def round_cents(amount: Fraction | int) -> int:
    """Round an exact amount of cents to a whole cent, half away from zero (ROUND_HALF_UP)."""
    amount = Fraction(amount)
    magnitude = floor(abs(amount) + Fraction(1, 2))
    return magnitude if amount >= 0 else -magnitude


def tax_on(subtotal_cents: int, tax_rate_bps: int) -> int:
    """Exclusive tax on a subtotal: round(subtotal × rate), the rate in basis points."""
    return round_cents(Fraction(subtotal_cents * tax_rate_bps, BASIS_POINTS))

