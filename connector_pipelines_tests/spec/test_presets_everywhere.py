"""The same schedule presets for every kind: extracts run (and partition) on `workdays` and `every N minutes`,
integrations run `once`, and a wrong cadence names the presets of its kind."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.factories.naming import TRIGGER_TAG
from connector_pipelines_tests.fixtures.extract import TICKS_QUERY
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC

FULL_QUERY = "SELECT 1 AS id"  # a full extract binds no window


def _extract(project, sqlite_database, schedule: dict) -> dg.Definitions:
    project.add_database(sqlite_database)
    project.add_folder()
    project.add_extract("ticks", TICKS_QUERY if "inception_date" in schedule else FULL_QUERY, schedule=schedule)
    return project.defs()


def test_a_full_extract_runs_on_workdays_at_its_hour(project, sqlite_database):
    defs = _extract(project, sqlite_database, {"cadence": "workdays", "hour_of_day": 6, "minute_of_hour": 30})
    schedule = defs.resolve_schedule_def("extract_ticks_schedule")
    assert schedule.cron_schedule == "30 6 * * 1-5"
    fires = cron_string_iterator(dt.datetime(2026, 12, 4, 12, 0).timestamp(), schedule.cron_schedule, "UTC")
    assert [next(fires).strftime("%a %H:%M") for _ in range(3)] == ["Mon 06:30", "Tue 06:30", "Wed 06:30"]


def test_a_full_extract_runs_every_15_minutes(project, sqlite_database):
    defs = _extract(project, sqlite_database, {"cadence": "every 15 minutes"})
    assert defs.resolve_schedule_def("extract_ticks_schedule").cron_schedule == "*/15 * * * *"


def test_a_partitioned_extract_has_one_window_per_workday_and_its_schedule_runs_the_last_one(
    project, sqlite_database, instance
):
    defs = _extract(project, sqlite_database, {"cadence": "workdays", "inception_date": "2026-11-30"})
    job = defs.resolve_job_def("extract_ticks")
    keys = job.partitions_def.get_partition_keys(current_time=dt.datetime(2026, 12, 9, 1, tzinfo=dt.UTC))
    # Monday 30 November to Tuesday 8 December: no Saturday or Sunday window (Friday's runs to Monday).
    assert keys == [
        "2026-11-30-00:00",
        "2026-12-01-00:00",
        "2026-12-02-00:00",
        "2026-12-03-00:00",
        "2026-12-04-00:00",
        "2026-12-07-00:00",
        "2026-12-08-00:00",
    ]
    window = job.partitions_def.time_window_for_partition_key("2026-12-04-00:00")
    assert (window.start.strftime("%a"), window.end.strftime("%a")) == ("Fri", "Mon")
    schedule = defs.resolve_schedule_def("extract_ticks_schedule")
    when = dt.datetime(2026, 12, 7, 0, 0, tzinfo=dt.UTC)  # Monday 00:00: Friday's window has just closed
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-12-04-00:00"


def test_a_partitioned_extract_every_30_minutes_has_half_hour_windows(project, sqlite_database):
    defs = _extract(project, sqlite_database, {"cadence": "every 30 minutes", "inception_date": "2026-12-07"})
    partitions = defs.resolve_job_def("extract_ticks").partitions_def
    keys = partitions.get_partition_keys(current_time=dt.datetime(2026, 12, 7, 1, 40, tzinfo=dt.UTC))
    assert keys == ["2026-12-07-00:00", "2026-12-07-00:30", "2026-12-07-01:00"]


def test_an_extract_cadence_that_is_no_preset_names_every_preset(project, sqlite_database):
    project.add_database(sqlite_database)
    project.add_folder()
    project.add_extract("ticks", FULL_QUERY, schedule={"cadence": "fortnightly"})
    with pytest.raises(ConnectorConfigError) as error:
        project.defs()
    assert "hourly, daily, workdays, weekly, monthly" in str(error.value) and "every N minutes" in str(error.value)


def test_an_integration_that_runs_once_has_a_sensor_asking_for_one_run_key_and_no_schedule(
    integration_project, source_db, fresh_instance
):
    source_db.add_customers(2)
    project = integration_project(BASIC_SYNC + "  schedule: {cadence: once}\n")
    defs = project.definitions()
    with pytest.raises(dg.DagsterInvariantViolationError):
        defs.resolve_schedule_def("integration_sync_schedule")
    sensor = defs.resolve_sensor_def("integration_sync_once")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    with dg.build_sensor_context(instance=fresh_instance, resources=project.top_level_resources(defs)) as context:
        [request] = sensor.evaluate_tick(context).run_requests
    assert request.run_key == "once" and request.tags[TRIGGER_TAG] == "once"  # Dagster starts a run key once


def test_a_disabled_integration_that_runs_once_skips_saying_why(integration_project, source_db, fresh_instance):
    project = integration_project("enabled: false\n" + BASIC_SYNC + "  schedule: {cadence: once}\n")
    defs = project.definitions()
    sensor = defs.resolve_sensor_def("integration_sync_once")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    with dg.build_sensor_context(instance=fresh_instance, resources=project.top_level_resources(defs)) as context:
        result = sensor.evaluate_tick(context)
    assert not result.run_requests and "disabled" in (result.skip_message or "")
