"""Properties of pricing and proration, over random prices, seats and instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import pricing
from ledger.periods import period
from ledger.subscription import Order
from tests.support import ADMIN, T0, in_memory_ledger, reseller_with_card

anchors = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1),
                       timezones=st.just(UTC)).map(lambda at: at.replace(microsecond=0))
cycles = st.sampled_from(["monthly", "annual"])
units = st.integers(1, 1_000_000)
seat_counts = st.integers(1, 10_000)
tax_rates = st.integers(0, 10_000)


def _amounts(bill: pricing.Bill) -> list[object]:
    return [bill.subtotal_cents, bill.tax_cents, bill.total_cents, bill.unit_price_cents,
            *[line.amount_cents for line in bill.lines], *[line.unit_amount_cents for line in bill.lines]]


@given(anchors, cycles, units, seat_counts, seat_counts, tax_rates, st.floats(0, 1))
def test_every_pricing_result_is_integer_cents(anchor: datetime, cycle: str, unit: int, q: int, extra: int,
                                               tax: int, where: float) -> None:
    start, end = period(anchor, cycle, 0)
    at = start + timedelta(seconds=int((end - start).total_seconds() * where))
    bills = [
        pricing.full_period(plan_name="P", billing_cycle=cycle, unit_price_cents=unit, seats=q, period_start=start,
                            period_end=end, currency="USD", tax_rate_bps=tax),
        pricing.seat_increase(unit_price_cents=unit, seats_before=q, seats_after=q + extra, period_start=start,
                              period_end=end, at=at, currency="USD", tax_rate_bps=tax),
    ]
    for bill in bills:
        assert all(type(amount) is int for amount in _amounts(bill))
        assert bill.total_cents == bill.subtotal_cents + bill.tax_cents
        assert bill.subtotal_cents == sum(line.amount_cents for line in bill.lines)


@given(anchors, cycles, units, seat_counts, seat_counts, tax_rates)
def test_an_increase_at_the_period_start_costs_the_full_difference_and_at_the_end_nothing(
        anchor: datetime, cycle: str, unit: int, q: int, extra: int, tax: int) -> None:
    start, end = period(anchor, cycle, 0)

    def increase_at(at: datetime) -> pricing.Bill:
        return pricing.seat_increase(unit_price_cents=unit, seats_before=q, seats_after=q + extra,
                                     period_start=start, period_end=end, at=at, currency="USD", tax_rate_bps=tax)

    assert increase_at(start).subtotal_cents == unit * extra
    assert increase_at(end).subtotal_cents == 0 and increase_at(end).total_cents == 0


@given(anchors, cycles, units, st.integers(1, 50), st.lists(st.tuples(st.integers(1, 50), st.floats(0, 1)),
                                                            min_size=1, max_size=8))
def test_the_credit_never_exceeds_what_was_charged_for_the_period(anchor: datetime, cycle: str, unit: int,
                                                                  seats: int, steps: list) -> None:
    start, end = period(anchor, cycle, 0)
    length = int((end - start).total_seconds())
    charged = unit * seats  # the period was charged in full at its start
    at = start
    for extra, where in steps:
        at = max(at, start + timedelta(seconds=int(length * where)))
        bill = pricing.seat_increase(unit_price_cents=unit, seats_before=seats, seats_after=seats + extra,
                                     period_start=start, period_end=end, at=at, currency="USD", tax_rate_bps=0)
        credit = -bill.lines[0].amount_cents
        assert 0 <= credit <= charged
        charged += bill.subtotal_cents
        seats += extra


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 60), st.integers(0, 27 * 24 * 3600), st.integers(0, 15 * 60),
       st.sampled_from(["US", "DE", "GB", "SE"]))
def test_a_confirmed_preview_charges_exactly_the_previewed_total(seats: int, extra: int, offset: int,
                                                                 delay: int, country: str) -> None:
    world = in_memory_ledger()
    reseller_with_card(world, "org_1", country=country)
    order = Order("pro", "monthly", seats=seats, organization_name="C", admin_email="a@c.example")
    quote = world.ledger.preview_create("org_1", order)
    sub_id = world.ledger.create_subscription("org_1", order, actor=ADMIN, quote_id=quote.quote_id).aggregate.id
    world.clock.set(T0 + timedelta(seconds=offset))
    preview = world.ledger.preview_seat_change("org_1", sub_id, seats + extra)
    world.clock.set(T0 + timedelta(seconds=offset + delay))
    world.ledger.change_seats("org_1", sub_id, seats + extra, actor=ADMIN, quote_id=preview.quote_id)
    amounts = [c.amount_cents for c in world.gateway.list_charges(created_from=T0 - timedelta(days=1),
                                                                  created_to=T0 + timedelta(days=60))]
    assert amounts == [quote.bill.total_cents] + ([preview.bill.total_cents] if preview.bill.total_cents else [])
