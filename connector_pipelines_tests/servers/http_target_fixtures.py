"""pytest fixtures for the loopback HTTP target (loaded as a plugin by conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connector_pipelines.demo.http_target import RecordingTarget
from connector_pipelines_tests.servers.fixtures import _serve


@pytest.fixture(scope="session")
def http_target_server() -> Iterator[RecordingTarget]:
    """One RecordingTarget for the session; fails (never skips) when it cannot start."""
    yield from _serve("HTTP target", RecordingTarget)


@pytest.fixture
def http_target(http_target_server: RecordingTarget) -> RecordingTarget:
    """The session's target, cleared: empty store and recording, no faults, no auth."""
    http_target_server.clear()
    return http_target_server
