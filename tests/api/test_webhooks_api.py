"""POST /v1/webhooks/stripe through the real app: signatures, duplicates, and where it does not exist."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from api.app import create_app
from commands.webhooks import ProcessorEvent
from service.bootstrap import bootstrap
from service.settings import load_settings
from service.tokens import token_keys
from tests.api.conftest import Api, assert_problem
from tests.billing_support import WEBHOOK_SECRET, sign, stripe_event

PATH = "/v1/webhooks/stripe"


@contextmanager
def app_with(tmp_path: Path, **settings: Any) -> Iterator[Api]:
    services = bootstrap(load_settings(data_dir=tmp_path / "data", sandbox_data=False, **settings))
    try:
        app = create_app(services)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Api(client, services, token_keys(services.settings, services.development_secret))
    finally:
        services.close()


STRIPE = {"payments": "stripe", "stripe_secret_key": "sk_test_unit", "stripe_webhook_secret": WEBHOOK_SECRET}


def post(api: Api, payload: bytes, signature: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return api.post(PATH, content=payload, headers=headers)


def test_a_signed_event_is_received_once(tmp_path: Path) -> None:
    with app_with(tmp_path, **STRIPE) as api:
        payload = stripe_event("customer.updated", {"id": "cus_1", "object": "customer"}, event_id="evt_api_1")
        first = post(api, payload, sign(payload))
        assert first.status_code == 200 and first.json() == {"received": True, "duplicate": False}
        again = post(api, payload, sign(payload))
        assert again.status_code == 200 and again.json() == {"received": True, "duplicate": True}
        assert ProcessorEvent.id_for("stripe", "evt_api_1") in api.services.app.repository


def test_a_bad_missing_or_expired_signature_is_a_400_problem(tmp_path: Path) -> None:
    with app_with(tmp_path, **STRIPE) as api:
        payload = stripe_event("customer.updated", {"id": "cus_1", "object": "customer"})
        position = api.log_position()
        for signature in (None, "t=1,v1=nonsense", sign(payload, secret="whsec_other"),
                          sign(payload, at=int(time.time()) - 3600)):
            assert_problem(post(api, payload, signature), 400, "invalid_signature")
        assert_problem(post(api, b"\xff\xfe", sign(b"x")), 400, "invalid_signature")
        assert_problem(post(api, b"not json", sign(b"not json")), 400, "invalid_payload")
        assert api.log_position() == position


def test_it_does_not_exist_without_stripe_payments_or_a_webhook_secret(tmp_path: Path) -> None:
    payload = stripe_event("customer.updated", {"id": "cus_1", "object": "customer"})
    with app_with(tmp_path / "simulated") as api:
        assert_problem(post(api, payload, sign(payload)), 404, "not_found")
    without_secret = {key: value for key, value in STRIPE.items() if key != "stripe_webhook_secret"}
    with app_with(tmp_path / "no-secret", **without_secret) as api:
        assert_problem(post(api, payload, sign(payload)), 404, "not_found")


# Past the 300 s tolerance by a margin: the signing happens before the app is built and the request is
# checked, and a future timestamp comes closer with every second that takes on a loaded machine.
@pytest.mark.parametrize("offset", [-3600, -330, 330, 3600], ids=["an-hour-ago", "just-too-old", "just-too-far-ahead",
                                                                  "an-hour-ahead"])
def test_a_signature_timestamp_outside_the_tolerance_either_way_is_refused(tmp_path: Path, offset: int) -> None:
    with app_with(tmp_path, **STRIPE) as api:
        payload = stripe_event("customer.updated", {"id": "cus_1", "object": "customer"}, event_id="evt_skewed")
        position = api.log_position()

        problem = assert_problem(post(api, payload, sign(payload, at=int(time.time()) + offset)), 400,
                                 "invalid_signature")

        assert "tolerance" in problem["detail"]
        assert api.log_position() == position
        assert ProcessorEvent.id_for("stripe", "evt_skewed") not in api.services.app.repository


@pytest.mark.parametrize("offset", [-240, 240], ids=["four-minutes-ago", "four-minutes-ahead"])
def test_a_signature_timestamp_within_the_tolerance_either_way_is_accepted(tmp_path: Path, offset: int) -> None:
    """Clocks drift both ways: five minutes either side of this host's clock is Stripe's own tolerance."""
    with app_with(tmp_path, **STRIPE) as api:
        payload = stripe_event("customer.updated", {"id": "cus_1", "object": "customer"})

        response = post(api, payload, sign(payload, at=int(time.time()) + offset))

        assert response.status_code == 200, response.text


@pytest.mark.parametrize("configured", [True, False], ids=["stripe", "not-configured"])
def test_a_body_over_the_size_limit_is_413_before_it_is_read(tmp_path: Path, configured: bool) -> None:
    with app_with(tmp_path, **(STRIPE if configured else {})) as api:
        payload = stripe_event("customer.updated", {"id": "cus_1", "object": "customer"})
        padded = payload[:-1] + b" " * (2 * 1024 * 1024) + b"}"
        position = api.log_position()

        response = post(api, padded, sign(padded))

        assert_problem(response, 413, "payload_too_large")
        assert response.headers["connection"] == "close"
        assert api.log_position() == position
        if configured:  # elsewhere the route answers 404 without reading a body that declares no length
            chunked = api.post(PATH, content=iter([padded]),
                               headers={"Content-Type": "application/json", "Stripe-Signature": sign(padded)})
            assert_problem(chunked, 413, "payload_too_large")
