"""Commands per second: create a subscription, and increase its seats by one, in this process (one
client calling the command handlers) and through HTTP (`ledger serve` in its own process, 1 and 4
client threads).

    python bench/commands.py [--backend sqlite|postgres|both] [--quick]
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from uuid import UUID

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the project, not bench/ (this file would shadow `commands`)

import httpx

from bench import common
from tests import localstripe_server

COMMANDS, QUICK_COMMANDS = 2000, 100
CLIENTS = (1, 4)
LEDGER = [sys.executable, "-m", "cli"]
T = TypeVar("T")
R = TypeVar("R")


def in_process(backend: str, n: int, mode: str = "in-process, 1 client", **settings: str) -> None:
    with common.deployment(backend, **settings) as services:
        ledger = services.ledger
        start = time.perf_counter()
        ids = [ledger.create_subscription(common.ORG, common.org_order(i), actor=common.ACTOR).aggregate.id
               for i in range(n)]
        common.show(common.rate("create subscription", backend, mode, n, time.perf_counter() - start))
        start = time.perf_counter()
        for subscription_id in ids:
            ledger.change_seats(common.ORG, subscription_id, 2, actor=common.ACTOR)
        common.show(common.rate("seat increase (+1)", backend, mode, n, time.perf_counter() - start))


def in_process_concurrently(backend: str, n: int, callers: int = 16) -> None:
    """Many callers at once (as the API's worker threads are): their saves share commits (group commit)."""
    with common.deployment(backend) as services:
        ledger = services.ledger
        mode = f"in-process, {callers} callers"

        def create(i: int) -> UUID:
            return ledger.create_subscription(common.ORG, common.org_order(i), actor=common.ACTOR).aggregate.id

        with ThreadPoolExecutor(callers) as pool:
            start = time.perf_counter()
            ids = list(pool.map(create, range(n)))
            common.show(common.rate("create subscription", backend, mode, n, time.perf_counter() - start))
            start = time.perf_counter()
            list(pool.map(lambda i: ledger.change_seats(common.ORG, i, 2, actor=common.ACTOR), ids))
            common.show(common.rate("seat increase (+1)", backend, mode, n, time.perf_counter() - start))


def with_stripe_adapter(backend: str, n: int) -> None:
    """The Stripe adapter (the official SDK, over HTTP) against localstripe on loopback: a reference
    figure, localstripe being slow; real Stripe adds an internet round trip per charge."""
    server = localstripe_server.start()
    try:
        in_process(backend, n, "stripe SDK -> localstripe", LEDGER_PAYMENTS="stripe",
                   LEDGER_STRIPE_SECRET_KEY="sk_test_bench", LEDGER_STRIPE_API_BASE=server.url)
    finally:
        server.stop()


# --- through HTTP ---------------------------------------------------------------------------------


def ledger_command(env: dict[str, str], *args: str) -> str:
    """Run `ledger ARGS` like an operator would, with only these LEDGER_* settings; its output."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("LEDGER_")}
    done = subprocess.run([*LEDGER, *args], env={**clean, **env}, cwd=common.ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ledger {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(env: dict[str, str], workers: int) -> Iterator[str]:
    """`ledger serve` on a free loopback port, its log in the data dir; yields its base URL."""
    port = free_port()
    clean = {key: value for key, value in os.environ.items() if not key.startswith("LEDGER_")}
    log_path = Path(env["LEDGER_DATA_DIR"]) / f"serve-{port}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([*LEDGER, "serve", "--port", str(port), "--workers", str(workers)],
                                   env={**clean, **env}, cwd=common.ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _healthy(base):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ledger serve did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def in_threads(clients: int, tasks: Sequence[T], base: str, token: str,
               call: Callable[[httpx.Client, T], R]) -> tuple[float, list[R]]:
    """Deal the tasks round-robin to ``clients`` threads, each with its own HTTP connection, start them
    together; the seconds until all are done, and the results (in no particular order)."""
    ready = threading.Barrier(clients + 1)

    def work(k: int) -> list[R]:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            client.get("/healthz")  # connect before the clock starts
            ready.wait()
            return [call(client, task) for task in tasks[k::clients]]

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(work, k) for k in range(clients)]
        ready.wait()
        start = time.perf_counter()
        results = [result for future in futures for result in future.result()]
        seconds = time.perf_counter() - start
    return seconds, results


def create(client: httpx.Client, i: int) -> UUID:
    order = common.org_order(i)
    response = client.post(f"/v1/resellers/{common.ORG}/subscriptions", json={
        "plan": order.plan, "billing_cycle": order.billing_cycle, "seats": order.seats,
        "organization_name": order.organization_name, "admin_email": order.admin_email})
    response.raise_for_status()
    return UUID(response.json()["id"])


def increase(client: httpx.Client, subscription_id: UUID) -> None:
    response = client.post(f"/v1/resellers/{common.ORG}/subscriptions/{subscription_id}/seats", json={"seats": 2})
    response.raise_for_status()


def over_http(backend: str, n: int, workers: int) -> None:
    with common.ledger_env(backend) as env:
        ledger_command(env, "support", "enable-reseller", common.ORG, "--name", "Bench Reseller")
        token = ledger_command(env, "token", "--org", common.ORG).strip()
        with serving(env, workers) as base:
            billing = httpx.put(f"{base}/v1/resellers/{common.ORG}/billing",
                                headers={"Authorization": f"Bearer {token}"},
                                json={"payment_method": "pm_card_visa", "billing_email": "billing@bench.example",
                                      "country": "DE"})
            billing.raise_for_status()
            server = f"{workers} worker{'s' if workers > 1 else ''}"
            for round_, clients in enumerate(CLIENTS):
                mode = f"http, {clients} client{'s' if clients > 1 else ''}, {server}"
                seconds, ids = in_threads(clients, range(round_ * n, (round_ + 1) * n), base, token, create)
                common.show(common.rate("create subscription", backend, mode, n, seconds))
                seconds, _ = in_threads(clients, ids, base, token, increase)
                common.show(common.rate("seat increase (+1)", backend, mode, n, seconds))


def main() -> int:
    options = common.options(__doc__ or "")
    n = QUICK_COMMANDS if options.quick else COMMANDS
    common.header(f"commands per second, {n} of each per configuration{' (quick sizes)' if options.quick else ''}")
    for backend in options.backends:
        in_process(backend, n)
        in_process_concurrently(backend, n)
        for workers in (1, 2) if backend == "postgres" else (1,):
            over_http(backend, n, workers)
        with_stripe_adapter(backend, max(n // 10, 10))
    return 0


if __name__ == "__main__":
    sys.exit(main())
