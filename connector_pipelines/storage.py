"""Where runs keep their working files: staging, data set snapshots, audit files, import runs, inboxes, the
default ledger. One root folder (`$CONNECTOR_PIPELINES_STORAGE`, default `var/storage` under the project), laid
out by `Storage`; the Dagster layer provides it as a resource (`state.resources.StorageResource`), so a test or a
deployment points it elsewhere without environment variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STORAGE_ENV = "CONNECTOR_PIPELINES_STORAGE"


def default_storage_root(base_dir: Path) -> Path:
    """`$CONNECTOR_PIPELINES_STORAGE`, else var/storage under the project."""
    return Path(os.environ.get(STORAGE_ENV) or Path(base_dir) / "var" / "storage")


@dataclass(frozen=True)
class Storage:
    """The layout of the storage folder."""

    root: Path

    @classmethod
    def for_project(cls, base_dir: Path) -> Storage:
        """The folder the project uses by default (what the CLI reads outside a run)."""
        return cls(default_storage_root(base_dir))

    @property
    def staging_dir(self) -> Path:
        """Extract files while they are written and uploaded (removed after each run)."""
        return self.root / "staging"

    def integration_dir(self, connector: str, part: str) -> Path:
        """Per integration and part (the data set or a configuration): one file per run."""
        return self.root / "integrations" / connector / part

    @property
    def imports_dir(self) -> Path:
        """Import runs keep `<this>/<connector>/<run_id>/...`."""
        return self.root / "imports"

    def import_dir(self, connector: str) -> Path:
        """Per import: one folder per run (`<run_id>/snapshot.parquet`, rejections, per-file snapshots)."""
        return self.imports_dir / connector

    def ingest_dropbox(self, connector: str) -> Path:
        """Where `ingest` places a file for the run to take: run config can name only files in here."""
        return self.import_dir(connector) / "ingest"

    def import_inbox_dir(self, connector: str) -> Path:
        """Where the email receiver saves an email import's attachments (its file sensor watches this folder)."""
        return self.root / "inboxes" / connector
