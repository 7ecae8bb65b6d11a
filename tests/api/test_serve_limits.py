"""`ledger serve` as a client meets it, over raw sockets: a huge body is refused before it is read, and a
connection that is idle, silent, or dribbles its header is closed on time."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.processes import serving

pytestmark = pytest.mark.e2e

KEEP_ALIVE_SECONDS = 1
HEADER_TIMEOUT_SECONDS = 2
HUNDRED_MB = 100 * 1024 * 1024
Server = tuple[str, int, subprocess.Popen[str]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``ledger serve`` with short timeouts, its Stripe webhook route taking (and reading) bodies."""
    env = {"LEDGER_DATA_DIR": str(tmp_path_factory.mktemp("serve") / "data"), "LEDGER_SANDBOX_DATA": "false",
           "LEDGER_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE_SECONDS),
           "LEDGER_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_SECONDS), "LEDGER_PAYMENTS": "stripe",
           "LEDGER_STRIPE_SECRET_KEY": "sk_test_e2e", "LEDGER_STRIPE_WEBHOOK_SECRET": "whsec_e2e"}
    with serving(env) as (base, process):
        yield "127.0.0.1", int(base.rsplit(":", 1)[1]), process


def connect(server: Server) -> socket.socket:
    host, port, _ = server
    return socket.create_connection((host, port), timeout=10)


def rss_bytes(process: subprocess.Popen[str]) -> int:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def read_answer(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def read_response(connection: socket.socket, received: bytes = b"") -> bytes:
    """One response, whose body has a Content-Length, of which ``received`` are the first bytes: what arrived
    of it if the server closes before its end."""

    def more() -> bytes:
        if not (chunk := connection.recv(65536)):
            raise EOFError
        return chunk

    with contextlib.suppress(EOFError):
        while b"\r\n\r\n" not in received:
            received += more()
        head, _, body = received.partition(b"\r\n\r\n")
        fields = dict(line.split(b":", 1) for line in head.lower().split(b"\r\n")[1:])
        length = int(fields[b"content-length"])
        while len(body) < length:
            body += more()
        return head + b"\r\n\r\n" + body
    return received


def send_until_answered(connection: socket.socket, pieces: Iterator[bytes]) -> tuple[int, bytes]:
    """Send piece after piece until the server answers or closes the connection: how many bytes were sent,
    and the answer, read to its end (its head and body may come in separate pieces)."""
    sent = 0
    connection.settimeout(0.02)
    for piece in pieces:
        try:
            answer = connection.recv(65536)
        except TimeoutError:
            pass
        else:
            if not answer:
                return sent, b""  # closed without an answer
            connection.settimeout(10)
            return sent, read_response(connection, answer)
        try:
            connection.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return sent, b""
        sent += len(piece)
    raise AssertionError(f"all {sent} bytes were taken without an answer")


def seconds_until_closed(connection: socket.socket, *, dribble: bytes = b"") -> float:
    """How long until the server closes the connection, sending a byte of ``dribble`` every 0.2 s meanwhile."""
    started = time.monotonic()
    connection.settimeout(0.2)
    while time.monotonic() - started < 15:
        try:
            if connection.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            if dribble:
                connection.sendall(dribble[:1])
                dribble = dribble[1:]
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
    raise AssertionError("the server kept the connection open for 15 s")


def test_a_declared_100_mb_body_is_refused_at_once_and_never_read(server: Server) -> None:
    _, _, process = server
    before = rss_bytes(process)
    sent = 0
    with connect(server) as connection:
        started = time.monotonic()
        connection.sendall(b"POST /v1/webhooks/stripe HTTP/1.1\r\nHost: ledger\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n" % HUNDRED_MB)
        answer = read_answer(connection)  # the server answers, and closes, without waiting for the body
        elapsed = time.monotonic() - started
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < HUNDRED_MB:
                connection.sendall(b" " * 1024 * 1024)
                sent += 1024 * 1024

    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"application/problem+json" in answer and b'"code":"payload_too_large"' in answer
    assert elapsed < 2
    assert sent < 8 * 1024 * 1024, "the server went on reading the body"
    assert rss_bytes(process) - before < 10 * 1024 * 1024


def test_a_chunked_body_is_refused_once_past_the_limit_not_read_to_its_end(server: Server) -> None:
    _, _, process = server
    before = rss_bytes(process)
    piece = b" " * 65536
    with connect(server) as connection:
        connection.sendall(b"POST /v1/webhooks/stripe HTTP/1.1\r\nHost: ledger\r\nContent-Type: application/json\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n")
        sent, answer = send_until_answered(connection, (b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(1600)))

    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"connection: close" in answer.lower() and b'"code":"payload_too_large"' in answer
    assert sent < 8 * 1024 * 1024, "the server went on reading the body"
    assert rss_bytes(process) - before < 10 * 1024 * 1024


def test_a_body_left_unread_by_an_early_answer_is_not_read_afterwards(server: Server) -> None:
    """A route that answers without reading the body (here: no such route) closes the connection, rather than
    read and throw away whatever the client goes on sending."""
    piece = b" " * 65536
    with connect(server) as connection:
        connection.sendall(b"POST /v1/nowhere HTTP/1.1\r\nHost: ledger\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent, answer = send_until_answered(connection, (b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(1600)))
        rest = seconds_until_closed(connection)

    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
    assert b"connection: close" in answer.lower()
    assert sent < 8 * 1024 * 1024 and rest < 1


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(server: Server) -> None:
    with connect(server) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: ledger\r\n\r\n")
        assert read_response(connection).startswith(b"HTTP/1.1 200 ")

        waited = seconds_until_closed(connection)

    assert KEEP_ALIVE_SECONDS - 0.3 <= waited < KEEP_ALIVE_SECONDS + 1


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(server: Server) -> None:
    with connect(server) as connection:
        waited = seconds_until_closed(connection)

    assert HEADER_TIMEOUT_SECONDS - 0.3 <= waited < HEADER_TIMEOUT_SECONDS + 1.5


def test_a_header_dribbled_a_byte_at_a_time_is_cut_off_after_the_header_timeout(server: Server) -> None:
    with connect(server) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: ledger\r\n")

        waited = seconds_until_closed(connection, dribble=b"X-Slow: " + b"a" * 200)

    assert HEADER_TIMEOUT_SECONDS - 0.3 <= waited < HEADER_TIMEOUT_SECONDS + 1.5


def test_a_header_larger_than_64_kib_is_refused(server: Server) -> None:
    with connect(server) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: ledger\r\nX-Padding: ")
        sent, answer = send_until_answered(connection, (b"a" * 4096 for _ in range(256)))

    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert sent < 1024 * 1024


def test_a_client_that_keeps_asking_keeps_its_connection(server: Server) -> None:
    """The header deadline starts again after each answer: one connection serves request after request for
    longer than the deadline."""
    started = time.monotonic()
    with connect(server) as connection:
        while time.monotonic() - started < 2 * HEADER_TIMEOUT_SECONDS:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: ledger\r\n\r\n")
            assert read_response(connection).startswith(b"HTTP/1.1 200 ")
            time.sleep(KEEP_ALIVE_SECONDS / 2)
