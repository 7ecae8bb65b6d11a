"""Where one create's time goes over HTTP (issue 10, goal 8): `ledger serve` (one worker) under a load of one
client sending creates back to back, sampled from outside by py-spy (``pip install py-spy``: a sampling
profiler that attaches to the running process; nothing in the product changes), every thread, idle waits
included, so that time spent waiting for the database counts where it is spent. (Without ``--idle`` py-spy
would still count a thread waiting in psycopg or in an fsync: its "active" samples are not CPU time. The CPU
time of the processes is in ``bench/http.py``'s table.)

    .venv/bin/python bench/profile_create.py [--backend sqlite|postgres|both] [--seconds S] [--quick]
                                             [--raw DIR]

On PostgreSQL ``ledger projections`` and ``ledger scheduler`` run beside it; on SQLite (the embedded
default) ``ledger serve`` runs alone with its followers in its threads. Each sample of the request's own
threads (the event loop and the worker thread running the route) is put in the first category of
``CATEGORIES`` whose pattern one of its frames matches (the inner steps first); the table gives
each category's milliseconds per request (samples / rate / requests). Samples of the server's other threads
while busy (followers, pool workers) are counted apart: they share the cores but are not in the request's path.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the project, not bench/

import argparse  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from contextlib import ExitStack  # noqa: E402

from bench import common  # noqa: E402
from bench.http import LEDGER, Client, run, serving, set_billing, started  # noqa: E402

RATE = 250
"""Samples per second."""

# (category, pattern): a sample of the request's threads goes to the first category whose pattern matches one
# of its frames ("Class.function (file:line)"), in this order: the inner steps (a lock, the processor) before
# the steps that contain them (the charge intent, the command).
CATEGORIES: list[tuple[str, re.Pattern[str]]] = [(name, re.compile(pattern)) for name, pattern in [
    ("locks (advisory, in-process)", r"^(?:PostgresAdvisoryLocks|ThreadLocks)\."),
    ("processor (simulated): charge and its record", r"\(commands/gateways/"),
    ("charge intent: saved and committed", r"^Ledger\._intend_charge [^;]*;.*LedgerApplication\.save "),
    ("reads: charge intent looked up", r"^Ledger\._intend_charge [^;]*;.*Repository\.get "),
    ("save and commit: outcome, documents", r"^(?:LedgerApplication\.save|GroupCommit\.)"),
    ("idempotency", r"^Ledger\._earlier_answer |\(commands/idempotency\.py"),
    ("auth: bearer token", r"\((?:api/security|service/tokens)\.py|\(jwt/"),
    ("reads: reseller, aggregates", r"^Repository\.get "),
    ("answer: view, response model, JSON", r"\(api/views\.py|^serialize_response |jsonable_encoder|"
                                            r"JSONResponse\.render|\(api/routes/common\.py|_tagged "),
    ("request body: read and validated", r"^(?:request_body_to_args|Request\.json|Request\.body|_validate_value|"
                                         r"ModelField\.validate) |\(api/limits\.py"),
    ("domain: order, price, events", r"\((?:ledger/|commands/handlers\.py)"),
]]
WORKER = "other, worker thread (FastAPI dependencies, metrics)"
LOOP = "HTTP, routing, middleware (event loop)"
IDLE_LEAF = re.compile(r"^(?:\S+\.)?(?:select|poll|epoll|wait|get|_wait_for_tstate_lock|sleep|acquire|run) \(")


def classify(stack: str) -> str:
    """A raw py-spy stack (thread first, frames separated by ';') to a category, or to '' when idle."""
    thread, *frames = stack.split(";")
    if not frames:
        return ""
    leaf = frames[-1]
    # A pattern is matched against each frame followed by the frames it called.
    tails = [";".join(frames[i:]) for i in range(len(frames))]
    if thread.endswith("AnyIO worker thread"):
        if any(f.startswith("WorkerThread.run (") and g.startswith("Queue.get (queue.py")
               for f, g in zip(frames, frames[1:])):
            return ""  # waiting for a job
        for name, pattern in CATEGORIES:
            if any(pattern.search(tail) for tail in tails):
                return name
        return WORKER
    if thread.endswith("MainThread"):
        if leaf.startswith("Runner.run (asyncio/runners.py"):
            return ""  # uvloop's loop, in C: waiting for sockets (or parsing HTTP, which this cannot tell apart)
        for name, pattern in CATEGORIES:
            if any(pattern.search(tail) for tail in tails):
                return name
        return LOOP
    if IDLE_LEAF.match(leaf):
        return ""
    return f"other threads: {thread.split(': ', 1)[-1]}"


def profile(backend: str, seconds: float, raw_dir: Path | None) -> None:
    with common.ledger_env(backend) as env, ExitStack() as stack:
        data_dir = Path(env["LEDGER_DATA_DIR"])
        run([*LEDGER, "support", "enable-reseller", common.ORG, "--name", "Bench Reseller"], env)
        token = run([*LEDGER, "token", "--org", common.ORG], env).strip()
        if backend == "postgres":
            stack.enter_context(started([*LEDGER, "projections"], env, data_dir / "projections.log"))
            stack.enter_context(started([*LEDGER, "scheduler"], env, data_dir / "scheduler.log"))
        port, pid = stack.enter_context(serving([*LEDGER, "serve"], env, data_dir / "serve.log"))
        set_billing(port, token)
        client = Client(port, token, "profile")
        for _ in range(30):
            assert 200 <= client.create()[0] < 300
        out = data_dir / "profile.txt"
        spy = subprocess.Popen([str(common.ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid", str(pid), "--idle",
                                "--threads", "--rate", str(RATE), "--format", "raw", "--duration", str(int(seconds)),
                                "--output", str(out), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # py-spy attached
        latencies: list[float] = []
        stop = time.perf_counter() + seconds - 2.0
        while time.perf_counter() < stop:
            began = time.perf_counter()
            status, body = client.create()
            latencies.append(time.perf_counter() - began)
            assert 200 <= status < 300, body
        _, err = spy.communicate(timeout=60)
        if not out.exists():
            raise RuntimeError(f"py-spy wrote nothing: {err.decode()}")
        if raw_dir is not None:
            raw_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(out, raw_dir / f"create-{backend}.txt")
        # py-spy's window is ``seconds``; the requests were sent within it, 1 s after it opened.
        report(backend, out.read_text(), len(latencies), latencies)


def report(backend: str, raw: str, requests: int, latencies: list[float]) -> None:
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if stack:
            counts[classify(stack)] += int(n)
    per_request = 1000 / RATE / requests
    latencies.sort()
    print(f"\n## create over HTTP, {backend}: {requests} requests from 1 client, "
          f"p50 {common.percentile(latencies, 50) * 1000:.1f} ms, mean {sum(latencies) / requests * 1000:.1f} ms")
    print("| where | ms per request | share |")
    print("|---|---|---|")
    request_total = sum(n for name, n in counts.items() if name and not name.startswith("other threads"))
    order = [name for name, _ in CATEGORIES] + [WORKER, LOOP]
    for name in order:
        if counts[name]:
            print(f"| {name} | {counts[name] * per_request:.2f} | {counts[name] / request_total:.0%} |")
    print(f"| **in the server, in the request's path** | **{request_total * per_request:.2f}** | |")
    mean = sum(latencies) / requests * 1000
    print(f"| not in a sample of the request's threads: hand-offs between the event loop and the worker threads, "
          f"waits for a core, the client and loopback (mean latency less the above) "
          f"| {mean - request_total * per_request:.2f} | |")
    for name, n in sorted(counts.items()):
        if name.startswith("other threads"):
            print(f"| ({name}) | {n * per_request:.2f} | |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=(*common.BACKENDS, "both"), default="both")
    parser.add_argument("--seconds", type=float, default=None, help="profiled seconds (default 20, quick 6)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw stacks in this directory")
    parser.add_argument("--from-raw", type=Path, help="only classify a raw file (with --requests)")
    parser.add_argument("--requests", type=int)
    args = parser.parse_args()
    if args.from_raw:
        report("raw", args.from_raw.read_text(), args.requests, [0.0])
        return 0
    seconds = args.seconds or (6.0 if args.quick else 20.0)
    for backend in common.BACKENDS if args.backend == "both" else [args.backend]:
        profile(backend, seconds, args.raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
