"""What a scheduled integration run reads: the rows updated since the last delivered run (less the overlap) and
the records to retry, or the whole data set (a full diff) when asked, when `full_diff_every` has passed, or when
there is no cursor yet. First the pure decision (`scheduled_read`), then real runs on SQLite and the loopback
target; the same read on PostgreSQL and MariaDB is in test_source_dialects.py."""

from __future__ import annotations

import datetime as dt

import pytest

from connector_pipelines.integration.incremental import scheduled_read
from connector_pipelines.spec.integration import DataSet
from connector_pipelines.state.read_cursor import ReadCursor, read_cursors, save_read_cursor
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def _data_set(**extra) -> DataSet:
    return DataSet(connection="source", table="customers", key="customer_id", **extra)


def _cursor(until: str = "2026-12-03 11:00:00", diffed_hours_ago: float = 1) -> ReadCursor:
    return ReadCursor(until, NOW - dt.timedelta(hours=diffed_hours_ago))


# ---- 1. the decision --------------------------------------------------------------------------------------------


def test_a_cursor_younger_than_full_diff_every_reads_from_it_less_the_overlap():
    plan = scheduled_read(_data_set(updated_at="updated_at"), DAY, {"a": _cursor()}, NOW)

    assert not plan.complete
    assert plan.cursor == "2026-12-03 11:00:00"
    assert plan.updated_after.startswith("2026-12-03") and "10:55:00" in plan.updated_after
    assert plan.why.startswith("updated_at >= ") and "5 minutes of overlap" in plan.why


def test_the_earliest_cursor_of_the_configurations_is_where_the_read_starts():
    cursors = {"a": _cursor("2026-12-03 11:00:00"), "b": _cursor("2026-12-02 08:00:00")}

    plan = scheduled_read(_data_set(updated_at="updated_at", overlap="0"), DAY, cursors, NOW)

    assert plan.updated_after == "2026-12-02 08:00:00" and plan.cursor == "2026-12-02 08:00:00"


@pytest.mark.parametrize(
    ("data_set", "every", "cursors", "full_diff", "why"),
    [
        (_data_set(updated_at="updated_at"), DAY, {"a": _cursor()}, True, "a full diff was asked for"),
        (_data_set(), DAY, {"a": _cursor()}, False, "it has no updated_at column"),
        (_data_set(updated_at="updated_at"), dt.timedelta(0), {"a": _cursor()}, False, "full_diff_every: 0"),
        (_data_set(updated_at="updated_at"), DAY, {"a": _cursor(), "b": None}, False, "first full diff of b"),
        (_data_set(updated_at="updated_at"), DAY, {"a": _cursor(diffed_hours_ago=25)}, False, "25.0 hours ago"),
    ],
    ids=["asked", "no updated_at", "every 0", "a configuration without a cursor", "full_diff_every passed"],
)
def test_the_whole_data_set_is_read(data_set, every, cursors, full_diff, why):
    plan = scheduled_read(data_set, every, cursors, NOW, full_diff=full_diff)

    assert plan.complete and plan.updated_after is None
    assert why in plan.why


def test_a_read_cursor_keeps_its_full_diff_time_through_incremental_saves(tmp_path):
    from connector_pipelines.state.ledger import DeliveryLedger

    ledger = DeliveryLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        diffed = dt.datetime(2026, 12, 1, 7, 0, tzinfo=dt.UTC)
        save_read_cursor(ledger, "sync", "a", "2026-12-01 06:59:00", diffed)
        save_read_cursor(ledger, "sync", "a", "2026-12-02 10:00:00", None)  # an incremental run delivered
        save_read_cursor(ledger, "sync", "a", None, None)  # a run that read no row with an updated_at

        assert read_cursors(ledger, "sync", ["a", "b"]) == {"a": ReadCursor("2026-12-02 10:00:00", diffed), "b": None}
    finally:
        ledger.dispose()


# ---- 2. real runs -----------------------------------------------------------------------------------------------

T0 = "2026-01-01 00:00:00"


def _names_on_target(http_target) -> dict[str, str]:
    return {key: record["name"] for key, record in http_target.records("customers").items()}


def test_a_scheduled_run_reads_what_was_updated_since_the_last_one_within_the_overlap(
    integration_project, source_db, http_target
):
    source_db.add_customers(5, updated_at=T0)
    project = integration_project(BASIC_SYNC)
    first = project.run()
    assert first.success and first.metadata["data_set"]["rows"] == 5
    assert "first full diff of customers" in first.metadata["data_set"]["scope"]
    source_db.execute("UPDATE customers SET name = 'Two', updated_at = '2026-01-02 00:00:00' WHERE customer_id = 2")
    # Committed late: its updated_at is 2 minutes before the cursor, inside the 5 minutes of overlap.
    source_db.execute("UPDATE customers SET name = 'Three', updated_at = '2025-12-31 23:58:00' WHERE customer_id = 3")
    # 10 minutes before the cursor: past the overlap, so only a full diff sees it.
    source_db.execute("UPDATE customers SET name = 'Four', updated_at = '2025-12-31 23:50:00' WHERE customer_id = 4")

    second = project.run()

    assert second.success
    data_set = second.metadata["data_set"]
    assert data_set["scope"].startswith("updated_at >= ") and "5 minutes of overlap" in data_set["scope"]
    assert data_set["rows"] == 4  # 1 and 5 (at the cursor, read again), 2 and 3; not 4
    counts = second.metadata["customers"]
    assert (counts["sent"], counts["unchanged"]) == (2, 2)
    assert _names_on_target(http_target) == {
        "1": "CUSTOMER 1", "2": "TWO", "3": "THREE", "4": "CUSTOMER 4", "5": "CUSTOMER 5"
    }  # fmt: skip

    third = project.run(full_diff=True)

    assert third.metadata["data_set"]["scope"] == "the whole data set (a full diff was asked for)"
    assert third.metadata["data_set"]["rows"] == 5
    assert third.metadata["customers"]["sent"] == 1
    assert _names_on_target(http_target)["4"] == "FOUR"


def test_a_record_that_failed_is_read_again_by_key_though_its_row_did_not_change(
    integration_project, source_db, http_target
):
    source_db.add_customers(3, updated_at=T0)
    project = integration_project(BASIC_SYNC)
    assert project.run().success
    source_db.execute("UPDATE customers SET name = 'Two', updated_at = '2026-01-02 00:00:00' WHERE customer_id = 2")
    http_target.respond_with(503, {"error": "down"}, times=4)  # every try of the one changed record
    failed = project.run()
    assert failed.metadata["customers"]["failed"] == 1
    assert _names_on_target(http_target)["2"] == "CUSTOMER 2"
    # The cursor moved past the row (its run delivered what it could), yet the record is retried: by key.
    source_db.execute("UPDATE customers SET updated_at = '2025-06-01 00:00:00' WHERE customer_id = 2")

    retried = project.run()

    assert "plus 1 record(s) to retry" in retried.metadata["data_set"]["scope"]
    assert retried.metadata["customers"]["delivered"] == 1
    assert _names_on_target(http_target)["2"] == "TWO"


MIRROR = BASIC_SYNC + (
    "      sync_mode: mirror\n      delete:\n        method: DELETE\n        path: /customers/{{target_ref}}\n"
)


def test_an_incremental_run_deletes_nothing_and_a_full_diff_deletes_what_vanished(
    integration_project, source_db, http_target
):
    source_db.add_customers(3, updated_at=T0)
    project = integration_project(MIRROR)
    assert project.run().success
    source_db.execute("DELETE FROM customers WHERE customer_id = 2")

    incremental = project.run()

    assert incremental.metadata["customers"]["delete"] == 0
    assert sorted(http_target.records("customers")) == ["1", "2", "3"]

    full = project.run(full_diff=True)

    assert full.metadata["customers"]["delete"] == 1
    assert sorted(http_target.records("customers")) == ["1", "3"]


def test_full_diff_every_reads_the_whole_data_set_once_it_has_passed(integration_project, source_db, http_target):
    source_db.add_customers(3, updated_at=T0)
    project = integration_project(BASIC_SYNC + "  full_diff_every: 6 hours\n")
    assert project.run().success
    assert project.run().metadata["data_set"]["scope"].startswith("updated_at >= ")
    ledger = project.ledger()
    try:  # the last full diff, long before the 6 hours
        cursor = read_cursors(ledger, "sync", ["customers"])["customers"]
        save_read_cursor(ledger, "sync", "customers", cursor.read_until, NOW.replace(year=2020))
    finally:
        ledger.dispose()

    due = project.run()

    assert "full_diff_every" in due.metadata["data_set"]["scope"]
    assert due.metadata["data_set"]["rows"] == 3
    assert project.run().metadata["data_set"]["scope"].startswith("updated_at >= ")  # the clock starts again


def test_full_diff_every_0_reads_the_whole_data_set_every_run(integration_project, source_db, http_target):
    source_db.add_customers(3, updated_at=T0)
    project = integration_project(BASIC_SYNC + "  full_diff_every: 0\n")
    assert project.run().success

    again = project.run()

    assert again.metadata["data_set"]["scope"] == "the whole data set (full_diff_every: 0)"
    assert again.metadata["data_set"]["rows"] == 3
