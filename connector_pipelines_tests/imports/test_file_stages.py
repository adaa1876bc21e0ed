"""The pure decisions among the stages of a file import (imports/run.py): the folders and parse options a
delivered file gets from its source, and where it goes once its outcome is known."""

from __future__ import annotations

from connector_pipelines.imports.run import FileHandling, file_handling
from connector_pipelines.spec.imports import ImportSpec


def import_spec(source: dict) -> ImportSpec:
    return ImportSpec.model_validate(
        {
            "source": source,
            "target": {"connection": "crm", "table": "orders", "key": "id"},
            "mapping": [{"target": "id", "source": "id"}],
        }
    )


def test_a_files_source_is_read_and_set_aside_in_its_own_folders() -> None:
    spec = import_spec(
        {
            "files": {
                "connection": "partner",
                "folder": "in",
                "pattern": "orders_*.txt",
                "format": "csv",
                "csv": {"delimiter": ";", "header": False},
                "archive_folder": "done",
                "quarantine_folder": "refused",
            }
        }
    )
    assert file_handling(spec) == FileHandling(
        folder="in",
        archive_folder="done",
        quarantine_folder="refused",
        format="csv",
        csv_delimiter=";",
        csv_header=False,
    )


def test_email_attachments_are_read_at_the_inbox_root_and_set_aside_in_the_default_folders() -> None:
    spec = import_spec(
        {
            "email": {
                "address": "orders@imports.example.com",
                "allowed_senders": ["@partner.example"],
                "pattern": "*.csv",
                "csv": {"delimiter": "|"},
            }
        }
    )
    assert file_handling(spec) == FileHandling(
        folder="",
        archive_folder="archive",
        quarantine_folder="quarantine",
        format=None,
        csv_delimiter="|",
        csv_header=True,
    )


def test_imported_and_duplicate_files_are_archived_and_rejected_ones_quarantined() -> None:
    handling = FileHandling("in", "done", "refused", None, None, True)
    assert [handling.folder_for(status) for status in ("imported", "duplicate", "rejected")] == [
        "done",
        "done",
        "refused",
    ]
