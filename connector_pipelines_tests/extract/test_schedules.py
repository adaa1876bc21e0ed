"""Schedules: rolling ranges of N windows in one run, the latest complete window, full extracts on a cron, and
the default on/off state."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import dagster as dg
import pytest

from connector_pipelines.factories.extract import RANGE_END_TAG, RANGE_START_TAG
from connector_pipelines_tests.fixtures.extract import (
    TICKS_QUERY,
    UTC,
    create_ticks_table,
    failure_text,
    files_under,
    materialization_metadata,
    read_extract_file,
)

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
FULL_QUERY = "SELECT id, at FROM ticks ORDER BY id"
ROLLING_TICKS = {
    1: dt.datetime(2024, 1, 6, 23, 59, 59, 999999),
    2: dt.datetime(2024, 1, 7),
    3: dt.datetime(2024, 1, 8, 12),
    4: dt.datetime(2024, 1, 9, 23, 59, 59, 999999),
    5: dt.datetime(2024, 1, 10),
}


def _tick(defs: dg.Definitions, name: str, instance, when: dt.datetime):
    schedule = defs.resolve_schedule_def(name)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as context:
        return schedule, schedule.evaluate_tick(context)


def _rolling_project(project, database, rolling: int = 3):
    create_ticks_table(database, ROLLING_TICKS)
    project.add_database(database)
    outbox = project.add_folder()
    project.add_extract(
        "ticks",
        TICKS_QUERY,
        schedule={"cadence": "daily", "inception_date": "2024-01-01", "rolling": rolling, "hour_of_day": 2},
    )
    return outbox


def _file_ids(outbox) -> tuple[str, list[int]]:
    files = files_under(outbox)
    assert len(files) == 1, files
    rows = read_extract_file((outbox / files[0]).read_bytes(), "csv", ["id", "at"])
    return files[0], [int(row["id"]) for row in rows]


@pytest.mark.parametrize("launch", ["materialize", "execute_in_process"])
def test_rolling_schedule_sends_the_last_n_windows_in_one_file(project, instance, pg_database, launch):
    outbox = _rolling_project(project, pg_database)
    defs = project.defs()

    schedule, data = _tick(defs, "extract_ticks_schedule", instance, dt.datetime(2024, 1, 10, 2, tzinfo=UTC))
    assert schedule.cron_schedule == "0 2 * * *"
    [request] = data.run_requests
    assert request.tags[RANGE_START_TAG] == "2024-01-07"
    assert request.tags[RANGE_END_TAG] == "2024-01-09"
    assert request.partition_key_range == dg.PartitionKeyRange("2024-01-07", "2024-01-09")

    tags = {RANGE_START_TAG: request.tags[RANGE_START_TAG], RANGE_END_TAG: request.tags[RANGE_END_TAG]}
    if launch == "materialize":
        result = project.materialize("ticks", instance, tags=tags, defs=defs)
    else:
        result = project.run("ticks", instance, tags=tags, defs=defs)
    assert result.success, failure_text(result)

    name, ids = _file_ids(outbox)
    assert ids == [2, 3, 4]
    assert name == "ticks_20240107T0000_20240110T0000.csv"
    metadata = materialization_metadata(result)
    assert (metadata["window_start"], metadata["window_end"]) == (
        "2024-01-07T00:00:00+00:00",
        "2024-01-10T00:00:00+00:00",
    )
    # One run, one step: the three partitions are materialized together, by the one file.
    partitions = sorted(event.partition for event in result.get_asset_materialization_events())
    assert partitions == ["2024-01-07", "2024-01-08", "2024-01-09"]
    assert len([event for event in result.all_events if event.is_step_start]) == 1


def test_rolling_range_may_name_the_file_by_its_partition_keys(project, instance, pg_database):
    outbox = _rolling_project(project, pg_database)
    project.connectors["ticks"]["extract"]["file_name"] = "{name}_{partition_key}.{ext}"
    result = project.run("ticks", instance, tags={RANGE_START_TAG: "2024-01-07", RANGE_END_TAG: "2024-01-09"})
    assert result.success, failure_text(result)
    name, ids = _file_ids(outbox)
    assert ids == [2, 3, 4]
    assert name == "ticks_2024-01-07_2024-01-09.csv"


def test_rolling_schedule_early_ticks(project, instance, pg_database):
    _rolling_project(project, pg_database)
    defs = project.defs()
    # Two complete windows so far: both, not three.
    _, data = _tick(defs, "extract_ticks_schedule", instance, dt.datetime(2024, 1, 3, 2, tzinfo=UTC))
    [request] = data.run_requests
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2024-01-01", "2024-01-02")
    # None yet: a skip, not a run.
    _, data = _tick(defs, "extract_ticks_schedule", instance, dt.datetime(2024, 1, 1, 2, tzinfo=UTC))
    assert not data.run_requests and data.skip_message


def test_rolling_weekly_in_paris(project, instance, pg_database):
    project.add_database(pg_database)
    project.add_folder()
    project.add_extract(
        "usage",
        TICKS_QUERY,
        format="parquet",
        schedule={
            "cadence": "weekly",
            "inception_date": "2024-01-01",
            "rolling": 4,
            "timezone": "Europe/Paris",
            "hour_of_day": 5,
        },
    )
    defs = project.defs()
    monday = dt.datetime(2024, 2, 5, 5, tzinfo=PARIS)
    schedule, data = _tick(defs, "extract_usage_schedule", instance, monday)
    assert schedule.cron_schedule == "0 5 * * 1"
    assert schedule.execution_timezone == "Europe/Paris"
    [request] = data.run_requests
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2024-01-08", "2024-01-29")


def test_partitioned_schedule_requests_the_latest_complete_window(project, instance, pg_database):
    project.add_database(pg_database)
    project.add_folder()
    project.add_extract(
        "daily", TICKS_QUERY, schedule={"cadence": "daily", "inception_date": "2024-01-01", "hour_of_day": 2}
    )
    project.add_extract(
        "every_six_hours", TICKS_QUERY, schedule={"cadence": "0 */6 * * *", "inception_date": "2024-01-01"}
    )
    defs = project.defs()

    schedule, data = _tick(defs, "extract_daily_schedule", instance, dt.datetime(2024, 1, 10, 2, tzinfo=UTC))
    assert schedule.cron_schedule == "0 2 * * *"
    assert [request.partition_key for request in data.run_requests] == ["2024-01-09"]

    schedule, data = _tick(defs, "extract_every_six_hours_schedule", instance, dt.datetime(2024, 1, 2, 12, tzinfo=UTC))
    assert schedule.cron_schedule == "0 */6 * * *"
    assert [request.partition_key for request in data.run_requests] == ["2024-01-02-06:00"]


def test_default_status_follows_enabled(project, pg_database):
    project.add_database(pg_database)
    project.add_folder()
    schedule = {"cadence": "daily", "inception_date": "2024-01-01"}
    project.add_extract("on", TICKS_QUERY, schedule=schedule)
    project.add_extract("connector_off", TICKS_QUERY, schedule=schedule, enabled=False)
    project.add_extract("schedule_off", TICKS_QUERY, schedule={**schedule, "enabled": False})
    project.add_extract("rolling_off", TICKS_QUERY, schedule={**schedule, "rolling": 2}, enabled=False)
    project.add_extract("full_off", FULL_QUERY, schedule={"cadence": "daily"}, enabled=False)
    defs = project.defs()
    status = {name: defs.resolve_schedule_def(f"extract_{name}_schedule").default_status for name in project.connectors}
    assert status == {
        "on": dg.DefaultScheduleStatus.RUNNING,
        "connector_off": dg.DefaultScheduleStatus.STOPPED,
        "schedule_off": dg.DefaultScheduleStatus.STOPPED,
        "rolling_off": dg.DefaultScheduleStatus.STOPPED,
        "full_off": dg.DefaultScheduleStatus.STOPPED,
    }


# --------------------------------------------------------------------------------------------------
# Full extracts: no inception date, no window


def test_full_extract_on_a_cron(project, instance, pg_database):
    create_ticks_table(pg_database, ROLLING_TICKS)
    project.add_database(pg_database)
    outbox = project.add_folder()
    project.add_extract("everything", FULL_QUERY, format="jsonl", schedule={"cadence": "30 6 * * *"})
    defs = project.defs()

    key = dg.AssetKey(["extract", "everything", "file"])
    assert defs.resolve_assets_def(key).partitions_def is None
    assert {job.name for job in defs.jobs if job.name.startswith("extract_everything")} == {"extract_everything"}
    schedule, data = _tick(defs, "extract_everything_schedule", instance, dt.datetime(2024, 1, 10, 6, 30, tzinfo=UTC))
    assert schedule.cron_schedule == "30 6 * * *"
    [request] = data.run_requests
    assert request.partition_key is None and RANGE_START_TAG not in request.tags

    result = project.run("everything", instance, defs=defs)
    assert result.success, failure_text(result)
    [name] = files_under(outbox)
    assert name.startswith("everything_") and name.endswith(".jsonl")
    rows = read_extract_file((outbox / name).read_bytes(), "jsonl", ["id", "at"])
    assert [row["id"] for row in rows] == [1, 2, 3, 4, 5]
    metadata = materialization_metadata(result)
    assert metadata["rows"] == 5
    assert "window_start" not in metadata and "window_end" not in metadata


@pytest.mark.parametrize(
    ("cadence", "cron"),
    [("hourly", "15 * * * *"), ("daily", "15 5 * * *"), ("weekly", "15 5 * * 1"), ("monthly", "15 5 1 * *")],
)
def test_full_extract_preset_cadences(project, pg_database, cadence, cron):
    project.add_database(pg_database)
    project.add_folder()
    project.add_extract(
        "everything",
        FULL_QUERY,
        schedule={"cadence": cadence, "hour_of_day": 5, "minute_of_hour": 15, "timezone": "Europe/Paris"},
    )
    schedule = project.defs().resolve_schedule_def("extract_everything_schedule")
    assert schedule.cron_schedule == cron
    assert schedule.execution_timezone == "Europe/Paris"
