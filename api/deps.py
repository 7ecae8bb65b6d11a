"""Dependencies of the routes, as Annotated aliases."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from api.security import Principal, verify
from commands.errors import Forbidden
from commands.handlers import Ledger
from commands.idempotency import IdempotencyKey
from ledger.reseller import Reseller
from service.bootstrap import Services
from service.tokens import TokenKeys


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_ledger(services: ServicesDep) -> Ledger:
    return services.ledger


LedgerDep = Annotated[Ledger, Depends(get_ledger)]


def get_token_keys(request: Request) -> TokenKeys:
    return request.app.state.token_keys


def current_user(
    keys: Annotated[TokenKeys, Depends(get_token_keys)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    return verify(authorization, keys)


CurrentUser = Annotated[Principal, Depends(current_user)]


def support_user(user: CurrentUser) -> Principal:
    if not user.is_support:
        raise Forbidden("this needs the support role")
    return user


SupportUser = Annotated[Principal, Depends(support_user)]


@dataclass(frozen=True)
class ResellerAccess:
    user: Principal
    reseller: Reseller

    @property
    def org_id(self) -> str:
        return self.reseller.org_id


def reseller_admin(org_id: str, user: CurrentUser, ledger: LedgerDep) -> ResellerAccess:
    if not user.is_admin_of(org_id):
        raise Forbidden(f"you are not an administrator of {org_id}")
    return ResellerAccess(user, ledger.enabled_reseller(org_id))


ResellerAdmin = Annotated[ResellerAccess, Depends(reseller_admin)]


async def idempotency_key(
    request: Request,
    key: Annotated[str | None, Header(alias="Idempotency-Key",
                                      description="Retries with the same key and body get the first answer")] = None,
) -> IdempotencyKey | None:
    if key is None:
        return None
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, RecursionError):  # the route's own parsing reports a bad body; this only fingerprints it
        body = raw.decode("utf-8", "replace")
    path = request.url.path
    org_id = request.path_params.get("org_id")
    scope = f"reseller:{org_id}" if org_id and not path.startswith("/v1/support/") else "support"
    return IdempotencyKey.for_request(scope, key, request.method, path, body)


Idempotency = Annotated[IdempotencyKey | None, Depends(idempotency_key)]
