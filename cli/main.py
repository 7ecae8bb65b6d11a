"""The `ledger` command: its commands, by theme, in cli/processes.py, cli/support.py, cli/audit.py and
cli/finance.py.

Exit codes: 0 done; 1 a check found something (reconcile's mismatches, replay's differences, a broken hash
chain) or the ledger refused a command; 2 bad usage (an unknown or missing option, a value that does not parse,
a configuration error, an output that cannot be written); 3 the store or the payment processor could not be
read; 130 interrupted. A closed standard output (`ledger export-billing … | head -1`) ends the command quietly,
with 0: what the reader wanted, it read.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Annotated

import typer

from cli import audit, finance, processes, support
from cli.common import BAD_USAGE, DONE, INTERRUPTED, closed_pipe

DISTRIBUTION = "reseller-ledger"

app = typer.Typer(name="ledger", help="The reseller subscription ledger.", no_args_is_help=True,
                  add_completion=False, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
processes.register(app)
audit.register(app)
finance.register(app)
support.register(app)


def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _print_version(asked: bool) -> None:
    if asked:
        print(f"ledger {version()}")
        raise typer.Exit()


@app.callback()
def _root(_version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                 help="print the version and exit")] = False) -> None:
    """The reseller subscription ledger."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run `ledger ARGV` (default: the process's arguments) and return its exit code; never raises SystemExit."""
    command = typer.main.get_command(app)
    stdout = sys.stdout
    try:
        result = command.main(args=list(sys.argv[1:] if argv is None else argv), prog_name="ledger",
                              standalone_mode=False)
        sys.stdout.flush()  # here, not at the interpreter's exit, where a closed pipe would be reported
    except typer.TyperException as error:  # Typer's usage errors (exit 2) and the like: one line
        context = getattr(error, "ctx", None)
        where = context.command_path if context is not None else "ledger"
        hint = f" (see: {where} --help)" if error.exit_code == BAD_USAGE else ""
        if error.format_message():  # none when the help was shown instead (`ledger` alone)
            print(f"{where}: {error.format_message()}{hint}", file=sys.stderr)
        return error.exit_code
    except typer.Abort:
        return INTERRUPTED
    except BrokenPipeError:
        return closed_pipe()
    except SystemExit as exit:
        # How Typer (sys.stdout replaced) and Rich (raised while handling it) end a write to a closed pipe
        if sys.stdout is not stdout or isinstance(exit.__context__, BrokenPipeError):
            return closed_pipe()
        return exit.code if isinstance(exit.code, int) else BAD_USAGE
    return result if isinstance(result, int) else DONE


def run() -> None:
    """The `ledger` script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
