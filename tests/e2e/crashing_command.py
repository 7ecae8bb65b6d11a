"""A process that runs one charging command of the ledger and dies at a chosen step, as kill -9 would:
``os._exit`` runs no handler, no ``finally`` and no clean-up, and leaves only what was committed.

    python -m tests.e2e.crashing_command create|increase|renew|renew_batch STEP [SUBSCRIPTION_ID] [IDEMPOTENCY_KEY]

STEP is where it dies: ``after_intent`` (the intent is committed, the processor not yet asked),
``after_charge`` (the processor took the money), ``before_save`` (the change, its document and the charge's
outcome are about to be committed) or ``after_save`` (they are, the answer is not yet given). The deployment
comes from the LEDGER_* variables, as for ``ledger serve``. Exit status DIED when it died where asked.
``renew`` runs one subscription's renewal alone, ``renew_batch`` as the scheduler does, in a batch (of one)."""

from __future__ import annotations

import os
import sys
from typing import Any
from uuid import UUID

from commands.idempotency import IdempotencyKey
from ledger.charge import Charge
from ledger.invoice import Invoice
from ledger.subscription import Order
from service.bootstrap import bootstrap
from service.settings import load_settings

DIED = 86
STEPS = ("after_intent", "after_charge", "before_save", "after_save")
ORG = "org_crash"
ORDER = Order("pro", "monthly", seats=3, organization_name="Crashco", admin_email="it@crashco.example")
INTENDED = Charge.ChargeIntended.TOPIC
COMPLETED = Charge.ChargeCompleted.TOPIC
INVOICE = f"{Invoice.TOPIC}."


def plant(services: Any, step: str) -> None:
    app, gateway = services.app, services.ledger.gateway
    save, charge = app.save, gateway.charge

    def saving(*aggregates: Any, **kwargs: Any) -> Any:
        # A single command saves aggregates, a batch their events.
        is_outcome = any(isinstance(a, Invoice) or getattr(a, "TOPIC", "").startswith(INVOICE) for a in aggregates)
        if step == "before_save" and is_outcome:
            os._exit(DIED)
        recordings = save(*aggregates, **kwargs)
        topics = {r.notification.topic for r in recordings}
        if (step == "after_intent" and INTENDED in topics) or (step == "after_save" and COMPLETED in topics):
            os._exit(DIED)
        return recordings

    def charging(**kwargs: Any) -> str:
        reference = charge(**kwargs)
        if step == "after_charge":
            os._exit(DIED)
        return reference

    app.save = saving
    gateway.charge = charging


def idempotency(command: str, key: str, body: dict[str, Any]) -> IdempotencyKey:
    return IdempotencyKey.for_request(ORG, key, "POST", f"/{command}", body)


def run(command: str, services: Any, subscription_id: str | None, key: str | None) -> None:
    ledger = services.ledger
    if command == "create":
        assert key is not None
        ledger.create_subscription(ORG, ORDER, actor="crash-user", idempotency=idempotency(command, key, {}))
    elif command == "increase":
        assert subscription_id is not None and key is not None
        ledger.change_seats(ORG, UUID(subscription_id), 5, actor="crash-user",
                            idempotency=idempotency(command, key, {"seats": 5}))
    elif command == "renew":
        assert subscription_id is not None
        ledger.run_due(UUID(subscription_id))
    else:
        assert subscription_id is not None
        # As the scheduler does: a subscription the batch found locked (here, possibly still by the session of
        # a process just killed, until PostgreSQL notices) is renewed alone, waiting for its lock.
        for busy in ledger.run_due_batch([UUID(subscription_id)]).busy:
            ledger.run_due(busy)


def main(argv: list[str]) -> int:
    command, step, *rest = argv
    subscription_id = rest[0] if rest and rest[0] != "-" else None
    key = rest[1] if len(rest) > 1 else None
    services = bootstrap(load_settings())
    plant(services, step)
    run(command, services, subscription_id, key)
    services.close()
    return 0  # it did not die: the step was never reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
