"""Billing with `LEDGER_PAYMENTS=stripe` and a publishable key: the page collects the card with Stripe.js
Elements and sends only the PaymentMethod id it creates to `PUT /v1/resellers/{org}/billing`.

js.stripe.com is not reachable from the test machines, so https://js.stripe.com/v3/ is routed to FAKE_STRIPE_JS
below, a few lines that stand in for Stripe.js. This checks our integration (Stripe.js loaded from its host in
this mode only, `Stripe(publishable key)`, the card Element mounted in the form, `createPaymentMethod` called
with it, its `error.message` shown, only the `pm_…` id sent), not Stripe itself: the real Element is an iframe
of Stripe's, and the fake an input in our page so that the test can type in it. The ledger behind the page
runs the real Stripe adapter against localstripe (an offline Stripe emulator), which saves the id the fake
returns (`pm_card_visa`, one of Stripe's test payment methods) as the card on file."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ORG, Console, Portal, serious_violations, sign_in
from tests.e2e.processes import run, serving
from tests.localstripe_server import start

PUBLISHABLE_KEY = "pk_test_portal"
FAKE_STRIPE_JS = """
window.Stripe = (key) => {
  const seen = (window.fakeStripe = { key, mounted: null, created: [] });
  let input = null;
  const handlers = {};
  const card = {
    mount(selector) {
      input = document.createElement("input");
      input.setAttribute("aria-label", "Card (fake Stripe Element)");
      const complete = () => input.value.replace(/ /g, "").length >= 16;
      input.addEventListener("input", () => handlers.change?.({ complete: complete(), error: undefined }));
      document.querySelector(selector).append(input);
      seen.mounted = selector;
    },
    on(event, handler) { handlers[event] = handler; },
    clear() { input.value = ""; },
  };
  return {
    elements: () => ({ create: (type, options) => { seen.type = type; seen.options = options; return card; } }),
    createPaymentMethod: async (request) => {
      const { type, billing_details } = request;
      seen.created.push({ type, withTheElement: request.card === card, billing_details });
      return input.value.replace(/ /g, "") === "4242424242424242"
        ? { paymentMethod: { id: "pm_card_visa", object: "payment_method", type: "card" } }
        : { error: { type: "card_error", code: "incorrect_number", message: "Your card number is incorrect." } };
    },
  };
};
"""


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    """The ledger with the Stripe adapter against localstripe, and a publishable key for the page."""
    stripe = start()
    data = tmp_path_factory.mktemp("ledger-stripe")
    env = {"LEDGER_DATA_DIR": str(data), "LEDGER_CLOCK": "sandbox", "LEDGER_PAYMENTS": "stripe",
           "LEDGER_STRIPE_SECRET_KEY": "sk_test_localstripe", "LEDGER_STRIPE_API_BASE": stripe.url,
           "LEDGER_STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY}
    try:
        with serving(env, output=data / "serve.log") as (base, _process):
            admin = run("token", "--org", ORG, "--sub", "alice", "--email", "alice@reseller.example",
                        env=env).stdout.strip()
            with httpx.Client(base_url=base, timeout=10) as http:
                yield Portal(base, env, admin, http)
    finally:
        stripe.stop()


def test_the_page_learns_the_mode_and_key_from_the_public_config(portal: Portal) -> None:
    answer = portal.http.get("/v1/payment-config")
    assert answer.status_code == 200
    assert answer.json() == {"processor": "stripe", "stripe_publishable_key": PUBLISHABLE_KEY}


def test_stripe_elements_collects_the_card_and_only_its_payment_method_id_is_sent(
    page: Any, portal: Portal, console: Console
) -> None:
    console.allow_host("js.stripe.com")
    page.route(re.compile(r"^https://js\.stripe\.com/v3/?$"), lambda route: route.fulfill(
        status=200, content_type="text/javascript", body=FAKE_STRIPE_JS))
    sent: list[dict[str, Any]] = []
    ours: list[str] = []

    def look(request: Any) -> None:
        if request.url.startswith(portal.base):
            ours.append(f"{request.url} {request.post_data or ''}")
            if request.method == "PUT" and request.url.endswith("/billing"):
                sent.append(json.loads(request.post_data))

    page.on("request", look)
    sign_in(page, portal.admin_token)
    assert page.evaluate("() => typeof window.Stripe") == "undefined"  # loaded by the Billing screen only
    page.get_by_role("link", name="Billing").click()
    element = page.get_by_label("Card (fake Stripe Element)")
    expect(element).to_be_visible()
    assert page.evaluate("() => [fakeStripe.key, fakeStripe.mounted, fakeStripe.type]") == [
        PUBLISHABLE_KEY, "#billing-card-element", "card"]
    expect(page.get_by_label("Card number")).to_be_hidden()  # the sandbox's test-card fields
    assert serious_violations(page) == []

    page.get_by_label("Billing email").fill("billing@reseller.example")
    page.get_by_label("Billing country").select_option("DE")
    element.fill("4000 0000 0000 0000")
    page.get_by_role("button", name="Save billing information").click()
    expect(page.locator("#billing-error")).to_have_text("Your card number is incorrect.")
    assert sent == []

    element.fill("4242 4242 4242 4242")
    page.get_by_role("button", name="Save billing information").click()
    expect(page.locator("#notices")).to_contain_text("visa ending in 4242 is now on file; tax 19 %")
    assert sent == [{"payment_method": "pm_card_visa", "billing_email": "billing@reseller.example", "country": "DE"}]
    assert page.evaluate("() => fakeStripe.created") == [
        {"type": "card", "withTheElement": True, "billing_details": {"email": "billing@reseller.example"}}] * 2
    assert not any(re.search(r"4242\s*4242|4000\s*0000", line) for line in ours)
    expect(page.locator("#billing-current")).to_contain_text("Germany (DE); tax 19 %")
    expect(element).to_have_value("")
