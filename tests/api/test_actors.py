"""Who did it (issue 9): a scenario through the API, the support command line, the scheduler, the sandbox
clock and a Stripe webhook, then every event in the export names its actor, and none is a placeholder."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

from cli.main import main
from commands.clocks import SANDBOX_CLOCK
from commands.handlers import SCHEDULER
from commands.webhooks import ACTOR as STRIPE_ACTOR
from commands.webhooks import StripeWebhooks
from ledger import events
from projections.export import export_events
from projections.log import EventLog
from service.sandbox import SANDBOX_ACTOR, seed
from tests.api.conftest import ADMIN, ORG, SUPPORT, pro_order, running_app
from tests.billing_support import WEBHOOK_SECRET, sign, stripe_event

PLACEHOLDERS = {"dev-user", "unknown", "cli:unknown", "support:unknown", "", "None", "null"}


def test_every_event_of_a_scenario_names_who_caused_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("USER", "jane")
    monkeypatch.setenv("LOGNAME", "jane")
    with running_app(tmp_path, clock="sandbox") as api:
        api.reseller(ORG)
        seed(api.services.ledger)
        sub = api.subscription(pro_order(seats=3))
        path = api.sub_path(sub["id"])
        again = api.post(f"/v1/resellers/{ORG}/subscriptions", json=pro_order(organization_name="Hooli"),
                         headers={**api.admin(), "Idempotency-Key": "create-hooli"})
        assert again.status_code == 201, again.text
        assert api.post(path + "/seats", json={"seats": 5}, headers=api.admin()).status_code == 200
        assert api.post(path + "/seats", json={"seats": 4}, headers=api.admin()).status_code == 200
        assert api.post(api.sub_path(again.json()["id"]) + "/cancel", headers=api.admin()).status_code == 200

        # The support command line, as the OS user and as a named operator.
        assert main(["support", "enable-reseller", "org_cli", "--name", "By the CLI"]) == 0
        assert main(["support", "tax-exempt", "org_cli", "--reason", "cert-1", "--actor", "ops-sam"]) == 0
        assert main(["support", "disable-reseller", "org_cli"]) == 0

        # The sandbox clock, moved by support: what falls due on the way is the clock's.
        moved = api.post("/v1/sandbox/clock", json={"advance_seconds": 40 * 86400}, headers=api.support())
        assert moved.status_code == 200 and moved.json()["changes"] >= 2, moved.text
        # The scheduler, on a clock moved underneath it.
        api.services.clock.set(api.now() + timedelta(days=32), actor=SUPPORT)  # type: ignore[attr-defined]
        assert api.services.scheduler.run_due().changes >= 1

        # A Stripe webhook.
        webhooks = StripeWebhooks(api.services.app, WEBHOOK_SECRET, clock=api.services.clock,
                                  invoice_paid_by=lambda reference: None, settle_seconds=0)
        payload = stripe_event("customer.updated", {"id": "cus_1", "object": "customer"}, event_id="evt_actor")
        webhooks.receive(payload, sign(payload))

        out = io.StringIO()
        export_events(EventLog(api.services.app), out)
        lines = [json.loads(text) for text in out.getvalue().splitlines()]
        history = api.get(path + "/events", headers=api.admin()).json()["items"]

    for line in lines + history:
        assert isinstance(line["actor"], str) and line["actor"] not in PLACEHOLDERS, line
        assert not line["actor"].startswith("unknown:"), line  # nothing here was written before version 2
        assert isinstance(line["schema_version"], int) and line["schema_version"] >= 1
    actors = {line["actor"] for line in lines}
    assert {ADMIN, SUPPORT, "support:jane", "ops-sam", SCHEDULER, SANDBOX_CLOCK, STRIPE_ACTOR,
            SANDBOX_ACTOR} <= actors, actors
    by_type = {}
    for line in lines:
        by_type.setdefault(line["type"], set()).add(line["actor"])
    assert by_type["SandboxClockStarted"] == {SANDBOX_CLOCK}
    assert by_type["SandboxClockMoved"] == {SUPPORT}
    assert by_type["IdempotentRequestRecorded"] == {ADMIN}
    assert by_type["TaxExemptionGranted"] == {"ops-sam"}
    assert by_type["ResellerDisabled"] == {"support:jane"}
    assert by_type["Renewed"] <= {SCHEDULER, SANDBOX_CLOCK} and by_type["Expired"] == {SANDBOX_CLOCK}
    assert by_type["ProcessorEventReceived"] == {STRIPE_ACTOR}
    assert {line["actor"] for line in history} <= {ADMIN, SCHEDULER, SANDBOX_CLOCK}
    assert events.UNKNOWN_BEFORE_V2 not in actors


def test_the_cli_refuses_an_empty_actor(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path / "data"))
    assert main(["support", "enable-reseller", "org_x", "--name", "X", "--actor", "  "]) == 2
    assert "--actor" in capsys.readouterr().err


def test_a_token_without_a_subject_is_refused(tmp_path: Path) -> None:
    """Its sub would be the actor of what it does: an empty one would record a change caused by nobody."""
    with running_app(tmp_path) as api:
        for sub in ("", "   "):
            token = api.token(sub=sub, roles=["support"])
            response = api.post("/v1/support/resellers", json={"org_id": "org_nobody", "name": "Nobody"},
                                headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401, response.text
        assert api.log_position() == 0
