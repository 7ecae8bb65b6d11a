"""Random command sequences against a simple model of a subscription, with the clock moving."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from hypothesis import event as hypothesis_event
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ledger import events, pricing
from ledger.errors import DomainError
from ledger.periods import period
from ledger.subscription import RENEWAL_RETRY_DELAYS, Order, Subscription
from tests.support import ADMIN, T0, in_memory_ledger, replay, reseller_with_card


@dataclass
class Model:
    seats: int
    anchor: datetime
    period_index: int = 0
    pending: int | None = None
    canceled: bool = False
    expired: bool = False
    failures: int = 0

    @property
    def period_end(self) -> datetime:
        return period(self.anchor, "monthly", self.period_index)[1]

    @property
    def due(self) -> datetime | None:
        if self.expired:
            return None
        if self.failures and not self.canceled:
            return self.period_end + RENEWAL_RETRY_DELAYS[self.failures - 1]
        return self.period_end

    @property
    def status(self) -> str:
        if self.expired:
            return "expired"
        if self.canceled:
            return "canceled"
        if self.failures:
            return "past_due"
        return "pending" if self.pending is not None else "active"

    def change_seats(self, n: int, now: datetime, card_fails: bool) -> str | None:
        """The error code the ledger must answer, or None after applying the change."""
        if self.expired or self.canceled or self.failures or now >= self.period_end:
            return "invalid_state"
        if not 1 <= n <= 10_000:
            return "validation_error"
        if n > self.seats:
            start, end = period(self.anchor, "monthly", self.period_index)
            cost = pricing.seat_increase(unit_price_cents=3000, seats_before=self.seats, seats_after=n,
                                         period_start=start, period_end=end, at=now, currency="USD",
                                         tax_rate_bps=1900)
            if card_fails and cost.total_cents:
                return "payment_declined"
            self.seats, self.pending = n, None
        elif n < self.seats:
            if n == self.pending:
                return "no_change"
            self.pending = n
        elif self.pending is None:
            return "no_change"
        else:
            self.pending = None
        return None

    def run_due(self, card_fails: bool) -> None:
        if self.canceled:
            self.expired = True
        elif card_fails:
            self.failures += 1
            if self.failures > len(RENEWAL_RETRY_DELAYS):
                self.expired = True
        else:
            self.period_index += 1
            self.seats, self.pending, self.failures = self.pending or self.seats, None, 0


class SubscriptionMachine(RuleBasedStateMachine):
    @initialize(seats=st.integers(1, 20))
    def create(self, seats: int) -> None:
        self.world = in_memory_ledger()
        reseller_with_card(self.world, "org_1", country="DE")
        self.card_fails = False
        order = Order("pro", "monthly", seats=seats, organization_name="C", admin_email="a@c.example")
        self.sub_id = self.world.ledger.create_subscription("org_1", order, actor=ADMIN).aggregate.id
        self.model = Model(seats, T0)

    def _attempt(self, expected_error: str | None, command: object) -> None:
        try:
            command()  # type: ignore[operator]
        except DomainError as error:
            assert error.code == expected_error, (error.code, expected_error)
        else:
            assert expected_error is None

    @rule(n=st.integers(0, 30))
    def change_seats(self, n: int) -> None:
        expected = self.model.change_seats(n, self.world.clock.now(), self.card_fails)
        self._attempt(expected, lambda: self.world.ledger.change_seats("org_1", self.sub_id, n, actor=ADMIN))

    @rule()
    def cancel(self) -> None:
        expected = "invalid_state" if self.model.expired or self.model.canceled else None
        if expected is None:
            self.model.canceled = True
        self._attempt(expected, lambda: self.world.ledger.cancel("org_1", self.sub_id, actor=ADMIN))

    @rule()
    def resume(self) -> None:
        now = self.world.clock.now()
        allowed = self.model.canceled and not self.model.expired and now < self.model.period_end
        if allowed:
            self.model.canceled = False
        self._attempt(None if allowed else "invalid_state",
                      lambda: self.world.ledger.resume("org_1", self.sub_id, actor=ADMIN))

    @rule(fails=st.booleans())
    def switch_card(self, fails: bool) -> None:
        self.card_fails = fails
        self.world.ledger.set_billing_info(
            "org_1", payment_method="pm_card_chargeCustomerFail" if fails else "pm_card_visa",
            billing_email="b@r.example", country="DE", actor=ADMIN)

    @rule(seconds=st.integers(1, 45 * 24 * 3600))
    def time_passes(self, seconds: int) -> None:
        target = self.world.clock.now() + timedelta(seconds=seconds)
        while (due := self.model.due) is not None and due <= target:
            self.world.clock.set(max(due, self.world.clock.now()))
            self.model.run_due(self.card_fails)
            recorded = self.world.ledger.run_due(self.sub_id)
            hypothesis_event(f"clock: {self.model.status}")
            assert recorded.position is not None
        self.world.clock.set(target)

    @precondition(lambda self: hasattr(self, "world"))
    @invariant()
    def the_ledger_agrees_with_the_model(self) -> None:
        subscription = self.world.ledger.subscription("org_1", self.sub_id)
        assert (subscription.status, subscription.seats, subscription.pending_seats) == (
            self.model.status, self.model.seats, self.model.pending)
        if not self.model.expired:
            assert subscription.current_period_end == self.model.period_end
            assert subscription.due_at == self.model.due

    @precondition(lambda self: hasattr(self, "world"))
    @invariant()
    def replaying_the_history_gives_the_same_state(self) -> None:
        history = list(self.world.ledger.history(self.sub_id))
        assert replay(Subscription, history) == self.world.ledger.subscription("org_1", self.sub_id)

    @precondition(lambda self: hasattr(self, "world"))
    @invariant()
    def every_charge_is_recorded_once_and_no_period_twice(self) -> None:
        history = list(self.world.ledger.history(self.sub_id))
        recorded = sorted(e.bill.total_cents for e in history if getattr(e, "payment", None))
        charged = sorted(c.amount_cents for c in self.world.gateway.list_charges(
            created_from=T0 - timedelta(days=1), created_to=T0 + timedelta(days=10_000)))
        assert recorded == charged
        renewed = [e.period_start for e in history if events.type_name(e) == "Renewed"]
        assert len(renewed) == len(set(renewed))


SubscriptionMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
TestSubscriptionMachine = SubscriptionMachine.TestCase
