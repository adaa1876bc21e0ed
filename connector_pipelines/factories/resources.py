"""Connections -> Dagster resources, one per named connection (the resource key is the connection name)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from connector_pipelines.spec.connections import Connection
from connector_pipelines.transports.registry import resource_for


def build_resources(connections: Mapping[str, Connection], base_dir: Path) -> dict[str, dg.ConfigurableResource]:
    """Every connection's resource (`transports.registry.resource_for`), keyed by the connection's name."""
    return {name: resource_for(connection, base_dir) for name, connection in connections.items()}
