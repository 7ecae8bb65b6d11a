"""Browser tests of the portal page: Debian's chromium driven by Playwright, against a real
`ledger serve` process (one per test module, sandbox clock, simulated payments), one browser for
the whole run. Every test fails on a console error or an uncaught exception in the page, or on a request to
any host but the portal's (a test may allow one, as the Stripe.js test does), and keeps a screenshot (and the
page's HTML) in its tmp dir when it fails."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.processes import run, serving

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
# Seeded by `ledger serve` on the embedded default: Ada (Plus), Initech (Pro, 5), Globex (Enterprise, 25).
ORG = "org_sandbox"


@dataclass
class Portal:
    base: str
    env: dict[str, str]
    admin_token: str
    http: httpx.Client

    def token(self, *args: str) -> str:
        return run("token", *args, env=self.env).stdout.strip()

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, headers={"Authorization": f"Bearer {self.admin_token}"}, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()

    def create_pro(self, name: str, seats: int = 2) -> Any:
        return self.api(
            "POST",
            f"/v1/resellers/{ORG}/subscriptions",
            json={
                "plan": "pro",
                "billing_cycle": "monthly",
                "organization_name": name,
                "admin_email": "admin@customer.example",
                "seats": seats,
            },
        )


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    data = tmp_path_factory.mktemp("ledger")
    env = {"LEDGER_DATA_DIR": str(data), "LEDGER_CLOCK": "sandbox"}
    with serving(env, output=data / "serve.log") as (base, _process):
        admin = run(
            "token", "--org", ORG, "--sub", "alice", "--email", "alice@reseller.example", env=env
        ).stdout.strip()
        with httpx.Client(base_url=base, timeout=10) as http:
            yield Portal(base, env, admin, http)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@dataclass
class Console:
    """What the page said on its console; HTTP error statuses a test expects on purpose are allowed."""

    errors: list[str] = field(default_factory=list)
    allowed_statuses: set[int] = field(default_factory=set)
    elsewhere: list[str] = field(default_factory=list)
    """Requests to any other origin than the portal's."""
    allowed_hosts: set[str] = field(default_factory=set)

    def allow(self, *statuses: int) -> None:
        self.allowed_statuses.update(statuses)

    def allow_host(self, host: str) -> None:
        self.allowed_hosts.add(host)

    def other_hosts(self) -> list[str]:
        return [url for url in self.elsewhere if urlsplit(url).hostname not in self.allowed_hosts]

    def unexpected(self) -> list[str]:
        def expected(message: str) -> bool:
            status = re.search(r"status of (\d{3})", message)
            return bool(status) and int(status.group(1)) in self.allowed_statuses

        return [message for message in self.errors if not expected(message)]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(
    browser: Any, portal: Portal, console: Console, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True, base_url=portal.base)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("console", lambda message: console.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: console.errors.append(f"uncaught: {error}"))
    page.on("request", lambda r: None if r.url.startswith((f"{portal.base}/", "data:", "blob:"))
            else console.elsewhere.append(r.url))
    yield page
    failed = getattr(request.node, "report_call", None) is not None and request.node.report_call.failed
    unexpected = console.unexpected()
    elsewhere = console.other_hosts()
    if failed or unexpected or elsewhere:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        (tmp_path / "failure.html").write_text(page.content())
    context.close()
    if unexpected:
        pytest.fail(f"console errors in the page (screenshot in {tmp_path}): {unexpected}")
    if elsewhere:
        pytest.fail(f"the page asked another host than the portal's (screenshot in {tmp_path}): {elsewhere}")


def sign_in(page: Any, token: str) -> None:
    """Opens the portal, then follows a same-tab `#token=` link, as a sign-in email's link would."""
    page.goto("/")
    page.wait_for_selector("#screen-signin:not([hidden])")
    page.evaluate("token => { location.hash = 'token=' + token }", token)
    page.wait_for_selector("#customers-rows tr[data-id]")


def serious_violations(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    violations = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]
