"""pytest fixtures for the loopback HTTP target (`connector_pipelines_tests.servers.http_target`), loaded as a
plugin by conftest.py.

One target serves the whole session, in a thread of the test process; `http_target` clears it for each test
(empty store and recording, zero counts, no faults, no auth), so tests may share it without cleaning up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from connector_pipelines_tests.servers.fixtures import _serve

if TYPE_CHECKING:
    from connector_pipelines_tests.servers.http_target import RecordingTarget


@pytest.fixture(scope="session")
def http_target_server() -> Iterator[RecordingTarget]:
    """One RecordingTarget on loopback for the session; fails (never skips) when it cannot start."""
    from connector_pipelines_tests.servers.http_target import RecordingTarget

    yield from _serve("HTTP target", RecordingTarget)


@pytest.fixture
def http_target(http_target_server: RecordingTarget) -> RecordingTarget:
    """The session's target, cleared for this test: empty store and recording, no faults, no auth."""
    http_target_server.clear()
    return http_target_server
