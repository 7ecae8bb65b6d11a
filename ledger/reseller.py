"""The Reseller aggregate: an organization (a Lens Business ID) enabled to resell subscriptions."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger.errors import BillingInfoRequired, InvalidState, ValidationFailed
from ledger.periods import require_instant

ORG_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclass(frozen=True)
class CardOnFile:
    """What the payment processor says about a saved card. Never card data: brand, last4, expiry."""

    processor_customer: str
    processor_payment_method: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


class Reseller(Aggregate):
    TOPIC = "ledger:Reseller"

    class Created(Aggregate.Created):
        """ResellerEnabled: its topic names the type; the library calls a creation event class Created."""

        TOPIC = "ledger:Reseller.ResellerEnabled"
        org_id: str
        name: str
        actor: str

    class ResellerRenamed(Aggregate.Event):
        TOPIC = "ledger:Reseller.ResellerRenamed"
        name_before: str
        name: str
        actor: str

    class ResellerDisabled(Aggregate.Event):
        TOPIC = "ledger:Reseller.ResellerDisabled"
        actor: str

    class ResellerReenabled(Aggregate.Event):
        TOPIC = "ledger:Reseller.ResellerReenabled"
        actor: str

    class BillingInfoUpdated(Aggregate.Event):
        TOPIC = "ledger:Reseller.BillingInfoUpdated"
        billing_email: str
        country: str
        card: CardOnFile
        actor: str

    class TaxExemptionGranted(Aggregate.Event):
        TOPIC = "ledger:Reseller.TaxExemptionGranted"
        reason: str
        actor: str

    class TaxExemptionRevoked(Aggregate.Event):
        TOPIC = "ledger:Reseller.TaxExemptionRevoked"
        actor: str

    class ChargeDeclined(Aggregate.Event):
        TOPIC = "ledger:Reseller.ChargeDeclined"
        purpose: str
        subscription_id: UUID | None
        amount_cents: int
        currency: str
        decline_code: str
        message: str
        actor: str

    @staticmethod
    def id_for(org_id: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/resellers/{org_id}")

    @classmethod
    def enable_new(cls, org_id: str, *, name: str, at: datetime, actor: str) -> Reseller:
        check_org_id(org_id)
        _check_name(name)
        return cls._create(cls.Created, id=cls.id_for(org_id), timestamp=require_instant(at),
                           org_id=org_id, name=name.strip(), actor=actor)

    @event(Created)
    def __init__(self, org_id: str, name: str) -> None:
        self.org_id = org_id
        self.name = name
        self.enabled = True
        self.billing_email: str | None = None
        self.country: str | None = None
        self.card: CardOnFile | None = None
        self.tax_exempt = False

    def enable(self, *, name: str, at: datetime, actor: str) -> None:
        """Enable again (and rename if asked). Enabling an enabled reseller under its own name is a no-op."""
        _check_name(name)
        require_instant(at)
        if name.strip() != self.name:
            self._rename(self.name, name.strip(), actor, at)
        if not self.enabled:
            self._reenable(actor, at)

    @event(ResellerRenamed)
    def _rename(self, name_before: str, name: str, actor: str, timestamp: datetime) -> None:
        self.name = name

    @event(ResellerReenabled)
    def _reenable(self, actor: str, timestamp: datetime) -> None:
        self.enabled = True

    def disable(self, *, at: datetime, actor: str) -> None:
        require_instant(at)
        if not self.enabled:
            raise InvalidState(f"reseller {self.org_id} is already disabled")
        self._disable(actor, at)

    @event(ResellerDisabled)
    def _disable(self, actor: str, timestamp: datetime) -> None:
        self.enabled = False

    def update_billing_info(self, *, billing_email: str, country: str, save_card: Callable[[str | None], CardOnFile],
                            at: datetime, actor: str) -> None:
        """Check the details, have the processor save the card (on this reseller's processor customer,
        if it has one), then record what it says about the card."""
        require_instant(at)
        if len(country) != 2 or not country.isascii() or not country.isalpha() or not country.isupper():
            raise ValidationFailed("country", "country must be an ISO 3166-1 alpha-2 code such as US or DE")
        card = save_card(self.card.processor_customer if self.card else None)
        self._update_billing_info(billing_email, country, card, actor, at)

    @event(BillingInfoUpdated)
    def _update_billing_info(self, billing_email: str, country: str, card: CardOnFile, actor: str,
                             timestamp: datetime) -> None:
        self.billing_email = billing_email
        self.country = country
        self.card = card

    def grant_tax_exemption(self, *, reason: str, at: datetime, actor: str) -> None:
        if self.tax_exempt:
            raise InvalidState(f"reseller {self.org_id} is already tax-exempt")
        if not reason.strip():
            raise ValidationFailed("reason", "a tax exemption needs a reason (for example a certificate number)")
        self._grant_tax_exemption(reason.strip(), actor, require_instant(at))

    @event(TaxExemptionGranted)
    def _grant_tax_exemption(self, reason: str, actor: str, timestamp: datetime) -> None:
        self.tax_exempt = True

    def revoke_tax_exemption(self, *, at: datetime, actor: str) -> None:
        if not self.tax_exempt:
            raise InvalidState(f"reseller {self.org_id} is not tax-exempt")
        self._revoke_tax_exemption(actor, require_instant(at))

    @event(TaxExemptionRevoked)
    def _revoke_tax_exemption(self, actor: str, timestamp: datetime) -> None:
        self.tax_exempt = False

    def require_billing_info(self) -> CardOnFile:
        if self.card is None:
            raise BillingInfoRequired(f"reseller {self.org_id} has no billing information on file")
        return self.card

    def record_declined_charge(self, *, purpose: str, subscription_id: UUID | None, amount_cents: int,
                               currency: str, decline_code: str, message: str, at: datetime, actor: str) -> None:
        self._charge_declined(purpose, subscription_id, amount_cents, currency, decline_code, message, actor,
                              require_instant(at))

    @event(ChargeDeclined)
    def _charge_declined(self, purpose: str, subscription_id: UUID | None, amount_cents: int, currency: str,
                         decline_code: str, message: str, actor: str, timestamp: datetime) -> None:
        pass


def check_org_id(org_id: str) -> None:
    if not ORG_ID.fullmatch(org_id):
        raise ValidationFailed("org_id", "a Lens Business ID is 1 to 100 letters, digits, '.', '_' or '-'")


def _check_name(name: str) -> None:
    if not name.strip():
        raise ValidationFailed("name", "a reseller needs a name")
    if len(name) > 200:
        raise ValidationFailed("name", "a reseller name has at most 200 characters")
