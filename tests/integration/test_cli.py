"""The `ledger` command line as an operator meets it (issue 11, point 5): `--version`, the help marking required
options, usage errors refused at parse time in one line with exit 2, `--json` verdicts, `-o` files written whole,
progress bars only on a terminal, and quiet on a closed pipe."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pytest

from cli.main import main
from ledger import events
from service.bootstrap import bootstrap
from service.settings import load_settings
from tests.billing_support import PRO_ORDER
from tests.support import ADMIN

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("ledger")
LEDGER = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "cli"]
PERIOD = ["--from", "2000-01-01", "--to", "2100-01-01"]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A deployment on SQLite with a reseller and one subscription, which the commands find in the environment."""
    for name in [name for name in os.environ if name.startswith("LEDGER_")]:
        monkeypatch.delenv(name)
    folder = tmp_path / "data"
    monkeypatch.setenv("LEDGER_DATA_DIR", str(folder))
    monkeypatch.setenv("LEDGER_SANDBOX_DATA", "false")
    services = bootstrap(load_settings())
    try:
        services.ledger.enable_reseller("org_cli", name="CLI", actor="support")
        services.ledger.set_billing_info("org_cli", payment_method="pm_card_visa", billing_email="b@cli.example",
                                         country="DE", actor=ADMIN)
        services.ledger.create_subscription("org_cli", PRO_ORDER, actor=ADMIN)
        services.read_side.catch_up()  # the read models as a running deployment keeps them
    finally:
        services.close()
    return folder


def environment(data_dir: Path, **extra: str) -> dict[str, str]:
    """The process's environment with only this deployment's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return env | {"LEDGER_DATA_DIR": str(data_dir), "LEDGER_SANDBOX_DATA": "false", "PYTHONPATH": str(ROOT)} | extra


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"ledger {metadata.version('reseller-ledger')}\n"


@pytest.mark.parametrize(("argv", "required"), [(["support", "enable-reseller"], ["--name"]),
                                                (["reconcile"], ["--from", "--to"]),
                                                (["as-of"], ["--reseller"])])
def test_the_help_marks_required_options(argv: list[str], required: list[str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for option in required:
        at = next(i for i, line in enumerate(lines) if f" {option} " in line)
        assert lines[at].lstrip("│ ").startswith("*"), lines[at]  # Rich's mark of a required option
        assert any("[required]" in line for line in lines[at:at + 4]), lines[at:at + 4]


def test_a_missing_required_option_is_refused_at_parse_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path / "data"))
    assert main(["support", "enable-reseller", "org_x"]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["ledger support enable-reseller: Missing option '--name'. "
                                         "(see: ledger support enable-reseller --help)"]
    assert captured.out == "" and not (tmp_path / "data").exists()  # the store was never opened


@pytest.mark.parametrize("argv", [["nonsense"], ["replay", "--bogus"], ["verify", "--from", "x"],
                                  ["export-events", "--reseller", "a", "--subscription", "b"],
                                  ["verify", "--head", "--upgrade"], ["support", "tax-exempt", "org_x"]])
def test_bad_usage_is_one_line_and_exit_2(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path / "data"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("ledger") and "Traceback" not in err, err


def test_an_interrupted_command_exits_130(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("service.bootstrap.bootstrap", interrupted)
    assert main(["migrate"]) == 130


def test_replay_and_verify_verdicts_as_json(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--json"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["verdict"] == "equal" and replayed["equal"] is True and replayed["events"] > 0
    assert replayed["read_models"] and all(view["equal"] for view in replayed["read_models"])

    assert main(["verify", "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert verified["verdict"] == "intact" and verified["events"] == replayed["events"]


def test_reconcile_verdict_as_json_into_a_file(data_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "reconcile.json"
    assert main(["reconcile", *PERIOD, "--json", "-o", str(report)]) == 0
    verdict = json.loads(report.read_text())
    assert (verdict["verdict"], verdict["documents"], verdict["charges"], verdict["mismatches"]) == (
        "match", 1, 1, [])


@pytest.mark.parametrize("argv", [["export-billing", *PERIOD], ["export-events"], ["as-of", "NOW", "--reseller",
                                                                                  "org_cli"]])
def test_output_writes_the_file_whole(argv: list[str], data_dir: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    argv = [events.iso(datetime.now(UTC)) if arg == "NOW" else arg for arg in argv]
    target = tmp_path / "out" / "file"
    target.parent.mkdir()
    target.write_text("an older file")
    assert main([*argv, "-o", str(target)]) == 0
    assert capsys.readouterr().out == ""
    assert target.read_text() != "an older file" and target.read_text().endswith("\n")
    assert [p.name for p in target.parent.iterdir()] == ["file"]  # no temporary file left beside it
    assert main([*argv, "--output", str(tmp_path / "missing" / "file")]) == 2
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["export-billing", *PERIOD], ["export-events"], ["--help"]])
def test_a_closed_pipe_ends_quietly(argv: list[str], data_dir: Path) -> None:
    process = subprocess.Popen([*LEDGER, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment(data_dir), cwd=ROOT)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader goes away before the command writes a line
    err = process.stderr.read()
    assert process.wait(timeout=120) == 0
    assert "exported" in err or err == "", err


def test_head_of_a_pipe(data_dir: Path) -> None:
    done = subprocess.run(["sh", "-c", f"{' '.join(LEDGER)} export-events | head -1"], env=environment(data_dir),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.count("\n") == 1, done
    assert "Broken pipe" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_progress_only_on_a_terminal(data_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        assert subprocess.run([*LEDGER, "replay"], env=environment(data_dir), cwd=ROOT, stderr=stderr,
                              stdout=subprocess.DEVNULL, timeout=120).returncode == 0
    assert log.read_text() == ""  # no bar, so no carriage return, in a file

    leader, follower = pty.openpty()
    try:
        done = subprocess.run([*LEDGER, "replay"], env=environment(data_dir, TERM="xterm-256color", COLUMNS="100"),
                              cwd=ROOT, stderr=follower, stdout=subprocess.PIPE, text=True, timeout=120)
        os.close(follower)
        shown = _read_all(leader)
    finally:
        os.close(leader)
    assert done.returncode == 0 and "verdict: every read model equals" in done.stdout
    assert "read models" in shown and "events" in shown, shown


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
