"""Connections -> Dagster resources, one per named connection (the resource key is the connection name)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from connector_pipelines.spec.models import Connection, HttpConnection, SqlConnection, env_var_name
from connector_pipelines.transports.http_resource import HttpResource
from connector_pipelines.transports.registry import build_file_resource
from connector_pipelines.transports.sql import SqlResource
from connector_pipelines.transports.sql_source import resolve_sqlite_path


def build_resources(connections: dict[str, Connection], base_dir: Path) -> dict[str, dg.ConfigurableResource]:
    return {name: build_resource(connection, base_dir) for name, connection in connections.items()}


def build_resource(connection: Connection, base_dir: Path) -> dg.ConfigurableResource:
    if isinstance(connection, SqlConnection):
        return SqlResource(
            url=resolve_sqlite_path(connection.url, base_dir),
            password=dg.EnvVar(env_var_name(connection.password)) if connection.password else None,
        )
    if isinstance(connection, HttpConnection):
        return HttpResource(connection_json=connection.model_dump_json(), base_dir=str(base_dir))
    return build_file_resource(connection, base_dir)
