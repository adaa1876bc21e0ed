"""The platform's own state as Dagster resources: the storage folder, the delivery ledger, the import state.

Their defaults are today's (`var/storage` under the project, SQLite in it); `$CONNECTOR_PIPELINES_STORAGE` and
`$CONNECTOR_PIPELINES_LEDGER_URL`, when set, become `dg.EnvVar` fields (read at run time, shown by name). A test or a
deployment can also pass other instances to `build_definitions` / `dg.materialize` instead of setting variables.
`$CONNECTOR_PIPELINES_ARCHIVE` names an `s3` connection of connections.yaml that keeps the storage's lasting files
(`storage.Archive`), for runs that do not share a folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.spec.connections import Connection
from connector_pipelines.spec.loader import Project
from connector_pipelines.state.database import LEDGER_URL_ENV, default_state_url, environment_state_url
from connector_pipelines.state.import_state import ImportState
from connector_pipelines.state.ledger import DeliveryLedger
from connector_pipelines.storage import ARCHIVE_ENV, STORAGE_ENV, Archive, Storage, default_storage_root
from connector_pipelines.transports.registry import client_for, resource_for
from connector_pipelines.transports.resources import S3Resource


class StorageResource(dg.ConfigurableResource):
    """The folder where runs keep snapshots, audit files, import runs and inboxes, and the S3 archive that keeps
    the lasting ones when runs do not share the folder."""

    root: str
    archive: S3Resource | None = None

    def get_storage(self) -> Storage:
        return Storage(Path(self.root), Archive(self.archive.get_client()) if self.archive is not None else None)


def archive_connection(connections: Mapping[str, Connection]) -> str | None:
    """The name of the connection `$CONNECTOR_PIPELINES_ARCHIVE` names (None when unset), checked to be `s3`."""
    name = os.environ.get(ARCHIVE_ENV)
    if not name:
        return None
    candidates = sorted(key for key, connection in connections.items() if connection.type == "s3")
    if name not in connections or connections[name].type != "s3":
        found = f"'{name}' is a {connections[name].type} connection" if name in connections else f"there is no '{name}'"
        raise ConnectorConfigError(
            [
                f"{ARCHIVE_ENV}={name}: the storage archive must be an s3 connection of connections.yaml, but {found}"
                f"; s3 connections: {', '.join(candidates) or 'none'}"
            ]
        )
    return name


def project_storage(project: Project) -> Storage:
    """The storage the CLI reads outside a run: the project's folder, and the archive when one is configured."""
    name = archive_connection(project.connections)
    client = client_for(project.connections[name], project.base_dir, name) if name else None
    return Storage(default_storage_root(project.base_dir), Archive(client) if client is not None else None)


class LedgerResource(dg.ConfigurableResource):
    """The delivery ledger's database (SQLAlchemy URL), the environment's own place in it (`environment`: None or
    production, the database itself). Call `dispose()` on the ledger when done."""

    url: str
    environment: str | None = None

    def get_ledger(self) -> DeliveryLedger:
        return DeliveryLedger(environment_state_url(self.url, self.environment))


class ImportStateResource(dg.ConfigurableResource):
    """The import state's database (watermarks, files seen, previews); by default the ledger's database, and
    kept per environment as the ledger is."""

    url: str
    environment: str | None = None

    def get_state(self) -> ImportState:
        return ImportState(environment_state_url(self.url, self.environment))


def default_state_resources(project: Project) -> tuple[StorageResource, LedgerResource, ImportStateResource]:
    """The three resources with the project's defaults, environment variables as `dg.EnvVar`."""
    default_root = default_storage_root(project.base_dir)
    root = dg.EnvVar(STORAGE_ENV) if os.environ.get(STORAGE_ENV) else str(default_root.resolve())
    # The environment is applied when the resource opens the database, so an EnvVar URL stays unread until then.
    url = dg.EnvVar(LEDGER_URL_ENV) if os.environ.get(LEDGER_URL_ENV) else default_state_url(default_root)
    environment = project.environment
    name = archive_connection(project.connections)
    archive = resource_for(project.connections[name], project.base_dir) if name else None
    storage = StorageResource(root=root, archive=archive)
    return (
        storage,
        LedgerResource(url=url, environment=environment),
        ImportStateResource(url=url, environment=environment),
    )
