"""Blocking checks are judged on the staged file, before any upload: an empty window's file reaches no
destination (SFTP, a folder), the failed check is recorded on the asset, and the asset is not materialized."""

from __future__ import annotations

import datetime as dt
import uuid

from connector_pipelines_tests.fixtures.extract import (
    TICKS_QUERY,
    create_ticks_table,
    failure_text,
    files_under,
    materialization_metadata,
)

DAILY = {"cadence": "daily", "inception_date": "2024-01-01"}


def test_an_empty_extract_reaches_neither_sftp_nor_the_folder(project, instance, pg_database, sftp_server):
    folder = f"t_{uuid.uuid4().hex[:10]}"
    create_ticks_table(pg_database, {1: dt.datetime(2024, 1, 2, 9)})
    project.add_database(pg_database)
    outbox = project.add_folder()
    project.add_connection("partner", sftp_server.connection(), sftp_server.env())
    project.add_extract(
        "ticks",
        TICKS_QUERY,
        schedule=DAILY,
        checks={"not_empty": True},
        destinations=[{"connection": "partner", "folder": folder}, {"connection": "outbox"}],
    )
    defs = project.defs()

    empty = project.run("ticks", instance, partition_key="2024-01-03", defs=defs)

    assert not empty.success
    assert "not uploaded, a blocking check failed (not_empty: the window holds no rows)" in failure_text(empty)
    [evaluation] = empty.get_asset_check_evaluations()
    assert (evaluation.check_name, evaluation.passed, evaluation.metadata["rows"].value) == ("not_empty", False, 0)
    assert empty.get_asset_materialization_events() == []
    assert not [path for path in sftp_server.opened_for_write if path.startswith(f"{folder}/")]
    assert not (sftp_server.root / folder).exists() or files_under(sftp_server.root / folder) == []
    assert files_under(outbox) == []
    assert project.staging_files() == []

    # The same extract with rows: the check passes before the upload, and both destinations get the file.
    full = project.run("ticks", instance, partition_key="2024-01-02", defs=defs)
    assert full.success, failure_text(full)
    assert [e.passed for e in full.get_asset_check_evaluations()] == [True]
    name = materialization_metadata(full)["file_name"]
    assert files_under(outbox) == [name]
    assert files_under(sftp_server.root / folder) == [name]


def test_without_not_empty_an_empty_window_is_still_delivered(project, instance, pg_database):
    create_ticks_table(pg_database, {})
    project.add_database(pg_database)
    outbox = project.add_folder()
    project.add_extract("ticks", TICKS_QUERY, schedule=DAILY)

    result = project.run("ticks", instance, partition_key="2024-01-03")

    assert result.success, failure_text(result)
    assert result.get_asset_check_evaluations() == []
    assert files_under(outbox) == ["ticks_20240103T0000_20240104T0000.csv"]  # a header-only file, as asked
