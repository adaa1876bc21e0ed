"""The record-change sensors and the schedule of an integration, ticked by hand against a real SQLite source.

Each tick goes through `sensor.evaluate_tick` with the connector's own `source` resource; the runs it asks for are
executed with the job's `execute_in_process` and the run config the sensor built, against the loopback target.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from connector_pipelines.factories.naming import job_name
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC, RunResult, _summarize

SENSOR = "integration_sync_changes"
SCHEDULE = "integration_sync_schedule"
DELETE_REQUEST = "      delete:\n        method: DELETE\n        path: /customers/{{target_ref}}\n"


@pytest.fixture(scope="module")
def _shared_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:  # one per module: building one takes ~2 s
        yield instance


@pytest.fixture
def fresh_instance(_shared_instance: dg.DagsterInstance) -> dg.DagsterInstance:
    """This module's tests share one instance (they tell their runs apart), overriding the per-test one."""
    return _shared_instance


CHANGE_LOG = "    change_log: {table: customer_changes, operation: operation, sequence: sequence_id}\n"
CHANGE_LOG_WITH_KEY = (
    "    change_log: {table: customer_changes, key: [customer_id], operation: operation, sequence: sequence_id}\n"
)


def _spec(triggers: str, change_log: str | None = CHANGE_LOG) -> str:
    """BASIC_SYNC watched by a sensor (`change_log=None`: updated_at and the key set only), with a delete request."""
    spec = BASIC_SYNC.replace(
        "    updated_at: updated_at\n",
        "    updated_at: updated_at\n" + (change_log or "") + f"  triggers: {triggers}\n",
    )
    return spec + DELETE_REQUEST


def _tick(project, cursor: str | None):
    defs = project.definitions()
    sensor = defs.resolve_sensor_def(SENSOR)
    context = dg.build_sensor_context(
        instance=project.instance, cursor=cursor, resources={"source": defs.resources["source"]}
    )
    return sensor.evaluate_tick(context)


def _execute(project, request: dg.RunRequest) -> RunResult:
    job = project.definitions().resolve_job_def(job_name("integration", project.name))
    result = job.execute_in_process(
        run_config=request.run_config, instance=project.instance, tags=request.tags, raise_on_error=False
    )
    return _summarize(result)


def _op_config(request: dg.RunRequest) -> dict:
    configs = [op["config"] for op in request.run_config["ops"].values()]
    assert all(c == configs[0] for c in configs), "every asset of the job must read the same scope"
    return configs[0]


def _sent(target, since: int = 0) -> list[tuple[str, str]]:
    """(method, path) of the requests the target received, from the `since`-th on."""
    return sorted((r.method, r.path) for r in target.requests[since:])


# ---- change log ------------------------------------------------------------------------------------------------


def test_change_log_sensor_asks_for_one_run_per_batch_of_changes(integration_project, source_db, http_target):
    source_db.add_customers(5)
    project = integration_project(_spec("[on_create, on_update, on_delete]"))

    first = _tick(project, None)  # the whole log so far: the five creates
    assert len(first.run_requests) == 1
    assert _op_config(first.run_requests[0]) == {
        "changes_until": "5",
        "operations": ["create", "delete", "update"],
    }
    assert json.loads(first.cursor) == {"sequence": "5"}
    assert _execute(project, first.run_requests[0]).success
    assert sorted(http_target.records("customers"), key=int) == ["1", "2", "3", "4", "5"]

    idle = _tick(project, first.cursor)
    assert idle.run_requests == [] and idle.skip_message == "no new changes"
    assert idle.cursor == first.cursor

    mark = len(http_target.requests)
    source_db.add_customers(2, start=6)  # sequences 6, 7
    source_db.execute("UPDATE customers SET name = 'Renamed' WHERE customer_id IN (1, 2)")  # 8, 9
    source_db.execute("UPDATE customers SET email = 'again@example.test' WHERE customer_id = 1")  # 10
    source_db.execute("DELETE FROM customers WHERE customer_id = 3")  # 11
    changed = _tick(project, first.cursor)

    assert len(changed.run_requests) == 1, "one run for the whole batch of changes, not one per record"
    request = changed.run_requests[0]
    config = _op_config(request)
    assert (config["changes_after"], config["changes_until"]) == ("5", "11")
    assert json.loads(changed.cursor) == {"sequence": "11"}
    result = _execute(project, request)
    assert result.success
    assert result.metadata["data_set"]["rows"] == 4  # 1, 2, 6, 7: the untouched 4 and 5 are not even read
    counts = result.metadata["customers"]
    assert (counts["create"], counts["update"], counts["delete"], counts["failed"]) == (2, 2, 1, 0)
    assert _sent(http_target, mark) == [
        ("DELETE", "/customers/3"),
        ("PUT", "/customers/1"),
        ("PUT", "/customers/2"),
        ("PUT", "/customers/6"),
        ("PUT", "/customers/7"),
    ]
    stored = http_target.records("customers")
    assert sorted(stored, key=int) == ["1", "2", "4", "5", "6", "7"]
    assert stored["1"]["name"] == "RENAMED" and stored["1"]["email"] == "again@example.test"
    assert project.ledger().record("sync", "customers", "3")["delivered_fingerprint"] is None

    after = _tick(project, changed.cursor)
    assert after.run_requests == [] and after.cursor == changed.cursor


def test_change_log_sensor_with_only_on_create_never_sends_updates(integration_project, source_db, http_target):
    source_db.add_customers(3)
    project = integration_project(_spec("[on_create]", CHANGE_LOG_WITH_KEY))
    assert project.run().success
    cursor = _tick(project, None).cursor  # the log's first three creates: delivered already

    source_db.execute("UPDATE customers SET name = 'Changed' WHERE customer_id = 1")
    only_updates = _tick(project, cursor)
    assert only_updates.run_requests == []  # nothing this sensor watches: no run...
    assert json.loads(only_updates.cursor)["sequence"] != json.loads(cursor)["sequence"]  # ...and not seen again

    mark = len(http_target.requests)
    source_db.execute("UPDATE customers SET name = 'Changed again' WHERE customer_id = 2")
    source_db.add_customers(1, start=4)
    mixed = _tick(project, only_updates.cursor)
    assert len(mixed.run_requests) == 1
    assert _op_config(mixed.run_requests[0])["operations"] == ["create"]
    result = _execute(project, mixed.run_requests[0])

    assert result.success
    assert _sent(http_target, mark) == [("PUT", "/customers/4")]
    stored = http_target.records("customers")
    assert sorted(stored, key=int) == ["1", "2", "3", "4"]
    assert (stored["1"]["name"], stored["2"]["name"]) == ("CUSTOMER 1", "CUSTOMER 2")
    assert project.ledger().record("sync", "customers", "2")["status"] == "delivered"  # the old version


# ---- updated_at ------------------------------------------------------------------------------------------------


def test_updated_at_sensor_sends_only_rows_changed_since_its_cursor(integration_project, source_db, http_target):
    source_db.add_customers(3, updated_at="2026-01-01 00:00:00")
    source_db.add_customers(2, start=4, updated_at="2026-01-02 00:00:00")
    project = integration_project(_spec("[on_create, on_update]", change_log=None))

    first = _tick(project, None)
    assert len(first.run_requests) == 1
    assert json.loads(first.cursor) == {"updated_at": "2026-01-02 00:00:00"}
    assert _execute(project, first.run_requests[0]).success
    assert len(http_target.records("customers")) == 5
    idle = _tick(project, first.cursor)
    assert idle.run_requests == [] and idle.cursor == first.cursor

    mark = len(http_target.requests)
    source_db.execute("UPDATE customers SET name = 'Newer', updated_at = '2026-01-03 00:00:00' WHERE customer_id = 1")
    source_db.add_customers(1, start=6, updated_at="2026-01-03 00:00:00")
    changed = _tick(project, first.cursor)

    assert len(changed.run_requests) == 1
    assert _op_config(changed.run_requests[0]) == {
        "updated_after": "2026-01-02 00:00:00",
        "operations": ["create", "update"],
    }
    assert json.loads(changed.cursor) == {"updated_at": "2026-01-03 00:00:00"}
    result = _execute(project, changed.run_requests[0])
    assert result.success
    # 1 and 6 changed; 4 and 5 sit on the old cursor's boundary, read again (inclusive) but not sent again.
    assert result.metadata["data_set"]["rows"] == 4
    counts = result.metadata["customers"]
    assert (counts["sent"], counts["update"], counts["create"], counts["unchanged"]) == (2, 1, 1, 2)
    assert _sent(http_target, mark) == [("PUT", "/customers/1"), ("PUT", "/customers/6")]
    assert http_target.records("customers")["1"]["name"] == "NEWER"
    assert _tick(project, changed.cursor).run_requests == []


def test_on_delete_without_change_log_watches_the_key_set(integration_project, source_db, http_target):
    source_db.add_customers(5)
    project = integration_project(_spec("[on_delete]", change_log=None))
    assert project.run().success

    first = _tick(project, None)
    assert first.run_requests == []  # the first tick only learns the key set
    assert set(json.loads(first.cursor)) == {"key_set"}
    assert _tick(project, first.cursor).cursor == first.cursor

    mark = len(http_target.requests)
    source_db.execute("DELETE FROM customers WHERE customer_id = 2")
    source_db.execute("UPDATE customers SET name = 'Not watched' WHERE customer_id = 1")
    gone = _tick(project, first.cursor)
    assert len(gone.run_requests) == 1
    assert _op_config(gone.run_requests[0]) == {"detect_deletes": True, "operations": ["delete"]}
    assert json.loads(gone.cursor)["key_set"] != json.loads(first.cursor)["key_set"]
    result = _execute(project, gone.run_requests[0])

    assert result.success
    assert _sent(http_target, mark) == [("DELETE", "/customers/2")]  # the update is no trigger of this sensor
    assert sorted(http_target.records("customers"), key=int) == ["1", "3", "4", "5"]
    assert http_target.records("customers")["1"]["name"] == "CUSTOMER 1"
    assert _tick(project, gone.cursor).run_requests == []


def test_key_set_sensor_run_keys_stay_unique_when_a_key_set_comes_back(integration_project, source_db):
    """The daemon drops a run request whose run_key an earlier run of the sensor used: a key set that comes back
    (record 5 deleted, restored, deleted again) must not reuse the run key of the first deletion."""
    source_db.add_customers(5)
    project = integration_project(_spec("[on_delete]", change_log=None))
    cursor = _tick(project, None).cursor
    run_keys = []
    for statement in (
        "DELETE FROM customers WHERE customer_id = 5",
        "INSERT INTO customers VALUES (5, 'Back', NULL, 1.0, NULL, 1, '2026-01-01 00:00:00')",
        "DELETE FROM customers WHERE customer_id = 5",
    ):
        source_db.execute(statement)
        tick = _tick(project, cursor)
        cursor = tick.cursor
        run_keys += [request.run_key for request in tick.run_requests]

    assert len(run_keys) == 3
    assert len(set(run_keys)) == 3, f"run keys repeat, so the daemon would skip the second deletion: {run_keys}"


# ---- on/off and the schedule -----------------------------------------------------------------------------------


def _scheduled(spec: str) -> str:
    return spec.replace("  triggers:", "  schedule: {cadence: workdays, hour_of_day: 7}\n  triggers:")


@pytest.mark.parametrize("enabled", [True, False])
def test_enabled_decides_the_default_status_of_sensor_and_schedule(integration_project, enabled):
    spec = f"enabled: {str(enabled).lower()}\n" + _scheduled(_spec("[on_create, on_update, on_delete]"))
    defs = integration_project(spec).definitions()

    expected = "RUNNING" if enabled else "STOPPED"
    assert defs.resolve_sensor_def(SENSOR).default_status.value == expected
    assert defs.resolve_schedule_def(SCHEDULE).default_status.value == expected


def test_a_workdays_schedule_skips_the_weekend_and_runs_what_changed(integration_project, source_db, http_target):
    source_db.add_customers(4)
    project = integration_project(_scheduled(_spec("[on_update]")))
    schedule = project.definitions().resolve_schedule_def(SCHEDULE)

    assert schedule.cron_schedule == "0 7 * * 1-5"
    assert schedule.execution_timezone == "UTC"
    friday_noon = dt.datetime(2026, 1, 9, 12, 0, tzinfo=dt.UTC)
    assert friday_noon.weekday() == 4
    fires = cron_string_iterator(friday_noon.timestamp(), schedule.cron_schedule, "UTC")
    assert [next(fires) for _ in range(2)] == [
        dt.datetime(2026, 1, 12, 7, 0, tzinfo=dt.UTC),  # Monday: Saturday and Sunday are skipped
        dt.datetime(2026, 1, 13, 7, 0, tzinfo=dt.UTC),
    ]

    monday = dt.datetime(2026, 1, 12, 7, 0, tzinfo=dt.UTC)
    context = dg.build_schedule_context(instance=project.instance, scheduled_execution_time=monday)
    requests = schedule.evaluate_tick(context).run_requests
    assert len(requests) == 1
    job = project.definitions().resolve_job_def(job_name("integration", "sync"))
    result = _summarize(
        job.execute_in_process(run_config=requests[0].run_config or {}, instance=project.instance, raise_on_error=False)
    )
    assert result.success and len(http_target.records("customers")) == 4
