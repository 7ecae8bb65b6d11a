"""Bearer tokens: which keys verify them, and minting development tokens."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from service.settings import Settings, SettingsError


@dataclass(frozen=True)
class TokenKeys:
    algorithm: str
    verify_key: Any
    signing_key: Any | None
    issuer: str | None
    audience: str | None


def token_keys(settings: Settings, development_secret: bytes) -> TokenKeys:
    if settings.jwt_public_key:
        key = settings.jwt_public_key
        if not key.lstrip().startswith("-----BEGIN"):
            try:
                with open(key) as pem:
                    key = pem.read()
            except OSError as error:
                raise SettingsError(
                    f"LEDGER_JWT_PUBLIC_KEY: not a PEM key nor a readable file: {error.strerror}") from None
        try:
            verify_key = jwt.algorithms.RSAAlgorithm.from_jwk(key) if key.lstrip().startswith("{") else \
                jwt.api_jws.get_algorithm_by_name("RS256").prepare_key(key)
        except (ValueError, TypeError, jwt.InvalidKeyError) as error:
            raise SettingsError(f"LEDGER_JWT_PUBLIC_KEY: not an RSA public key: {error}") from None
        return TokenKeys("RS256", verify_key, None, settings.jwt_issuer, settings.jwt_audience)
    secret = settings.jwt_secret.get_secret_value().encode() if settings.jwt_secret else development_secret
    return TokenKeys("HS256", secret, secret, settings.jwt_issuer, settings.jwt_audience)


def mint(keys: TokenKeys, *, sub: str, email: str, orgs: list[dict[str, str]], roles: list[str],
         ttl_seconds: int, signing_key: Any | None = None) -> str:
    key = signing_key if signing_key is not None else keys.signing_key
    if key is None:
        raise SettingsError("tokens are verified with an RS256 public key: give the private key (--private-key)")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "email": email, "orgs": orgs, "iat": now, "exp": now + ttl_seconds}
    if roles:
        claims["roles"] = roles
    if keys.issuer:
        claims["iss"] = keys.issuer
    if keys.audience:
        claims["aud"] = keys.audience
    return jwt.encode(claims, key, algorithm=keys.algorithm)
