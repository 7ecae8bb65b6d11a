"""Scale on one PostgreSQL (issue 10, goal 7): the ledger with a million subscriptions over ten thousand
resellers, against itself on an empty deployment, in one run.

    .venv/bin/python bench/scale.py [--subscriptions N] [--resellers R] [--largest SHARE] [--seconds S]

1. On an empty deployment (only the benchmark's reseller, with a card): ``ledger serve`` (1 worker) beside
   ``ledger projections`` and ``ledger scheduler``, 16 keep-alive clients sending creates, then seat increases
   (``bench/http.py``'s clients and its lag watcher).
2. The data set, in this process, on a fresh schema: R resellers enabled (``Reseller.enable_new``, saved a few
   hundred a transaction), then N subscriptions saved straight through the domain, a few hundred aggregates a
   transaction (``common.populate``: one in 5 single-user, seat increases, cancels; no invoices or charges). The
   benchmark's reseller, the largest, owns SHARE of them (default 10 %); the others share the rest in turn.
3. Every view built from the log, as a fresh ``ledger projections`` does (``ReadSide.catch_up``), then
   ``VACUUM ANALYZE`` of the queried views (what autovacuum does after a bulk load).
4. Customer-table pages and summary cards of the largest reseller (median, p99).
5. ``ledger replay``'s work: every view rebuilt into a fresh schema from one reading of the log, and compared
   row by row with the live views. Then ``VACUUM ANALYZE`` of the database and a ``CHECKPOINT``, so that
   autovacuum's work after the bulk load, and the flush of its writes, do not run during the load that follows.
6. Step 1's load again, on the large deployment, with the resident memory (RSS) of ``ledger serve``'s processes
   before and after.

Goal 7: first page p99 under 10 ms, summary under 5 ms, creates/s within 20 % of the empty deployment's,
replay under 2 minutes, ``serve``'s memory flat.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the project, not bench/ (bench/http.py shadows `http`)

import argparse  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

import psycopg  # noqa: E402

from bench import common  # noqa: E402
from bench import http as load  # noqa: E402
from bench.projections import audit, queries_at_scale, settle  # noqa: E402
from ledger.reseller import Reseller  # noqa: E402

CLIENTS = 16
QUERY_CALLS = 200


def rss_mib(group: int) -> float:
    """Resident memory of the live processes of a process group, in MiB."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) != group:
                continue
            status = (entry / "status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total / 1024


@contextmanager
def ledger_processes(env: dict[str, str]) -> Iterator[load.Target]:
    """``ledger serve`` (1 worker) beside ``ledger projections`` and ``ledger scheduler`` on the deployment."""
    data_dir = Path(env["LEDGER_DATA_DIR"])
    token = load.run([*load.LEDGER, "token", "--org", common.ORG], env).strip()
    with ExitStack() as stack:
        followers = [stack.enter_context(load.started([*load.LEDGER, name], env, data_dir / f"{name}.log")).pid
                     for name in ("projections", "scheduler")]
        port, group = stack.enter_context(load.serving([*load.LEDGER, "serve", "--workers", "1"], env,
                                                       data_dir / "serve.log"))
        yield load.Target("ledger", port, token, group, followers,
                          (env["LEDGER_DATABASE_URL"], env["LEDGER_DATABASE_SCHEMA"]))


def drive(target: load.Target, label: str, seconds: float) -> list[load.Result]:
    before = rss_mib(target.group)
    results = load.measure(target, 1, CLIENTS, seconds, load.WARM_UP, {})
    after = rss_mib(target.group)
    common.note(f"{label}: ledger serve RSS {before:.0f} MiB before the load, {after:.0f} MiB after "
                f"({after - before:+.0f} MiB)")
    return results


def build(env: dict[str, str], subscriptions: int, resellers: int, largest: float) -> None:
    with common.services_on(env) as services:
        at = services.clock.now()
        start = time.perf_counter()
        others = [f"org_scale_{k:05d}" for k in range(1, resellers)]
        for first in range(0, len(others), common.SAVE_BATCH):
            services.app.save(*(Reseller.enable_new(org, name=f"Scale Reseller {org}", at=at, actor=common.ACTOR)
                                for org in others[first:first + common.SAVE_BATCH]))
        common.show(common.rate("resellers enabled (bulk save)", "postgres", f"{common.SAVE_BATCH} a transaction",
                                len(others), time.perf_counter() - start, "resellers/s"))

        every = max(1, round(1 / largest))

        def owner(i: int) -> str:
            return common.ORG if not others or i % every == 0 else others[i % len(others)]

        start = time.perf_counter()
        last_report = [start]

        def progress(done: int) -> None:
            if time.perf_counter() - last_report[0] > 30:
                last_report[0] = time.perf_counter()
                common.note(f"{done:,} subscriptions saved in {last_report[0] - start:.0f} s")

        saved = common.populate(services, subscriptions, at=at, owner=owner, progress=progress)
        seconds = time.perf_counter() - start
        common.show(common.rate("subscriptions saved (bulk save)", "postgres",
                                f"{common.SAVE_BATCH} aggregates/tx", sum(saved.values()), seconds, "events/s"))
        common.note(common.describe(saved))
        largest_owns = sum(1 for i in range(subscriptions) if owner(i) == common.ORG)
        common.note(f"the largest reseller, {common.ORG}, owns {largest_owns:,} subscriptions; {len(others):,} others "
                    f"share the rest")

        head = services.read_side.log.head()
        start = time.perf_counter()
        services.read_side.catch_up()
        common.show(common.rate("every view built from the log", "postgres", "ReadSide.catch_up", head,
                                time.perf_counter() - start, "events/s"))
        start = time.perf_counter()
        settle(services)
        common.note(f"VACUUM ANALYZE of the queried views: {time.perf_counter() - start:.1f} s")
        queries_at_scale(services, "postgres", QUERY_CALLS)
        audit(services, "postgres")
        start = time.perf_counter()
        with psycopg.connect(env["LEDGER_DATABASE_URL"], autocommit=True) as connection:
            # What autovacuum does in the minutes after a bulk load (the log, the chain, every view), done now
            # rather than during the load after; then the load's writes flushed.
            connection.execute("VACUUM ANALYZE")
            common.note(f"VACUUM ANALYZE of the database after the build: {time.perf_counter() - start:.1f} s")
            start = time.perf_counter()
            connection.execute("CHECKPOINT")
        common.note(f"CHECKPOINT after the build: {time.perf_counter() - start:.1f} s")


def main() -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the servers and drop the schemas on the way out
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=1_000_000)
    parser.add_argument("--resellers", type=int, default=10_000)
    parser.add_argument("--largest", type=float, default=0.10, help="the largest reseller's share (default 0.10)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per load measurement (default 10)")
    args = parser.parse_args()
    if args.subscriptions < 1 or args.resellers < 1 or not 0 < args.largest <= 1 or args.seconds <= 0:
        parser.error("--subscriptions and --resellers must be at least 1, --largest in (0, 1], --seconds above 0")
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average "
          f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}; {args.subscriptions:,} subscriptions over "
          f"{args.resellers:,} resellers, the largest owning {args.largest:.0%}", flush=True)
    print(f"{'app':<7}{'operation':<15}{'workers':>8}{'clients':>8}{'requests':>10}{'req/s':>12}{'p50 ms':>10}"
          f"{'p99 ms':>10}{'non-2xx':>9}{'cpu ms':>9}{'+follow':>9}", flush=True)
    with common.ledger_env("postgres") as env:
        load.run([*load.LEDGER, "support", "enable-reseller", common.ORG, "--name", "Bench Reseller"], env)
        with ledger_processes(env) as target:
            load.set_billing(target.port, target.token or "")
            empty = drive(target, "empty deployment", args.seconds)
    with common.ledger_env("postgres") as env:
        started = time.perf_counter()
        build(env, args.subscriptions, args.resellers, args.largest)
        common.note(f"data set built, views built, queried and replayed in {time.perf_counter() - started:.0f} s")
        with ledger_processes(env) as target:
            large = drive(target, f"{args.subscriptions:,} subscriptions", args.seconds)
    print()
    print("| operation | empty: req/s, p50 / p99 ms | at scale: req/s, p50 / p99 ms | ratio | create to customer-table "
          "row p99 ms: empty / at scale |")
    print("|---|---|---|---|---|")
    for small, big in zip(empty, large, strict=True):
        lag = (f"{common.percentile(small.lags, 99) * 1000:.1f} / {common.percentile(big.lags, 99) * 1000:.1f}"
               if small.lags and big.lags else "–")
        print(f"| {small.operation} | {small.rate:,.0f}, {small.p50 * 1000:.1f} / {small.p99 * 1000:.1f} "
              f"| {big.rate:,.0f}, {big.p50 * 1000:.1f} / {big.p99 * 1000:.1f} | {big.rate / small.rate:.2f} | {lag} |")
    return load.exit_code(empty + large)


if __name__ == "__main__":
    sys.exit(main())
