"""Request bodies bounded in size and in time before any route sees them: an unauthenticated 100 MB POST
once took a worker from 95 MB to 504 MB, and a body that trickles would hold a worker as long as the
client liked. A pure ASGI middleware, so that it bounds every route, the Stripe webhook included, and reads
nothing itself."""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem


class RequestLimits:
    """A declared Content-Length over ``max_body_bytes`` is answered 413 at once, without reading a byte of
    the body; a body without one (chunked) is counted as it streams and refused when it passes the limit.
    A wait of more than ``body_timeout_seconds`` for the next piece of a body is answered 408. Refusals
    raised while a route reads the body become problems through the app's error handlers."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout_seconds: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = _declared_length(headers)
        if declared is not None and declared > self.max_body_bytes:
            answer = problem(413, "payload_too_large", _too_large(self.max_body_bytes), {"Connection": "close"})
            await answer(scope, receive, send)
            return
        body = _BoundedBody(receive, send, self.max_body_bytes, self.body_timeout_seconds,
                            announced=bool(declared) or "transfer-encoding" in headers)
        await self.app(scope, body.receive, body.send)


class _BoundedBody:
    """One request's body, as the app reads it. An answer given before the body was read to its end closes
    the connection: the server would otherwise go on reading, and throwing away, whatever the client sends."""

    def __init__(self, receive: Receive, send: Send, max_bytes: int, timeout_seconds: float, *,
                 announced: bool) -> None:
        self._receive, self._send = receive, send
        self._max_bytes, self._timeout_seconds = max_bytes, timeout_seconds
        self._received = 0
        self._complete = not announced

    async def receive(self) -> Message:
        if self._complete:  # what follows the body is a disconnect, which may rightly be awaited for long
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), self._timeout_seconds)
        except TimeoutError:
            raise HTTPException(408, f"no part of the request body arrived for {self._timeout_seconds:g} s") from None
        if message["type"] != "http.request":
            self._complete = True
            return message
        self._received += len(message.get("body", b""))
        if self._received > self._max_bytes:
            raise HTTPException(413, _too_large(self._max_bytes))
        self._complete = not message.get("more_body", False)
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and not self._complete:
            message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await self._send(message)


def _too_large(max_bytes: int) -> str:
    return f"the request body is larger than {max_bytes} bytes"


def _declared_length(headers: Headers) -> int | None:
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None
