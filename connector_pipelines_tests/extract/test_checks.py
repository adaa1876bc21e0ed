"""The `not_empty` asset check: it fails on an empty window (judged before the upload, so the empty file goes
nowhere) and passes otherwise."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from connector_pipelines_tests.fixtures.extract import TICKS_QUERY, create_ticks_table, failure_text, files_under

DAILY = {"cadence": "daily", "inception_date": "2024-01-01"}
KEY = dg.AssetKey(["extract", "ticks", "file"])


def _evaluations(result) -> list:
    return result.get_asset_check_evaluations()


@pytest.mark.parametrize("database_fixture", ["pg_database", "sqlite_database"])
def test_not_empty_fails_on_an_empty_window_and_passes_otherwise(request, project, instance, database_fixture):
    database = request.getfixturevalue(database_fixture)
    create_ticks_table(database, {1: dt.datetime(2024, 1, 2, 9)})
    project.add_database(database)
    outbox = project.add_folder()
    project.add_extract("ticks", TICKS_QUERY, schedule=DAILY, checks={"not_empty": True})
    defs = project.defs()
    assert dg.AssetCheckKey(KEY, "not_empty") in defs.resolve_assets_def(KEY).check_keys

    full = project.run("ticks", instance, partition_key="2024-01-02", defs=defs)
    [evaluation] = _evaluations(full)
    assert evaluation.check_name == "not_empty" and evaluation.asset_key == KEY
    assert evaluation.passed is True
    assert evaluation.metadata["rows"].value == 1
    assert full.success

    empty = project.run("ticks", instance, partition_key="2024-01-03", defs=defs)
    [evaluation] = _evaluations(empty)
    assert evaluation.passed is False
    assert evaluation.metadata["rows"].value == 0
    assert evaluation.description == "the window holds no rows"
    assert not empty.success
    assert "was not uploaded, a blocking check failed (not_empty: the window holds no rows)" in failure_text(empty)
    assert empty.get_asset_materialization_events() == []

    # The check ran on the staged file: the empty window's file never reached the destination, and staging is clean.
    assert files_under(outbox) == ["ticks_20240102T0000_20240103T0000.csv"]
    assert project.staging_files() == []


def test_no_check_unless_asked(project, pg_database):
    project.add_database(pg_database)
    project.add_folder()
    project.add_extract("ticks", TICKS_QUERY, schedule=DAILY)
    assert not project.defs().resolve_assets_def(KEY).check_keys
