"""Command handlers: load, check, call one aggregate, save, return.

Money moves before the change it pays for is saved (a card is charged before the ledger records a paid
change), so every handler runs inside ``_execute``: a lock on the subscription keeps two changes off one
basis, and a charge is made only after its intent is recorded (a ``Charge`` aggregate, committed first) with a
processor key that a retry of the same change on the same basis reproduces. The outcome is saved with the
change and its billing document; a charge whose change could not be saved is refunded and documented. An
intent left open by a crash is settled by ``settle_charge`` (see ``commands.recovery``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from commands.application import LedgerApplication
from commands.at_once import map_at_once
from commands.errors import ConcurrentChange, Forbidden, NotFound, QuoteStale, VersionMismatch
from commands.idempotency import IdempotencyKey, IdempotentRequest
from commands.ports import Clock, Locks, PaymentGateway
from commands.quotes import Quote, QuoteSigner, order_subject, seats_subject
from ledger.catalog import ORGANIZATION, Catalog
from ledger.charge import COMPLETED, Charge
from ledger.customer_account import CustomerAccount
from ledger.errors import DomainError, PaymentDeclined
from ledger.invoice import RENEWAL, SEATS_INCREASED, SUBSCRIPTION_CREATED, Invoice
from ledger.payments import Payment
from ledger.pricing import Bill
from ledger.reseller import CardOnFile, Reseller
from ledger.subscription import INCREASE, Order, Subscription

log = logging.getLogger("ledger.commands")

A = TypeVar("A", bound=Aggregate)
SCHEDULER = "system:scheduler"
RECOVERY = "system:recovery"
ATTEMPTS = 3
CHARGES_AT_ONCE = 8
"""A renewal batch's charges in flight together: a processor takes tens to hundreds of milliseconds to answer
each (Stripe), so one at a time would cap renewals near ten a second; the simulated processor commits the
charges that meet in one fsync."""


class StaleBasis(Exception):
    """The aggregate this attempt loaded has moved on: a rival change on the same basis was recorded (and paid)
    after it was loaded. The attempt is retried on a fresh load, as for a conflict in the event store."""


@dataclass(frozen=True)
class Outcome(Generic[A]):
    """What a command left: the aggregate as it now is, and the log position of its last event
    (None when nothing new was recorded, as when a retry is answered from an idempotency key)."""

    aggregate: A
    position: int | None
    replayed: bool = False
    created: bool = False


@dataclass(frozen=True)
class Priced:
    """A preview: what a change would do and cost, and the quote that holds that price."""

    kind: str
    bill: Bill
    quote_id: str
    priced_at: datetime
    effective_at: datetime


@dataclass(frozen=True)
class _Charged:
    charge_id: UUID
    payment: Payment
    bill: Bill
    purpose: str
    subscription_id: UUID
    reseller_org_id: str


@dataclass(frozen=True)
class _Declined:
    reseller_id: UUID
    purpose: str
    subscription_id: UUID
    bill: Bill
    error: PaymentDeclined


@dataclass
class _Attempt:
    """One try at a command: the aggregates it touched beside the main one, the money it moved, and the
    locks it took on the way (held until its outcome is saved)."""

    at: datetime
    actor: str
    held: ExitStack
    companions: list[Aggregate] = field(default_factory=list)
    charges: list[Charge] = field(default_factory=list)
    charged: list[_Charged] = field(default_factory=list)
    declined: _Declined | None = None
    new_charges: bool = False
    """Its charges cannot have been intended before (the first try of a change to a new subscription whose id
    no earlier request can have named): their intents are not looked up. Any other try looks them up."""


@dataclass
class DueBatch:
    """What ``run_due_batch`` did with each subscription it was given."""

    changed: list[UUID] = field(default_factory=list)
    """Renewed, expired, or its renewal's decline recorded."""
    not_due: list[UUID] = field(default_factory=list)
    busy: list[UUID] = field(default_factory=list)
    """Held by another change, or met one: not done here, for ``run_due`` alone (which waits its turn)."""
    failed: dict[UUID, Exception] = field(default_factory=dict)
    """Not done, for the next run (a processor outage, billing information missing)."""


@dataclass
class _PlannedRenewal:
    """A due subscription in a batch: what it will charge, then what it will save."""

    subscription: Subscription
    reseller: Reseller
    attempt: _Attempt
    bill: Bill | None = None
    card: CardOnFile | None = None
    charge: Charge | None = None
    resumed: bool = False
    pending: list[Any] = field(default_factory=list)
    """Its outcome's events, collected from its aggregates (so that a failed batch can save them again)."""


def _collect(aggregates: list[Any]) -> list[Any]:
    return [event for aggregate in aggregates for event in aggregate.collect_events()]


class _Payer:
    """Charges the reseller's card for a bill: records the intent, then asks the processor, keyed by the
    charge's basis and attempt."""

    def __init__(self, ledger: Ledger, attempt: _Attempt, reseller: Reseller, *, subscription_id: UUID,
                 basis_version: int, purpose: str, quoted_total: int | None,
                 intended: tuple[Charge, bool] | None = None) -> None:
        self._ledger, self._attempt, self._reseller = ledger, attempt, reseller
        self._subscription_id, self._basis_version = subscription_id, basis_version
        self._purpose, self._quoted_total = purpose, quoted_total
        self._intended = intended
        """The charge and whether it resumes an open attempt, when a batch recorded its intent beforehand."""

    def __call__(self, bill: Bill) -> Payment | None:
        if self._quoted_total is not None and bill.total_cents != self._quoted_total:
            raise QuoteStale("prices or tax changed since the quote was issued; preview again")
        if bill.total_cents == 0:
            return None
        attempt = self._attempt
        if self._intended is None:
            charge, resumed = self._ledger._intend_charge(attempt, self._reseller.org_id, self._subscription_id,
                                                          self._basis_version, self._purpose, bill,
                                                          self._reseller.require_billing_info())
        else:
            charge, resumed = self._intended
            if not charge.matches(bill, customer=charge.customer, payment_method=charge.payment_method):
                raise StaleBasis(f"the bill of {self._subscription_id} changed after its intent was recorded")
        assert charge.invoice_id is not None
        gateway = self._ledger.gateway
        try:
            # A resumed attempt may have been charged before its process died: take that charge rather than
            # trust every processor (or fake) to replay the key.
            reference = (resumed and gateway.find_charge(customer=charge.customer,
                                                         idempotency_key=charge.idempotency_key)) or gateway.charge(
                customer=charge.customer, payment_method=charge.payment_method, amount_cents=bill.total_cents,
                currency=bill.currency, idempotency_key=charge.idempotency_key,
                metadata={"reseller_org_id": self._reseller.org_id, "subscription_id": str(self._subscription_id),
                          "invoice_id": str(charge.invoice_id), "purpose": self._purpose},
            )
        except PaymentDeclined as declined:
            charge.decline(declined.decline_code, declined.detail, at=attempt.at, actor=attempt.actor)
            attempt.charges.append(charge)
            attempt.declined = _Declined(self._reseller.id, self._purpose, self._subscription_id, bill, declined)
            raise
        charge.complete(reference, at=attempt.at, actor=attempt.actor)
        attempt.charges.append(charge)
        payment = Payment(charge.invoice_id, reference)
        attempt.charged.append(
            _Charged(charge.id, payment, bill, self._purpose, self._subscription_id, self._reseller.org_id))
        return payment


class Ledger:
    """The command side of the ledger, with its queries of single aggregates."""

    def __init__(self, app: LedgerApplication, *, catalog: Catalog, clock: Clock, gateway: PaymentGateway,
                 locks: Locks, quotes: QuoteSigner) -> None:
        self.app = app
        self.catalog = catalog
        self.clock = clock
        self.gateway = gateway
        self._locks = locks
        self._quotes = quotes

    # --- resellers ------------------------------------------------------------------------------

    def enable_reseller(self, org_id: str, *, name: str | None, actor: str,
                        idempotency: IdempotencyKey | None = None) -> Outcome[Reseller]:
        """Enable an organization as a reseller: a new one needs a name; an existing one is enabled
        again (and renamed, if a new name is given)."""

        def work(attempt: _Attempt) -> Reseller:
            reseller = self.find_reseller(org_id)
            if reseller is None:
                if name is None:
                    raise NotFound(f"{org_id} has never been a reseller; enable it with a name first")
                return Reseller.enable_new(org_id, name=name, at=attempt.at, actor=attempt.actor)
            reseller.enable(name=name or reseller.name, at=attempt.at, actor=attempt.actor)
            return reseller

        return self._execute(work, actor=actor, locks=[f"reseller:{org_id}"], idempotency=idempotency)

    def disable_reseller(self, org_id: str, *, actor: str,
                         idempotency: IdempotencyKey | None = None) -> Outcome[Reseller]:
        def work(attempt: _Attempt) -> Reseller:
            reseller = self._get(Reseller.id_for(org_id), Reseller)
            reseller.disable(at=attempt.at, actor=attempt.actor)
            return reseller

        return self._execute(work, actor=actor, locks=[f"reseller:{org_id}"], idempotency=idempotency)

    def set_tax_exemption(self, org_id: str, *, exempt: bool, reason: str, actor: str,
                          idempotency: IdempotencyKey | None = None) -> Outcome[Reseller]:
        def work(attempt: _Attempt) -> Reseller:
            reseller = self._get(Reseller.id_for(org_id), Reseller)
            if exempt:
                reseller.grant_tax_exemption(reason=reason, at=attempt.at, actor=attempt.actor)
            else:
                reseller.revoke_tax_exemption(at=attempt.at, actor=attempt.actor)
            return reseller

        return self._execute(work, actor=actor, locks=[f"reseller:{org_id}"], idempotency=idempotency)

    def set_billing_info(self, org_id: str, *, payment_method: str, billing_email: str, country: str, actor: str,
                         idempotency: IdempotencyKey | None = None) -> Outcome[Reseller]:
        def work(attempt: _Attempt) -> Reseller:
            reseller = self.enabled_reseller(org_id)
            reseller.update_billing_info(
                billing_email=billing_email, country=country, at=attempt.at, actor=attempt.actor,
                save_card=lambda customer: self.gateway.save_card(
                    reseller_org_id=org_id, payment_method=payment_method, billing_email=billing_email,
                    customer=customer, idempotency_key=f"ledger-customer-{org_id}-{reseller.version}"),
            )
            return reseller

        return self._execute(work, actor=actor, locks=[f"reseller:{org_id}"], idempotency=idempotency)

    # --- subscriptions ----------------------------------------------------------------------------

    def preview_create(self, org_id: str, order: Order) -> Priced:
        at = self.clock.now()
        plan = self.catalog.plan(order.plan)
        order = order.checked_against(plan)
        reseller = self.enabled_reseller(org_id)
        reseller.require_billing_info()
        bill = Subscription.price_new(order, plan=plan, at=at, currency=self.catalog.currency,
                                      tax_rate_bps=self._tax_rate(reseller))
        quote_id = self._quotes.issue(Quote(org_id, order_subject(asdict(order)), 0, at, bill.total_cents))
        return Priced("create", bill, quote_id, at, at)

    def create_subscription(self, org_id: str, order: Order, *, actor: str, quote_id: str | None = None,
                            idempotency: IdempotencyKey | None = None) -> Outcome[Subscription]:
        # The ids come from the request, not the attempt: a retry with the same Idempotency-Key after a crash
        # opens the same subscription, so it finds (and reuses) the charge the crashed try intended.
        request = (f"/idempotency/{idempotency.record_id}/{idempotency.fingerprint}" if idempotency
                   else f"/requests/{uuid4()}")
        subscription_id = uuid5(NAMESPACE_URL, f"{request}/subscription")

        def work(attempt: _Attempt) -> Subscription:
            plan = self.catalog.plan(order.plan)
            checked = order.checked_against(plan)
            reseller = self.enabled_reseller(org_id)
            reseller.require_billing_info()
            quoted = self._redeem(quote_id, org_id, order_subject(asdict(checked)), 0, attempt.at)
            account_id = uuid5(NAMESPACE_URL, f"{request}/customer-account") if plan.kind == ORGANIZATION else None
            subscription = Subscription.create(
                subscription_id, checked, reseller_org_id=org_id, plan=plan, at=attempt.at,
                currency=self.catalog.currency, tax_rate_bps=self._tax_rate(reseller),
                customer_account_id=account_id, actor=attempt.actor, quote_id=quote_id,
                pay=self._payer(attempt, reseller, subscription_id, 0, SUBSCRIPTION_CREATED, quoted),
            )
            if account_id is not None:
                assert checked.organization_name and checked.admin_email
                attempt.companions.append(CustomerAccount.open(
                    account_id, reseller_org_id=org_id, organization_name=checked.organization_name,
                    admin_email=checked.admin_email, subscription_id=subscription_id, at=attempt.at,
                    actor=attempt.actor,
                ))
            return subscription

        # Without an Idempotency-Key the subscription's id is new: no earlier try can have intended its charge.
        return self._execute(work, actor=actor, idempotency=idempotency, new_subject=idempotency is None)

    def preview_seat_change(self, org_id: str, subscription_id: UUID, seats: int) -> Priced:
        at = self.clock.now()
        reseller = self.enabled_reseller(org_id)
        subscription = self.subscription(org_id, subscription_id)
        change = subscription.price_seat_change(seats, plan=self.catalog.plan(subscription.plan), at=at,
                                                tax_rate_bps=self._tax_rate(reseller))
        if change.kind == INCREASE:
            reseller.require_billing_info()
        quote_id = self._quotes.issue(Quote(org_id, seats_subject(subscription.id, seats), subscription.version, at,
                                            change.bill.total_cents))
        return Priced(change.kind, change.bill, quote_id, at, change.effective_at)

    def change_seats(self, org_id: str, subscription_id: UUID, seats: int, *, actor: str,
                     quote_id: str | None = None, expected_version: int | None = None,
                     idempotency: IdempotencyKey | None = None) -> Outcome[Subscription]:
        def work(attempt: _Attempt) -> Subscription:
            reseller = self.enabled_reseller(org_id)
            subscription = self._expected(self.subscription(org_id, subscription_id), expected_version)
            quoted = self._redeem(quote_id, org_id, seats_subject(subscription.id, seats), subscription.version,
                                  attempt.at)
            subscription.change_seats(
                seats, plan=self.catalog.plan(subscription.plan), at=attempt.at,
                priced_at=quoted.priced_at if quoted else attempt.at, tax_rate_bps=self._tax_rate(reseller),
                actor=attempt.actor, quote_id=quote_id,
                pay=self._payer(attempt, reseller, subscription.id, subscription.version, SEATS_INCREASED, quoted),
            )
            return subscription

        return self._execute(work, actor=actor, locks=[f"subscription:{subscription_id}"], idempotency=idempotency)

    def cancel(self, org_id: str, subscription_id: UUID, *, actor: str, expected_version: int | None = None,
               idempotency: IdempotencyKey | None = None) -> Outcome[Subscription]:
        def work(attempt: _Attempt) -> Subscription:
            self.enabled_reseller(org_id)
            subscription = self._expected(self.subscription(org_id, subscription_id), expected_version)
            subscription.cancel(at=attempt.at, actor=attempt.actor)
            return subscription

        return self._execute(work, actor=actor, locks=[f"subscription:{subscription_id}"], idempotency=idempotency)

    def resume(self, org_id: str, subscription_id: UUID, *, actor: str, expected_version: int | None = None,
               idempotency: IdempotencyKey | None = None) -> Outcome[Subscription]:
        def work(attempt: _Attempt) -> Subscription:
            self.enabled_reseller(org_id)
            subscription = self._expected(self.subscription(org_id, subscription_id), expected_version)
            subscription.resume(at=attempt.at, actor=attempt.actor)
            return subscription

        return self._execute(work, actor=actor, locks=[f"subscription:{subscription_id}"], idempotency=idempotency)

    def run_due(self, subscription_id: UUID, *, actor: str = SCHEDULER) -> Outcome[Subscription]:
        """Expire or renew a subscription whose period (or renewal retry) has come due, if it has."""

        def work(attempt: _Attempt) -> Subscription:
            subscription = self._get(subscription_id, Subscription)
            reseller = self._get(Reseller.id_for(subscription.reseller_org_id), Reseller)
            subscription.run_due(
                plan=self.catalog.plan(subscription.plan), at=attempt.at, tax_rate_bps=self._tax_rate(reseller),
                actor=attempt.actor,
                pay=self._payer(attempt, reseller, subscription.id, subscription.version, RENEWAL, None),
            )
            return subscription

        return self._execute(work, actor=actor, locks=[f"subscription:{subscription_id}"])

    def run_due_batch(self, subscription_ids: Sequence[UUID], *, actor: str = SCHEDULER) -> DueBatch:
        """``run_due`` for many subscriptions at once, in three steps: their charge intents recorded in one
        transaction, then each charged in turn, then every outcome saved in one transaction. What each
        subscription is charged and what it records are what ``run_due`` would charge and record; a decline
        is one subscription's outcome, and a subscription that cannot be handled (an outage, a conflict) is
        left out of the batch's saves without failing the others. Subscriptions that another change is
        holding are not waited for: they come back as ``busy``, for ``run_due`` alone."""
        result = DueBatch()
        with ExitStack() as held:
            names = {f"subscription:{subscription_id}": subscription_id for subscription_id in subscription_ids}
            free = set(held.enter_context(self._locks.hold_free(list(names))))
            result.busy.extend(subscription_id for name, subscription_id in names.items() if name not in free)
            at = self.clock.now()
            plans = self._plan_renewals([names[name] for name in names if name in free], at, actor, held, result)
            self._record_intents(plans, result)
            outcomes = [outcome for outcome in self._run_all_planned(plans, result) if outcome is not None]
            self._save_outcomes(outcomes, result)
        return result

    def _plan_renewals(self, subscription_ids: list[UUID], at: datetime, actor: str, held: ExitStack,
                       result: DueBatch) -> list[_PlannedRenewal]:
        """The due subscriptions among these, each with what it will charge (an intent not yet recorded)."""
        subscriptions = self.app.get_many(subscription_ids)
        resellers = self.app.get_many(list({Reseller.id_for(subscription.reseller_org_id)
                                            for subscription in subscriptions.values()
                                            if isinstance(subscription, Subscription)}))
        plans: list[_PlannedRenewal] = []
        for subscription_id in subscription_ids:
            subscription = subscriptions.get(subscription_id)
            if not isinstance(subscription, Subscription):
                result.failed[subscription_id] = NotFound(f"no subscription {subscription_id}")
                continue
            if not subscription.is_due(at):
                result.not_due.append(subscription_id)
                continue
            reseller = resellers.get(Reseller.id_for(subscription.reseller_org_id))
            if not isinstance(reseller, Reseller):
                result.failed[subscription_id] = NotFound(f"no reseller {subscription.reseller_org_id}")
                continue
            plan = _PlannedRenewal(subscription, reseller, _Attempt(at=at, actor=actor, held=held))
            try:
                plan.bill = None if subscription.cancel_at_period_end else subscription.price_renewal(
                    plan=self.catalog.plan(subscription.plan), tax_rate_bps=self._tax_rate(reseller))
                if plan.bill is not None and plan.bill.total_cents > 0:
                    plan.card = reseller.require_billing_info()
            except DomainError as error:
                result.failed[subscription_id] = error
                continue
            plans.append(plan)
        charging = {Charge.id_for(plan.subscription.id, plan.subscription.version, RENEWAL): plan
                    for plan in plans if plan.card is not None}
        names = {f"charge:{charge_id}": charge_id for charge_id in charging}
        free = set(held.enter_context(self._locks.hold_free(list(names))))
        charges = self.app.get_many([names[name] for name in names if name in free])
        for name, charge_id in names.items():
            plan = charging[charge_id]
            if name not in free:  # recovery is settling an earlier attempt
                result.busy.append(plan.subscription.id)
                plans.remove(plan)
                continue
            plan.charge = charges.get(charge_id) or Charge.open(
                reseller_org_id=plan.reseller.org_id, subscription_id=plan.subscription.id,
                basis_version=plan.subscription.version, purpose=RENEWAL, at=at, actor=actor)
        return plans

    def _record_intents(self, plans: list[_PlannedRenewal], result: DueBatch) -> None:
        """Record the batch's new charge intents in one transaction (alone, should that one fail)."""
        intending = []
        for plan in list(plans):
            charge, bill, card = plan.charge, plan.bill, plan.card
            if charge is None or bill is None or card is None:
                continue
            try:
                if charge.state == COMPLETED:
                    raise StaleBasis(f"the renewal on basis {charge.basis_version} is already paid and recorded")
                plan.resumed = charge.matches(bill, customer=card.processor_customer,
                                              payment_method=card.processor_payment_method)
                if not plan.resumed:
                    if charge.is_open:
                        self._settle_open(charge, at=plan.attempt.at, actor=plan.attempt.actor)
                    charge.intend(bill, customer=card.processor_customer, payment_method=card.processor_payment_method,
                                  at=plan.attempt.at, actor=plan.attempt.actor)
                    intending.append(plan)
            except (DomainError, StaleBasis, IntegrityError) as error:
                self._leave_out(plan, error, result)
                plans.remove(plan)
        intents = [(plan, _collect([plan.charge])) for plan in intending]
        if not intents:
            return
        try:
            self.app.save(*(event for _, events in intents for event in events))
        except IntegrityError:
            for plan, events in intents:
                try:
                    self.app.save(*events)
                except IntegrityError as error:
                    self._leave_out(plan, error, result)
                    plans.remove(plan)

    def _run_all_planned(self, plans: list[_PlannedRenewal], result: DueBatch) -> list[_PlannedRenewal | None]:
        """Each planned renewal run, several at once, in the plans' order (each has its own aggregates; they
        share their resellers, which renewing only reads)."""
        return map_at_once(lambda plan: self._run_planned(plan, result), plans, at_most=CHARGES_AT_ONCE,
                           name="renewal")

    def _run_planned(self, plan: _PlannedRenewal, result: DueBatch) -> _PlannedRenewal | None:
        """Charge one planned renewal (its intent recorded) and record its outcome on the aggregates."""
        subscription, attempt = plan.subscription, plan.attempt
        payer = _Payer(self, attempt, plan.reseller, subscription_id=subscription.id,
                       basis_version=subscription.version, purpose=RENEWAL, quoted_total=None,
                       intended=(plan.charge, plan.resumed) if plan.charge is not None else None)
        try:
            subscription.run_due(plan=self.catalog.plan(subscription.plan), at=attempt.at,
                                 tax_rate_bps=self._tax_rate(plan.reseller), pay=payer, actor=attempt.actor)
        except (DomainError, StaleBasis) as error:  # an open intent is resumed by the next run, or settled
            self._leave_out(plan, error, result)
            return None
        except Exception as error:  # a bug met by one subscription must not leave the others' charges unrecorded
            log.exception("renewing subscription %s failed; its charge intent is settled by recovery", subscription.id)
            self._leave_out(plan, error, result)
            return None
        plan.pending = _collect([subscription, *attempt.companions, *attempt.charges, *self._invoices(attempt)])
        return plan

    def _save_outcomes(self, plans: list[_PlannedRenewal], result: DueBatch) -> None:
        """Save every outcome in one transaction; should one of them conflict, each alone (a charge whose
        change is not saved is given back, as for a single command)."""
        if not plans:
            return
        try:
            self.app.save(*(obj for plan in plans for obj in plan.pending))
        except IntegrityError:
            for plan in plans:
                try:
                    self.app.save(*plan.pending)
                except IntegrityError as error:
                    self._undo_unrecorded_charges(plan.attempt)
                    self._leave_out(plan, error, result)
                else:
                    result.changed.append(plan.subscription.id)
            return
        except BaseException:
            for plan in plans:
                self._undo_unrecorded_charges(plan.attempt)
            raise
        result.changed.extend(plan.subscription.id for plan in plans)

    @staticmethod
    def _leave_out(plan: _PlannedRenewal, error: Exception, result: DueBatch) -> None:
        if isinstance(error, IntegrityError | StaleBasis):  # a change was recorded on its basis: retry alone
            result.busy.append(plan.subscription.id)
        else:
            result.failed[plan.subscription.id] = error

    # --- single-aggregate queries -------------------------------------------------------------------

    def enabled_reseller(self, org_id: str) -> Reseller:
        try:
            reseller = self._get(Reseller.id_for(org_id), Reseller)
        except NotFound:
            raise Forbidden(f"{org_id} is not enabled as a reseller") from None
        if not reseller.enabled:
            raise Forbidden(f"{org_id} is not enabled as a reseller")
        return reseller

    def find_reseller(self, org_id: str) -> Reseller | None:
        return self._find(Reseller.id_for(org_id), Reseller)

    def subscription(self, org_id: str, subscription_id: UUID) -> Subscription:
        """A subscription of this reseller; another reseller's is not found (its existence stays hidden)."""
        subscription = self._get(subscription_id, Subscription)
        if subscription.reseller_org_id != org_id:
            raise NotFound(f"no subscription {subscription_id}")
        return subscription

    @staticmethod
    def _expected(subscription: Subscription, version: int | None) -> Subscription:
        """The subscription, if it is still at the version the caller read (when they say which)."""
        if version is not None and version != subscription.version:
            raise VersionMismatch(f"the subscription is at version {subscription.version}, not {version}: "
                                  "it changed since you read it; read it again and decide anew")
        return subscription

    def history(self, aggregate_id: UUID) -> Iterator[Any]:
        return self.app.events.get(aggregate_id)

    def tax_rate_of(self, reseller: Reseller) -> int:
        return self._tax_rate(reseller)

    # --- how every command runs ---------------------------------------------------------------------

    def _execute(self, work: Callable[[_Attempt], A], *, actor: str, locks: list[str] | None = None,
                 idempotency: IdempotencyKey | None = None, new_subject: bool = False) -> Outcome[A]:
        names = list(locks or [])
        if idempotency is not None:
            names.append(f"idempotency:{idempotency.record_id}")
        with ExitStack() as held:
            for name in names:
                held.enter_context(self._locks.hold(name))
            for number in range(ATTEMPTS):
                if idempotency is not None and (earlier := self._earlier_answer(idempotency)) is not None:
                    return earlier
                with ExitStack() as attempt_held:
                    attempt = _Attempt(at=self.clock.now(), actor=actor, held=attempt_held,
                                       new_charges=new_subject and number == 0)
                    try:
                        main = work(attempt)
                    except PaymentDeclined:
                        self._record_declined(attempt)
                        raise
                    except (IntegrityError, StaleBasis):  # a rival recorded first: try again on the new basis
                        self._undo_unrecorded_charges(attempt)
                        continue
                    created = main.version == len(main.pending_events)
                    pending = [main, *attempt.companions, *attempt.charges, *self._invoices(attempt)]
                    if idempotency is not None:
                        pending.append(IdempotentRequest.record(idempotency, resource_id=main.id,
                                                                resource_version=main.version, at=attempt.at,
                                                                actor=attempt.actor))
                    try:
                        recordings = self.app.save(*pending)
                    except IntegrityError:
                        self._undo_unrecorded_charges(attempt)
                        continue
                    except BaseException:
                        self._undo_unrecorded_charges(attempt)
                        raise
                return Outcome(main, recordings[-1].notification.id if recordings else None, created=created)
        raise ConcurrentChange("another change was recorded at the same time, repeatedly; retry")

    def _earlier_answer(self, idempotency: IdempotencyKey) -> Outcome[Any] | None:
        try:
            record = self._get(idempotency.record_id, IdempotentRequest)
        except NotFound:
            return None
        record.check_same_request(idempotency)
        aggregate = self.app.repository.get(record.resource_id, version=record.resource_version)
        return Outcome(aggregate, None, replayed=True, created=record.resource_version == 1)

    def _invoices(self, attempt: _Attempt) -> list[Invoice]:
        return [
            Invoice.issue_paid(charged.payment, reseller_org_id=charged.reseller_org_id,
                               subscription_id=charged.subscription_id, purpose=charged.purpose, bill=charged.bill,
                               at=attempt.at, actor=attempt.actor)
            for charged in attempt.charged
        ]

    # --- money: intents and their outcomes ---------------------------------------------------------

    def _intend_charge(self, attempt: _Attempt, reseller_org_id: str, subscription_id: UUID, basis_version: int,
                       purpose: str, bill: Bill, card: CardOnFile) -> tuple[Charge, bool]:
        """The charge to make for this bill, its intent durably recorded, and whether it resumes an attempt
        left open. A retry of the same change on the same basis finds its open attempt and resumes it (its
        charge is taken if the processor made it before the crash, made now if not); an open attempt for
        something else is settled first."""
        charge_id = Charge.id_for(subscription_id, basis_version, purpose)
        attempt.held.enter_context(self._locks.hold(f"charge:{charge_id}"))
        charge = (None if attempt.new_charges else self._find(charge_id, Charge)) or Charge.open(
            reseller_org_id=reseller_org_id, subscription_id=subscription_id, basis_version=basis_version,
            purpose=purpose, at=attempt.at, actor=attempt.actor)
        if charge.state == COMPLETED:
            raise StaleBasis(f"the change on basis {basis_version} of {subscription_id} is already paid and recorded")
        customer, payment_method = card.processor_customer, card.processor_payment_method
        if charge.matches(bill, customer=customer, payment_method=payment_method):
            return charge, True
        if charge.is_open:
            self._settle_open(charge, at=attempt.at, actor=attempt.actor)
        charge.intend(bill, customer=customer, payment_method=payment_method, at=attempt.at, actor=attempt.actor)
        self.app.save(charge)
        return charge, False

    def settle_charge(self, charge_id: UUID, *, actor: str = RECOVERY) -> str | None:
        """End a charge attempt whose command died after recording its intent: ask the processor with the
        attempt's key, give back and document what it took, or record that it took nothing. Returns the
        charge's state, or None when the charge is not open (someone else settled or completed it). Safe
        to call from several processes at once: it holds the charge's lock and reloads under it."""
        with self._locks.hold(f"charge:{charge_id}"):
            charge = self._find(charge_id, Charge)
            if charge is None or not charge.is_open:
                return None
            self._settle_open(charge, at=self.clock.now(), actor=actor)
            return charge.state

    def _settle_open(self, charge: Charge, *, at: datetime, actor: str) -> None:
        reference = self.gateway.find_charge(customer=charge.customer, idempotency_key=charge.idempotency_key)
        if reference is None:
            charge.abandon("not_charged_at_processor", at=at, actor=actor)
            self.app.save(charge)
        else:
            self._give_back(charge, reference, reason="change_not_recorded", at=at, actor=actor)

    def _give_back(self, charge: Charge, payment_reference: str, *, reason: str, at: datetime, actor: str) -> None:
        """Refund an attempt's charge whose change was not recorded, and document both in one transaction."""
        assert charge.bill is not None and charge.invoice_id is not None
        refund = self.gateway.refund(
            payment_reference=payment_reference, amount_cents=charge.bill.total_cents,
            idempotency_key=f"ledger-undo-{charge.invoice_id}",
            metadata={"invoice_id": str(charge.invoice_id), "reason": reason},
        )
        invoice = Invoice.issue_paid(Payment(charge.invoice_id, payment_reference),
                                     reseller_org_id=charge.reseller_org_id, subscription_id=charge.subscription_id,
                                     purpose=charge.purpose, bill=charge.bill, at=at, actor=actor)
        invoice.record_refund(amount_cents=charge.bill.total_cents, refund_reference=refund, reason=reason, at=at,
                              actor=actor)
        charge.reverse(payment_reference, refund, reason=reason, at=at, actor=actor)
        self.app.save(invoice, charge)

    def _record_declined(self, attempt: _Attempt) -> None:
        """Record the processor's refusal on the reseller (its billing page shows it) and end the charge
        attempt as declined, in one transaction."""
        declined = attempt.declined
        if declined is None:
            return
        for _ in range(ATTEMPTS):
            reseller = self._get(declined.reseller_id, Reseller)
            reseller.record_declined_charge(
                purpose=declined.purpose, subscription_id=declined.subscription_id,
                amount_cents=declined.bill.total_cents, currency=declined.bill.currency,
                decline_code=declined.error.decline_code, message=declined.error.detail, at=attempt.at,
                actor=attempt.actor,
            )
            charges = []
            for recorded in attempt.charges:
                charge = self._get(recorded.id, Charge)
                if charge.is_open:
                    charge.decline(declined.error.decline_code, declined.error.detail, at=attempt.at,
                                   actor=attempt.actor)
                    charges.append(charge)
            try:
                self.app.save(reseller, *charges)
                return
            except IntegrityError:
                continue
        log.error("could not record the declined charge for reseller %s; recovery settles its intent",
                  declined.reseller_id)

    def _undo_unrecorded_charges(self, attempt: _Attempt) -> None:
        """Refund, and document, every charge of this attempt whose change was not saved."""
        for charged in attempt.charged:
            try:
                charge = self._get(charged.charge_id, Charge)
                if charge.is_open and charge.invoice_id == charged.payment.invoice_id:
                    self._give_back(charge, charged.payment.reference, reason="change_not_recorded",
                                    at=attempt.at, actor=attempt.actor)
            except Exception:
                log.exception("charge %s of invoice %s was not recorded and could not be undone now; "
                              "recovery settles it", charged.payment.reference, charged.payment.invoice_id)

    def _payer(self, attempt: _Attempt, reseller: Reseller, subscription_id: UUID, basis_version: int,
               purpose: str, quoted: Quote | None) -> _Payer:
        return _Payer(self, attempt, reseller, subscription_id=subscription_id, basis_version=basis_version,
                      purpose=purpose, quoted_total=quoted.total_cents if quoted else None)

    def _redeem(self, quote_id: str | None, org_id: str, subject: str, basis_version: int,
                at: datetime) -> Quote | None:
        if quote_id is None:
            return None
        return self._quotes.redeem(quote_id, org_id=org_id, subject=subject, basis_version=basis_version, now=at)

    def _tax_rate(self, reseller: Reseller) -> int:
        return self.catalog.tax_rate_bps(reseller.country, tax_exempt=reseller.tax_exempt)

    def _find(self, aggregate_id: UUID, kind: type[A]) -> A | None:
        try:
            return self._get(aggregate_id, kind)
        except NotFound:
            return None

    def _get(self, aggregate_id: UUID, kind: type[A]) -> A:
        try:
            aggregate = self.app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"no {kind.__name__.lower()} {aggregate_id}") from None
        if not isinstance(aggregate, kind):
            raise NotFound(f"no {kind.__name__.lower()} {aggregate_id}")
        return aggregate
