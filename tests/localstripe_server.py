"""Runs localstripe, an offline Stripe emulator (GPL, a test-only dependency), in a child process.

It listens on 127.0.0.1 only (the stock CLI binds every interface) and keeps its store in memory
(the stock CLI re-pickles the whole store to a shared /tmp file on every write).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

# The child binds port 0 itself and reports the port it got, so two runs never race for a port.
_CHILD = """
import asyncio
import os
import socket
import sys
from aiohttp import web
from localstripe import resources
from localstripe.server import app

resources.Store.dump_to_disk = lambda self: None
latency = float(sys.argv[1])
if latency:
    @web.middleware
    async def far_away(request, handler):
        await asyncio.sleep(latency)
        return await handler(request)
    app.middlewares.append(far_away)
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
os.dup2(2, 1)  # nothing more on the pipe: nobody reads it
web.run_app(app, sock=sock, print=None, access_log=None)
"""


@dataclass
class LocalStripe:
    process: subprocess.Popen[str]
    url: str

    def reset(self) -> None:
        """Forget every object (customers, payment methods, charges...)."""
        request = urllib.request.Request(f"{self.url}/_config/data", method="DELETE")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


def start(timeout_seconds: float = 20, *, latency_seconds: float = 0.0) -> LocalStripe:
    """localstripe, answering each request ``latency_seconds`` later than it would (a benchmark's stand-in for
    the round trip to Stripe; the requests wait side by side, as at a remote server)."""
    process = subprocess.Popen([sys.executable, "-c", _CHILD, str(latency_seconds)], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"localstripe did not start (exit code {process.wait(timeout=5)})")
        port = int(line)
        _wait_for_port(process, port, time.monotonic() + timeout_seconds)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return LocalStripe(process, f"http://127.0.0.1:{port}")


def _wait_for_port(process: subprocess.Popen[str], port: int, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"localstripe exited with code {process.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"localstripe did not listen on port {port} in time") from None
            time.sleep(0.05)
