"""Opaque, signed pagination cursors: a cursor names the query it belongs to and the last row seen,
so a forged one, or one from another query, is refused rather than silently misread."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from ledger.errors import ValidationFailed


class CursorSigner:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def issue(self, query: dict[str, Any], last: list[Any]) -> str:
        body = base64.urlsafe_b64encode(json.dumps([self._digest(query), last]).encode()).rstrip(b"=")
        return body.decode() + "." + self._sign(body)

    def read(self, cursor: str, query: dict[str, Any]) -> list[Any]:
        """The last row's sort key, if the cursor is ours and belongs to this query."""
        body, _, signature = cursor.rpartition(".")
        if not body or not hmac.compare_digest(self._sign(body.encode()).encode(), signature.encode()):
            raise ValidationFailed("cursor", "cursor is not one this service issued")
        digest, last = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if digest != self._digest(query):
            raise ValidationFailed("cursor", "cursor belongs to a different query (filters or sort changed)")
        return list(last)

    def _sign(self, body: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._secret, body, hashlib.sha256).digest()[:18]).decode()

    @staticmethod
    def _digest(query: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(query, sort_keys=True).encode()).hexdigest()[:16]
