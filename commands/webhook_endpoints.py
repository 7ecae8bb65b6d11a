"""Commands on webhook endpoints, their signing secrets, and the rule on where webhooks may go.

The signing secret of an endpoint is derived, never stored: ``whsec_`` + HMAC-SHA256(key, endpoint id and
the random salt its last registration or roll recorded). The key is the service's own (derived from
``LEDGER_QUOTE_SECRET``, or from the generated development secret), so the log, exports and histories,
which show the salt, hold nothing that signs; whoever changes that key changes every endpoint's secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from commands.errors import NotFound
from commands.handlers import Ledger, Outcome, _Attempt
from commands.idempotency import IdempotencyKey
from ledger.errors import ValidationFailed
from ledger.webhook_endpoint import LONGEST_DESCRIPTION, LONGEST_URL, WebhookEndpoint

WEBHOOKS_ACTOR = "system:webhooks"

Resolver = Callable[[str, int], list[str]]


class WebhookSecrets:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @staticmethod
    def new_salt() -> str:
        return secrets.token_hex(16)

    def secret(self, endpoint_id: UUID, salt: str) -> str:
        digest = hmac.new(self._key, f"{endpoint_id}/{salt}".encode(), hashlib.sha256).digest()
        return "whsec_" + base64.b32encode(digest).decode().rstrip("=").lower()


def system_resolver(host: str, port: int) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)})


def forbidden_address(address: str) -> str | None:
    """Why webhooks may not go to this address (loopback, link-local, private ...), or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for reason, test in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                         ("private", ip.is_private), ("multicast", ip.is_multicast),
                         ("unspecified", ip.is_unspecified), ("reserved", ip.is_reserved),
                         ("not globally routable", not ip.is_global)):
        if test:
            return reason
    return None


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str
    port: int
    addresses: list[str]
    """Resolved and checked: connect to one of these, never resolve the host again."""


class UrlGuard:
    """Where webhooks may go: http(s) URLs whose host resolves only to public addresses, unless private
    ones are allowed (``LEDGER_WEBHOOKS_ALLOW_PRIVATE``). Checked at registration and again before every
    delivery, which connects to the address checked (a name that now resolves elsewhere cannot redirect it)."""

    def __init__(self, *, allow_private: bool = False, resolve: Resolver = system_resolver) -> None:
        self.allow_private = allow_private
        self.resolve = resolve

    def check_form(self, url: str) -> tuple[str, str, int]:
        if len(url) > LONGEST_URL:
            raise ValidationFailed("url", f"url: at most {LONGEST_URL} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValidationFailed("url", "url: not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationFailed("url", "url: an http:// or https:// URL with a host is needed")
        if parts.username is not None or parts.password is not None:
            raise ValidationFailed("url", "url: credentials in the URL are refused; authenticate with the signature")
        if parts.fragment:
            raise ValidationFailed("url", "url: a fragment is never sent; leave it out")
        return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)

    def destination(self, url: str) -> Destination:
        scheme, host, port = self.check_form(url)
        try:
            addresses = self.resolve(host, port)
        except (OSError, UnicodeError) as error:
            raise ValidationFailed("url", f"url: {host} does not resolve ({error})") from None
        if not addresses:
            raise ValidationFailed("url", f"url: {host} does not resolve")
        if not self.allow_private:
            for address in addresses:
                if (why := forbidden_address(address)) is not None:
                    raise ValidationFailed("url", f"url: {host} resolves to {address}, a {why} address; webhooks go "
                                                  "to public addresses only")
        return Destination(scheme, host, port, addresses)


@dataclass(frozen=True)
class Registered:
    outcome: Outcome[WebhookEndpoint]
    secret: str


class WebhookEndpoints:
    """Register, roll, delete and disable endpoints, through the ledger's command runner (locks,
    idempotency keys, retries on a conflict)."""

    def __init__(self, ledger: Ledger, secrets_: WebhookSecrets, guard: UrlGuard) -> None:
        self.ledger = ledger
        self.secrets = secrets_
        self.guard = guard

    def register(self, org_id: str, *, url: str, event_types: list[str], description: str | None, actor: str,
                 idempotency: IdempotencyKey | None = None) -> Registered:
        if description is not None and len(description) > LONGEST_DESCRIPTION:
            raise ValidationFailed("description", f"description: at most {LONGEST_DESCRIPTION} characters")
        request = (f"/idempotency/{idempotency.record_id}/{idempotency.fingerprint}" if idempotency
                   else f"/requests/{uuid4()}")
        endpoint_id = uuid5(NAMESPACE_URL, f"{request}/webhook-endpoint")

        def work(attempt: _Attempt) -> WebhookEndpoint:
            self.ledger.enabled_reseller(org_id)
            self.guard.destination(url)
            return WebhookEndpoint.register(endpoint_id, reseller_org_id=org_id, url=url, event_types=event_types,
                                            description=description, secret_salt=self.secrets.new_salt(),
                                            at=attempt.at, actor=attempt.actor)

        outcome = self.ledger._execute(work, actor=actor, idempotency=idempotency)
        return Registered(outcome, self.secret_of(outcome.aggregate))

    def roll_secret(self, org_id: str, endpoint_id: UUID, *, actor: str,
                    idempotency: IdempotencyKey | None = None) -> Registered:
        def work(attempt: _Attempt) -> WebhookEndpoint:
            self.ledger.enabled_reseller(org_id)
            endpoint = self.endpoint(org_id, endpoint_id)
            endpoint.roll_secret(secret_salt=self.secrets.new_salt(), at=attempt.at, actor=attempt.actor)
            return endpoint

        outcome = self.ledger._execute(work, actor=actor, locks=[f"webhook-endpoint:{endpoint_id}"],
                                       idempotency=idempotency)
        return Registered(outcome, self.secret_of(outcome.aggregate))

    def delete(self, org_id: str, endpoint_id: UUID, *, actor: str) -> Outcome[WebhookEndpoint]:
        def work(attempt: _Attempt) -> WebhookEndpoint:
            self.ledger.enabled_reseller(org_id)
            endpoint = self.endpoint(org_id, endpoint_id)
            endpoint.delete(at=attempt.at, actor=attempt.actor)
            return endpoint

        return self.ledger._execute(work, actor=actor, locks=[f"webhook-endpoint:{endpoint_id}"])

    def disable(self, endpoint_id: UUID, *, reason: str, failing_since: datetime,
                actor: str = WEBHOOKS_ACTOR) -> Outcome[WebhookEndpoint]:
        """The endpoint has failed too long: stop sending to it, and name who is told (the reseller's
        billing email, when it has one; the mail goes out from the webhook outbox)."""

        def work(attempt: _Attempt) -> WebhookEndpoint:
            endpoint = self.ledger._get(endpoint_id, WebhookEndpoint)
            reseller = self.ledger.find_reseller(endpoint.reseller_org_id)
            endpoint.disable(reason=reason, failing_since=failing_since,
                             notified_email=reseller.billing_email if reseller else None, at=attempt.at,
                             actor=attempt.actor)
            return endpoint

        return self.ledger._execute(work, actor=actor, locks=[f"webhook-endpoint:{endpoint_id}"])

    def endpoint(self, org_id: str, endpoint_id: UUID) -> WebhookEndpoint:
        """An endpoint of this reseller; another reseller's is not found."""
        endpoint = self.ledger._get(endpoint_id, WebhookEndpoint)
        if endpoint.reseller_org_id != org_id:
            raise NotFound(f"no webhook endpoint {endpoint_id}")
        return endpoint

    def secret_of(self, endpoint: WebhookEndpoint) -> str:
        return self.secrets.secret(endpoint.id, endpoint.secret_salt)
