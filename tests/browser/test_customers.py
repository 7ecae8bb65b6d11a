"""The home screen as a reseller uses it: sign-in, summary cards, the customer table, Create
Subscription with its preview, the actions menu (Modify Seats, Cancel/Resume Subscription, history),
sort, search and paging; accessibility and the 390 px layout."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import ORG, Console, Portal, serious_violations, sign_in


def row(page: Any, customer: str) -> Any:
    return page.locator(
        "#customers-rows tr", has=page.locator(".customer", has_text=re.compile(f"^{re.escape(customer)}$"))
    )


def choose(page: Any, customer: str, action: str) -> None:
    """Opens the row's actions menu with the keyboard and chooses `action`."""
    row(page, customer).get_by_role("button", name=f"Actions for {customer}").focus()
    choose_from_focused_menu(page, customer, action)


def choose_from_focused_menu(page: Any, customer: str, action: str) -> None:
    """With the row's actions button focused: opens its menu, moves to `action` with the arrow keys, presses Enter."""
    page.keyboard.press("ArrowDown")
    menu = row(page, customer).get_by_role("menu")
    expect(menu).to_be_visible()
    item = menu.get_by_role("menuitem", name=action)
    for _ in range(4):
        if item.evaluate("element => element === document.activeElement"):
            break
        page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")


def test_a_same_tab_link_signs_in_the_token_stays_hidden_and_sign_out_forgets_it(page: Any, portal: Portal) -> None:
    sign_in(page, portal.admin_token)

    expect(page.locator("#who")).to_have_text("Signed in as alice@reseller.example")
    assert portal.admin_token not in page.content()
    assert "token=" not in page.url
    expect(page.locator("#org option")).to_have_text(["Sandbox Reseller"])
    expect(page.locator("#card-total")).to_have_text(re.compile(r"^\d+$"))
    headers = page.locator("#customers-head th").all_inner_texts()
    assert [h.strip(" ▲▼↕\n") for h in headers[:5]] == ["Customer", "Plan", "Status", "Seats", "Current period"]

    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#screen-signin")).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('ledger-token')") is None
    page.reload()
    expect(page.locator("#screen-signin")).to_be_visible()


def test_a_bad_or_expired_token_is_said_in_a_sentence(page: Any, portal: Portal, console: Console) -> None:
    page.goto("/#token=not-a-token")
    expect(page.locator("#signin-error")).to_have_text(re.compile(r"^That sign-in link or token is not valid\."))

    expired = portal.token("--org", ORG, "--sub", "alice", "--ttl=-60")
    page.evaluate("token => { location.hash = 'token=' + token }", expired)
    expect(page.locator("#signin-error")).to_have_text(
        re.compile(r"^Your sign-in expired on .* UTC\. Ask for a new sign-in link\.")
    )

    console.allow(401)  # the server refuses a well-formed token signed with another key
    forged = portal.admin_token[:-4] + ("AAAA" if not portal.admin_token.endswith("AAAA") else "BBBB")
    page.get_by_label("Access token").fill(forged)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_have_text(re.compile(r"^Your sign-in is not valid any more\."))
    expect(page.locator("#signin-error")).not_to_contain_text("Traceback")

    nobody = portal.token("--org", "org_not_a_reseller", "--sub", "bob")
    page.get_by_label("Access token").fill(nobody)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_contain_text(
        "not an administrator of any organization enabled as a reseller"
    )


def test_create_plus_and_pro_after_a_debounced_preview(page: Any, portal: Portal) -> None:
    previews: list[str] = []
    page.on(
        "request", lambda r: previews.append(r.post_data or "") if r.url.endswith("/subscriptions/preview") else None
    )
    sign_in(page, portal.admin_token)
    total_before = int(page.locator("#card-total").inner_text())

    page.get_by_role("button", name="Create Subscription").click()
    dialog = page.locator("dialog[open]")
    dialog.get_by_label("Lens Plus").check()
    dialog.get_by_label("End-user email").press_sequentially("grace@customer.example", delay=20)
    expect(dialog.locator("[data-testid=total]")).to_have_text("$30.00")
    assert len(previews) == 1, previews  # none while the email was incomplete, one once typing paused
    expect(dialog.locator(".preview-table")).to_contain_text("Lens Plus, monthly, 1 seat")
    for label in ("Subtotal", "Tax (0 %)", "Total due now", "Unit price", "Quantity"):
        expect(dialog.locator(".preview-table")).to_contain_text(label)
    dialog.get_by_role("button", name="Confirm and pay $30.00").click()
    expect(page.locator("#notices")).to_contain_text("Subscription created for grace@customer.example")
    expect(page.locator("#notices")).to_contain_text("invitation is on its way to grace@customer.example")
    expect(page.locator("dialog[open]")).to_have_count(0)
    expect(row(page, "grace@customer.example")).to_contain_text("Lens Plus")

    page.get_by_role("button", name="Create Subscription").click()
    dialog.get_by_label("Lens Enterprise").check()
    dialog.get_by_label("Annual").check()
    previews.clear()
    dialog.get_by_label("Organization name").press_sequentially("Hooli", delay=30)
    dialog.get_by_label("Administrator email").press_sequentially("it@hooli.example", delay=20)
    dialog.get_by_label("Seats").fill("3")
    expect(dialog.locator("[data-testid=total]")).to_have_text("$1,800.00")
    assert len(previews) == 1, previews
    assert '"seats": 3' in previews[0] or '"seats":3' in previews[0]
    dialog.get_by_role("button", name=re.compile(r"^Confirm and pay")).click()
    expect(page.locator("#notices")).to_contain_text(
        "Subscription created for Hooli: Lens Enterprise, 3 seats, $1,800.00 charged"
    )
    expect(row(page, "Hooli")).to_contain_text("Annual")
    expect(page.locator("#card-total")).to_have_text(str(total_before + 2))


def test_increase_decrease_cancel_resume_and_history_from_the_actions_menu(page: Any, portal: Portal) -> None:
    portal.create_pro("Umbrella", seats=5)
    sign_in(page, portal.admin_token)
    dialog = page.locator("dialog[open]")

    choose(page, "Umbrella", "Modify Seats")
    dialog.get_by_label("New seat count").fill("8")
    expect(dialog.locator(".preview-table")).to_contain_text("Unused time on 5 seats")
    expect(dialog.locator(".preview-table")).to_contain_text("Remaining time on 8 seats")
    expect(dialog).to_contain_text("5 → 8 seats")
    assert serious_violations(page) == []  # the Modify Seats dialog, with its preview
    dialog.get_by_role("button", name=re.compile(r"^Add seats and pay \$")).click()
    expect(page.locator("#notices")).to_contain_text("Umbrella now has 8 seats")
    expect(row(page, "Umbrella").locator("td[data-label=Seats]")).to_have_text("8")

    choose(page, "Umbrella", "Modify Seats")
    dialog.get_by_label("New seat count").fill("3")
    expect(dialog.locator(".change-summary")).to_have_text(re.compile(r"^8 → 3 seats from \d{4}-\d{2}-\d{2}$"))
    expect(dialog).to_contain_text("Nothing is charged or refunded now")
    expect(dialog.locator(".preview-table")).to_contain_text("3 seats × $30.00")
    expect(dialog.locator(".preview-table")).to_contain_text("$90.00")
    dialog.get_by_role("button", name="Schedule decrease to 3").click()
    expect(page.locator("#notices")).to_contain_text("Umbrella goes from 8 to 3 seats on")
    status = row(page, "Umbrella").locator("td[data-label=Status]")
    expect(status).to_contain_text("pending")
    expect(status).to_contain_text(re.compile(r"8 → 3 seats from \d{4}-\d{2}-\d{2}"))

    choose(page, "Umbrella", "Cancel Subscription")
    expect(dialog).to_contain_text("stays usable until")
    assert serious_violations(page) == []  # the cancel confirmation
    dialog.get_by_role("button", name="Keep subscription").click()
    expect(page.locator("dialog[open]")).to_have_count(0)
    expect(status).to_contain_text("pending")
    choose(page, "Umbrella", "Cancel Subscription")
    dialog.get_by_role("button", name="Cancel Subscription").click()
    expect(page.locator("#notices")).to_contain_text(
        re.compile(r"Umbrella is canceled\. It stays usable until \d{4}-\d{2}-\d{2}")
    )
    expect(status).to_contain_text("canceled")
    expect(row(page, "Umbrella").get_by_role("menuitem", name="Modify Seats", include_hidden=True)).to_have_count(0)

    choose(page, "Umbrella", "Resume Subscription")
    expect(page.locator("#notices")).to_contain_text("Umbrella is resumed")
    expect(status).to_contain_text("pending")  # the scheduled decrease is still there

    choose(page, "Umbrella", "View history")
    events = dialog.locator(".timeline li")
    expect(events).to_have_count(5)
    expect(events.nth(0)).to_contain_text("Subscription created: Lens Pro, monthly, 5 seats")
    expect(events.nth(0)).to_contain_text("Charged: $150.00")
    expect(events.nth(1)).to_contain_text("Seats increased from 5 to 8")
    expect(events.nth(1)).to_contain_text("by alice")
    expect(events.nth(2)).to_contain_text("Decrease from 8 to 3 seats scheduled for")
    expect(events.nth(3)).to_contain_text("Canceled: usable until")
    expect(events.nth(4)).to_contain_text("Resumed")
    page.keyboard.press("Escape")
    expect(page.locator("dialog[open]")).to_have_count(0)


def test_a_dialog_closed_while_it_loads_stays_closed(page: Any, portal: Portal) -> None:
    """The history opens at once, loading; Escape before its events arrive closes it for good (its
    request is dropped), so nothing pops up later over what the reseller went on to do."""
    sign_in(page, portal.admin_token)
    held: list[Any] = []
    # the events response does not come until the test says so
    page.route("**/events", lambda route: held.append(route))
    with page.expect_request("**/events"):  # the request is out (and held) before the reseller presses Escape
        choose(page, "Globex", "View history")
    expect(page.locator("dialog[open]")).to_contain_text("History: Globex")
    expect(page.locator("dialog[open]")).to_contain_text("Loading…")
    page.keyboard.press("Escape")
    expect(page.locator("dialog[open]")).to_have_count(0)
    assert len(held) == 1
    held[0].continue_()  # the events arrive late; the page dropped that request, or ignores its answer
    page.get_by_role("link", name="Invoices").click()
    expect(page.locator("#invoices-rows tr").first.locator("td[data-label=Customer]")).not_to_be_empty()
    expect(page.locator("dialog[open]")).to_have_count(0)


def test_sort_by_column_headers_and_previous_next_pages(page: Any, portal: Portal) -> None:
    for n in range(22):
        portal.create_pro(f"Paging Co {n:02d}", seats=n + 1)
    sign_in(page, portal.admin_token)
    head = page.locator("#customers-head")
    expect(head.locator("th[aria-sort=ascending]")).to_contain_text("Customer")

    head.get_by_role("button", name=re.compile("^Seats")).click()
    expect(head.locator("th[aria-sort=ascending]")).to_contain_text("Seats")
    head.get_by_role("button", name=re.compile("^Seats")).click()
    expect(head.locator("th[aria-sort=descending]")).to_contain_text("Seats")
    expect(head.locator("th[aria-sort]")).to_have_count(1)
    seats = [int(s) for s in page.locator("#customers-rows td[data-label=Seats]").all_inner_texts()]
    assert seats == sorted(seats, reverse=True) and len(seats) == 20

    count = page.locator("#customers-count")
    expect(count).to_have_text(re.compile(r"^1–20 of \d+ subscriptions$"))
    expect(page.get_by_role("button", name="← Previous")).to_be_disabled()
    page.get_by_role("button", name="Next →").click()
    expect(count).to_have_text(re.compile(r"^21–\d+ of \d+ subscriptions$"))
    second = [int(s) for s in page.locator("#customers-rows td[data-label=Seats]").all_inner_texts()]
    assert max(second) <= min(seats)
    page.get_by_role("button", name="← Previous").click()
    expect(count).to_have_text(re.compile(r"^1–20 of"))
    assert [int(s) for s in page.locator("#customers-rows td[data-label=Seats]").all_inner_texts()] == seats


def test_search_sends_one_request_once_typing_pauses(page: Any, portal: Portal) -> None:
    sign_in(page, portal.admin_token)
    searches: list[str] = []
    page.on("request", lambda r: searches.append(r.url) if "/subscriptions?" in r.url and "q=" in r.url else None)
    page.get_by_label("Search customers").press_sequentially("Globex", delay=60)
    expect(page.locator("#customers-rows tr[data-id]")).to_have_count(1)
    expect(page.locator("#customers-rows")).to_contain_text("Globex")
    page.wait_for_timeout(400)
    assert len(searches) == 1, searches


def test_every_screen_passes_axe_and_fits_390_px(page: Any, portal: Portal) -> None:
    page.goto("/")
    page.wait_for_selector("#screen-signin:not([hidden])")
    assert serious_violations(page) == []
    sign_in(page, portal.admin_token)
    assert serious_violations(page) == []
    page.get_by_role("button", name="Create Subscription").click()
    page.locator("dialog[open]").get_by_label("Lens Pro").check()
    page.locator("dialog[open]").get_by_label("Organization name").fill("Axe Inc")
    assert serious_violations(page) == []
    page.keyboard.press("Escape")
    expect(page.locator("dialog[open]")).to_have_count(0)
    choose(page, "Globex", "View history")
    expect(page.locator("dialog[open] .timeline li").first).to_be_visible()  # the history, not its loading state
    assert serious_violations(page) == []
    page.keyboard.press("Escape")
    expect(page.locator("dialog[open]")).to_have_count(0)
    for screen in ("invoices", "billing"):
        page.get_by_role("link", name=screen.capitalize()).click()
        page.wait_for_selector(f"#screen-{screen}:not([hidden])")
        assert serious_violations(page) == [], screen

    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_role("link", name="Customers").click()
    page.wait_for_selector("#customers-rows tr[data-id]")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    for card in page.locator(".card").all():
        box = card.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390
    first = page.locator("#customers-rows tr[data-id]").first
    expect(first.locator("td[data-label=Customer]")).to_be_visible()
    assert serious_violations(page) == []


FOCUSED_NAME = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return "(outside the page)";
  const label = e.getAttribute("aria-label") || (e.labels && e.labels[0] && e.labels[0].textContent) || e.textContent;
  return (label || "").trim().replace(/\\s+/g, " ") || e.outerHTML.slice(0, 80);
}"""


def tab_to(page: Any, name: str | re.Pattern[str], most: int = 60) -> None:
    """Presses Tab until the focused control's label or text is `name`, as a keyboard user does."""
    wanted = name if isinstance(name, re.Pattern) else re.compile(f"^{re.escape(name)}$")
    seen = []
    for _ in range(most):
        page.keyboard.press("Tab")
        seen.append(page.evaluate(FOCUSED_NAME))
        if wanted.search(seen[-1]):
            return
    raise AssertionError(f"Tab never reached {name!r}; it went through {seen}")


def test_keyboard_alone_creates_changes_seats_cancels_and_reaches_invoices(page: Any, portal: Portal) -> None:
    sign_in(page, portal.admin_token)
    dialog = page.locator("dialog[open]")

    tab_to(page, "Create Subscription")
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    tab_to(page, re.compile("^Lens Plus "))
    page.keyboard.press("ArrowDown")  # radio group: Plus → Pro
    expect(dialog.get_by_label("Lens Pro")).to_be_checked()
    tab_to(page, "Organization name")
    page.keyboard.type("Keyboard Co")
    tab_to(page, "Administrator email")
    page.keyboard.type("it@keyboard.example")
    tab_to(page, "Seats")
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("4")
    expect(dialog.locator("[data-testid=total]")).to_have_text("$120.00")
    tab_to(page, re.compile(r"^Confirm and pay"))
    page.keyboard.press("Enter")
    expect(page.locator("#notices")).to_contain_text("Subscription created for Keyboard Co")
    expect(row(page, "Keyboard Co")).to_contain_text("Lens Pro")

    tab_to(page, "Actions for Keyboard Co", most=200)
    choose_from_focused_menu(page, "Keyboard Co", "Modify Seats")
    expect(dialog.get_by_label("New seat count")).to_be_focused()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("6")
    expect(dialog).to_contain_text("4 → 6 seats")
    tab_to(page, re.compile(r"^Add seats and pay \$"))
    page.keyboard.press("Enter")
    expect(page.locator("#notices")).to_contain_text("Keyboard Co now has 6 seats")

    tab_to(page, "Actions for Keyboard Co", most=200)
    choose_from_focused_menu(page, "Keyboard Co", "Cancel Subscription")
    expect(dialog).to_contain_text("stays usable until")
    tab_to(page, "Cancel Subscription")
    page.keyboard.press("Enter")
    expect(page.locator("#notices")).to_contain_text(re.compile(r"Keyboard Co is canceled\. It stays usable until"))
    expect(row(page, "Keyboard Co").locator("td[data-label=Status]")).to_contain_text("canceled")

    page.keyboard.press("Shift+Tab")  # back towards the navigation, from wherever the page left focus
    tab_to(page, "Invoices", most=200)
    page.keyboard.press("Enter")
    expect(page.locator("#screen-invoices")).to_be_visible()
    # the fixture's portal is shared with the other tests: Keyboard Co's invoice need not be on the first page
    expect(page.locator("#invoices-rows tr td[data-label=Customer]").first).not_to_be_empty()
