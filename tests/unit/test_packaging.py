"""The images (issue 11, point 6), as far as they can be checked without a Docker engine: the lock pins every
dependency with hashes, the Dockerfile installs from it and runs unprivileged with a health check, and the
compose file pins its images, checks the API's health, runs a one-shot migration the others wait for, takes
its secrets from .env (whose example is committed) and restarts what stops."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def locked() -> dict[str, list[str]]:
    """Each pinned name of requirements.lock, with its hashes."""
    pins: dict[str, list[str]] = {}
    current = None
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line):
            current = match.group(1).lower().replace("_", "-")
            pins[current] = []
        elif current and (match := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            pins[current].append(match.group(1))
    return pins


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = locked()
    wanted = {_name(r) for r in project["project"]["dependencies"]} | {"setuptools"}
    wanted |= {"psycopg-binary", "uvloop", "httptools"}  # from the extras the image relies on
    assert wanted <= pins.keys(), wanted - pins.keys()
    assert all(pins.values()), [name for name, hashes in pins.items() if not hashes]
    assert re.search(r"^eventsourcing==9\.5\.6 ", (ROOT / "requirements.lock").read_text(), re.M)


def test_the_dockerfile_installs_from_the_lock_and_runs_unprivileged_with_a_health_check() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile and "requirements.lock" in dockerfile
    assert re.search(r"pip install --no-deps --no-build-isolation \.", dockerfile)  # nothing else resolved
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/readyz", dockerfile, re.M)
    bases = re.findall(r"^ARG PYTHON_IMAGE=(\S+)", dockerfile, re.M)
    assert bases and re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", bases[0])
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".venv" in ignored


def test_compose_pins_every_image() -> None:
    for name, service in compose()["services"].items():
        image = service.get("image")
        if "build" in service:
            continue
        assert image and ":" in image, name
        tag = image.split("@")[0].rsplit(":", 1)[1]
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), (name, image)


def test_compose_health_checks_migration_and_restarts() -> None:
    services = compose()["services"]
    api = services["api"]
    assert "/readyz" in " ".join(api["healthcheck"]["test"]) and not api["healthcheck"].get("disable")
    assert services["postgres"]["healthcheck"]["test"]
    migrate = services["migrate"]
    assert migrate["command"] == ["ledger", "migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "projections", "scheduler"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
    for name, service in services.items():
        if name != "migrate":
            assert service.get("restart") in ("unless-stopped", "always"), name
    assert migrate["restart"].startswith("on-failure")


def test_compose_takes_its_secrets_from_dot_env_and_the_example_names_them_all() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"^([A-Z0-9_]+)=", example, re.M))
    assert {"POSTGRES_PASSWORD", "LEDGER_QUOTE_SECRET", "LEDGER_JWT_SECRET"} <= used
    assert used <= named, used - named
    for service in compose()["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("SECRET", "PASSWORD")):
                assert str(value).startswith("${"), key
    assert ".env" in (ROOT / ".gitignore").read_text().split()


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    checked = subprocess.run(["docker-compose", "config", "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stderr
    (tmp_path / ".env").unlink()
    refused = subprocess.run(["docker-compose", "config", "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr


def test_compose_serves_the_scheduler_metrics_and_starts_its_workers_through_typed_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from service.settings import load_settings

    scheduler = compose()["services"]["scheduler"]
    environment = scheduler["environment"]
    assert environment["LEDGER_DATABASE_URL"] == compose()["services"]["api"]["environment"]["LEDGER_DATABASE_URL"]
    for name in ("LEDGER_SCHEDULER_METRICS_PORT", "LEDGER_SCHEDULER_METRICS_HOST", "LEDGER_SCHEDULER_PROCESSES",
                 "LEDGER_DATABASE_URL"):
        monkeypatch.setenv(name, str(environment[name]))
    settings = load_settings()
    assert (settings.scheduler_metrics_host, settings.scheduler_processes) == ("0.0.0.0", 2)
    port = settings.scheduler_metrics_port
    assert port and str(port) in scheduler["expose"]
    assert f"127.0.0.1:{port}/metrics" in " ".join(scheduler["healthcheck"]["test"])
