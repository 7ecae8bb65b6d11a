"""The portal page and its assets as served: versioned asset addresses cached for a year, the page revalidated,
every module a module imports present; and the public payment configuration the page reads."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

from tests.api.conftest import Api, assert_problem, running_app

ASSETS = Path(str(files("web").joinpath("assets")))


def versioned(page: str) -> str:
    match = re.search(r'src="/portal/([0-9a-f]{12})/js/main\.js"', page)
    assert match, "the page names its entry module under its version"
    return match.group(1)


def test_the_page_is_revalidated_and_its_versioned_assets_are_kept_for_a_year(api: Api) -> None:
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assert api.get("/", headers={"If-None-Match": page.headers["etag"]}).status_code == 304
    version = versioned(page.text)
    assert "/portal/js/" not in page.text and 'href="/portal/portal.css"' not in page.text

    module = api.get(f"/portal/{version}/js/main.js")
    assert module.status_code == 200
    assert module.headers["content-type"].startswith("text/javascript")
    assert module.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert module.content == (ASSETS / "js" / "main.js").read_bytes()
    again = api.get(f"/portal/{version}/js/main.js", headers={"If-None-Match": module.headers["etag"]})
    assert again.status_code == 304
    # Unversioned, or an older release's address (a tab opened before it): the current file, revalidated.
    for path in ("/portal/js/main.js", "/portal/0123456789ab/js/main.js"):
        other = api.get(path)
        assert other.content == module.content and other.headers["cache-control"] == "no-cache", path
    assert_problem(api.get(f"/portal/{version}/js/nothing.js"), 404, "not_found")
    assert_problem(api.get(f"/portal/{version}/../index.html"), 404, "not_found")


def test_every_module_import_names_a_served_file(api: Api) -> None:
    version = versioned(api.get("/").text)
    for module in ASSETS.rglob("*.js"):
        for target in re.findall(r'(?:from|import\()\s*"(\.{1,2}/[^"]+)"', module.read_text()):
            path = (module.parent / target).resolve().relative_to(ASSETS.resolve())
            assert api.get(f"/portal/{version}/{path}").status_code == 200, (module, target)


def test_the_payment_config_is_public_and_says_how_cards_are_collected(api: Api, tmp_path: Path) -> None:
    assert api.get("/v1/payment-config").json() == {"processor": "simulated", "stripe_publishable_key": None}
    with running_app(tmp_path / "stripe", payments="stripe", stripe_secret_key="sk_test_x",
                     stripe_publishable_key="pk_test_x") as stripe:
        assert stripe.get("/v1/payment-config").json() == {"processor": "stripe", "stripe_publishable_key": "pk_test_x"}
