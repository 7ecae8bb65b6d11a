"""The ledger's processes: `serve` (the HTTP API), `migrate` (a deployment's one-shot step), `projections` and
`scheduler` (the background processes of a PostgreSQL deployment)."""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import DataDir, UsageError, add, exits, settings

if TYPE_CHECKING:
    from commands.application import LedgerApplication
    from service.bootstrap import Services

log = logging.getLogger("ledger.processes")


def register(app: typer.Typer) -> None:
    add(app, "Processes", serve, migrate, projections, scheduler)


@exits
def serve(host: Annotated[str, typer.Option(help="the address to listen on")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="the port to listen on")] = 8000,
          workers: Annotated[int, typer.Option(help="API worker processes (PostgreSQL only)")] = 1,
          data_dir: DataDir = None) -> int:
    """start the HTTP API"""
    import uvicorn

    from api.app import create_app
    from api.server import uvicorn_options
    from service import metrics
    from service.bootstrap import bootstrap

    # uvicorn stops gracefully on SIGTERM, then raises the signal again, whose default action would end this
    # process before the blocks below stop what it started (the read models' process, the metrics directory).
    signal.signal(signal.SIGTERM, _exit_when_terminated)
    config = settings(data_dir)
    if workers > 1:
        if not config.uses_postgres:
            raise UsageError("--workers > 1 needs PostgreSQL (LEDGER_DATABASE_URL): SQLite serves one process")
        counts = metrics.prepare_multiprocess_dir()  # the workers' metrics, added up by whichever is scraped
        try:
            uvicorn.run("api.app:create_app_from_environment", factory=True, host=host, port=port,
                        workers=workers, **uvicorn_options(config))
        finally:
            metrics.remove_multiprocess_dir(counts)
        return 0
    services = bootstrap(config)
    if config.seeds_sandbox:
        _announce_sandbox(services, f"http://{host}:{port}")
    followers = None if config.uses_postgres else FollowersProcess(services.app)
    try:
        if followers is not None:
            followers.start()
        uvicorn.run(create_app(services, close_on_shutdown=True, background=not config.uses_postgres,
                               followers_elsewhere=followers is not None, settle_charges=True),
                    host=host, port=port, **uvicorn_options(config))
    finally:
        if followers is not None:
            followers.stop()
    return 0


def _exit_when_terminated(*_: object) -> None:
    raise SystemExit(0)


class FollowersProcess:
    """The embedded default's read models follow the log, and its outboxes send, in a process of their own
    (`ledger projections --senders`), so that they run on another core: in the API's process they took about
    half of its interpreter's time, and creates over HTTP ran at about half the rate. The scheduler stays with
    the API, whose locks (in-process on SQLite) keep a renewal and a command from charging on one basis.
    SQLite has no LISTEN: after each save the API writes a byte to a pipe that wakes the followers at once.
    The process is started again if it ends, stopped with the API, and ends by itself if the API's process
    dies (see `projections --news-fd`)."""

    def __init__(self, app: LedgerApplication) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._news: int | None = None
        self._news_guard = threading.Lock()  # a pipe replaced while a save writes to it: never a reused fd
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="followers-process", daemon=True)
        app.on_save.append(self._tell)

    def start(self) -> None:
        self._spawn()
        self._watcher.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        with self._news_guard:
            if self._news is not None:
                os.close(self._news)
                self._news = None

    def _spawn(self) -> None:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        try:
            self._process = subprocess.Popen([sys.executable, "-m", "cli", "projections", "--senders",
                                              "--news-fd", str(read_end)], pass_fds=(read_end,))
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        with self._news_guard:
            if self._news is not None:
                os.close(self._news)
            self._news = write_end

    def _tell(self) -> None:
        with self._news_guard:
            if self._news is None:
                return
            try:
                os.write(self._news, b".")
            except (BlockingIOError, BrokenPipeError):
                pass  # a full pipe: the followers have news to read already; a closed one: it is being restarted

    def _watch(self) -> None:
        while not self._stopping.is_set():
            assert self._process is not None
            code = self._process.wait()
            if self._stopping.wait(1.0):
                return
            if code == 0:  # it was asked to stop (Ctrl-C reaches every process of the terminal's group)
                return
            log.error("the read models' process ended (exit code %s); starting it again", code)
            self._spawn()


def _announce_sandbox(services: Services, base: str) -> None:
    from service import sandbox
    from service.tokens import mint, token_keys

    seeded = sandbox.seed(services.ledger)
    keys = token_keys(services.settings, services.development_secret)
    if keys.signing_key is None:
        return
    admin = mint(keys, sub="sandbox-admin", email="admin@sandbox.example",
                 orgs=[{"id": sandbox.SANDBOX_ORG, "role": "admin"}], roles=[], ttl_seconds=12 * 3600)
    print(f"""
Sandbox {'seeded' if seeded else 'ready'}: reseller {sandbox.SANDBOX_ORG} with a card on file (simulated payments).
  Portal:    {base}/#token={admin}
  API docs:  {base}/docs
  Try:       curl -H "Authorization: Bearer $TOKEN" {base}/v1/resellers/{sandbox.SANDBOX_ORG}/billing
  TOKEN={admin}
  More tokens: ledger token --org ORG  (or --support)
""", flush=True)


@exits
def migrate(data_dir: DataDir = None) -> int:
    """create what the store needs (the event log's tables, every read model's tables) and exit: the
    one-shot step of a deployment that the other processes wait for"""
    from service.bootstrap import bootstrap

    config = settings(data_dir)
    services = bootstrap(config)  # makes every table, under the schema lock, as each process's start does
    try:
        where = "PostgreSQL" if config.uses_postgres else str(config.data_dir)
        print(f"the store in {where} is ready: the event log and {len(services.read_side.followers)} read models",
              flush=True)
    finally:
        services.close()
    return 0


@exits
def projections(data_dir: DataDir = None,
                senders: Annotated[bool, typer.Option(hidden=True, help="also send the outboxes' invitations and "
                                                                       "webhooks (as `ledger serve` asks on SQLite)")]
                = False,
                news_fd: Annotated[int | None, typer.Option(hidden=True, help="a pipe to read news of saves from "
                                                                             "(given by `ledger serve`)")] = None,
                ) -> int:
    """keep the read models (and the outboxes of invitations and webhooks) following the event log, until
    stopped"""
    from service.bootstrap import bootstrap

    # Started by `ledger serve`: it ends with it, even when it is killed and cannot stop it. Its end is seen on a
    # copy of the pipe (the followers close theirs when the writer goes), not by the parent's pid, which may have
    # changed already by the time this process has started (a server stopped at once).
    served = os.dup(news_fd) if news_fd is not None else None
    services = bootstrap(settings(data_dir))
    services.start_background(scheduler=False, senders=senders, news_fd=news_fd)
    print(f"following the event log into: {', '.join(services.read_side.followers)}", flush=True)
    return _until_stopped(services, served=served)


@exits
def scheduler(data_dir: DataDir = None) -> int:
    """renew, retry and expire subscriptions as they fall due, and send the invitations and webhooks of
    the outboxes, until stopped (beside the API on PostgreSQL)"""
    from service.bootstrap import bootstrap

    services = bootstrap(settings(data_dir))
    services.start_background(followers=False)
    print("scheduler running: renewals, retries and expiries as they fall due; invitations and webhooks sent",
          flush=True)
    return _until_stopped(services)


def _until_stopped(services: Services, *, served: int | None = None) -> int:
    """Until a signal to stop, or (given ``served``, the read end of a pipe) until no process holds the pipe's
    write end any more: the process that wrote to it has ended, however it ended."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    hangup = None
    if served is not None:
        hangup = select.poll()
        hangup.register(served, select.POLLHUP)  # not POLLIN: the followers read the news
    try:
        while not stop.wait(1.0 if hangup is not None else None):
            if hangup is not None and hangup.poll(0):
                break
    finally:
        services.close()
        if served is not None:
            os.close(served)
    return 0

