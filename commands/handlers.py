"""Command handlers: load, check, call one aggregate, save, return.

Money moves before the change is saved (a card must be charged before the ledger records a paid
change), so every handler runs inside ``_execute``: a lock on the subscription keeps two changes off
one basis, the charge's idempotency key is derived from that basis, and a charge whose change could
not be saved is refunded and documented rather than kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from commands.application import LedgerApplication
from commands.errors import ConcurrentChange, Forbidden, NotFound, QuoteStale
from commands.idempotency import IdempotencyKey, IdempotentRequest
from commands.ports import Clock, Locks, PaymentGateway
from commands.quotes import Quote, QuoteSigner, order_subject, seats_subject
from ledger.catalog import ORGANIZATION, Catalog
from ledger.customer_account import CustomerAccount
from ledger.errors import PaymentDeclined
from ledger.invoice import RENEWAL, SEATS_INCREASED, SUBSCRIPTION_CREATED, Invoice
from ledger.payments import Payment
from ledger.pricing import Bill
from ledger.reseller import Reseller
from ledger.subscription import INCREASE, Order, Subscription

log = logging.getLogger("ledger.commands")

A = TypeVar("A", bound=Aggregate)
SCHEDULER = "system:scheduler"
ATTEMPTS = 3


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
    """One try at a command: the aggregates it touched beside the main one, and the money it moved."""

    at: datetime
    actor: str
    companions: list[Aggregate] = field(default_factory=list)
    charged: list[_Charged] = field(default_factory=list)
    declined: _Declined | None = None


class _Payer:
    """Charges the reseller's card for a bill, keyed by the basis it was priced on."""

    def __init__(self, gateway: PaymentGateway, attempt: _Attempt, reseller: Reseller, *, subscription_id: UUID,
                 basis_version: int, purpose: str, quoted_total: int | None) -> None:
        self._gateway, self._attempt, self._reseller = gateway, attempt, reseller
        self._subscription_id, self._basis_version = subscription_id, basis_version
        self._purpose, self._quoted_total = purpose, quoted_total

    def __call__(self, bill: Bill) -> Payment | None:
        if self._quoted_total is not None and bill.total_cents != self._quoted_total:
            raise QuoteStale("prices or tax changed since the quote was issued; preview again")
        if bill.total_cents == 0:
            return None
        card = self._reseller.require_billing_info()
        # The same change on the same basis gets the same key, so a retry never charges twice; the
        # reseller's version is part of the basis because a recorded decline or a new card bumps it,
        # and a processor replays a declined key's decline.
        invoice_id = uuid5(
            NAMESPACE_URL,
            f"/invoices/{self._subscription_id}/{self._basis_version}/{self._reseller.version}/{self._purpose}"
            f"/{bill.quantity}/{bill.total_cents}",
        )
        try:
            reference = self._gateway.charge(
                customer=card.processor_customer, payment_method=card.processor_payment_method,
                amount_cents=bill.total_cents, currency=bill.currency,
                idempotency_key=f"ledger-invoice-{invoice_id}",
                metadata={"reseller_org_id": self._reseller.org_id, "subscription_id": str(self._subscription_id),
                          "invoice_id": str(invoice_id), "purpose": self._purpose},
            )
        except PaymentDeclined as declined:
            self._attempt.declined = _Declined(self._reseller.id, self._purpose, self._subscription_id, bill, declined)
            raise
        payment = Payment(invoice_id, reference)
        self._attempt.charged.append(
            _Charged(payment, bill, self._purpose, self._subscription_id, self._reseller.org_id))
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
        def work(attempt: _Attempt) -> Subscription:
            plan = self.catalog.plan(order.plan)
            checked = order.checked_against(plan)
            reseller = self.enabled_reseller(org_id)
            reseller.require_billing_info()
            quoted = self._redeem(quote_id, org_id, order_subject(asdict(checked)), 0, attempt.at)
            subscription_id = uuid4()
            account_id = uuid4() if plan.kind == ORGANIZATION else None
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

        return self._execute(work, actor=actor, idempotency=idempotency)

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
                     quote_id: str | None = None,
                     idempotency: IdempotencyKey | None = None) -> Outcome[Subscription]:
        def work(attempt: _Attempt) -> Subscription:
            reseller = self.enabled_reseller(org_id)
            subscription = self.subscription(org_id, subscription_id)
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

    def cancel(self, org_id: str, subscription_id: UUID, *, actor: str,
               idempotency: IdempotencyKey | None = None) -> Outcome[Subscription]:
        def work(attempt: _Attempt) -> Subscription:
            self.enabled_reseller(org_id)
            subscription = self.subscription(org_id, subscription_id)
            subscription.cancel(at=attempt.at, actor=attempt.actor)
            return subscription

        return self._execute(work, actor=actor, locks=[f"subscription:{subscription_id}"], idempotency=idempotency)

    def resume(self, org_id: str, subscription_id: UUID, *, actor: str,
               idempotency: IdempotencyKey | None = None) -> Outcome[Subscription]:
        def work(attempt: _Attempt) -> Subscription:
            self.enabled_reseller(org_id)
            subscription = self.subscription(org_id, subscription_id)
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
        try:
            return self._get(Reseller.id_for(org_id), Reseller)
        except NotFound:
            return None

    def subscription(self, org_id: str, subscription_id: UUID) -> Subscription:
        """A subscription of this reseller; another reseller's is not found (its existence stays hidden)."""
        subscription = self._get(subscription_id, Subscription)
        if subscription.reseller_org_id != org_id:
            raise NotFound(f"no subscription {subscription_id}")
        return subscription

    def history(self, aggregate_id: UUID) -> Iterator[Any]:
        return self.app.events.get(aggregate_id)

    def tax_rate_of(self, reseller: Reseller) -> int:
        return self._tax_rate(reseller)

    # --- how every command runs ---------------------------------------------------------------------

    def _execute(self, work: Callable[[_Attempt], A], *, actor: str, locks: list[str] | None = None,
                 idempotency: IdempotencyKey | None = None) -> Outcome[A]:
        names = list(locks or [])
        if idempotency is not None:
            names.append(f"idempotency:{idempotency.record_id}")
        with ExitStack() as held:
            for name in names:
                held.enter_context(self._locks.hold(name))
            for _ in range(ATTEMPTS):
                if idempotency is not None and (earlier := self._earlier_answer(idempotency)) is not None:
                    return earlier
                attempt = _Attempt(at=self.clock.now(), actor=actor)
                try:
                    main = work(attempt)
                except PaymentDeclined:
                    self._record_declined(attempt)
                    raise
                created = main.version == len(main.pending_events)
                pending = [main, *attempt.companions, *self._invoices(attempt)]
                if idempotency is not None:
                    pending.append(IdempotentRequest.record(idempotency, resource_id=main.id,
                                                            resource_version=main.version, at=attempt.at))
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

    def _record_declined(self, attempt: _Attempt) -> None:
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
            try:
                self.app.save(reseller)
                return
            except IntegrityError:
                continue
        log.error("could not record the declined charge for reseller %s", declined.reseller_id)

    def _undo_unrecorded_charges(self, attempt: _Attempt) -> None:
        """Refund, and document, every charge of this attempt whose change was not saved. A charge that
        a concurrent twin of this request did record (same basis, same key) is kept."""
        for charged in attempt.charged:
            invoice_id = charged.payment.invoice_id
            if invoice_id in self.app.repository:
                continue
            try:
                refund = self.gateway.refund(
                    payment_reference=charged.payment.reference, amount_cents=charged.bill.total_cents,
                    idempotency_key=f"ledger-undo-{invoice_id}",
                    metadata={"invoice_id": str(invoice_id), "reason": "change_not_recorded"},
                )
                invoice = Invoice.issue_paid(charged.payment, reseller_org_id=charged.reseller_org_id,
                                             subscription_id=charged.subscription_id, purpose=charged.purpose,
                                             bill=charged.bill, at=attempt.at, actor=attempt.actor)
                invoice.record_refund(amount_cents=charged.bill.total_cents, refund_reference=refund,
                                      reason="change_not_recorded", at=attempt.at, actor=attempt.actor)
                self.app.save(invoice)
            except Exception:
                log.exception("charge %s of invoice %s was not recorded and could not be undone; "
                              "reconciliation will report it", charged.payment.reference, invoice_id)

    def _payer(self, attempt: _Attempt, reseller: Reseller, subscription_id: UUID, basis_version: int,
               purpose: str, quoted: Quote | None) -> _Payer:
        return _Payer(self.gateway, attempt, reseller, subscription_id=subscription_id, basis_version=basis_version,
                      purpose=purpose, quoted_total=quoted.total_cents if quoted else None)

    def _redeem(self, quote_id: str | None, org_id: str, subject: str, basis_version: int,
                at: datetime) -> Quote | None:
        if quote_id is None:
            return None
        return self._quotes.redeem(quote_id, org_id=org_id, subject=subject, basis_version=basis_version, now=at)

    def _tax_rate(self, reseller: Reseller) -> int:
        return self.catalog.tax_rate_bps(reseller.country, tax_exempt=reseller.tax_exempt)

    def _get(self, aggregate_id: UUID, kind: type[A]) -> A:
        try:
            aggregate = self.app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"no {kind.__name__.lower()} {aggregate_id}") from None
        if not isinstance(aggregate, kind):
            raise NotFound(f"no {kind.__name__.lower()} {aggregate_id}")
        return aggregate
