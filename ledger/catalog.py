"""The plan catalog: plans, prices per seat and billing cycle, and the tax table."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ledger.errors import ValidationFailed

SINGLE_USER = "single_user"
ORGANIZATION = "organization"
MONTHLY = "monthly"
ANNUAL = "annual"
BILLING_CYCLES = (MONTHLY, ANNUAL)


class CatalogError(ValueError):
    """The catalog file is malformed."""


@dataclass(frozen=True)
class Plan:
    id: str
    name: str
    kind: str
    monthly_cents: int
    annual_cents: int
    min_seats: int
    max_seats: int

    def unit_price_cents(self, billing_cycle: str) -> int:
        return self.monthly_cents if billing_cycle == MONTHLY else self.annual_cents

    def check_seats(self, seats: int) -> None:
        if not self.min_seats <= seats <= self.max_seats:
            raise ValidationFailed(
                "seats", f"{self.name} takes {self.min_seats} to {self.max_seats} seats, not {seats}"
            )


@dataclass(frozen=True)
class Catalog:
    currency: str
    plans: Mapping[str, Plan]
    tax_rates_bps: Mapping[str, int]

    def plan(self, plan_id: str) -> Plan:
        try:
            return self.plans[plan_id]
        except KeyError:
            known = ", ".join(sorted(self.plans))
            raise ValidationFailed("plan", f"unknown plan {plan_id!r}; plans are: {known}") from None

    def tax_rate_bps(self, country: str | None, *, tax_exempt: bool) -> int:
        if tax_exempt or country is None:
            return 0
        return self.tax_rates_bps.get(country, 0)

    @classmethod
    def from_toml(cls, text: str) -> Catalog:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise CatalogError(f"not valid TOML: {error}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Catalog:
        currency = _require(data, "currency", str, "catalog")
        if len(currency) != 3 or not currency.isupper():
            raise CatalogError(f"currency must be an ISO 4217 code such as USD, not {currency!r}")
        plans_data = _require(data, "plans", dict, "catalog")
        if not plans_data:
            raise CatalogError("the catalog has no plans")
        plans = {plan_id: _plan(plan_id, fields) for plan_id, fields in plans_data.items()}
        taxes = _require(data, "tax_rates_bps", dict, "catalog")
        for country, rate in taxes.items():
            if len(country) != 2 or not country.isupper():
                raise CatalogError(f"tax_rates_bps: {country!r} is not an ISO 3166-1 alpha-2 code")
            if type(rate) is not int or not 0 <= rate <= 10_000:
                raise CatalogError(f"tax_rates_bps.{country} must be an integer from 0 to 10000")
        return cls(currency, MappingProxyType(plans), MappingProxyType(dict(taxes)))


def _plan(plan_id: str, fields: Any) -> Plan:
    where = f"plans.{plan_id}"
    if not isinstance(fields, dict):
        raise CatalogError(f"{where} must be a table")
    kind = _require(fields, "kind", str, where)
    if kind not in (SINGLE_USER, ORGANIZATION):
        raise CatalogError(f"{where}.kind must be {SINGLE_USER!r} or {ORGANIZATION!r}")
    plan = Plan(
        id=plan_id,
        name=_require(fields, "name", str, where),
        kind=kind,
        monthly_cents=_require(fields, "monthly_cents", int, where),
        annual_cents=_require(fields, "annual_cents", int, where),
        min_seats=_require(fields, "min_seats", int, where),
        max_seats=_require(fields, "max_seats", int, where),
    )
    if plan.monthly_cents < 0 or plan.annual_cents < 0:
        raise CatalogError(f"{where}: prices cannot be negative")
    if not 1 <= plan.min_seats <= plan.max_seats:
        raise CatalogError(f"{where}: need 1 <= min_seats <= max_seats")
    if kind == SINGLE_USER and plan.max_seats != 1:
        raise CatalogError(f"{where}: a single-user plan has exactly one seat")
    return plan


def _require(table: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in table:
        raise CatalogError(f"{where}: missing {key!r}")
    value = table[key]
    if type(value) is not kind:
        raise CatalogError(f"{where}.{key} must be a {kind.__name__}")
    return value
