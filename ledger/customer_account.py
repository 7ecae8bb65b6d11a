"""The customer account that an organization subscription opens under its reseller."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.periods import require_instant


class CustomerAccount(Aggregate):
    TOPIC = "ledger:CustomerAccount"

    class Created(Aggregate.Created):
        """CustomerAccountOpened: its topic names the type; the library calls a creation event class Created."""

        TOPIC = "ledger:CustomerAccount.CustomerAccountOpened"
        reseller_org_id: str
        organization_name: str
        admin_email: str
        subscription_id: UUID
        actor: str

    @classmethod
    def open(cls, account_id: UUID, *, reseller_org_id: str, organization_name: str, admin_email: str,
             subscription_id: UUID, at: datetime, actor: str) -> CustomerAccount:
        return cls._create(cls.Created, id=account_id, timestamp=require_instant(at),
                           reseller_org_id=reseller_org_id, organization_name=organization_name,
                           admin_email=admin_email, subscription_id=subscription_id, actor=actor)

    @event(Created)
    def __init__(self, reseller_org_id: str, organization_name: str, admin_email: str,
                 subscription_id: UUID) -> None:
        self.reseller_org_id = reseller_org_id
        self.organization_name = organization_name
        self.admin_email = admin_email
        self.subscription_id = subscription_id
