"""kill -9 of the serving processes under a retrying client load, on both backends: every acknowledged
request is in the log exactly once, every charge has its billing document, reconcile and replay exit 0.
The same harness, with bigger numbers, is bench/crash_load.py."""

from __future__ import annotations

import pytest

from bench.crash_load import run

pytestmark = pytest.mark.e2e


def test_killed_servers_lose_no_acknowledged_request_and_take_no_money_without_its_record(
        service_env: dict[str, str], backend: str) -> None:
    figures = run(backend, service_env, requests=48, clients=4, kills=3)

    assert figures.kills == 3
    assert figures.acks == figures.requests == 48, figures
    assert figures.refused == {} and figures.abandoned == 0
    assert figures.lost_or_doubled == []
    assert figures.documents == figures.charges, "one billing document per processor charge"
    assert figures.reconcile_exit == 0, figures.reconcile_output
    assert figures.replay_exit == 0, figures.replay_output
