"""`ledger token` (a development bearer token) and `ledger support …` (enable, disable, tax-exempt a
reseller), each recorded with the operator who did it."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import DataDir, UsageError, add, exits, settings

if TYPE_CHECKING:
    from commands.handlers import Ledger

SUPPORT_ACTOR_PREFIX = "support:"

OrgId = Annotated[str, typer.Argument(metavar="ORG", help="the organization (its Lens Business ID)",
                                      show_default=False)]
Actor = Annotated[str | None, typer.Option(help="who is doing this, recorded in the event (for example your "
                                                "support user id); default: support:<your login name>",
                                           show_default=False)]


def register(app: typer.Typer) -> None:
    add(app, "Support", token)
    support = typer.Typer(help="support operations", no_args_is_help=True)
    add(support, None, enable_reseller, disable_reseller, tax_exempt)
    app.add_typer(support, name="support", rich_help_panel="Support")


@exits
def token(sub: Annotated[str | None, typer.Option(help="the user id (JWT sub), recorded as the actor of what the "
                                                       "token does; default: your login name",
                                                  show_default=False)] = None,
          email: Annotated[str, typer.Option(help="the user's email")] = "dev@example.com",
          org: Annotated[list[str] | None, typer.Option(
              metavar="ORG[:ROLE]", show_default=False,
              help="an organization and the user's role in it (admin, the default, or member); repeatable")] = None,
          support: Annotated[bool, typer.Option("--support", help="give the support role")] = False,
          ttl: Annotated[int, typer.Option(help="lifetime in seconds")] = 12 * 3600,
          private_key: Annotated[Path | None, typer.Option(help="RS256 private key (PEM) when tokens are RS256",
                                                           show_default=False)] = None,
          data_dir: DataDir = None) -> int:
    """mint a development bearer token"""
    from service.bootstrap import development_secret
    from service.tokens import mint, token_keys

    config = settings(data_dir)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    keys = token_keys(config, development_secret(config.data_dir))
    orgs = []
    for spec in org or []:
        org_id, _, role = spec.partition(":")
        if not org_id or role not in ("", "admin", "member"):
            raise UsageError(f"--org {spec!r}: expected ORG or ORG:admin or ORG:member")
        orgs.append({"id": org_id, "role": role or "admin"})
    signing_key = private_key.read_text() if private_key else None
    print(mint(keys, sub=sub if sub is not None else _login(), email=email, orgs=orgs,
               roles=["support"] if support else [], ttl_seconds=ttl, signing_key=signing_key))
    return 0


@exits
def enable_reseller(org_id: OrgId,
                    name: Annotated[str, typer.Option(help="the reseller's name (its new name, when it was a "
                                                           "reseller before)", show_default=False)],
                    actor: Actor = None, data_dir: DataDir = None) -> int:
    """enable an organization as a reseller"""
    def work(ledger: Ledger) -> None:
        reseller = ledger.enable_reseller(org_id, name=name, actor=_cli_actor(actor)).aggregate
        print(f"{reseller.org_id} ({reseller.name}) is {'enabled' if reseller.enabled else 'disabled'} as a reseller")

    return _with_ledger(data_dir, work)


@exits
def disable_reseller(org_id: OrgId, actor: Actor = None, data_dir: DataDir = None) -> int:
    """disable a reseller"""
    def work(ledger: Ledger) -> None:
        ledger.disable_reseller(org_id, actor=_cli_actor(actor))
        print(f"{org_id} is disabled as a reseller")

    return _with_ledger(data_dir, work)


@exits
def tax_exempt(org_id: OrgId,
               reason: Annotated[str | None, typer.Option(help="why (for example the exemption certificate "
                                                               "number); this or --revoke", show_default=False)] = None,
               revoke: Annotated[bool, typer.Option("--revoke", help="revoke the exemption; this or --reason")] = False,
               actor: Actor = None, data_dir: DataDir = None) -> int:
    """mark a reseller tax-exempt, or revoke it"""
    if (reason is None) == (not revoke):
        raise UsageError("give one of --reason R and --revoke")

    def work(ledger: Ledger) -> None:
        ledger.set_tax_exemption(org_id, exempt=not revoke, reason=reason or "", actor=_cli_actor(actor))
        print(f"{org_id} is {'no longer ' if revoke else ''}tax-exempt")

    return _with_ledger(data_dir, work)


def _with_ledger(data_dir: Path | None, work: Callable[[Ledger], None]) -> int:
    from service.bootstrap import bootstrap

    services = bootstrap(settings(data_dir))
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


def _cli_actor(actor: str | None) -> str:
    """The operator recorded for a support command: --actor as given, or support:<login>."""
    if actor is None:
        return SUPPORT_ACTOR_PREFIX + _login()
    actor = actor.strip()
    if not actor or len(actor) > 200 or not actor.isprintable():
        raise UsageError("--actor must be 1 to 200 printable characters")
    return actor
