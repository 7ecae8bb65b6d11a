"""A payment processor simulated in a SQLite file: the embedded default.

It honours Stripe's test payment-method ids, keeps its customers, charges and refunds, replays
idempotency keys as Stripe does, and lists what it holds for reconciliation. Several processes on
one machine can share its file.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from commands.group_commit import Turns
from commands.ports import Clock, ProcessorCharge, ProcessorRefund
from ledger.errors import InvalidState, PaymentDeclined, ValidationFailed
from ledger.reseller import CardOnFile

T = TypeVar("T")


@dataclass(frozen=True)
class TestCard:
    brand: str
    last4: str
    refused_when_saved: str | None = None  # a decline code
    charges_declined: str | None = None  # a decline code


# Stripe's test PaymentMethod ids (https://docs.stripe.com/testing#cards and #declined-payments).
TEST_CARDS: Mapping[str, TestCard] = {
    "pm_card_visa": TestCard("visa", "4242"),
    "pm_card_visa_debit": TestCard("visa", "5556"),
    "pm_card_mastercard": TestCard("mastercard", "4444"),
    "pm_card_mastercard_debit": TestCard("mastercard", "8210"),
    "pm_card_amex": TestCard("amex", "8431"),
    "pm_card_discover": TestCard("discover", "1117"),
    "pm_card_chargeDeclined": TestCard("visa", "0002", refused_when_saved="generic_decline"),
    "pm_card_chargeDeclinedInsufficientFunds": TestCard("visa", "9995", refused_when_saved="insufficient_funds"),
    "pm_card_chargeDeclinedLostCard": TestCard("visa", "9987", refused_when_saved="lost_card"),
    "pm_card_chargeDeclinedStolenCard": TestCard("visa", "9979", refused_when_saved="stolen_card"),
    "pm_card_chargeDeclinedExpiredCard": TestCard("visa", "0069", refused_when_saved="expired_card"),
    "pm_card_chargeDeclinedProcessingError": TestCard("visa", "0119", refused_when_saved="processing_error"),
    "pm_card_chargeCustomerFail": TestCard("visa", "0341", charges_declined="generic_decline"),
}
TEST_CARD_EXPIRY = (12, 2034)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id TEXT PRIMARY KEY, reseller_org_id TEXT NOT NULL, email TEXT NOT NULL, default_payment_method TEXT);
CREATE TABLE IF NOT EXISTS payment_methods (
    id TEXT PRIMARY KEY, customer TEXT NOT NULL, test_card TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS charges (
    id TEXT PRIMARY KEY, customer TEXT NOT NULL, payment_method TEXT NOT NULL, amount_cents INTEGER NOT NULL,
    currency TEXT NOT NULL, status TEXT NOT NULL, decline_code TEXT, created TEXT NOT NULL, metadata TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS charges_created ON charges (created);
CREATE TABLE IF NOT EXISTS refunds (
    id TEXT PRIMARY KEY, charge TEXT NOT NULL REFERENCES charges (id), amount_cents INTEGER NOT NULL,
    created TEXT NOT NULL, metadata TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS refunds_created ON refunds (created);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, request TEXT NOT NULL, object_id TEXT NOT NULL);
"""


class SimulatedGateway:
    name = "simulated"

    def __init__(self, path: Path | str, clock: Clock) -> None:
        self._clock = clock
        self._guard = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._commits = _GroupCommit(self._db, self._guard)

    # --- the port -----------------------------------------------------------------------------

    def save_card(self, *, reseller_org_id: str, payment_method: str, billing_email: str,
                  customer: str | None, idempotency_key: str) -> CardOnFile:
        card = TEST_CARDS.get(payment_method)
        if card is None:
            raise ValidationFailed(
                "payment_method",
                f"unknown payment method {payment_method!r}; the simulated processor takes Stripe's test ids "
                f"such as pm_card_visa",
            )
        if card.refused_when_saved:
            raise PaymentDeclined("Your card was declined.", card.refused_when_saved)

        request = _canonical(["customer", reseller_org_id])

        def record_card(db: sqlite3.Connection) -> tuple[str, str]:
            owner = customer if customer is not None else self._replay(db, idempotency_key, request)
            if owner is None:
                owner = _new_id("cus_sim")
                db.execute("INSERT INTO customers VALUES (?, ?, ?, NULL)", (owner, reseller_org_id, billing_email))
                db.execute("INSERT INTO idempotency VALUES (?, ?, ?)", (idempotency_key, request, owner))
            method_id = _new_id("pm_sim")
            db.execute("INSERT INTO payment_methods VALUES (?, ?, ?)", (method_id, owner, payment_method))
            db.execute("UPDATE customers SET email = ?, default_payment_method = ? WHERE id = ?",
                       (billing_email, method_id, owner))
            return owner, method_id

        owner, method_id = self._commits.run(record_card)
        return CardOnFile(owner, method_id, card.brand, card.last4, *TEST_CARD_EXPIRY)

    def charge(self, *, customer: str, payment_method: str, amount_cents: int, currency: str,
               idempotency_key: str, metadata: Mapping[str, str]) -> str:
        request = _canonical(["charge", customer, payment_method, amount_cents, currency, dict(metadata)])

        def record_charge(db: sqlite3.Connection) -> tuple[str, str, str | None]:
            replayed = self._replay(db, idempotency_key, request)
            if replayed is None:
                row = db.execute("SELECT test_card FROM payment_methods WHERE id = ? AND customer = ?",
                                 (payment_method, customer)).fetchone()
                if row is None:
                    raise InvalidState(f"payment method {payment_method} is not attached to {customer}")
                decline = TEST_CARDS[row[0]].charges_declined
                replayed = _new_id("pi_sim")
                db.execute("INSERT INTO charges VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (replayed, customer, payment_method, amount_cents, currency.lower(),
                            "failed" if decline else "succeeded", decline, self._now(), _canonical(metadata)))
                db.execute("INSERT INTO idempotency VALUES (?, ?, ?)", (idempotency_key, request, replayed))
            return replayed, *db.execute("SELECT status, decline_code FROM charges WHERE id = ?",
                                         (replayed,)).fetchone()

        replayed, status, decline = self._commits.run(record_charge)
        if status != "succeeded":
            raise PaymentDeclined("Your card was declined.", decline)
        return replayed

    def find_charge(self, *, customer: str, idempotency_key: str) -> str | None:
        with self._guard:
            row = self._db.execute(
                "SELECT c.id FROM idempotency i JOIN charges c ON c.id = i.object_id"
                " WHERE i.key = ? AND c.customer = ? AND c.status = 'succeeded'", (idempotency_key, customer),
            ).fetchone()
        return row[0] if row else None

    def refund(self, *, payment_reference: str, amount_cents: int, idempotency_key: str,
               metadata: Mapping[str, str]) -> str:
        request = _canonical(["refund", payment_reference, amount_cents, dict(metadata)])

        def record_refund(db: sqlite3.Connection) -> str:
            replayed = self._replay(db, idempotency_key, request)
            if replayed is not None:
                return replayed
            row = db.execute("SELECT amount_cents, status FROM charges WHERE id = ?", (payment_reference,)).fetchone()
            if row is None or row[1] != "succeeded":
                raise InvalidState(f"no successful charge {payment_reference} to refund")
            refunded = db.execute("SELECT COALESCE(SUM(amount_cents), 0) FROM refunds WHERE charge = ?",
                                  (payment_reference,)).fetchone()[0]
            if amount_cents <= 0 or refunded + amount_cents > row[0]:
                raise InvalidState(f"cannot refund {amount_cents} of {payment_reference}: {row[0] - refunded} left")
            refund_id = _new_id("re_sim")
            db.execute("INSERT INTO refunds VALUES (?, ?, ?, ?, ?)",
                       (refund_id, payment_reference, amount_cents, self._now(), _canonical(metadata)))
            db.execute("INSERT INTO idempotency VALUES (?, ?, ?)", (idempotency_key, request, refund_id))
            return refund_id

        return self._commits.run(record_refund)

    def list_charges(self, *, created_from: datetime, created_to: datetime) -> list[ProcessorCharge]:
        with self._guard:
            rows = self._db.execute(
                "SELECT c.id, c.amount_cents, c.currency, c.status, c.created, c.metadata,"
                " (SELECT COALESCE(SUM(r.amount_cents), 0) FROM refunds r WHERE r.charge = c.id)"
                " FROM charges c WHERE c.status = 'succeeded' AND c.created >= ? AND c.created < ? ORDER BY c.created",
                (_iso(created_from), _iso(created_to)),
            ).fetchall()
        return [ProcessorCharge(r[0], r[1], r[2].upper(), r[3], _parse(r[4]), json.loads(r[5]), r[6]) for r in rows]

    def list_refunds(self, *, created_from: datetime, created_to: datetime) -> list[ProcessorRefund]:
        with self._guard:
            rows = self._db.execute(
                "SELECT r.id, r.charge, r.amount_cents, c.currency, r.created, r.metadata FROM refunds r"
                " JOIN charges c ON c.id = r.charge WHERE r.created >= ? AND r.created < ? ORDER BY r.created",
                (_iso(created_from), _iso(created_to)),
            ).fetchall()
        return [ProcessorRefund(r[0], r[1], r[2], r[3].upper(), _parse(r[4]), json.loads(r[5])) for r in rows]

    def close(self) -> None:
        self._db.close()

    # --- inside -------------------------------------------------------------------------------

    @staticmethod
    def _replay(db: sqlite3.Connection, key: str, request: str) -> str | None:
        row = db.execute("SELECT request, object_id FROM idempotency WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        if row[0] != request:
            # Stripe answers 400 idempotency_error: a key reused with other parameters is a ledger bug.
            raise RuntimeError(f"idempotency key {key} was reused with different parameters")
        return row[1]

    def _now(self) -> str:
        return _iso(self._clock.now())


@dataclass
class _Work:
    run: Callable[[sqlite3.Connection], Any]
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class _GroupCommit:
    """Concurrent changes share one durable commit, as at a processor's own database: the leader of a batch (see
    ``Turns``) runs every change queued until then, each in a savepoint of its own (its error rolls back its
    change alone), commits them once and tells each caller its own result; a commit that fails fails them all.
    Nobody hears of a change before it is on disk."""

    def __init__(self, db: sqlite3.Connection, guard: threading.Lock) -> None:
        self._db, self._guard = db, guard
        self.turns: Turns[_Work] = Turns(self._commit)

    def run(self, change: Callable[[sqlite3.Connection], T]) -> T:
        work = _Work(change)
        self.turns.submit(work)
        if work.error is not None:
            raise work.error
        return work.result  # type: ignore[no-any-return]

    def _commit(self, batch: list[_Work]) -> None:
        with self._guard:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for work in batch:
                    self._db.execute("SAVEPOINT change")
                    try:
                        work.result = work.run(self._db)
                    except Exception as error:
                        self._db.execute("ROLLBACK TO change")
                        work.error = error
                    self._db.execute("RELEASE change")
                self._db.execute("COMMIT")
            except BaseException as error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                for work in batch:
                    work.result, work.error = None, error
            finally:
                for work in batch:
                    work.done = True


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
