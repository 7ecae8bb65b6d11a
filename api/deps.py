"""Dependencies of the routes, as Annotated aliases.

FastAPI runs a plain ``def`` dependency in its thread pool: a hand-off to a worker thread and back for each,
which costs more than the work of the small ones. Those that only look at the request or compute (the
services, the token check, the parameters' text) are ``async def`` and run on the event loop; those that
read a store stay ``def``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.docs import may_answer
from api.security import Principal, verify
from api.text import unstorable
from commands.errors import Forbidden
from commands.handlers import Ledger
from commands.idempotency import IdempotencyKey
from ledger.errors import ValidationFailed
from ledger.reseller import Reseller
from service.bootstrap import Services
from service.tokens import TokenKeys


@may_answer("validation_error")
async def storable_parameters(request: Request) -> None:
    """Path and query strings reach the stores and the logs as body text does: the same rule, for every
    route, before the route's own dependencies run."""
    for name, value in (*request.path_params.items(), *request.query_params.multi_items()):
        if why := unstorable(name) or unstorable(str(value)):
            raise ValidationFailed(name, f"{name} {why}")


async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_ledger(services: ServicesDep) -> Ledger:
    return services.ledger


LedgerDep = Annotated[Ledger, Depends(get_ledger)]


async def get_token_keys(request: Request) -> TokenKeys:
    return request.app.state.token_keys


BEARER = HTTPBearer(scheme_name="bearer", bearerFormat="JWT", auto_error=False,
                    description="A JWT: `sub`, `email`, `orgs` ([{id, role: admin|member}]), optional "
                                "`roles` ([\"support\"]); HS256 or RS256 as the deployment is configured")
"""Declares the bearer scheme in the OpenAPI (Swagger UI's Authorize); the token itself is verified below."""


@may_answer("unauthenticated")
async def current_user(
    keys: Annotated[TokenKeys, Depends(get_token_keys)],
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    return verify(authorization, keys)


CurrentUser = Annotated[Principal, Depends(current_user)]


@may_answer("forbidden")
async def support_user(user: CurrentUser) -> Principal:
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


@may_answer("forbidden")
def reseller_admin(org_id: str, user: CurrentUser, ledger: LedgerDep) -> ResellerAccess:
    if not user.is_admin_of(org_id):
        raise Forbidden(f"you are not an administrator of {org_id}")
    return ResellerAccess(user, ledger.enabled_reseller(org_id))


ResellerAdmin = Annotated[ResellerAccess, Depends(reseller_admin)]


@may_answer("idempotency_conflict")
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


@may_answer("validation_error", "projection_lagging")
def read_your_writes_position(
    services: ServicesDep,
    after: Annotated[int | None, Query(ge=0, description="Wait (up to 5 s) until the view includes this log "
                                                         "position: the X-Ledger-Position of your last change. A "
                                                         "position past the head of the log is 422")] = None,
) -> int | None:
    """A position past the head of the event log names no change yet made: it is refused at once rather
    than waited for (which held a worker 5 s for a 503)."""
    if after is not None:
        head = services.read_side.log.head()
        if after > head:
            raise ValidationFailed("after", f"after: position {after} is beyond the head of the event log ({head})")
    return after


After = Annotated[int | None, Depends(read_your_writes_position)]
