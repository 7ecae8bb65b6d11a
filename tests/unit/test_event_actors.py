"""Every event type records who caused it (issue 9, "who did it"), and every schema version has its upcasters."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from eventsourcing.domain import Aggregate, CanMutateAggregate

import commands.application  # noqa: F401  (imports every aggregate the ledger stores)
from commands.clocks import SANDBOX_CLOCK, SandboxTime
from commands.idempotency import IdempotencyKey, IdempotentRequest
from ledger import events
from tests.support import T0


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def stored_event_classes() -> list[type]:
    classes = {}
    for aggregate in _subclasses(Aggregate):
        if not getattr(aggregate, "TOPIC", "").startswith("ledger:"):
            continue
        for value in vars(aggregate).values():
            if (inspect.isclass(value) and issubclass(value, CanMutateAggregate)
                    and getattr(value, "TOPIC", "").startswith(aggregate.TOPIC + ".")):
                classes[value.TOPIC] = value
    return [classes[topic] for topic in sorted(classes)]


def annotations(cls: type) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get("__annotations__", {}))
    return merged


def test_the_ledger_stores_the_event_types_this_test_knows():
    names = {cls.TOPIC for cls in stored_event_classes()}
    assert {"ledger:Subscription.Renewed", "ledger:IdempotentRequest.IdempotentRequestRecorded",
            "ledger:SandboxClock.SandboxClockStarted", "ledger:ProcessorEvent.ProcessorEventReceived",
            "ledger:Invoice.InvoiceIssued", "ledger:Charge.ChargeOpened"} <= names


@pytest.mark.parametrize("cls", stored_event_classes(), ids=lambda cls: cls.TOPIC)
def test_every_event_type_declares_a_text_actor(cls: type):
    assert annotations(cls).get("actor") in ("str", str), f"{cls.TOPIC} records no actor: add `actor: str`"


@pytest.mark.parametrize("cls", stored_event_classes(), ids=lambda cls: cls.TOPIC)
def test_every_schema_version_has_an_upcaster_from_the_one_before(cls: type):
    for version in range(1, getattr(cls, "class_version", 1)):
        upcast = getattr(cls, f"upcast_v{version}_v{version + 1}", None)
        assert callable(upcast), f"{cls.TOPIC} is at version {cls.class_version} but has no upcaster from {version}"


@pytest.mark.parametrize("cls", [IdempotentRequest.Created, SandboxTime.Created], ids=lambda cls: cls.TOPIC)
def test_a_record_of_a_type_that_had_no_actor_says_it_is_unknown(cls: type):
    state: dict[str, Any] = {"timestamp": T0}
    cls.upcast_v1_v2(state)  # type: ignore[attr-defined]
    assert state["actor"] == events.UNKNOWN_BEFORE_V2


def test_a_new_idempotent_request_and_sandbox_clock_record_their_actor():
    key = IdempotencyKey.for_request("org_1", "k1", "POST", "/v1/x", {})
    record = IdempotentRequest.record(key, resource_id=key.record_id, resource_version=1, at=T0, actor="alice")
    assert events.actor_of(record.pending_events[0]) == "alice"
    clock = SandboxTime.start(T0)
    assert events.actor_of(clock.pending_events[0]) == SANDBOX_CLOCK
    assert events.schema_version(clock.pending_events[0]) == 2
