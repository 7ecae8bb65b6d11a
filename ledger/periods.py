"""Billing periods: UTC instants to the second, counted from the subscription's anchor.

Each boundary is computed from the anchor, never from the previous boundary, so a Jan 31 anchor
gives Feb 28 (or 29), then Mar 31 again; an annual Feb 29 anchor gives Feb 28 in common years.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from ledger.catalog import ANNUAL, MONTHLY


def require_instant(at: datetime) -> datetime:
    """The ledger's instants are timezone-aware UTC with whole seconds."""
    if at.tzinfo is None or at.utcoffset() != timedelta(0):
        raise ValueError(f"instant must be UTC: {at!r}")
    if at.microsecond:
        raise ValueError(f"instant must be whole seconds: {at!r}")
    return at.astimezone(UTC)


def add_months(anchor: datetime, months: int) -> datetime:
    month_index = anchor.month - 1 + months
    year, month = anchor.year + month_index // 12, month_index % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def boundary(anchor: datetime, billing_cycle: str, index: int) -> datetime:
    """The start of period number ``index`` (0 is the first period, starting at the anchor)."""
    if billing_cycle == MONTHLY:
        return add_months(anchor, index)
    if billing_cycle == ANNUAL:
        return add_months(anchor, 12 * index)
    raise ValueError(f"unknown billing cycle {billing_cycle!r}")


def period(anchor: datetime, billing_cycle: str, index: int) -> tuple[datetime, datetime]:
    return boundary(anchor, billing_cycle, index), boundary(anchor, billing_cycle, index + 1)


def remaining_fraction(start: datetime, end: datetime, at: datetime) -> Fraction:
    """f = (end − at) / (end − start), in whole seconds; 1 at the start, 0 at the end."""
    if not start <= at <= end:
        raise ValueError(f"{at} is outside the period {start} – {end}")
    return Fraction(int((end - at).total_seconds()), int((end - start).total_seconds()))
