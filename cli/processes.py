"""The ledger's processes: `serve` (the HTTP API), `migrate` (a deployment's one-shot step), `projections` and
`scheduler` (the background processes of a PostgreSQL deployment)."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import DataDir, UsageError, add, exits, settings

if TYPE_CHECKING:
    from service.bootstrap import Services


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
    uvicorn.run(create_app(services, close_on_shutdown=True, background=not config.uses_postgres,
                           settle_charges=True),
                host=host, port=port, **uvicorn_options(config))
    return 0


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
def projections(data_dir: DataDir = None) -> int:
    """keep the read models (and the outboxes of invitations and webhooks) following the event log, until
    stopped"""
    from service.bootstrap import bootstrap

    services = bootstrap(settings(data_dir))
    services.start_background(scheduler=False)
    print(f"following the event log into: {', '.join(services.read_side.followers)}", flush=True)
    return _until_stopped(services)


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


def _until_stopped(services: Services) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        services.close()
    return 0

