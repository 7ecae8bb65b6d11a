"""Who is calling: the bearer token's verified claims."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from api.text import refuse_unstorable
from service.tokens import TokenKeys

SUPPORT = "support"
ADMIN = "admin"


class Unauthenticated(Exception):
    pass


class _OrgClaim(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    role: str


class _Claims(BaseModel):
    model_config = ConfigDict(extra="ignore")
    sub: str
    email: str | None = None
    orgs: list[_OrgClaim] = []
    roles: list[str] = []

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        """``sub`` becomes the actor of every event the caller causes: it must be text the ledger can keep."""
        refuse_unstorable(value)
        return value

    @field_validator("sub")
    @classmethod
    def _someone(cls, value: str) -> str:
        """An empty or blank ``sub`` would record an event caused by nobody."""
        if not value.strip():
            raise ValueError("sub names the user: it cannot be empty")
        return value


@dataclass(frozen=True)
class Principal:
    user_id: str
    email: str | None
    org_roles: dict[str, str]
    roles: frozenset[str]

    def is_admin_of(self, org_id: str) -> bool:
        return self.org_roles.get(org_id) == ADMIN

    @property
    def is_support(self) -> bool:
        return SUPPORT in self.roles


def verify(authorization: str | None, keys: TokenKeys) -> Principal:
    if not authorization:
        raise Unauthenticated("an Authorization: Bearer token is required")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    options = {"require": ["sub", "exp"], "verify_aud": keys.audience is not None}
    try:
        claims = jwt.decode(token.strip(), keys.verify_key, algorithms=[keys.algorithm], audience=keys.audience,
                            issuer=keys.issuer, options=options, leeway=30)
        parsed = _Claims.model_validate(claims)
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("the token has expired") from None
    except jwt.InvalidTokenError as error:
        raise Unauthenticated(f"the token is not valid: {error}") from None
    except ValidationError:
        raise Unauthenticated("the token's claims are malformed (sub, email, orgs: [{id, role}], roles)") from None
    return Principal(parsed.sub, parsed.email, {org.id: org.role for org in parsed.orgs}, frozenset(parsed.roles))
