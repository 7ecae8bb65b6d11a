"""Pricing: invoice lines, subtotal, tax and total, all in integer cents."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ledger.money import round_cents, tax_on
from ledger.periods import remaining_fraction


@dataclass(frozen=True)
class Line:
    description: str
    quantity: int
    unit_amount_cents: int
    amount_cents: int
    period_start: datetime
    period_end: datetime
    proration: bool = False


@dataclass(frozen=True)
class Bill:
    """What a change costs: its lines and the tax on their sum, tax exclusive."""

    lines: tuple[Line, ...]
    currency: str
    unit_price_cents: int
    quantity: int
    subtotal_cents: int
    tax_rate_bps: int
    tax_cents: int
    total_cents: int

    @classmethod
    def of(
        cls,
        lines: Iterable[Line],
        *,
        currency: str,
        unit_price_cents: int,
        quantity: int,
        tax_rate_bps: int,
    ) -> Bill:
        lines = tuple(lines)
        subtotal = sum(line.amount_cents for line in lines)
        tax = tax_on(subtotal, tax_rate_bps)
        return cls(lines, currency, unit_price_cents, quantity, subtotal, tax_rate_bps, tax, subtotal + tax)


def seats_phrase(seats: int) -> str:
    return f"{seats} seat" if seats == 1 else f"{seats} seats"


def full_period(
    *,
    plan_name: str,
    billing_cycle: str,
    unit_price_cents: int,
    seats: int,
    period_start: datetime,
    period_end: datetime,
    currency: str,
    tax_rate_bps: int,
) -> Bill:
    """A whole period charged in advance: at creation and at each renewal."""
    line = Line(
        description=f"{plan_name}, {billing_cycle}, {seats_phrase(seats)}",
        quantity=seats,
        unit_amount_cents=unit_price_cents,
        amount_cents=unit_price_cents * seats,
        period_start=period_start,
        period_end=period_end,
    )
    return Bill.of([line], currency=currency, unit_price_cents=unit_price_cents, quantity=seats,
                   tax_rate_bps=tax_rate_bps)


def seat_increase(
    *,
    unit_price_cents: int,
    seats_before: int,
    seats_after: int,
    period_start: datetime,
    period_end: datetime,
    at: datetime,
    currency: str,
    tax_rate_bps: int,
) -> Bill:
    """Proration of an increase at ``at``: credit the unused time on the old seats, charge the
    remaining time on the new ones."""
    f = remaining_fraction(period_start, period_end, at)
    credit = Line(
        description=f"Unused time on {seats_phrase(seats_before)}",
        quantity=seats_before,
        unit_amount_cents=unit_price_cents,
        amount_cents=-round_cents(unit_price_cents * seats_before * f),
        period_start=at,
        period_end=period_end,
        proration=True,
    )
    charge = Line(
        description=f"Remaining time on {seats_phrase(seats_after)}",
        quantity=seats_after,
        unit_amount_cents=unit_price_cents,
        amount_cents=round_cents(unit_price_cents * seats_after * f),
        period_start=at,
        period_end=period_end,
        proration=True,
    )
    return Bill.of([credit, charge], currency=currency, unit_price_cents=unit_price_cents,
                   quantity=seats_after, tax_rate_bps=tax_rate_bps)


def nothing_due(*, currency: str, unit_price_cents: int, quantity: int, tax_rate_bps: int) -> Bill:
    """A change that costs nothing now (a scheduled decrease, a withdrawal)."""
    return Bill.of([], currency=currency, unit_price_cents=unit_price_cents, quantity=quantity,
                   tax_rate_bps=tax_rate_bps)
