"""The Subscription aggregate: a reseller's subscription for one customer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger import pricing
from ledger.catalog import BILLING_CYCLES, ORGANIZATION, SINGLE_USER, Plan
from ledger.errors import InvalidState, NoChange, PaymentDeclined, SeatsFixed, ValidationFailed
from ledger.payments import Pay, Payment
from ledger.periods import period, require_instant
from ledger.pricing import Bill

ACTIVE, PENDING, CANCELED, PAST_DUE, EXPIRED = "active", "pending", "canceled", "past_due", "expired"

# A declined renewal is retried this long after the period ended; after the last, it expires.
RENEWAL_RETRY_DELAYS = (timedelta(days=1), timedelta(days=3), timedelta(days=7))

INCREASE, DECREASE, WITHDRAW = "increase", "decrease", "withdraw"


@dataclass(frozen=True)
class Order:
    """What a reseller asks for when creating a subscription."""

    plan: str
    billing_cycle: str
    seats: int | None = None
    end_user_email: str | None = None
    display_name: str | None = None
    organization_name: str | None = None
    admin_email: str | None = None

    def checked_against(self, plan: Plan) -> Order:
        """The order with its seat count settled, or the first rule it breaks."""
        if self.billing_cycle not in BILLING_CYCLES:
            raise ValidationFailed("billing_cycle", f"billing_cycle must be one of {', '.join(BILLING_CYCLES)}")
        if plan.kind == SINGLE_USER:
            if self.seats not in (None, 1):
                raise SeatsFixed(f"{plan.name} is a single-user plan: it has exactly one seat")
            _forbid(plan, organization_name=self.organization_name, admin_email=self.admin_email)
            _require(plan, end_user_email=self.end_user_email)
            return Order(self.plan, self.billing_cycle, 1, self.end_user_email, self.display_name)
        _forbid(plan, end_user_email=self.end_user_email, display_name=self.display_name)
        _require(plan, organization_name=self.organization_name, admin_email=self.admin_email, seats=self.seats)
        assert self.seats is not None
        plan.check_seats(self.seats)
        return self


def _require(plan: Plan, **fields: object) -> None:
    for name, value in fields.items():
        if value is None or value == "":
            raise ValidationFailed(name, f"{plan.name} needs {name}")


def _forbid(plan: Plan, **fields: object) -> None:
    for name, value in fields.items():
        if value not in (None, ""):
            kind = "a single-user" if plan.kind == SINGLE_USER else "an organization"
            raise ValidationFailed(name, f"{plan.name} is {kind} plan: it does not take {name}")


@dataclass(frozen=True)
class SeatChange:
    """A priced seat change: what it does and what it costs now."""

    kind: str
    seats_before: int
    seats_after: int
    effective_at: datetime
    bill: Bill


def upcast_currency_from_bill(state: dict[str, Any]) -> None:
    """Version 1 of SeatsIncreased and Renewed kept the currency only inside the bill: the same fact, recorded
    with the event, is copied to the field that version 2 records beside the amounts."""
    state["currency"] = state["bill"].currency


class Subscription(Aggregate):
    TOPIC = "ledger:Subscription"

    class Created(Aggregate.Created):
        """SubscriptionCreated: its topic names the type; the library calls a creation event class Created."""

        TOPIC = "ledger:Subscription.SubscriptionCreated"
        reseller_org_id: str
        subscription_type: str
        plan: str
        plan_name: str
        billing_cycle: str
        seats: int
        unit_price_cents: int
        currency: str
        end_user_email: str | None
        display_name: str | None
        organization_name: str | None
        admin_email: str | None
        customer_account_id: UUID | None
        period_start: datetime
        period_end: datetime
        bill: Bill
        payment: Payment | None
        priced_at: datetime
        quote_id: str | None
        actor: str

    class SeatsIncreased(Aggregate.Event):
        """Version 2 adds ``currency``, the currency of the subscription's prices (as SubscriptionCreated has)."""

        TOPIC = "ledger:Subscription.SeatsIncreased"
        class_version = 2
        seats_before: int
        seats_after: int
        currency: str
        bill: Bill
        payment: Payment | None
        priced_at: datetime
        quote_id: str | None
        actor: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            upcast_currency_from_bill(state)

    class SeatDecreaseScheduled(Aggregate.Event):
        TOPIC = "ledger:Subscription.SeatDecreaseScheduled"
        seats: int
        pending_seats_before: int | None
        pending_seats: int
        effective_at: datetime
        actor: str

    class SeatDecreaseWithdrawn(Aggregate.Event):
        TOPIC = "ledger:Subscription.SeatDecreaseWithdrawn"
        seats: int
        withdrawn_pending_seats: int
        reason: str
        actor: str

    class Canceled(Aggregate.Event):
        TOPIC = "ledger:Subscription.Canceled"
        effective_at: datetime
        pending_seats: int | None
        actor: str

    class Resumed(Aggregate.Event):
        TOPIC = "ledger:Subscription.Resumed"
        pending_seats: int | None
        actor: str

    class Renewed(Aggregate.Event):
        """Version 2 adds ``currency``: the currency of ``unit_price_cents`` (as SubscriptionCreated has)."""

        TOPIC = "ledger:Subscription.Renewed"
        class_version = 2
        period_start: datetime
        period_end: datetime
        seats_before: int
        seats_after: int
        unit_price_cents: int
        currency: str
        bill: Bill
        payment: Payment | None
        attempt: int
        actor: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            upcast_currency_from_bill(state)

    class RenewalPaymentFailed(Aggregate.Event):
        TOPIC = "ledger:Subscription.RenewalPaymentFailed"
        period_start: datetime
        period_end: datetime
        seats: int
        unit_price_cents: int
        bill: Bill
        attempt: int
        decline_code: str
        message: str
        next_retry_at: datetime | None
        actor: str

    class Expired(Aggregate.Event):
        TOPIC = "ledger:Subscription.Expired"
        reason: str
        period_end: datetime
        actor: str

    # --- creation -----------------------------------------------------------------------------

    @staticmethod
    def price_new(order: Order, *, plan: Plan, at: datetime, currency: str, tax_rate_bps: int) -> Bill:
        """What creating this order at ``at`` costs now: its first period in full."""
        order = order.checked_against(plan)
        assert order.seats is not None
        start, end = period(require_instant(at), order.billing_cycle, 0)
        return pricing.full_period(
            plan_name=plan.name, billing_cycle=order.billing_cycle,
            unit_price_cents=plan.unit_price_cents(order.billing_cycle), seats=order.seats,
            period_start=start, period_end=end, currency=currency, tax_rate_bps=tax_rate_bps,
        )

    @classmethod
    def create(
        cls,
        subscription_id: UUID,
        order: Order,
        *,
        reseller_org_id: str,
        plan: Plan,
        at: datetime,
        currency: str,
        tax_rate_bps: int,
        customer_account_id: UUID | None,
        actor: str,
        pay: Pay,
        quote_id: str | None = None,
    ) -> Subscription:
        """Check the order, charge its first period in full, and open the subscription at ``at``."""
        order = order.checked_against(plan)
        if plan.kind == ORGANIZATION and customer_account_id is None:
            raise ValueError("an organization subscription opens a customer account")
        assert order.seats is not None
        bill = cls.price_new(order, plan=plan, at=at, currency=currency, tax_rate_bps=tax_rate_bps)
        payment = pay(bill)
        start, end = period(require_instant(at), order.billing_cycle, 0)
        return cls._create(
            cls.Created,
            id=subscription_id,
            timestamp=at,
            reseller_org_id=reseller_org_id,
            subscription_type=plan.kind,
            plan=plan.id,
            plan_name=plan.name,
            billing_cycle=order.billing_cycle,
            seats=order.seats,
            unit_price_cents=plan.unit_price_cents(order.billing_cycle),
            currency=currency,
            end_user_email=order.end_user_email,
            display_name=order.display_name or None,
            organization_name=order.organization_name,
            admin_email=order.admin_email,
            customer_account_id=customer_account_id if plan.kind == ORGANIZATION else None,
            period_start=start,
            period_end=end,
            bill=bill,
            payment=payment,
            priced_at=at,
            quote_id=quote_id,
            actor=actor,
        )

    @event(Created)
    def __init__(
        self,
        reseller_org_id: str,
        subscription_type: str,
        plan: str,
        plan_name: str,
        billing_cycle: str,
        seats: int,
        unit_price_cents: int,
        currency: str,
        end_user_email: str | None,
        display_name: str | None,
        organization_name: str | None,
        admin_email: str | None,
        customer_account_id: UUID | None,
        period_start: datetime,
        period_end: datetime,
    ) -> None:
        self.reseller_org_id = reseller_org_id
        self.subscription_type = subscription_type
        self.plan = plan
        self.plan_name = plan_name
        self.billing_cycle = billing_cycle
        self.seats = seats
        self.unit_price_cents = unit_price_cents
        self.currency = currency
        self.end_user_email = end_user_email
        self.display_name = display_name
        self.organization_name = organization_name
        self.admin_email = admin_email
        self.customer_account_id = customer_account_id
        self.anchor = period_start
        self.period_index = 0
        self.current_period_start = period_start
        self.current_period_end = period_end
        self.pending_seats: int | None = None
        self.cancel_at_period_end = False
        self.failed_renewal_attempts = 0
        self.next_retry_at: datetime | None = None
        self.expired_reason: str | None = None

    # --- what it looks like ---------------------------------------------------------------------

    @property
    def status(self) -> str:
        if self.expired_reason is not None:
            return EXPIRED
        if self.cancel_at_period_end:
            return CANCELED
        if self.failed_renewal_attempts:
            return PAST_DUE
        if self.pending_seats is not None:
            return PENDING
        return ACTIVE

    @property
    def customer(self) -> str:
        return self.organization_name if self.subscription_type == ORGANIZATION else self.end_user_email  # type: ignore[return-value]

    @property
    def created_at(self) -> datetime:
        return self.created_on

    @property
    def due_at(self) -> datetime | None:
        """When the clock next has something to do with this subscription."""
        if self.status == EXPIRED:
            return None
        if self.cancel_at_period_end:
            return self.current_period_end
        return self.next_retry_at or self.current_period_end

    # --- seats ----------------------------------------------------------------------------------

    def price_seat_change(self, seats: int, *, plan: Plan, at: datetime, tax_rate_bps: int) -> SeatChange:
        """What changing to ``seats`` at ``at`` would do, and cost now. Raises if it is not allowed."""
        if self.subscription_type == SINGLE_USER:
            raise SeatsFixed(f"{self.plan_name} is a single-user plan: it has exactly one seat")
        self._require_changeable(at)
        plan.check_seats(seats)
        free = pricing.nothing_due(currency=self.currency, unit_price_cents=self.unit_price_cents,
                                   quantity=seats, tax_rate_bps=tax_rate_bps)
        if seats > self.seats:
            bill = pricing.seat_increase(
                unit_price_cents=self.unit_price_cents, seats_before=self.seats, seats_after=seats,
                period_start=self.current_period_start, period_end=self.current_period_end, at=at,
                currency=self.currency, tax_rate_bps=tax_rate_bps,
            )
            return SeatChange(INCREASE, self.seats, seats, at, bill)
        if seats < self.seats:
            if seats == self.pending_seats:
                raise NoChange(f"a decrease to {seats} seats is already scheduled")
            return SeatChange(DECREASE, self.seats, seats, self.current_period_end, free)
        if self.pending_seats is None:
            raise NoChange(f"the subscription already has {seats} seats")
        return SeatChange(WITHDRAW, self.pending_seats, seats, at, free)

    def change_seats(
        self,
        seats: int,
        *,
        plan: Plan,
        at: datetime,
        priced_at: datetime,
        tax_rate_bps: int,
        actor: str,
        pay: Pay,
        quote_id: str | None = None,
    ) -> SeatChange:
        """Increase now and charge the prorated difference, or schedule a decrease for the next
        period, or withdraw a scheduled decrease."""
        require_instant(at)
        self._require_changeable(at)
        change = self.price_seat_change(seats, plan=plan, at=priced_at, tax_rate_bps=tax_rate_bps)
        if change.kind == INCREASE:
            payment = pay(change.bill)
            if self.pending_seats is not None:
                self._withdraw_decrease(self.seats, self.pending_seats, "seats_increased", actor, at)
            self._increase_seats(self.seats, seats, self.currency, change.bill, payment, priced_at, quote_id, actor, at)
        elif change.kind == DECREASE:
            self._schedule_decrease(self.seats, self.pending_seats, seats, self.current_period_end, actor, at)
        else:
            self._withdraw_decrease(self.seats, change.seats_before, "requested", actor, at)
        return change

    @event(SeatsIncreased)
    def _increase_seats(self, seats_before: int, seats_after: int, currency: str, bill: Bill,
                        payment: Payment | None, priced_at: datetime, quote_id: str | None, actor: str,
                        timestamp: datetime) -> None:
        self.seats = seats_after

    @event(SeatDecreaseScheduled)
    def _schedule_decrease(self, seats: int, pending_seats_before: int | None, pending_seats: int,
                           effective_at: datetime, actor: str, timestamp: datetime) -> None:
        self.pending_seats = pending_seats

    @event(SeatDecreaseWithdrawn)
    def _withdraw_decrease(self, seats: int, withdrawn_pending_seats: int, reason: str, actor: str,
                           timestamp: datetime) -> None:
        self.pending_seats = None

    # --- cancel and resume ----------------------------------------------------------------------

    def cancel(self, *, at: datetime, actor: str) -> None:
        """Stop renewal: usable until the period ends, then it expires. A scheduled decrease stays."""
        require_instant(at)
        if self.status == EXPIRED:
            raise InvalidState("the subscription has expired")
        if self.cancel_at_period_end:
            raise InvalidState("the subscription is already canceled")
        self._cancel(self.current_period_end, self.pending_seats, actor, at)

    @event(Canceled)
    def _cancel(self, effective_at: datetime, pending_seats: int | None, actor: str, timestamp: datetime) -> None:
        self.cancel_at_period_end = True

    def resume(self, *, at: datetime, actor: str) -> None:
        """Undo a cancellation before the period ends: renew as normal again."""
        require_instant(at)
        if self.status == EXPIRED:
            raise InvalidState("the subscription has expired")
        if not self.cancel_at_period_end:
            raise InvalidState("only a canceled subscription can be resumed")
        if at >= self.current_period_end:
            raise InvalidState("the period has ended: the subscription is expiring")
        self._resume(self.pending_seats, actor, at)

    @event(Resumed)
    def _resume(self, pending_seats: int | None, actor: str, timestamp: datetime) -> None:
        self.cancel_at_period_end = False

    # --- the clock --------------------------------------------------------------------------------

    def is_due(self, at: datetime) -> bool:
        due = self.due_at
        return due is not None and due <= at

    def price_renewal(self, *, plan: Plan, tax_rate_bps: int) -> Bill:
        """The next period in full, for the seats it will have, at the catalog's current price."""
        seats = self.pending_seats if self.pending_seats is not None else self.seats
        start, end = period(self.anchor, self.billing_cycle, self.period_index + 1)
        return pricing.full_period(
            plan_name=plan.name, billing_cycle=self.billing_cycle,
            unit_price_cents=plan.unit_price_cents(self.billing_cycle), seats=seats,
            period_start=start, period_end=end, currency=self.currency, tax_rate_bps=tax_rate_bps,
        )

    def run_due(self, *, plan: Plan, at: datetime, tax_rate_bps: int, pay: Pay, actor: str) -> str | None:
        """Do what the clock asks at ``at``: expire, renew (charging the next period), or record a
        declined renewal. Returns the event type recorded, or None if nothing was due."""
        require_instant(at)
        if not self.is_due(at):
            return None
        if self.cancel_at_period_end:
            self._expire("canceled", self.current_period_end, actor, at)
            return "Expired"
        bill = self.price_renewal(plan=plan, tax_rate_bps=tax_rate_bps)
        seats_after = bill.quantity
        start, end = bill.lines[0].period_start, bill.lines[0].period_end
        attempt = self.failed_renewal_attempts + 1
        try:
            payment = pay(bill)
        except PaymentDeclined as declined:
            retries_left = RENEWAL_RETRY_DELAYS[self.failed_renewal_attempts:]
            next_retry_at = start + retries_left[0] if retries_left else None
            self._renewal_failed(start, end, seats_after, bill.unit_price_cents, bill, attempt,
                                 declined.decline_code, declined.detail, next_retry_at, actor, at)
            if next_retry_at is None:
                self._expire("payment_failed", start, actor, at)
                return "Expired"
            return "RenewalPaymentFailed"
        self._renew(start, end, self.seats, seats_after, bill.unit_price_cents, bill.currency, bill, payment, attempt,
                    actor, at)
        return "Renewed"

    @event(Renewed)
    def _renew(self, period_start: datetime, period_end: datetime, seats_before: int, seats_after: int,
               unit_price_cents: int, currency: str, bill: Bill, payment: Payment | None, attempt: int, actor: str,
               timestamp: datetime) -> None:
        self.period_index += 1
        self.current_period_start = period_start
        self.current_period_end = period_end
        self.seats = seats_after
        self.unit_price_cents = unit_price_cents
        self.pending_seats = None
        self.failed_renewal_attempts = 0
        self.next_retry_at = None

    @event(RenewalPaymentFailed)
    def _renewal_failed(self, period_start: datetime, period_end: datetime, seats: int, unit_price_cents: int,
                        bill: Bill, attempt: int, decline_code: str, message: str,
                        next_retry_at: datetime | None, actor: str, timestamp: datetime) -> None:
        self.failed_renewal_attempts = attempt
        self.next_retry_at = next_retry_at

    @event(Expired)
    def _expire(self, reason: str, period_end: datetime, actor: str, timestamp: datetime) -> None:
        self.expired_reason = reason
        self.next_retry_at = None

    # --- rules shared by the commands -------------------------------------------------------------

    def _require_changeable(self, at: datetime) -> None:
        status = self.status
        if status in (EXPIRED, CANCELED):
            raise InvalidState(f"a {status} subscription cannot change seats")
        if status == PAST_DUE:
            raise InvalidState("the renewal payment is failing: update the billing information first")
        if at >= self.current_period_end:
            raise InvalidState("the current period has ended and its renewal is being processed")
        if at < self.current_period_start:
            raise InvalidState("the change is priced before the current period started")
