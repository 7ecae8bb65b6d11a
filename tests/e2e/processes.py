"""Running the `ledger` command as real processes, on real sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import httpx

LEDGER = [sys.executable, "-m", "cli"]
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(env: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    # Logs as a person reads them (the tests look for sentences in them); a test may ask for json.
    return {**clean, "LEDGER_LOG_FORMAT": "text", **env, "PYTHONPATH": str(ROOT)}


def run(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LEDGER, *args], env=environment(env), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


@contextmanager
def started(*args: str, env: dict[str, str], output: Path | None = None) -> Iterator[subprocess.Popen[str]]:
    """A `ledger` process, stopped on the way out. Its output goes to a pipe, or to ``output``: a process
    that logs more than a pipe holds (64 KiB) while nobody reads it blocks in its logging calls."""
    with open(output, "a") if output else nullcontext(subprocess.PIPE) as out:
        process = subprocess.Popen([*LEDGER, *args], env=environment(env), stdout=out, stderr=subprocess.STDOUT,
                                   text=True, cwd=ROOT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def serving(env: dict[str, str], *extra: str,
            output: Path | None = None) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    with started("serve", "--port", str(port), *extra, env=env, output=output) as process:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                said = process.stdout.read() if process.stdout else output.read_text() if output else ""
                raise AssertionError(f"ledger serve exited: {said}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("ledger serve did not answer within 30 s")
            time.sleep(0.1)
        yield base, process
