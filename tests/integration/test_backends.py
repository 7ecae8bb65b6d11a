"""The same scenario on each event store: SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

from uuid import UUID

import pytest

from commands.errors import QuoteStale
from ledger import events
from ledger.subscription import Order
from service.bootstrap import Services, bootstrap
from service.settings import load_settings


def _history(services: Services, aggregate_id: UUID) -> list[str]:
    return [events.type_name(e) for e in services.ledger.history(aggregate_id)]


def test_a_subscription_lives_its_life_on_each_backend(services: Services) -> None:
    ledger = services.ledger
    ledger.enable_reseller("org_it", name="Integration Reseller", actor="support")
    ledger.set_billing_info("org_it", payment_method="pm_card_visa", billing_email="b@it.example", country="DE",
                            actor="admin")
    created = ledger.create_subscription(
        "org_it", Order("pro", "monthly", seats=3, organization_name="Cust", admin_email="a@cust.example"),
        actor="admin")
    sub_id = created.aggregate.id
    assert created.position is not None and created.position > 0

    preview = ledger.preview_seat_change("org_it", sub_id, 5)
    increased = ledger.change_seats("org_it", sub_id, 5, actor="admin", quote_id=preview.quote_id)
    assert increased.aggregate.seats == 5
    assert increased.position is not None and increased.position > created.position

    with pytest.raises(QuoteStale):  # the subscription moved on since that quote
        ledger.change_seats("org_it", sub_id, 5, actor="admin", quote_id=preview.quote_id)

    ledger.change_seats("org_it", sub_id, 2, actor="admin")
    ledger.cancel("org_it", sub_id, actor="admin")
    resumed = ledger.resume("org_it", sub_id, actor="admin")
    assert (resumed.aggregate.status, resumed.aggregate.pending_seats) == ("pending", 2)
    assert _history(services, sub_id) == ["SubscriptionCreated", "SeatsIncreased", "SeatDecreaseScheduled",
                                          "Canceled", "Resumed"]

    charges = services.gateway.list_charges(created_from=created.aggregate.created_at.replace(year=2000),
                                            created_to=created.aggregate.created_at.replace(year=2100))
    assert [c.amount_cents for c in charges] == [10710, preview.bill.total_cents]


def test_the_store_outlives_the_process(service_env: dict[str, str]) -> None:
    overrides = {key.removeprefix("LEDGER_").lower(): value for key, value in service_env.items()}
    first = bootstrap(load_settings(**overrides))
    first.ledger.enable_reseller("org_persist", name="Persisted", actor="support")
    first.ledger.set_billing_info("org_persist", payment_method="pm_card_mastercard", billing_email="b@p.example",
                                  country="GB", actor="admin")
    sub_id = first.ledger.create_subscription(
        "org_persist", Order("plus", "annual", end_user_email="eve@p.example"), actor="admin").aggregate.id
    first.close()

    second = bootstrap(load_settings(**overrides))
    try:
        again = second.ledger.subscription("org_persist", sub_id)
        assert (again.plan, again.billing_cycle, again.seats, again.status) == ("plus", "annual", 1, "active")
        assert second.ledger.enabled_reseller("org_persist").card.brand == "mastercard"
    finally:
        second.close()
