"""The ledger over HTTP against a bare endpoint (issue 10, goal 1), side by side in one run.

    .venv/bin/python bench/http.py [--seconds S] [--workers 1,2] [--clients 1,4,16] [--ledger sqlite] [--quick]

For each worker count (1, then 2) it starts, as real processes on loopback sockets, with the same uvicorn
keywords (``api.server.uvicorn_options``) and worker count:

- the bare app (``bench/bare_app.py``): one sync POST route that validates the ledger's create body with its
  pydantic model and INSERTs one row into PostgreSQL through a psycopg pool, and one that UPDATEs that row's
  seats by id;
- the ledger on PostgreSQL: ``ledger serve --workers N`` beside ``ledger projections`` and ``ledger
  scheduler``, simulated processor, a fresh schema (dropped at the end); with ``--ledger sqlite``, the
  embedded default instead (goal 3): ``ledger serve`` alone (one worker: it starts its own followers' process),
  SQLite files in a temporary data dir.

Then 1, 4 and 16 client threads (one keep-alive ``http.client`` connection each) send creates, then seat
increases (+1 on subscriptions that client created), to each app in turn for ``--seconds`` each, after a
short warm-up. It prints requests/s, p50 and p99 latency, non-2xx answers (the ledger must have none: the
script exits 1 otherwise), and the ratio ledger/bare of requests/s; the machine's load average at start and
end. The clients run in this process, on the same cores as the servers and the database. "cpu ms" is the
CPU time per request of the serving processes ("+follow": of the ledger's followers; the database's and the
clients' are not counted; on the embedded default the followers' process that ``serve`` starts is in its process
group, so counted with the server), which depends less than the rates on what else the machine runs.

Live lag (goal 6): while the ledger's creates are measured, a watcher thread polls the customer table (in
PostgreSQL, or the embedded default's view file; one indexed query for every create not seen yet, every
millisecond) and times each create from the client's receiving its answer to its row being there, as a reseller
refreshing the portal would see it. The clients and the watcher share this process's interpreter lock, so a lag
includes that wait too: the figures are upper bounds.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the project, not bench/ (this file shadows `http`)

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

import psycopg  # noqa: E402

from bench import common  # noqa: E402
from projections.deployment import VIEWS_FILE  # noqa: E402

LEDGER = [str(common.ROOT / ".venv" / "bin" / "ledger")]
BARE = [sys.executable, "-m", "bench.bare_app"]
WATCH_INTERVAL = 0.001
"""Seconds between the lag watcher's queries."""
WARM_UP = 16
"""Requests sent, shared among the clients (at least one each), before the clock starts (connections,
prepared statements, caches)."""


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Result:
    app: str
    operation: str
    workers: int
    clients: int
    requests: int
    seconds: float
    p50: float
    p99: float
    failures: list[str]
    server_cpu: float
    """CPU milliseconds per request of the serving processes."""
    followers_cpu: float
    """The same of the ledger's followers (``ledger projections`` and ``ledger scheduler``)."""
    lags: list[float] = field(default_factory=list)
    """Seconds from each measured create's answer to its customer-table row (ledger creates only)."""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def _environment(env: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "BARE_"))}
    return {**clean, **env, "PYTHONPATH": str(common.ROOT)}


def run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=_environment(env), cwd=common.ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr}")
    return done.stdout


@contextmanager
def started(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own process group (uvicorn's workers included), stopped with SIGTERM on the way out."""
    with open(log, "ab") as out:
        process = subprocess.Popen(command, env=_environment(env), cwd=common.ROOT, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_healthy(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                connection.close()
                return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


@contextmanager
def serving(command: list[str], env: dict[str, str], log: Path) -> Iterator[tuple[int, int]]:
    """The command serving on a free port: yields the port and the process group (its workers included)."""
    port = free_port()
    with started([*command, "--port", str(port)], env, log) as process:
        _wait_healthy(port, process, log)
        yield port, process.pid


def cpu_seconds(groups: list[int]) -> float:
    """User and system CPU seconds used so far by the live processes of these process groups."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in groups:  # pgrp; utime and stime follow at 11 and 12
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the clients ----------------------------------------------------------------------------------


class Client:
    """One client thread's keep-alive connection, and the subscriptions it created (id, seats)."""

    def __init__(self, port: int, token: str | None, prefix: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.prefix = prefix
        self.created: list[list[object]] = []
        self.next_increase = 0
        self.counter = 0
        self.on_created: Callable[[str, float], None] | None = None

    def post(self, path: str, body: dict[str, object]) -> tuple[int, bytes]:
        self.connection.request("POST", path, body=json.dumps(body), headers=self.headers)
        response = self.connection.getresponse()
        return response.status, response.read()

    def create(self) -> tuple[int, bytes]:
        self.counter += 1
        name = f"{self.prefix}-{self.counter:07d}"
        status, body = self.post(f"/v1/resellers/{common.ORG}/subscriptions", {
            "plan": "pro", "billing_cycle": "monthly", "seats": 1, "organization_name": f"Customer {name}",
            "admin_email": f"admin-{name}@customer.example"})
        answered = time.perf_counter()
        if 200 <= status < 300:
            subscription_id = json.loads(body)["id"]
            self.created.append([subscription_id, 1])
            if self.on_created is not None:
                self.on_created(subscription_id, answered)
        return status, body

    def increase(self) -> tuple[int, bytes]:
        entry = self.created[self.next_increase % len(self.created)]
        self.next_increase += 1
        status, body = self.post(f"/v1/resellers/{common.ORG}/subscriptions/{entry[0]}/seats",
                                 {"seats": int(entry[1]) + 1})  # type: ignore[call-overload]
        if 200 <= status < 300:
            entry[1] = int(entry[1]) + 1  # type: ignore[call-overload]
        return status, body


def set_billing(port: int, token: str) -> None:
    """The reseller's card on file (the simulated processor's test Visa), for its creates to be charged."""
    client = Client(port, token, "setup")
    client.connection.request("PUT", f"/v1/resellers/{common.ORG}/billing", headers=client.headers,
                              body=json.dumps({"payment_method": "pm_card_visa", "country": "DE",
                                               "billing_email": "billing@bench.example"}))
    answer = client.connection.getresponse()
    if answer.status != 200:
        raise RuntimeError(f"billing info: {answer.status} {answer.read()!r}")
    answer.read()


def drive(clients: list[Client], operation: Callable[[Client], tuple[int, bytes]], seconds: float,
          warm_up: int, on_start: Callable[[], None]) -> tuple[float, Sample]:
    """Every client sends ``operation`` back to back: ``warm_up`` requests, then (all starting together) for
    ``seconds``. The seconds from the start to the last answer, and the measured samples."""
    samples = [Sample() for _ in clients]
    ends = [0.0] * len(clients)
    start_at = [0.0]
    # The clock starts when the last client has warmed up, before any is let go.

    def start() -> None:
        on_start()
        start_at[0] = time.perf_counter()

    ready = threading.Barrier(len(clients), action=start)

    def work(k: int) -> None:
        client, sample = clients[k], samples[k]
        for _ in range(warm_up):
            operation(client)
        ready.wait()
        stop = start_at[0] + seconds
        while True:
            began = time.perf_counter()
            if began >= stop:
                break
            status, body = operation(client)
            sample.latencies.append(time.perf_counter() - began)
            if not 200 <= status < 300:
                sample.failures.append(f"{status} {body[:200]!r}")
        ends[k] = time.perf_counter()

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = Sample([x for s in samples for x in s.latencies], [f for s in samples for f in s.failures])
    return max(ends) - start_at[0], merged


class LagWatcher:
    """Times each create from its answer to its row in the customer table (goal 6), polling its database."""

    def __init__(self, views: tuple[str, str] | Path) -> None:
        """``views``: PostgreSQL's (conninfo, schema), or the embedded default's view file."""
        self.connection: Any
        if isinstance(views, Path):
            self.connection = sqlite3.connect(f"file:{views}?mode=ro", uri=True, check_same_thread=False)
            self.query = ("SELECT subscription_id FROM customer_table WHERE subscription_id IN "
                          "(SELECT value FROM json_each(?))")
            self.parameter: Callable[[list[str]], object] = json.dumps
        else:
            conninfo, schema = views
            self.connection = psycopg.connect(conninfo, autocommit=True, options=f"-c search_path={schema}")
            self.query = "SELECT subscription_id FROM customer_table WHERE subscription_id = ANY(%s)"
            self.parameter = list
        self.pending: dict[str, float] = {}
        self.lags: list[float] = []
        self.guard = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def created(self, subscription_id: str, answered: float) -> None:
        with self.guard:
            self.pending[subscription_id] = answered

    def _watch(self) -> None:
        give_up = float("inf")
        while time.perf_counter() < give_up:
            if self.stopping.is_set():
                if not self.pending:
                    return
                give_up = min(give_up, time.perf_counter() + 60)
            with self.guard:
                waiting = list(self.pending)
            if waiting:
                seen = self.connection.execute(self.query, (self.parameter(waiting),)).fetchall()
                now = time.perf_counter()
                with self.guard:
                    for (subscription_id,) in seen:
                        self.lags.append(now - self.pending.pop(subscription_id))
            time.sleep(WATCH_INTERVAL)

    def __enter__(self) -> LagWatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)
        self.connection.close()
        if self.pending:
            raise RuntimeError(f"{len(self.pending)} created subscriptions never reached the customer table")


# --- one run --------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    token: str | None
    group: int
    """The server's process group (its workers included)."""
    followers: list[int]
    """The process groups of the ledger's followers."""
    views: tuple[str, str] | Path | None = None
    """Where the ledger's customer table is (PostgreSQL's conninfo and schema, or a view file), for the lag
    watcher."""


def measure(target: Target, workers: int, clients: int, seconds: float, warm_up: int,
            pool: dict[tuple[str, int], list[Client]]) -> list[Result]:
    key = (target.name, clients)
    if key not in pool:
        pool[key] = [Client(target.port, target.token, f"w{workers}c{clients}t{k}") for k in range(clients)]
    results = []
    for operation, call in (("create", Client.create), ("seat increase", Client.increase)):
        cpu_before = [0.0, 0.0]

        def mark(before: list[float] = cpu_before) -> None:
            before[:] = [cpu_seconds([target.group]), cpu_seconds(target.followers)]

        with ExitStack() as watching:
            watcher = (watching.enter_context(LagWatcher(target.views))
                       if target.views is not None and operation == "create" else None)

            def start(before: list[float] = cpu_before, connections: list[Client] = pool[key],
                      watcher: LagWatcher | None = watcher) -> None:
                mark(before)
                for client in connections:  # the warm-up's creates are not timed
                    client.on_created = watcher.created if watcher is not None else None

            elapsed, sample = drive(pool[key], call, seconds, max(1, warm_up // clients), start)
            cpu = cpu_seconds([target.group]) - cpu_before[0], cpu_seconds(target.followers) - cpu_before[1]
            for client in pool[key]:
                client.on_created = None
        lat = sorted(sample.latencies)
        result = Result(target.name, operation, workers, clients, len(lat), elapsed, common.percentile(lat, 50),
                        common.percentile(lat, 99), sample.failures, cpu[0] * 1000 / max(len(lat), 1),
                        cpu[1] * 1000 / max(len(lat), 1), watcher.lags if watcher is not None else [])
        results.append(result)
        print(f"{target.name:<7}{operation:<15}{workers:>8}{clients:>8}{result.requests:>10}{result.rate:>12,.0f}"
              f"{result.p50 * 1000:>10.1f}{result.p99 * 1000:>10.1f}{len(result.failures):>9}{result.server_cpu:>9.1f}"
              f"{result.followers_cpu:>9.1f}",
              flush=True)
        for failure in sorted(set(result.failures))[:5]:
            common.note(f"{target.name} {operation}: {failure}")
        if result.lags:
            common.note(f"create to customer-table row, {len(result.lags)} creates: p50 "
                        f"{common.percentile(result.lags, 50) * 1000:.1f} ms, p99 "
                        f"{common.percentile(result.lags, 99) * 1000:.1f} ms, max {max(result.lags) * 1000:.1f} ms")
    return results


def main() -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the servers and drop the schema on the way out
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, help="per measurement (default 10, quick 2)")
    parser.add_argument("--workers", default="1,2", help="worker counts, in order (default 1,2)")
    parser.add_argument("--clients", default="1,4,16", help="client thread counts (default 1,4,16)")
    parser.add_argument("--ledger", choices=["postgres", "sqlite"], default="postgres",
                        help="the ledger's deployment: on PostgreSQL (default), or the embedded default (one worker)")
    parser.add_argument("--quick", action="store_true", help="2 s per measurement: checks that the script works")
    args = parser.parse_args()
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    warm_up = 4 if args.quick else WARM_UP
    worker_counts = [int(w) for w in args.workers.split(",")]
    client_counts = [int(c) for c in args.clients.split(",")]
    if args.ledger == "sqlite" and worker_counts != [1]:
        parser.error("the embedded default serves with one worker: --ledger sqlite takes --workers 1")

    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average at start "
          f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}; {seconds:g} s per measurement", flush=True)
    print(f"{'app':<7}{'operation':<15}{'workers':>8}{'clients':>8}{'requests':>10}{'req/s':>12}{'p50 ms':>10}"
          f"{'p99 ms':>10}{'non-2xx':>9}{'cpu ms':>9}{'+follow':>9}")
    results: list[Result] = []
    embedded = args.ledger == "sqlite"
    with common.ledger_env("postgres") as bare_deployment, common.ledger_env(args.ledger) as env:
        data_dir = Path(env["LEDGER_DATA_DIR"])
        bare_env = {"BARE_DATABASE_URL": bare_deployment["LEDGER_DATABASE_URL"],
                    "BARE_DATABASE_SCHEMA": bare_deployment["LEDGER_DATABASE_SCHEMA"]}
        run([*LEDGER, "support", "enable-reseller", common.ORG, "--name", "Bench Reseller"], env)
        token = run([*LEDGER, "token", "--org", common.ORG], env).strip()
        views: tuple[str, str] | Path = (data_dir / "views" / VIEWS_FILE if embedded
                                         else (env["LEDGER_DATABASE_URL"], env["LEDGER_DATABASE_SCHEMA"]))
        with ExitStack() as followers:
            # The embedded default's `serve` starts its followers' process itself, in its process group.
            follower_groups = [] if embedded else [
                followers.enter_context(started([*LEDGER, "projections"], env, data_dir / "projections.log")).pid,
                followers.enter_context(started([*LEDGER, "scheduler"], env, data_dir / "scheduler.log")).pid]
            for workers in worker_counts:
                with serving([*BARE, "--workers", str(workers)], bare_env, data_dir / "bare.log") as (bare_port, bare),\
                        serving([*LEDGER, "serve", "--workers", str(workers)], env,
                                data_dir / "serve.log") as (ledger_port, ledger):
                    if workers == worker_counts[0]:
                        set_billing(ledger_port, token)
                    targets = [Target("bare", bare_port, None, bare, []),
                               Target("ledger", ledger_port, token, ledger, follower_groups, views)]
                    pool: dict[tuple[str, int], list[Client]] = {}
                    for clients in client_counts:
                        for target in targets:
                            results += measure(target, workers, clients, seconds, warm_up, pool)
                    for connections in pool.values():
                        for client in connections:
                            client.connection.close()
    load_end = os.getloadavg()
    print(f"# load average at end {'/'.join(f'{x:.2f}' for x in load_end)}")
    print()
    print("| operation | workers | clients | bare req/s | ledger req/s | ratio | bare p50 / p99 ms "
          "| ledger p50 / p99 ms | ledger non-2xx | CPU ms per request: bare / ledger (+ its followers) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    by_key = {(r.app, r.operation, r.workers, r.clients): r for r in results}
    for r in results:
        if r.app != "ledger":
            continue
        b = by_key[("bare", r.operation, r.workers, r.clients)]
        print(f"| {r.operation} | {r.workers} | {r.clients} | {b.rate:,.0f} | {r.rate:,.0f} | {r.rate / b.rate:.2f} "
              f"| {b.p50 * 1000:.1f} / {b.p99 * 1000:.1f} | {r.p50 * 1000:.1f} / {r.p99 * 1000:.1f} "
              f"| {len(r.failures)} | {b.server_cpu:.1f} / {r.server_cpu:.1f} (+{r.followers_cpu:.1f}) |")
    print()
    print("| workers | clients | creates/s | creates timed | create to customer-table row: p50 / p99 / max ms |")
    print("|---|---|---|---|---|")
    for r in results:
        if r.lags:
            print(f"| {r.workers} | {r.clients} | {r.rate:,.0f} | {len(r.lags)} | "
                  f"{common.percentile(r.lags, 50) * 1000:.1f} / {common.percentile(r.lags, 99) * 1000:.1f} / "
                  f"{max(r.lags) * 1000:.1f} |")
    return exit_code([r for r in results if r.app == "ledger"])


def exit_code(ledger_results: list[Result]) -> int:
    """1, saying so, when any of the ledger's requests did not succeed: a benchmark of failures means nothing."""
    failed = sum(len(r.failures) for r in ledger_results)
    if failed:
        print(f"# {failed} ledger requests did not succeed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
