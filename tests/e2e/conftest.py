"""Fixtures of the end-to-end suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.localstripe_server import LocalStripe, start


@pytest.fixture(scope="session")
def localstripe_server() -> Iterator[LocalStripe]:
    """One localstripe process for the session, on 127.0.0.1, its store in memory."""
    server = start()
    yield server
    server.stop()


@pytest.fixture
def localstripe_url(localstripe_server: LocalStripe) -> str:
    """The base URL of localstripe, emptied of every object before the test."""
    localstripe_server.reset()
    return localstripe_server.url
