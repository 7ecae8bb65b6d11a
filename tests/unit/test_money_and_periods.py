from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import events
from ledger.money import round_cents, tax_on
from ledger.periods import boundary, period, remaining_fraction, require_instant


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(("exact", "rounded"), [
    (Fraction(1, 2), 1), (Fraction(3, 2), 2), (Fraction(249, 100), 2), (Fraction(5, 2), 3),
    (Fraction(-1, 2), -1), (Fraction(-5, 2), -3), (Fraction(-249, 100), -2), (0, 0), (7, 7),
])
def test_round_cents_rounds_half_away_from_zero(exact: Fraction, rounded: int) -> None:
    assert round_cents(exact) == rounded


@given(st.integers(-10**12, 10**12), st.integers(1, 10**6))
def test_round_cents_is_within_half_a_cent_and_an_int(numerator: int, denominator: int) -> None:
    exact = Fraction(numerator, denominator)
    rounded = round_cents(exact)
    assert type(rounded) is int
    assert abs(rounded - exact) <= Fraction(1, 2)


def test_tax_is_rounded_once_on_the_subtotal() -> None:
    assert tax_on(9000, 1900) == 1710
    assert tax_on(1, 1900) == 0  # 0.19 cents
    assert tax_on(3, 1900) == 1  # 0.57 cents
    assert tax_on(50, 2000) == 10


@pytest.mark.parametrize(("anchor", "expected"), [
    (utc(2026, 1, 31, 9), [utc(2026, 1, 31, 9), utc(2026, 2, 28, 9), utc(2026, 3, 31, 9), utc(2026, 4, 30, 9),
                           utc(2026, 5, 31, 9)]),
    (utc(2028, 1, 31), [utc(2028, 1, 31), utc(2028, 2, 29), utc(2028, 3, 31)]),
    (utc(2026, 3, 30), [utc(2026, 3, 30), utc(2026, 4, 30), utc(2026, 5, 30)]),
])
def test_monthly_boundaries_keep_the_anchor_day_clamped_to_month_end(anchor: datetime, expected: list) -> None:
    assert [boundary(anchor, "monthly", i) for i in range(len(expected))] == expected


def test_a_month_end_anchor_over_a_leap_year() -> None:
    anchor = utc(2028, 1, 31, 12, 30, 15)
    ends = [period(anchor, "monthly", i)[1] for i in range(12)]
    assert [(e.month, e.day) for e in ends] == [(2, 29), (3, 31), (4, 30), (5, 31), (6, 30), (7, 31), (8, 31),
                                               (9, 30), (10, 31), (11, 30), (12, 31), (1, 31)]
    assert all((e.hour, e.minute, e.second) == (12, 30, 15) for e in ends)


def test_an_annual_feb_29_anchor_renews_on_feb_28_and_returns_to_29_in_leap_years() -> None:
    anchor = utc(2028, 2, 29)
    assert [boundary(anchor, "annual", i) for i in range(5)] == [
        utc(2028, 2, 29), utc(2029, 2, 28), utc(2030, 2, 28), utc(2031, 2, 28), utc(2032, 2, 29)]


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
       st.sampled_from(["monthly", "annual"]), st.integers(0, 200))
def test_periods_tile_time_without_gaps(anchor: datetime, cycle: str, index: int) -> None:
    anchor = anchor.replace(microsecond=0)
    start, end = period(anchor, cycle, index)
    assert period(anchor, cycle, index + 1)[0] == end
    assert timedelta(days=28) <= end - start <= timedelta(days=366)


def test_remaining_fraction_is_one_at_start_and_zero_at_end() -> None:
    start, end = utc(2026, 1, 1), utc(2026, 1, 31)
    assert remaining_fraction(start, end, start) == 1
    assert remaining_fraction(start, end, end) == 0
    assert remaining_fraction(start, end, utc(2026, 1, 16)) == Fraction(1, 2)
    with pytest.raises(ValueError):
        remaining_fraction(start, end, utc(2026, 2, 1))


def test_instants_are_utc_whole_seconds() -> None:
    with pytest.raises(ValueError):
        require_instant(datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        require_instant(utc(2026, 1, 1).replace(microsecond=5))
    with pytest.raises(ValueError):
        require_instant(datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=1))))



OFFSETS = st.one_of(st.just(UTC), st.builds(timezone, st.timedeltas(min_value=timedelta(hours=-23),
                                                                  max_value=timedelta(hours=23))))


@given(st.datetimes(min_value=datetime(1001, 1, 1), max_value=datetime(9998, 12, 31), timezones=OFFSETS))
def test_an_instant_is_written_to_the_second_in_utc(at: datetime) -> None:
    assert events.iso(at) == at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
