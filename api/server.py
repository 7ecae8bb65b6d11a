"""How `ledger serve` runs the API under uvicorn, with every wait on a client bounded, so that slow or idle
clients cannot hold a worker's connections.

uvicorn bounds by itself the idle time between two requests on a kept-alive connection
(``timeout_keep_alive``) and how many connections and requests a worker holds (``limit_concurrency``:
beyond it, 503). It does not bound a connection that opens and sends nothing, or that dribbles its header a
byte at a time (it arms its keep-alive timer only after an answer and cancels it on any byte), nor the size
of a header (httptools buffers a header value of any length). ``HeaderDeadlineProtocol`` bounds both. A
body that trickles, or is too large, is bounded by ``api.limits`` inside the application.

An answer given before the request was read to its end (413, 431, a route that never read the body) closes
the connection in stages (RFC 9112 9.6): closing a socket whose receive buffer holds unread bytes makes the
kernel send a TCP reset, and a client still sending its body then gets "connection reset" on its next send,
before it reads the answer, or loses the answer from its receive buffer. So the server first shuts down its
writing side (the answer and a FIN go out) and stops reading, and closes ``LINGER_SECONDS`` later: time for
the client to read the answer and stop. It reads nothing more meanwhile (the kernel's buffers take what they
hold, then the client's sends wait), so a refused body is still not read.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import Settings

MAX_HEADER_BYTES = 64 * 1024
"""The request line and the header together; a bearer token with many organizations stays far below."""
HEADER_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"content-length: 25\r\nconnection: close\r\n\r\nrequest header too large\n")
LINGER_SECONDS = 1.0
"""How long a connection closed in stages stays open, not read, after its answer and FIN went out."""


class _StagedCloseTransport:
    """The connection's transport as uvicorn sees it: ``close()`` while the request is not read to its end
    closes in stages; while it lingers, the connection is closing to uvicorn."""

    def __init__(self, transport: asyncio.Transport, protocol: HeaderDeadlineProtocol) -> None:
        self._transport, self._protocol = transport, protocol
        self.lingering = False
        self._deadline: asyncio.TimerHandle | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self._protocol.request_unread() and not self.is_closing():
            self.close_in_stages()
        else:
            self._transport.close()

    def close_in_stages(self) -> None:
        if self.is_closing():
            return
        if not self._transport.can_write_eof():
            self._transport.close()
            return
        self.lingering = True
        self._transport.write_eof()  # the FIN follows what is still buffered
        self._transport.pause_reading()
        self._deadline = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._transport.close)

    def stop(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline on each request's header, counted from the connection's
    opening or from the end of the previous answer, and a bound on the header's size."""

    def __init__(self, *args: Any, header_timeout_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_seconds = header_timeout_seconds
        self._header_deadline: asyncio.TimerHandle | None = None
        self._reading_header = False
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, _StagedCloseTransport(transport, self)))
        self._await_header()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_deadline()
        cast(_StagedCloseTransport, self.transport).stop()
        super().connection_lost(exc)

    def request_unread(self) -> bool:
        """Whether the client may still be sending the current request: its header or its body."""
        return self._reading_header or (self.cycle is not None and self.cycle.more_body)

    def data_received(self, data: bytes) -> None:
        if cast(_StagedCloseTransport, self.transport).lingering:
            return  # read in the same pass as the answer's bytes: thrown away
        # Counted from the piece after the one where the request began: never more than the header's size.
        if self._reading_header:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._reading_header and self._header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
            self._stop_header_deadline()
            self.transport.write(HEADER_TOO_LARGE)
            cast(_StagedCloseTransport, self.transport).close_in_stages()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_header = True
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        self._reading_header = False
        self._stop_header_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # When a pipelined request, already parsed, is being answered, no header is awaited yet.
        if self.cycle.response_complete and not self.transport.is_closing():
            self._await_header()

    def _await_header(self) -> None:
        self._stop_header_deadline()
        self._header_deadline = self.loop.call_later(self._header_timeout_seconds, self._header_too_slow)

    def _stop_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.run's keywords for the settings' bounds (a partial, not a closure, so that worker processes
    can unpickle it)."""
    return {
        "http": functools.partial(HeaderDeadlineProtocol, header_timeout_seconds=settings.header_timeout_seconds),
        "timeout_keep_alive": settings.keep_alive_seconds,
        "limit_concurrency": settings.max_connections,
        # Logging is the service's (service.logs, set up by each process): uvicorn's own set-up would replace
        # it, and the API writes its own line per request, with the request id.
        "log_config": None,
        "access_log": False,
    }
