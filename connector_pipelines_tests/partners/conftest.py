"""Fixtures of the file exchange tests: `exchanges(partners)` makes a FileExchange, stopped at teardown."""

from __future__ import annotations

import pytest

from connector_pipelines_tests.partners.exchange import FileExchange


@pytest.fixture
def exchanges(tmp_path):
    made: list[FileExchange] = []

    def make(
        partners: list[dict],
        connections: dict | None = {},  # noqa: B006 - never changed
        folder: str = "exchange",
        email_connection: str | None = None,
    ) -> FileExchange:
        """`connections` None: connections.yaml is left to a project builder; `folder` "": the test's tmp_path."""
        root = tmp_path / folder if folder else tmp_path
        exchange = FileExchange(root, partners, connections, email_connection)
        made.append(exchange)
        return exchange

    yield make
    for exchange in made:
        exchange.stop()
