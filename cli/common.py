"""What every `ledger` command shares: its settings, its exit codes, where it writes, its progress bars."""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from service.settings import Settings

DONE, FOUND, BAD_USAGE, UNREADABLE, INTERRUPTED = 0, 1, 2, 3, 130
"""The exit codes: done (for a check, nothing found), a check found something (mismatches, differences, a
broken chain) or a command was refused, bad usage, the store or the payment processor could not be read,
interrupted (Ctrl-C)."""

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="where the embedded default keeps its files "
                                                                 "(LEDGER_DATA_DIR)", show_default=False)]
Output = Annotated[Path | None, typer.Option("--output", "-o", metavar="FILE", show_default=False,
                                             help="where to write it (default: standard output)")]
Json = Annotated[bool, typer.Option("--json", help="the verdict and its figures as one JSON object")]


class UsageError(Exception):
    """An argument the command cannot use: exit 2, with the message and no traceback."""


def add(app: typer.Typer, panel: str | None, *commands: Callable[..., None], epilog: str | None = None) -> None:
    """Each command under its function's name (`export_events` is `export-events`), with its docstring as its
    help, in the help's ``panel``."""
    for command in commands:
        app.command(help=" ".join((command.__doc__ or "").split()), rich_help_panel=panel,
                    epilog=" ".join(epilog.split()) if epilog else None)(command)


def settings(data_dir: Path | None) -> Settings:
    """The settings of this run: the environment (or `.env`), with --data-dir as LEDGER_DATA_DIR."""
    from service import logs
    from service.settings import load_settings

    if data_dir:
        os.environ["LEDGER_DATA_DIR"] = str(data_dir)
    logs.configure_from_environment()
    return load_settings()


def exits(run: Callable[..., int | None]) -> Callable[..., None]:
    """A command's body, returning its exit code, as a Typer command: the failures every command shares are
    one line on standard error and their exit code, and a reader that went away (`| head`) ends it quietly."""

    @functools.wraps(run)
    def command(*args: Any, **kwargs: Any) -> None:
        code = _exit_code(run, *args, **kwargs)
        if code:
            raise typer.Exit(code)

    return command


def _exit_code(run: Callable[..., int | None], *args: Any, **kwargs: Any) -> int:
    from commands.errors import PaymentUnavailable
    from ledger.errors import DomainError
    from service.bootstrap import StoreUnavailable
    from service.settings import SettingsError

    try:
        return int(run(*args, **kwargs) or DONE)
    except BrokenPipeError:
        return closed_pipe()
    except SettingsError as error:
        return fail(f"configuration error: {error}", BAD_USAGE)
    except UsageError as error:
        return fail(str(error), BAD_USAGE)
    except PaymentUnavailable as error:
        return fail(f"the payment processor is unavailable: {error.detail}", UNREADABLE)
    except StoreUnavailable as error:
        return fail(str(error), UNREADABLE)
    except DomainError as error:
        return fail(f"{error.code}: {error.detail}", FOUND)
    except KeyboardInterrupt:
        return INTERRUPTED


def fail(message: str, code: int) -> int:
    print(f"ledger: {message}", file=sys.stderr)
    return code


def closed_pipe() -> int:
    """Standard output's reader went away (`ledger export-billing … | head -1`): what was asked for has been
    read, so exit 0, and say nothing. What is still buffered goes to /dev/null, so that Python's last flush
    of standard output, at exit, does not fail again (as the Python documentation on SIGPIPE advises)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # a standard output with no file behind it (a test's capture)
        pass
    return DONE


@contextmanager
def output(path: Path | None) -> Iterator[TextIO]:
    """Standard output, or the file at ``path``, written whole or not at all: into a temporary file beside
    it, renamed over it once complete. A file that cannot be written is bad usage (exit 2)."""
    if path is None:
        yield sys.stdout
        return
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror}") from None
    try:
        with open(fd, "w", encoding="utf-8", newline="") as file:
            yield file
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror}") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def print_json(value: Any, out: TextIO | None = None) -> None:
    """One JSON object on one line."""
    print(json.dumps(value, default=str), file=out or sys.stdout)


class Progress:
    """Rich progress bars on standard error, only when it is a terminal: in a file or a pipe there is no
    carriage return, nothing at all. ``show(name, done, total)`` moves the bar of ``name``."""

    def __init__(self, enabled: bool = True) -> None:
        self._bars: Any = None
        self._tasks: dict[str, Any] = {}
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bars

            self._bars = Bars(
                TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(), TextColumn("events"),
                TaskProgressColumn(), TimeElapsedColumn(), console=Console(file=sys.stderr), transient=False)

    def __enter__(self) -> Progress:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    @property
    def shown(self) -> bool:
        return self._bars is not None

    def show(self, name: str, done: int, total: int) -> None:
        if self._bars is None:
            return
        if name not in self._tasks:
            self._tasks[name] = self._bars.add_task(name, total=total)
        self._bars.update(self._tasks[name], completed=done, total=total)
