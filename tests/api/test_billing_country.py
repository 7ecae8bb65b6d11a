"""The billing country is an ISO 3166-1 alpha-2 code; the catalog says which countries carry which tax."""

from __future__ import annotations

import pytest

from tests.api.conftest import ORG, Api, assert_problem


@pytest.mark.parametrize("country", ["XX", "ZZ", "UK", "EU", "xx"])
def test_a_country_that_is_not_an_iso_code_is_refused(api: Api, country: str) -> None:
    api.enable_reseller(ORG)

    body = assert_problem(api.put_billing(ORG, country=country), 422, "validation_error", "country")

    assert "ISO 3166" in body["detail"] and "GET /v1/plans" in body["detail"]
    assert api.get(f"/v1/resellers/{ORG}/billing", headers=api.admin()).json()["on_file"] is False


@pytest.mark.parametrize(("country", "rate"), [("DE", 1900), ("gb", 2000), ("JP", 0), ("US", 0)])
def test_an_iso_country_is_taxed_at_the_catalog_rate_or_zero(api: Api, country: str, rate: int) -> None:
    api.enable_reseller(ORG)

    response = api.put_billing(ORG, country=country)

    assert response.status_code == 200, response.text
    assert response.json()["country"] == country.upper()
    assert response.json()["tax_rate_bps"] == rate


def test_the_catalog_lists_the_countries_that_carry_tax(api: Api) -> None:
    rates = api.get("/v1/plans").json()["tax_rates_bps"]

    assert rates["DE"] == 1900 and rates["GB"] == 2000 and rates["US"] == 0
