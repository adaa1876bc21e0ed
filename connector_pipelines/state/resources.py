"""The platform's own state as Dagster resources: the storage folder, the delivery ledger, the import state.

Their defaults are today's (`var/storage` under the project, SQLite in it); `$CONNECTOR_PIPELINES_STORAGE` and
`$CONNECTOR_PIPELINES_LEDGER_URL`, when set, become `dg.EnvVar` fields (read at run time, shown by name). A test or a
deployment can also pass other instances to `build_definitions` / `dg.materialize` instead of setting variables.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from connector_pipelines.state.database import LEDGER_URL_ENV, default_state_url
from connector_pipelines.state.import_state import ImportState
from connector_pipelines.state.ledger import DeliveryLedger
from connector_pipelines.storage import STORAGE_ENV, Storage, default_storage_root


class StorageResource(dg.ConfigurableResource):
    """The folder where runs keep snapshots, audit files, import runs and inboxes."""

    root: str

    def get_storage(self) -> Storage:
        return Storage(Path(self.root))


class LedgerResource(dg.ConfigurableResource):
    """The delivery ledger's database (SQLAlchemy URL). Call `dispose()` on the ledger when done."""

    url: str

    def get_ledger(self) -> DeliveryLedger:
        return DeliveryLedger(self.url)


class ImportStateResource(dg.ConfigurableResource):
    """The import state's database (watermarks, files seen, previews); by default the ledger's database."""

    url: str

    def get_state(self) -> ImportState:
        return ImportState(self.url)


def default_state_resources(base_dir: Path) -> tuple[StorageResource, LedgerResource, ImportStateResource]:
    """The three resources with the project's defaults, environment variables as `dg.EnvVar`."""
    default_root = default_storage_root(base_dir)
    root = dg.EnvVar(STORAGE_ENV) if os.environ.get(STORAGE_ENV) else str(default_root.resolve())
    url = dg.EnvVar(LEDGER_URL_ENV) if os.environ.get(LEDGER_URL_ENV) else default_state_url(default_root)
    return StorageResource(root=root), LedgerResource(url=url), ImportStateResource(url=url)
