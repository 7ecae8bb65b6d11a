"""The `ledger` command line."""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TextIO

from commands.errors import PaymentUnavailable
from commands.handlers import Ledger
from finance import cli as finance_cli
from ledger.errors import DomainError
from service import as_of_cli, logs, metrics, verify_cli
from service.bootstrap import Services, StoreUnavailable
from service.settings import Settings, SettingsError, load_settings

SUPPORT_ACTOR_PREFIX = "support:"


class UsageError(Exception):
    """An argument the command cannot use."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "data_dir", None):
        os.environ["LEDGER_DATA_DIR"] = str(args.data_dir)
    logs.configure_from_environment()
    try:
        return int(args.run(args, load_settings()) or 0)
    except SettingsError as error:
        print(f"ledger: configuration error: {error}", file=sys.stderr)
        return 2
    except UsageError as error:
        print(f"ledger: {error}", file=sys.stderr)
        return 2
    except PaymentUnavailable as error:
        print(f"ledger: the payment processor is unavailable: {error.detail}", file=sys.stderr)
        return 3
    except StoreUnavailable as error:
        print(f"ledger: {error}", file=sys.stderr)
        return 3
    except DomainError as error:
        print(f"ledger: {error.code}: {error.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledger", description="The reseller subscription ledger.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = _command(commands, "serve", _serve, "start the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="API worker processes (PostgreSQL only)")

    token = _command(commands, "token", _token, "mint a development bearer token")
    token.add_argument("--sub", help="the user id (JWT sub), recorded as the actor of what the token does; "
                                     "default: your login name")
    token.add_argument("--email", default="dev@example.com")
    token.add_argument("--org", action="append", default=[], metavar="ORG[:ROLE]",
                       help="an organization and the user's role in it (admin, the default, or member); repeatable")
    token.add_argument("--support", action="store_true", help="give the support role")
    token.add_argument("--ttl", type=int, default=12 * 3600, help="lifetime in seconds")
    token.add_argument("--private-key", type=Path, help="RS256 private key (PEM) when tokens are RS256")

    _command(commands, "migrate", _migrate,
             "create what the store needs (the event log's tables, every read model's tables) and exit: the "
             "one-shot step of a deployment that the other processes wait for")
    _command(commands, "projections", _projections,
             "keep the read models (and the invitation outbox) following the event log, until stopped")
    _command(commands, "scheduler", _scheduler,
             "renew, retry and expire subscriptions as they fall due, until stopped (beside the API on PostgreSQL)")

    replay = _command(commands, "replay", _replay,
                      "rebuild every read model from the event log into fresh tables and compare them with the "
                      "live ones; exit 1 on any difference")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")

    export = _command(commands, "export-events", _export_events,
                      "write the event log as JSON lines (the format is in docs/event-export.md)")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--reseller", metavar="ORG", help="only this reseller's streams")
    which.add_argument("--subscription", metavar="ID", help="only this subscription's stream")
    export.add_argument("--output", "-o", type=Path, help="a file (default: standard output)")

    finance_cli.register(commands, _command)
    verify_cli.register(commands, _command)
    as_of_cli.register(commands, _command)

    support = commands.add_parser("support", help="support operations").add_subparsers(
        dest="support_command", required=True, metavar="OPERATION")
    enable = _command(support, "enable-reseller", _enable_reseller, "enable an organization as a reseller")
    enable.add_argument("org_id")
    enable.add_argument("--name", help="the reseller's name (required the first time)")
    disable = _command(support, "disable-reseller", _disable_reseller, "disable a reseller")
    disable.add_argument("org_id")
    exempt = _command(support, "tax-exempt", _tax_exempt, "mark a reseller tax-exempt, or revoke it")
    exempt.add_argument("org_id")
    for operation in (enable, disable, exempt):
        operation.add_argument("--actor", help="who is doing this, recorded in the event (for example your "
                                               "support user id); default: support:<your login name>")
    group = exempt.add_mutually_exclusive_group(required=True)
    group.add_argument("--reason", help="why (for example the exemption certificate number)")
    group.add_argument("--revoke", action="store_true")
    return parser


def _command(commands: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace, Settings], int],
             help_text: str) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=help_text, description=help_text)
    command.add_argument("--data-dir", type=Path, help="where the embedded default keeps its files (LEDGER_DATA_DIR)")
    command.set_defaults(run=run)
    return command


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.app import create_app
    from api.server import uvicorn_options
    from service.bootstrap import bootstrap

    if args.workers > 1:
        if not settings.uses_postgres:
            raise UsageError("--workers > 1 needs PostgreSQL (LEDGER_DATABASE_URL): SQLite serves one process")
        counts = metrics.prepare_multiprocess_dir()  # the workers' metrics, added up by whichever is scraped
        try:
            uvicorn.run("api.app:create_app_from_environment", factory=True, host=args.host, port=args.port,
                        workers=args.workers, **uvicorn_options(settings))
        finally:
            metrics.remove_multiprocess_dir(counts)
        return 0
    services = bootstrap(settings)
    if settings.seeds_sandbox:
        _announce_sandbox(services, args)
    uvicorn.run(create_app(services, close_on_shutdown=True, background=not settings.uses_postgres,
                           settle_charges=True),
                host=args.host, port=args.port, **uvicorn_options(settings))
    return 0


def _announce_sandbox(services: Services, args: argparse.Namespace) -> None:
    from service import sandbox
    from service.tokens import mint, token_keys

    seeded = sandbox.seed(services.ledger)
    keys = token_keys(services.settings, services.development_secret)
    if keys.signing_key is None:
        return
    admin = mint(keys, sub="sandbox-admin", email="admin@sandbox.example",
                 orgs=[{"id": sandbox.SANDBOX_ORG, "role": "admin"}], roles=[], ttl_seconds=12 * 3600)
    base = f"http://{args.host}:{args.port}"
    print(f"""
Sandbox {'seeded' if seeded else 'ready'}: reseller {sandbox.SANDBOX_ORG} with a card on file (simulated payments).
  Portal:    {base}/#token={admin}
  API docs:  {base}/docs
  Try:       curl -H "Authorization: Bearer $TOKEN" {base}/v1/resellers/{sandbox.SANDBOX_ORG}/billing
  TOKEN={admin}
  More tokens: ledger token --org ORG  (or --support)
""", flush=True)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from service.bootstrap import bootstrap

    services = bootstrap(settings)  # makes every table, under the schema lock, as each process's start does
    try:
        where = "PostgreSQL" if settings.uses_postgres else str(settings.data_dir)
        print(f"the store in {where} is ready: the event log and {len(services.read_side.followers)} read models",
              flush=True)
    finally:
        services.close()
    return 0


def _projections(args: argparse.Namespace, settings: Settings) -> int:
    from service.bootstrap import bootstrap

    services = bootstrap(settings)
    services.start_background(scheduler=False)
    print(f"following the event log into: {', '.join(services.read_side.followers)}", flush=True)
    return _until_stopped(services)


def _scheduler(args: argparse.Namespace, settings: Settings) -> int:
    from service.bootstrap import bootstrap

    services = bootstrap(settings)
    services.start_background(followers=False)
    print("scheduler running: renewals, retries and expiries as they fall due", flush=True)
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


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile

    import psycopg

    from projections.deployment import ViewLocation
    from projections.replay import replay
    from service.bootstrap import bootstrap

    services = bootstrap(settings)
    scratch = tempfile.TemporaryDirectory(prefix="replay-", dir=settings.data_dir)
    schema = f"replay_{os.getpid()}_{int(time.time())}"
    fresh = (ViewLocation(conninfo=settings.database_url, schema=schema) if settings.database_url
             else ViewLocation(folder=Path(scratch.name)))
    bar = None if args.quiet else _ProgressBar(sys.stderr)
    try:
        services_head = services.read_side.log.head()
        verdicts = replay(services.read_side, fresh, progress=bar.show if bar else None)
    finally:
        if bar:
            bar.finish()
        fresh.close()
        if settings.database_url:
            with psycopg.connect(settings.database_url, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        scratch.cleanup()
        services.close()
    for verdict in verdicts:
        print(f"{verdict.projection:<20} {verdict.state:<24} {verdict.live_rows} rows at log position "
              f"{verdict.position}")
        for difference in verdict.differences:
            print(f"    {difference}")
    print(f"the event log holds {services_head} events")
    equal = all(v.equal for v in verdicts)
    print("verdict: every read model equals a replay of the event log" if equal
          else "verdict: DIFFERENCES FOUND: the read models do not equal a replay of the event log")
    return 0 if equal else 1


class _ProgressBar:
    def __init__(self, out: TextIO) -> None:
        self._out, self._current, self._last = out, "", 0.0

    def show(self, name: str, done: int, total: int) -> None:
        now = time.monotonic()
        if name != self._current:
            self.finish()
            self._current = name
        elif now - self._last < 0.2 and done < total:
            return
        self._last = now
        share = done / total if total else 1.0
        filled = int(share * 30)
        self._out.write(f"\r{name:<20} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} events {share:5.0%}")
        self._out.flush()

    def finish(self) -> None:
        if self._current:
            self._out.write("\n")
            self._current = ""


def _export_events(args: argparse.Namespace, settings: Settings) -> int:
    from uuid import UUID

    from projections.export import export_events
    from service.bootstrap import bootstrap

    subscription = None
    if args.subscription:
        try:
            subscription = UUID(args.subscription)
        except ValueError:
            raise UsageError(f"--subscription {args.subscription!r} is not a subscription id") from None
    services = bootstrap(settings)
    try:
        with (open(args.output, "w", encoding="utf-8") if args.output else nullcontext(sys.stdout)) as out:
            count = export_events(services.read_side.log, out, reseller_org_id=args.reseller,
                                  subscription_id=subscription)
    finally:
        services.close()
    print(f"exported {count} events", file=sys.stderr)
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from service.bootstrap import development_secret
    from service.tokens import mint, token_keys

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    keys = token_keys(settings, development_secret(settings.data_dir))
    orgs = []
    for spec in args.org:
        org_id, _, role = spec.partition(":")
        if not org_id or role not in ("", "admin", "member"):
            raise UsageError(f"--org {spec!r}: expected ORG or ORG:admin or ORG:member")
        orgs.append({"id": org_id, "role": role or "admin"})
    private_key = args.private_key.read_text() if args.private_key else None
    sub = args.sub if args.sub is not None else _login()
    print(mint(keys, sub=sub, email=args.email, orgs=orgs, roles=["support"] if args.support else [],
               ttl_seconds=args.ttl, signing_key=private_key))
    return 0


def _with_ledger(settings: Settings, work: Callable[[Ledger], None]) -> int:
    from service.bootstrap import bootstrap

    services = bootstrap(settings)
    try:
        work(services.ledger)
    finally:
        services.close()
    return 0


def _login() -> str:
    """The operating system's name of the user running the command: never a made-up one."""
    try:
        login = getpass.getuser().strip()
    except Exception:  # no LOGNAME/USER and no passwd entry (a bare container)
        login = ""
    if not login:
        raise UsageError("cannot tell who you are (no login name): say so with --actor (or --sub for a token)")
    return login


def _cli_actor(args: argparse.Namespace) -> str:
    """The operator recorded for a support command: --actor as given, or support:<login>."""
    if args.actor is None:
        return SUPPORT_ACTOR_PREFIX + _login()
    actor = args.actor.strip()
    if not actor or len(actor) > 200 or not actor.isprintable():
        raise UsageError("--actor must be 1 to 200 printable characters")
    return actor


def _enable_reseller(args: argparse.Namespace, settings: Settings) -> int:
    def work(ledger: Ledger) -> None:
        outcome = ledger.enable_reseller(args.org_id, name=args.name, actor=_cli_actor(args))
        reseller = outcome.aggregate
        print(f"{reseller.org_id} ({reseller.name}) is {'enabled' if reseller.enabled else 'disabled'} as a reseller")

    return _with_ledger(settings, work)


def _disable_reseller(args: argparse.Namespace, settings: Settings) -> int:
    def work(ledger: Ledger) -> None:
        ledger.disable_reseller(args.org_id, actor=_cli_actor(args))
        print(f"{args.org_id} is disabled as a reseller")

    return _with_ledger(settings, work)


def _tax_exempt(args: argparse.Namespace, settings: Settings) -> int:
    def work(ledger: Ledger) -> None:
        ledger.set_tax_exemption(args.org_id, exempt=not args.revoke, reason=args.reason or "",
                                 actor=_cli_actor(args))
        print(f"{args.org_id} is {'no longer ' if args.revoke else ''}tax-exempt")

    return _with_ledger(settings, work)


if __name__ == "__main__":
    sys.exit(main())
