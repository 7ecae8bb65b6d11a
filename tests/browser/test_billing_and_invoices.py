"""Billing (a country from the catalog, Stripe's test card numbers, a declined card and its update) and
invoices (list, CSV download, one invoice's view, printable)."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Console, Portal, serious_violations, sign_in


def fill_card(page: Any, number: str, country: str = "DE") -> None:
    page.get_by_label("Billing email").fill("billing@reseller.example")
    page.get_by_label("Billing country").select_option(country)
    page.get_by_label("Card number").fill(number)
    page.get_by_label("Expiry (MM/YY)").fill("12/34")
    page.get_by_label("Security code (CVC)").fill("123")
    page.get_by_role("button", name="Save billing information").click()


def create_pro(page: Any, name: str) -> Any:
    page.get_by_role("link", name="Customers").click()
    page.get_by_role("button", name="Create Subscription").click()
    dialog = page.locator("dialog[open]")
    dialog.get_by_label("Lens Pro").check()
    dialog.get_by_label("Organization name").fill(name)
    dialog.get_by_label("Administrator email").fill("it@customer.example")
    dialog.get_by_label("Seats").fill("2")
    expect(dialog.locator("[data-testid=total]")).to_be_visible()
    dialog.get_by_role("button", name=re.compile(r"^Confirm and pay")).click()
    return dialog


def test_a_declined_card_then_a_failing_one_then_an_update_that_works(
    page: Any, portal: Portal, console: Console
) -> None:
    console.allow(402)  # the declines below are answered 402 payment_declined, on purpose
    sign_in(page, portal.admin_token)
    page.get_by_role("link", name="Billing").click()
    expect(page.locator("#billing-current")).to_contain_text("ending in 4242")
    # Simulated payments: the test-card form, no Stripe.js; the page fixture fails on any request to another host.
    assert portal.http.get("/v1/payment-config").json() == {"processor": "simulated", "stripe_publishable_key": None}
    expect(page.locator("#card-stripe")).to_be_hidden()
    assert page.evaluate("() => typeof window.Stripe") == "undefined"
    countries = page.locator("#billing-country option").all_inner_texts()
    assert "Germany — tax 19 %" in countries and "United States — tax 0 %" in countries
    assert not any("XX" in c for c in countries)

    page.get_by_label("Card number").fill("4111 1111 1111 1111")
    page.get_by_role("button", name="Save billing information").click()
    expect(page.locator("#billing-error")).to_contain_text("Stripe's test card numbers only")

    fill_card(page, "4000 0000 0000 0002")
    expect(page.locator("#billing-error")).to_have_text(
        "The card was declined when saving it, so it was not put on file. Use another card."
    )
    expect(page.locator("#billing-current")).to_contain_text("ending in 4242")

    fill_card(page, "4000 0000 0000 0341")
    expect(page.locator("#notices")).to_contain_text("visa ending in 0341 is now on file; tax 19 %")
    expect(page.locator("#billing-current")).to_contain_text("Germany (DE); tax 19 %")

    dialog = create_pro(page, "Declined Ltd")
    expect(dialog.locator(".dialog-error")).to_contain_text(
        "The payment was not made: the bank declined it. Nothing was charged."
    )
    dialog.get_by_role("link", name="Update billing").click()
    expect(page.locator("dialog[open]")).to_have_count(0)
    expect(page.locator("#screen-billing")).to_be_visible()

    fill_card(page, "4242 4242 4242 4242")
    expect(page.locator("#billing-current")).to_contain_text("ending in 4242")
    dialog = create_pro(page, "Paid Ltd")
    expect(page.locator("#notices")).to_contain_text(
        "Subscription created for Paid Ltd: Lens Pro, 2 seats, $71.40 charged"
    )
    assert serious_violations(page) == []


def test_invoices_list_csv_and_a_printable_invoice(page: Any, portal: Portal) -> None:
    sign_in(page, portal.admin_token)
    page.get_by_role("link", name="Invoices").click()
    rows = page.locator("#invoices-rows tr")
    expect(rows.first.locator("td[data-label=Customer]")).not_to_be_empty()
    texts = rows.all_inner_texts()
    assert any("Globex" in t and "New subscription" in t and "$15,000.00" in t and "paid" in t for t in texts), texts
    expect(page.locator("#invoices-count")).to_have_text(re.compile(r"^1–\d+ of \d+ invoices?$"))
    assert serious_violations(page) == []

    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    content = download.value.path().read_text()
    table = list(csv.DictReader(io.StringIO(content)))
    assert len(table) == len(texts)
    globex = next(r for r in table if r["customer"] == "Globex")
    assert globex["total"] == "15000.00" and globex["state"] == "paid" and globex["payment_reference"].startswith("pi_")
    expect(page.locator("#notices")).to_contain_text(f"Downloaded {len(table)} invoice")

    page.get_by_role("link", name=re.compile(r"^View invoice of .* for Globex$")).click()
    invoice = page.locator(".invoice")
    expect(invoice).to_contain_text("Lens Enterprise, annual, 25 seats")
    expect(invoice.locator("[data-testid=invoice-total]")).to_have_text("$15,000.00")
    expect(invoice).to_contain_text("Tax (0 %)")
    expect(invoice).to_contain_text(globex["payment_reference"])
    assert serious_violations(page) == []
    page.emulate_media(media="print")
    expect(page.locator(".topbar")).to_be_hidden()
    expect(page.get_by_role("button", name="Print")).to_be_hidden()
    expect(invoice).to_be_visible()
    page.emulate_media(media="screen")
    page.get_by_role("link", name="← All invoices").click()
    expect(page.locator("#invoice-list")).to_be_visible()


def test_invoice_pages(page: Any, portal: Portal) -> None:
    for n in range(21):
        portal.create_pro(f"Invoice Co {n:02d}")
    sign_in(page, portal.admin_token)
    page.get_by_role("link", name="Invoices").click()
    count = page.locator("#invoices-count")
    expect(count).to_have_text(re.compile(r"^1–20 of \d+ invoices$"))
    first = page.locator("#invoices-rows tr").all_inner_texts()
    page.get_by_role("button", name="Next →").click()
    expect(count).to_have_text(re.compile(r"^21–\d+ of"))
    assert page.locator("#invoices-rows tr").all_inner_texts() != first
    page.get_by_role("button", name="← Previous").click()
    expect(count).to_have_text(re.compile(r"^1–20 of"))
