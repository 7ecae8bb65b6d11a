"""kill -9 under load. Several clients send creates and seat increases, each retrying a cut or refused
request with its Idempotency-Key until it is answered, while the serving processes are killed with SIGKILL
and restarted several times. Then the books are checked: every acknowledged request is in the log exactly
once, every processor charge has one billing document (``ledger reconcile`` exits 0), every read model
equals a replay of the log (``ledger replay`` exits 0).

    .venv/bin/python bench/crash_load.py [--backend sqlite|postgres|both] [--quick]

On SQLite the deployment is ``ledger serve`` alone (the embedded default); on PostgreSQL it is
``ledger serve --workers 2`` beside ``ledger projections`` and ``ledger scheduler``, and only the serving
processes are killed. tests/e2e/test_crash_load.py runs the same with small numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] == str(ROOT / "bench"):  # run as a script: the project, not bench/ (bench/http.py shadows `http`)
    sys.path[0] = str(ROOT)

import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402

from bench.common import ledger_env, options  # noqa: E402
from commands.recovery import ChargeRecovery  # noqa: E402
from ledger.charge import Charge  # noqa: E402
from ledger.invoice import Invoice  # noqa: E402
from ledger.subscription import Subscription  # noqa: E402
from service.bootstrap import Services, bootstrap  # noqa: E402
from service.settings import load_settings  # noqa: E402

ORG = "org_load"
LEDGER = [sys.executable, "-m", "cli"]
EVER = {"created_from": datetime(2000, 1, 1, tzinfo=UTC), "created_to": datetime(2100, 1, 1, tzinfo=UTC)}
REQUEST_DEADLINE = 90.0
"""How long a client keeps retrying one request before it gives up on it (and the run fails)."""


def _environment(env: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return {**clean, **env, "PYTHONPATH": str(ROOT)}


def _ledger(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LEDGER, *args], env=_environment(env), capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Deployment:
    """The ledger's processes for one backend; ``kill`` SIGKILLs the serving processes (all of uvicorn's
    process group, workers included) and ``start_serving`` brings them back on the same port."""

    def __init__(self, env: dict[str, str], backend: str) -> None:
        self.env, self.backend = env, backend
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.serving: subprocess.Popen[bytes] | None = None
        self.others: list[subprocess.Popen[bytes]] = []
        data_dir = Path(env["LEDGER_DATA_DIR"])
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(data_dir / "processes.log", "ab")  # noqa: SIM115

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*LEDGER, *args], env=_environment(self.env), cwd=ROOT, stdout=self.log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def start(self) -> None:
        if self.backend == "postgres":
            self.others = [self._spawn("projections"), self._spawn("scheduler")]
        self.start_serving()

    def start_serving(self) -> None:
        workers = ["--workers", "2"] if self.backend == "postgres" else []
        self.serving = self._spawn("serve", "--port", str(self.port), *workers)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"ledger serve did not come up; see {self.log.name}")

    def kill(self) -> None:
        assert self.serving is not None
        os.killpg(self.serving.pid, signal.SIGKILL)
        self.serving.wait()

    def stop(self) -> None:
        for process in [p for p in (self.serving, *self.others) if p is not None]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        self.log.close()


@dataclass
class Tally:
    sent: int = 0
    cut: int = 0
    unavailable: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    acked_creates: dict[str, str] = field(default_factory=dict)  # key -> subscription id
    acked_increases: Counter[str] = field(default_factory=Counter)  # subscription id -> increases answered
    abandoned: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def acks(self) -> int:
        return len(self.acked_creates) + sum(self.acked_increases.values())


@dataclass
class Figures:
    backend: str
    requests: int
    acks: int
    sent: int
    cut: int
    unavailable: int
    refused: dict[str, int]
    abandoned: int
    kills: int
    charges: int
    refunds: int
    documents: int
    refunded_documents: int
    settled_at_end: int
    subscriptions: int
    lost_or_doubled: list[str]
    reconcile_exit: int
    replay_exit: int
    seconds: float
    reconcile_output: str = ""
    replay_output: str = ""


class Client(threading.Thread):
    """One portal: creates a subscription, then increases its seats one at a time, creating a new one every
    third request. A cut request is sent again, with the same key, until it is answered."""

    def __init__(self, number: int, requests: int, base: str, token: str, tally: Tally) -> None:
        super().__init__(name=f"client-{number}", daemon=True)
        self.number, self.requests, self.base, self.tally = number, requests, base, tally
        self.headers = {"Authorization": f"Bearer {token}"}

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as http:
            current: tuple[str, int] | None = None  # (subscription id, seats)
            for i in range(self.requests):
                key = f"load-{self.number}-{i}"
                if current is None or i % 3 == 0:
                    body = {"plan": "pro", "billing_cycle": "monthly", "seats": 3, "organization_name":
                            f"Customer {self.number}-{i}", "admin_email": f"admin{self.number}-{i}@load.example"}
                    answer = self._send(http, f"/v1/resellers/{ORG}/subscriptions", body, key)
                    if answer is not None:
                        current = (answer["id"], answer["seats"])
                        with self.tally.lock:
                            self.tally.acked_creates[key] = answer["id"]
                else:
                    sub_id, seats = current
                    answer = self._send(http, f"/v1/resellers/{ORG}/subscriptions/{sub_id}/seats",
                                        {"seats": seats + 1}, key)
                    if answer is not None:
                        current = (sub_id, answer["seats"])
                        with self.tally.lock:
                            self.tally.acked_increases[sub_id] += 1

    def _send(self, http: httpx.Client, path: str, body: dict[str, Any], key: str) -> dict[str, Any] | None:
        deadline = time.monotonic() + REQUEST_DEADLINE
        while time.monotonic() < deadline:
            with self.tally.lock:
                self.tally.sent += 1
            try:
                response = http.post(path, json=body, headers={**self.headers, "Idempotency-Key": key})
            except httpx.TransportError:
                with self.tally.lock:
                    self.tally.cut += 1
                time.sleep(0.2)
                continue
            if response.status_code in (200, 201):
                return response.json()
            if response.status_code == 503 or (response.status_code == 409
                                                and response.json().get("code") == "invalid_state"):
                # Unavailable, or a concurrent twin of this very request still holds its lock: try again.
                with self.tally.lock:
                    self.tally.unavailable += 1
                time.sleep(0.2)
                continue
            with self.tally.lock:
                self.tally.refused[f"{response.status_code} {response.json().get('code')}"] += 1
            return None
        with self.tally.lock:
            self.tally.abandoned += 1
        return None


def _token(env: dict[str, str], *args: str) -> str:
    minted = _ledger("token", *args, env=env)
    if minted.returncode != 0:
        raise RuntimeError(minted.stderr)
    return minted.stdout.strip()


def _prepare(base: str, env: dict[str, str]) -> str:
    support, admin = _token(env, "--support"), _token(env, "--org", ORG, "--sub", "load-admin")
    enabled = httpx.post(f"{base}/v1/support/resellers", json={"org_id": ORG, "name": "Load Resellers"},
                         headers={"Authorization": f"Bearer {support}"}, timeout=30)
    billed = httpx.put(f"{base}/v1/resellers/{ORG}/billing", headers={"Authorization": f"Bearer {admin}"},
                       json={"payment_method": "pm_card_visa", "billing_email": "b@load.example", "country": "DE"},
                       timeout=30)
    if enabled.status_code not in (200, 201) or billed.status_code != 200:
        raise RuntimeError(f"set-up failed: {enabled.text} {billed.text}")
    return admin


def _aggregates(services: Services, kind: type) -> list[Any]:
    ids = {n.originator_id for n in services.app.recorder.select_notifications(start=None, limit=10_000_000)}
    return [a for a in (services.app.repository.get(i) for i in ids) if isinstance(a, kind)]


def run(backend: str, env: dict[str, str], *, requests: int, clients: int, kills: int) -> Figures:
    started = time.monotonic()
    env = {**env, "LEDGER_SANDBOX_DATA": "false"}
    deployment = Deployment(env, backend)
    tally = Tally()
    killed = 0
    try:
        deployment.start()
        token = _prepare(deployment.base, env)
        per_client = max(1, requests // clients)
        workers = [Client(n, per_client, deployment.base, token, tally) for n in range(clients)]
        for worker in workers:
            worker.start()
        total = per_client * clients
        for k in range(1, kills + 1):
            while tally.acks < total * k // (kills + 1) and any(w.is_alive() for w in workers):
                time.sleep(0.05)
            deployment.kill()
            killed += 1
            time.sleep(0.3)
            deployment.start_serving()
        for worker in workers:
            worker.join()
    finally:
        deployment.stop()
    return _check(backend, env, tally, requests=per_client * clients, kills=killed, started=started)


def _check(backend: str, env: dict[str, str], tally: Tally, *, requests: int, kills: int,
           started: float) -> Figures:
    services = bootstrap(load_settings(**{k.removeprefix("LEDGER_").lower(): v for k, v in env.items()}))
    try:
        # What a restarted process does once the grace period has passed, done now rather than waited for.
        settled = ChargeRecovery(services.ledger, grace=timedelta(0)).run()
        services.read_side.catch_up()
        subscriptions = {str(s.id): s for s in _aggregates(services, Subscription)}
        lost_or_doubled = [f"create {key}: subscription {sub_id} missing"
                           for key, sub_id in tally.acked_creates.items() if sub_id not in subscriptions]
        for sub_id, subscription in subscriptions.items():
            increases = sum(1 for e in services.ledger.history(subscription.id)
                            if type(e).__name__ == "SeatsIncreased")
            if increases != tally.acked_increases[sub_id] or subscription.seats != 3 + increases:
                lost_or_doubled.append(f"{sub_id}: {tally.acked_increases[sub_id]} increases answered, "
                                       f"{increases} recorded, {subscription.seats} seats")
        if len(subscriptions) != len(tally.acked_creates):
            lost_or_doubled.append(f"{len(tally.acked_creates)} creates answered, {len(subscriptions)} recorded")
        open_charges = [c for c in _aggregates(services, Charge) if c.is_open]
        lost_or_doubled += [f"charge {c.id} still open" for c in open_charges]
        invoices = _aggregates(services, Invoice)
        charges = services.gateway.list_charges(**EVER)
        refunds = services.gateway.list_refunds(**EVER)
        tomorrow = (services.clock.now() + timedelta(days=1)).date().isoformat()
    finally:
        services.close()
    reconciled = _ledger("reconcile", "--from", "2000-01-01", "--to", tomorrow, env=env)
    replayed = _ledger("replay", "--quiet", env=env)
    return Figures(backend, requests, tally.acks, tally.sent, tally.cut, tally.unavailable, dict(tally.refused),
                   tally.abandoned, kills, len(charges), len(refunds), len(invoices),
                   sum(1 for i in invoices if i.refunded_cents), settled.reversed + settled.abandoned,
                   len(subscriptions), lost_or_doubled, reconciled.returncode, replayed.returncode,
                   time.monotonic() - started, reconciled.stdout + reconciled.stderr, replayed.stdout + replayed.stderr)


def main() -> int:
    chosen = options(__doc__.splitlines()[0])
    sizes = {"requests": 60, "clients": 4, "kills": 2} if chosen.quick else {"requests": 600, "clients": 8,
                                                                              "kills": 5}
    print(f"{'backend':<9}{'requests':>9}{'acks':>6}{'sent':>6}{'cut':>5}{'503':>5}{'kills':>6}{'charges':>8}"
          f"{'refunds':>8}{'docs':>6}{'settled':>8}{'recon':>6}{'replay':>7}{'seconds':>8}  lost or doubled")
    failed = False
    for backend in chosen.backends:
        with ledger_env(backend) as env:
            f = run(backend, env, **sizes)
        print(f"{f.backend:<9}{f.requests:>9}{f.acks:>6}{f.sent:>6}{f.cut:>5}{f.unavailable:>5}{f.kills:>6}"
              f"{f.charges:>8}{f.refunds:>8}{f.documents:>6}{f.settled_at_end:>8}{f.reconcile_exit:>6}"
              f"{f.replay_exit:>7}{f.seconds:>8.1f}  {len(f.lost_or_doubled)}", flush=True)
        if f.refused:
            print(f"  # refused: {f.refused}")
        for problem in f.lost_or_doubled[:10]:
            print(f"  # {problem}")
        failed |= bool(f.lost_or_doubled) or f.reconcile_exit != 0 or f.replay_exit != 0 or f.acks != f.requests
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
