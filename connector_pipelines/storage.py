"""Where runs keep their working files: staging, data set snapshots, audit files and the default ledger."""

from __future__ import annotations

import os
from pathlib import Path

STORAGE_ENV = "CONNECTOR_PIPELINES_STORAGE"


def storage_dir(base_dir: Path) -> Path:
    """`$CONNECTOR_PIPELINES_STORAGE`, else var/storage under the project."""
    return Path(os.environ.get(STORAGE_ENV) or base_dir / "var" / "storage")


def integration_dir(base_dir: Path, connector: str, part: str) -> Path:
    """Per integration and part (`data_set` or a configuration): one file per run."""
    return storage_dir(base_dir) / "integrations" / connector / part


def import_dir(base_dir: Path, connector: str) -> Path:
    """Per import: one folder per run (`<run_id>/snapshot.parquet`, rejections, per-file snapshots)."""
    return storage_dir(base_dir) / "imports" / connector


def import_inbox_dir(base_dir: Path, connector: str) -> Path:
    """Where the email receiver saves an email import's attachments (its file sensor watches this folder)."""
    return storage_dir(base_dir) / "inboxes" / connector
