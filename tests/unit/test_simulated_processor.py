"""The simulated processor's group commit: concurrent changes share one durable commit, and each caller is
told its own outcome."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from commands.clocks import SystemClock
from commands.gateways.simulated import SimulatedGateway
from ledger.errors import InvalidState, PaymentDeclined
from tests.support import T0

EVER = {"created_from": T0.replace(year=2000), "created_to": T0.replace(year=2100)}


def card(gateway: SimulatedGateway, org_id: str, payment_method: str = "pm_card_visa") -> tuple[str, str]:
    saved = gateway.save_card(reseller_org_id=org_id, payment_method=payment_method, billing_email=f"{org_id}@x.test",
                              customer=None, idempotency_key=f"card-{org_id}")
    return saved.processor_customer, saved.processor_payment_method


def test_charges_queued_behind_a_commit_share_the_next_one_and_each_caller_hears_its_own_outcome(
        tmp_path: Path) -> None:
    gateway = SimulatedGateway(tmp_path / "processor.sqlite", SystemClock())
    paying = [card(gateway, f"org_{n}") for n in range(5)]
    declining = card(gateway, "org_declining", "pm_card_chargeCustomerFail")
    asks = [(customer, method) for customer, method in paying] + [declining, (paying[0][0], "pm_sim_not_attached")]
    commits: list[str] = []
    gateway._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    answers: dict[int, object] = {}

    def charge(n: int) -> None:
        customer, method = asks[n]
        try:
            answers[n] = gateway.charge(customer=customer, payment_method=method, amount_cents=1000 + n,
                                        currency="EUR", idempotency_key=f"charge-{n}", metadata={"n": str(n)})
        except (PaymentDeclined, InvalidState) as error:
            answers[n] = error

    # While the connection is busy, the first caller waits to lead and the others queue behind it.
    with gateway._guard:
        threads = [threading.Thread(target=charge, args=(n,)) for n in range(len(asks))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while gateway._commits.turns.queued() < len(asks) - 1 and time.monotonic() < deadline:
            time.sleep(0.005)
    for thread in threads:
        thread.join(10)

    assert len(commits) == 2  # the leader's own change, then everything queued behind it
    references = [answers[n] for n in range(5)]
    assert all(isinstance(reference, str) and reference.startswith("pi_sim_") for reference in references)
    assert isinstance(answers[5], PaymentDeclined) and answers[5].decline_code == "generic_decline"
    assert isinstance(answers[6], InvalidState)
    charges = {charge.reference: charge.amount_cents for charge in gateway.list_charges(**EVER)}
    assert charges == {reference: 1000 + n for n, reference in enumerate(references)}
    for n, (customer, _) in enumerate(paying):
        assert gateway.find_charge(customer=customer, idempotency_key=f"charge-{n}") == references[n]
    # The failed change kept nothing, its key neither: the key goes with other parameters.
    assert gateway.charge(customer=paying[0][0], payment_method=paying[0][1], amount_cents=5, currency="EUR",
                          idempotency_key="charge-6", metadata={}) not in references


def test_changes_whose_transaction_fails_are_each_told_so_and_none_is_kept(tmp_path: Path) -> None:
    gateway = SimulatedGateway(tmp_path / "processor.sqlite", SystemClock())
    customer, method = card(gateway, "org_1")
    other = SimulatedGateway(tmp_path / "processor.sqlite", SystemClock())
    other._db.execute("PRAGMA busy_timeout = 0")
    gateway._db.execute("PRAGMA busy_timeout = 0")
    other._db.execute("BEGIN IMMEDIATE")  # another process holds the file's write lock
    try:
        with pytest.raises(Exception, match="locked"):
            gateway.charge(customer=customer, payment_method=method, amount_cents=1000, currency="EUR",
                           idempotency_key="charge-1", metadata={})
    finally:
        other._db.execute("ROLLBACK")
    assert gateway.list_charges(**EVER) == []
    reference = gateway.charge(customer=customer, payment_method=method, amount_cents=1000, currency="EUR",
                               idempotency_key="charge-1", metadata={})
    assert [charge.reference for charge in gateway.list_charges(**EVER)] == [reference]


def test_charges_recorded_together_are_each_answered_as_they_would_be_alone(tmp_path: Path) -> None:
    gateway = SimulatedGateway(tmp_path / "processor.sqlite", SystemClock())
    customer, method = card(gateway, "org_1")
    earlier = gateway.charge(customer=customer, payment_method=method, amount_cents=700, currency="EUR",
                             idempotency_key="earlier", metadata={})
    asks = [
        ("leader", 100),  # committed alone while the others queue
        ("earlier", 700),  # a key of an earlier commit: its charge again
        ("twice", 900),  # a key asked twice in the same commit: one charge, told to both
        ("twice", 900),
        ("earlier", 701),  # a key reused with other parameters: a bug of the caller's, told to it alone
        ("fresh", 300),
    ]
    answers: dict[int, object] = {}

    def charge(n: int) -> None:
        key, amount = asks[n]
        try:
            answers[n] = gateway.charge(customer=customer, payment_method=method, amount_cents=amount,
                                        currency="EUR", idempotency_key=key, metadata={})
        except RuntimeError as error:
            answers[n] = error

    commits: list[str] = []
    gateway._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    threads = [threading.Thread(target=charge, args=(n,)) for n in range(len(asks))]
    with gateway._guard:  # the leader waits for the connection; the others queue behind it and share one commit
        threads[0].start()
        deadline = time.monotonic() + 10
        while not gateway._commits.turns._leading and time.monotonic() < deadline:
            time.sleep(0.005)
        for thread in threads[1:]:
            thread.start()
        while gateway._commits.turns.queued() < len(asks) - 1 and time.monotonic() < deadline:
            time.sleep(0.005)
    for thread in threads:
        thread.join(10)

    assert len(commits) == 2
    assert answers[1] == earlier
    assert isinstance(answers[2], str) and answers[2] == answers[3] != earlier
    assert isinstance(answers[4], RuntimeError) and "reused" in str(answers[4])
    assert isinstance(answers[5], str) and answers[5] not in (earlier, answers[2])
    charges = {charge.reference: charge.amount_cents for charge in gateway.list_charges(**EVER)}
    assert charges == {earlier: 700, answers[0]: 100, answers[2]: 900, answers[5]: 300}
