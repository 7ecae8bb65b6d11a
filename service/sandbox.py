"""Sandbox data for the embedded default: a reseller with a card on file and a few customers, so a
newcomer has something to look at and call."""

from __future__ import annotations

from commands.handlers import Ledger
from ledger.subscription import Order

SANDBOX_ORG = "org_sandbox"
SANDBOX_ACTOR = "system:sandbox-seed"


def seed(ledger: Ledger) -> bool:
    """Seed once: returns False when the sandbox reseller already exists."""
    if ledger.find_reseller(SANDBOX_ORG) is not None:
        return False
    ledger.enable_reseller(SANDBOX_ORG, name="Sandbox Reseller", actor=SANDBOX_ACTOR)
    ledger.set_billing_info(SANDBOX_ORG, payment_method="pm_card_visa", billing_email="billing@sandbox.example",
                            country="US", actor=SANDBOX_ACTOR)
    for order in (
        Order("plus", "monthly", end_user_email="ada@customer.example", display_name="Ada Lovelace"),
        Order("pro", "monthly", seats=5, organization_name="Initech", admin_email="admin@initech.example"),
        Order("enterprise", "annual", seats=25, organization_name="Globex", admin_email="it@globex.example"),
    ):
        ledger.create_subscription(SANDBOX_ORG, order, actor=SANDBOX_ACTOR)
    return True
