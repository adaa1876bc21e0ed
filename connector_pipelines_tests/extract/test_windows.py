"""Partition windows from the inception date: each partition extracts exactly its rows, the start included and
the end excluded, for every cadence, at month ends and across a daylight-saving change."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from connector_pipelines_tests.fixtures.extract import (
    TICKS_QUERY,
    UTC,
    create_ticks_table,
    failure_text,
    files_under,
    materialization_metadata,
    read_extract_file,
)


def _t(text: str, zone: dt.tzinfo | None = None) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    return value.replace(tzinfo=zone) if zone else value


def _extract_partition(project, instance, database, ticks, schedule, partition_key, *, use_materialize=False):
    create_ticks_table(database, ticks)
    project.add_database(database)
    outbox = project.add_folder()
    project.add_extract("ticks", TICKS_QUERY, schedule=schedule)
    if use_materialize:
        result = project.materialize("ticks", instance, partition_key=partition_key)
    else:
        result = project.run("ticks", instance, partition_key=partition_key)
    assert result.success, failure_text(result)
    [name] = files_under(outbox)
    rows = read_extract_file((outbox / name).read_bytes(), "csv", ["id", "at"])
    return [int(row["id"]) for row in rows], materialization_metadata(result), rows


def test_hourly(project, instance, pg_database):
    ticks = {
        1: _t("2024-01-01 04:59:59.999999"),
        2: _t("2024-01-01 05:00:00"),
        3: _t("2024-01-01 05:59:59.999999"),
        4: _t("2024-01-01 06:00:00"),
    }
    ids, metadata, _ = _extract_partition(
        project,
        instance,
        pg_database,
        ticks,
        {"cadence": "hourly", "inception_date": "2024-01-01"},
        "2024-01-01-05:00",
        use_materialize=True,
    )
    assert ids == [2, 3]
    assert (metadata["window_start"], metadata["window_end"]) == (
        "2024-01-01T05:00:00+00:00",
        "2024-01-01T06:00:00+00:00",
    )


def test_daily(project, instance, pg_database):
    ticks = {
        1: _t("2024-01-30 23:59:59.999999"),
        2: _t("2024-01-31 00:00:00"),
        3: _t("2024-01-31 23:59:59.999999"),
        4: _t("2024-02-01 00:00:00"),
    }
    ids, metadata, _ = _extract_partition(
        project, instance, pg_database, ticks, {"cadence": "daily", "inception_date": "2024-01-01"}, "2024-01-31"
    )
    assert ids == [2, 3]
    assert metadata["window_end"] == "2024-02-01T00:00:00+00:00"


MONTH_TICKS = {
    1: _t("2023-12-31 23:59:59.999999"),
    2: _t("2024-01-01 00:00:00"),
    3: _t("2024-01-31 23:59:59.999999"),
    4: _t("2024-02-01 00:00:00"),
    5: _t("2024-02-29 23:59:59.999999"),  # 2024 is a leap year
    6: _t("2024-03-01 00:00:00"),
}


@pytest.mark.parametrize(
    ("partition_key", "expected_ids", "window_end"),
    [("2024-01-01", [2, 3], "2024-02-01T00:00:00+00:00"), ("2024-02-01", [4, 5], "2024-03-01T00:00:00+00:00")],
)
def test_monthly_month_ends(project, instance, pg_database, partition_key, expected_ids, window_end):
    ids, metadata, _ = _extract_partition(
        project,
        instance,
        pg_database,
        MONTH_TICKS,
        {"cadence": "monthly", "inception_date": "2023-12-01"},
        partition_key,
    )
    assert ids == expected_ids
    assert metadata["window_start"] == f"{partition_key}T00:00:00+00:00"
    assert metadata["window_end"] == window_end


def test_weekly_starts_on_monday(project, instance, pg_database):
    ticks = {
        1: _t("2024-01-07 23:59:59.999999"),  # Sunday
        2: _t("2024-01-08 00:00:00"),  # Monday
        3: _t("2024-01-14 23:59:59.999999"),  # the next Sunday
        4: _t("2024-01-15 00:00:00"),  # the next Monday
    }
    # Inception on a Wednesday: the first window is the first whole Monday-to-Monday week.
    schedule = {"cadence": "weekly", "inception_date": "2024-01-03"}
    ids, metadata, _ = _extract_partition(project, instance, pg_database, ticks, schedule, "2024-01-08")
    assert ids == [2, 3]
    start = dt.datetime.fromisoformat(metadata["window_start"])
    assert start.weekday() == 0 and metadata["window_end"] == "2024-01-15T00:00:00+00:00"
    partitions = project.defs().resolve_assets_def(dg.AssetKey(["extract", "ticks", "file"])).partitions_def
    keys = partitions.get_partition_keys(current_time=dt.datetime(2024, 1, 30, tzinfo=UTC))
    assert keys == ["2024-01-08", "2024-01-15", "2024-01-22"]


def test_cron_cadence(project, instance, pg_database):
    ticks = {
        1: _t("2024-01-02 05:59:59.999999"),
        2: _t("2024-01-02 06:00:00"),
        3: _t("2024-01-02 11:59:59.999999"),
        4: _t("2024-01-02 12:00:00"),
    }
    schedule = {"cadence": "0 */6 * * *", "inception_date": "2024-01-01"}
    ids, metadata, _ = _extract_partition(project, instance, pg_database, ticks, schedule, "2024-01-02-06:00")
    assert ids == [2, 3]
    assert (metadata["window_start"], metadata["window_end"]) == (
        "2024-01-02T06:00:00+00:00",
        "2024-01-02T12:00:00+00:00",
    )


# The daily window of 2024-03-31 in Paris: clocks jump from 02:00 to 03:00, so it lasts 23 hours.
DST_INSTANTS = {
    1: _t("2024-03-30 22:59:59.999999", UTC),  # 23:59:59 on the 30th in Paris
    2: _t("2024-03-30 23:00:00", UTC),  # midnight in Paris
    3: _t("2024-03-31 01:00:00", UTC),  # 03:00 CEST, just after the jump
    4: _t("2024-03-31 21:59:59.999999", UTC),
    5: _t("2024-03-31 22:00:00", UTC),  # midnight of April 1st in Paris
}
DST_WALL_CLOCK = {
    1: _t("2024-03-30 23:59:59.999999"),
    2: _t("2024-03-31 00:00:00"),
    3: _t("2024-03-31 03:00:00"),
    4: _t("2024-03-31 23:59:59.999999"),
    5: _t("2024-04-01 00:00:00"),
}


@pytest.mark.parametrize(
    ("database_fixture", "ticks"),
    [("pg_database", DST_INSTANTS), ("pg_database", DST_WALL_CLOCK), ("mariadb_database", DST_WALL_CLOCK)],
    ids=["postgres-timestamptz", "postgres-timestamp", "mariadb-datetime"],
)
def test_paris_daily_window_across_the_dst_change(request, project, instance, database_fixture, ticks):
    database = request.getfixturevalue(database_fixture)
    schedule = {"cadence": "daily", "inception_date": "2024-03-01", "timezone": "Europe/Paris"}
    ids, metadata, rows = _extract_partition(project, instance, database, ticks, schedule, "2024-03-31")

    assert ids == [2, 3, 4]
    start = dt.datetime.fromisoformat(metadata["window_start"])
    end = dt.datetime.fromisoformat(metadata["window_end"])
    assert (metadata["window_start"], metadata["window_end"]) == (
        "2024-03-31T00:00:00+01:00",
        "2024-04-01T00:00:00+02:00",
    )
    assert end - start == dt.timedelta(hours=23)
    if ticks is DST_INSTANTS:
        # timestamptz values are written in the extract's zone, and still name the same instants.
        assert rows[0]["at"] == "2024-03-31 00:00:00+01"
        assert [dt.datetime.fromisoformat(row["at"]) for row in rows] == [ticks[i] for i in ids]
