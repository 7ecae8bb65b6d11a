"""Price quotes. A quote is signed rather than stored: it names what was priced (the request and
the version of the subscription it was priced on), the instant it fixes for proration and the total.
Confirming it re-prices at that instant and refuses if anything moved."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from commands.errors import QuoteStale
from ledger.errors import ValidationFailed

QUOTE_LIFETIME = timedelta(minutes=15)
_PREFIX = "qt_"


@dataclass(frozen=True)
class Quote:
    org_id: str
    subject: str
    """What was priced: ``create:<canonical order>`` or ``seats:<subscription id>:<seats>``."""
    basis_version: int
    priced_at: datetime
    total_cents: int


class QuoteSigner:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def issue(self, quote: Quote) -> str:
        payload = json.dumps(
            [quote.org_id, quote.subject, quote.basis_version, int(quote.priced_at.timestamp()), quote.total_cents],
            separators=(",", ":"),
        ).encode()
        body = base64.urlsafe_b64encode(payload).rstrip(b"=")
        return _PREFIX + body.decode() + "." + self._sign(body)

    def redeem(self, quote_id: str, *, org_id: str, subject: str, basis_version: int, now: datetime) -> Quote:
        """The quote, if it is one of ours, for this request and basis, and not expired."""
        quote = self._read(quote_id)
        if quote.org_id != org_id or quote.subject != subject:
            raise QuoteStale("the quote was issued for a different request")
        if now - quote.priced_at > QUOTE_LIFETIME:
            raise QuoteStale("the quote has expired (quotes are valid for 15 minutes); preview again")
        if quote.basis_version != basis_version:
            raise QuoteStale("the subscription changed after the quote was issued; preview again")
        return quote

    def _read(self, quote_id: str) -> Quote:
        invalid = ValidationFailed("quote_id", "quote_id is not a quote issued by this ledger")
        if not isinstance(quote_id, str) or not quote_id.startswith(_PREFIX) or "." not in quote_id:
            raise invalid
        body, signature = quote_id[len(_PREFIX):].rsplit(".", 1)
        if not hmac.compare_digest(self._sign(body.encode()).encode(), signature.encode()):
            raise invalid
        try:
            org_id, subject, basis_version, priced_at, total = json.loads(
                base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            )
        except (ValueError, TypeError):  # a signed body always parses; this guards against a leaked secret
            raise invalid from None
        return Quote(org_id, subject, basis_version, datetime.fromtimestamp(priced_at, UTC), total)

    def _sign(self, body: bytes) -> str:
        digest = hmac.new(self._secret, body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).rstrip(b"=").decode()


def order_subject(fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return "create:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def seats_subject(subscription_id: object, seats: int) -> str:
    return f"seats:{subscription_id}:{seats}"
