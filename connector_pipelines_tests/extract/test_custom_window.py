"""Custom windows: run config on the `custom_file` asset of a partitioned extract, and the CLI's `run --window`
(with its exit codes)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
from click.testing import CliRunner

from connector_pipelines.cli import main
from connector_pipelines_tests.fixtures.extract import (
    TICKS_QUERY,
    UTC,
    create_ticks_table,
    failure_text,
    files_under,
    materialization_metadata,
    read_extract_file,
)

TICKS = {
    1: dt.datetime(2023, 12, 31, 23, 59, 59, 999999),
    2: dt.datetime(2024, 1, 1),
    3: dt.datetime(2024, 1, 10, 12),
    4: dt.datetime(2024, 1, 31, 23, 59, 59, 999999),
    5: dt.datetime(2024, 2, 1),
}
MONTHLY = {"cadence": "monthly", "inception_date": "2023-06-01"}


def _file_ids(outbox) -> list[int]:
    files = files_under(outbox)
    assert len(files) == 1, files
    return [int(row["id"]) for row in read_extract_file((outbox / files[0]).read_bytes(), "csv", ["id", "at"])]


def _ticks_project(project, database, schedule=MONTHLY):
    create_ticks_table(database, TICKS)
    project.add_database(database)
    outbox = project.add_folder()
    project.add_extract("ticks", TICKS_QUERY, schedule=schedule)
    return outbox


@pytest.mark.parametrize(
    ("window", "expected_ids"),
    [(("2024-01-01", "2024-02-01"), [2, 3, 4]), (("2024-01-10T12:00", "2024-02-01T00:00:00.000001"), [3, 4, 5])],
)
def test_custom_window_through_run_config(project, instance, pg_database, window, expected_ids):
    outbox = _ticks_project(project, pg_database)
    result = project.run("ticks", instance, window=window, custom=True)
    assert result.success, failure_text(result)
    assert _file_ids(outbox) == expected_ids
    [event] = result.get_asset_materialization_events()
    assert event.asset_key == dg.AssetKey(["extract", "ticks", "custom_file"])
    assert event.partition is None
    metadata = materialization_metadata(result)
    assert dt.datetime.fromisoformat(metadata["window_start"]) == dt.datetime.fromisoformat(window[0]).replace(
        tzinfo=UTC
    )


def test_custom_window_with_materialize_is_read_in_the_extract_time_zone(project, instance, pg_database):
    create_ticks_table(pg_database, {key: value.replace(tzinfo=UTC) for key, value in TICKS.items()})  # instants
    project.add_database(pg_database)
    outbox = project.add_folder()
    project.add_extract("ticks", TICKS_QUERY, schedule={**MONTHLY, "timezone": "Europe/Paris"})
    config = {"window_start": "2024-01-01", "window_end": "2024-02-01T00:00:00.000001+00:00"}
    result = project.materialize(
        "ticks", instance, part="custom_file", run_config={"ops": {"extract__ticks__custom_file": {"config": config}}}
    )
    assert result.success, failure_text(result)
    # Midnight in Paris is 23:00 UTC the day before: tick 1 (23:59:59 UTC on Dec 31st) is inside.
    assert _file_ids(outbox) == [1, 2, 3, 4, 5]
    metadata = materialization_metadata(result)
    assert metadata["window_start"] == "2024-01-01T00:00:00+01:00"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "needs a window"),
        ({"window_start": "2024-01-01"}, "set both window_start and window_end"),
        ({"window_start": "2024-02-01", "window_end": "2024-01-01"}, "is not after its start"),
        ({"window_start": "January", "window_end": "2024-01-01"}, "not an ISO date"),
    ],
)
def test_custom_window_mistakes_fail_the_run_with_a_reason(project, instance, pg_database, config, message):
    outbox = _ticks_project(project, pg_database)
    result = project.materialize(
        "ticks", instance, part="custom_file", run_config={"ops": {"extract__ticks__custom_file": {"config": config}}}
    )
    assert not result.success
    assert message in failure_text(result)
    assert files_under(outbox) == []


# --------------------------------------------------------------------------------------------------
# The CLI


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke


@pytest.mark.parametrize("partitioned", [True, False], ids=["partitioned", "window-only"])
def test_cli_run_with_a_window(project, pg_database, cli, partitioned):
    create_ticks_table(pg_database, TICKS)
    project.add_database(pg_database)
    outbox = project.add_folder()
    project.add_extract("ticks", TICKS_QUERY, schedule=MONTHLY if partitioned else None)
    resources = project.write()

    result = cli("run", "ticks", "--window", "2024-01-01..2024-02-01", "--resources", str(resources))

    assert result.exit_code == 0, result.output
    assert "succeeded: 3 rows" in result.output
    assert _file_ids(outbox) == [2, 3, 4]
    assert project.staging_files() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "tickz", "--window", "2024-01-01..2024-02-01"], "no connector named 'tickz' (did you mean 'ticks'?)"),
        (["run", "ticks", "--window", "2024-02-01..2024-01-01"], "is not after its start"),
        (["run", "ticks", "--window", "2024-01-01"], "must be written START..END"),
        (["run", "ticks", "--partition", "2023-01-01"], "is not a complete partition"),
    ],
)
def test_cli_run_usage_errors_exit_2(project, pg_database, cli, args, message):
    _ticks_project(project, pg_database)
    result = cli(*args, "--resources", str(project.write()))
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_cli_failed_run_exits_1(project, pg_database, cli):
    project.add_database(pg_database)
    outbox = project.add_folder()
    project.add_extract("ticks", TICKS_QUERY.replace("ticks", "no_such_table"), schedule=MONTHLY)
    result = cli("run", "ticks", "--window", "2024-01-01..2024-02-01", "--resources", str(project.write()))
    assert result.exit_code == 1, result.output
    assert "failed" in result.output and 'relation "no_such_table" does not exist' in result.output
    assert files_under(outbox) == []
