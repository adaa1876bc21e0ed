"""Import jobs end to end through Dagster: a warehouse query (PostgreSQL, MariaDB) upserted into a table, with
blocking expectation checks, the snapshot kept per run, full syncs and rebuilds, and what gates automatic runs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import dagster as dg
import pyarrow.parquet as pq
import pytest

from connector_pipelines.definitions import build_definitions

SOURCE_DDL = (
    "CREATE TABLE src_accounts (account_id INTEGER, account_name VARCHAR(80), plan VARCHAR(20), "
    "mrr_text VARCHAR(20), signup VARCHAR(10), updated_at TIMESTAMP)"
)
TARGET_DDL = (
    "CREATE TABLE accounts (account_id INTEGER PRIMARY KEY, name VARCHAR(80) NOT NULL, plan VARCHAR(20), "
    "mrr NUMERIC(12,2), signed_up DATE, synced_at TIMESTAMP)"
)
MAPPING = [
    {"target": "account_id", "source": "account_id", "type": "integer"},
    {"target": "name", "expression": "trim(account_name)"},
    {"target": "plan", "source": "plan"},
    {"target": "mrr", "source": "mrr_text", "type": "currency", "parse": "currency:eu"},
    {"target": "signed_up", "source": "signup", "type": "date", "parse": "date:%d/%m/%Y"},
    {"target": "synced_at", "source": "updated_at", "type": "datetime"},
]


def add_rows(database, rows):
    database.execute(
        "INSERT INTO src_accounts VALUES (:account_id, :account_name, :plan, :mrr_text, :signup, :updated_at)",
        [
            dict(zip(("account_id", "account_name", "plan", "mrr_text", "signup", "updated_at"), r, strict=True))
            for r in rows
        ],
    )


def warehouse_import(import_project, database, *, expectations=None, target=None, schedule=None, **connector):
    database.execute(SOURCE_DDL)
    database.execute(TARGET_DDL)
    import_project.add_database(database, "dwh")
    import_project.add_import(
        "accounts_sync",
        {
            "source": {
                "warehouse": {"connection": "dwh", "query": "SELECT * FROM src_accounts", "updated_at": "updated_at"}
            },
            "target": {"connection": "dwh", "table": "accounts", "key": "account_id", **(target or {})},
            "mapping": MAPPING,
            "expectations": expectations or [],
            **({"schedule": schedule} if schedule else {}),
        },
        **connector,
    )


T0 = dt.datetime(2026, 3, 1, 9, 0)


@pytest.mark.parametrize("database_fixture", ["pg_database", "mariadb_database"])
def test_warehouse_import_loads_converts_and_is_incremental(import_project, instance, request, database_fixture):
    database = request.getfixturevalue(database_fixture)
    warehouse_import(import_project, database)
    add_rows(
        database,
        [
            (1, "  Acme ", "team", "1.234,50", "31/12/2024", T0),
            (2, "Globex", "free", "0,00", "01/02/2025", T0),
            (3, "Bad date", "free", "10,00", "2025-02-30", T0),
        ],
    )
    first = import_project.run_import("accounts_sync", instance)
    assert first.success, first.failure()
    assert (first.metadata["rows_read"], first.metadata["inserted"], first.metadata["rows_rejected"]) == (3, 2, 1)
    rows = {r["account_id"]: r for r in database.query("SELECT * FROM accounts ORDER BY account_id")}
    assert rows[1]["name"] == "Acme" and rows[1]["mrr"] == Decimal("1234.50")
    assert rows[1]["signed_up"] == dt.date(2024, 12, 31)
    assert 3 not in rows
    rejections = pq.read_table(first.metadata["rejections_path"]).to_pylist()
    assert rejections[0]["row"] == 3 and rejections[0]["key"] == "3"
    assert "2025-02-30" in rejections[0]["reason"]
    # The snapshot is the source exactly as read, linked from the materialization.
    snapshot = pq.read_table(first.metadata["snapshot_path"])
    assert snapshot.num_rows == 3 and "mrr_text" in snapshot.column_names

    # Incremental: rows from the watermark less the lookback are read (here the rows at the watermark again, which
    # stay unchanged, and the changed one).
    database.execute(
        "UPDATE src_accounts SET plan = 'enterprise', updated_at = :t WHERE account_id = 2",
        {"t": T0 + dt.timedelta(hours=1)},
    )
    second = import_project.run_import("accounts_sync", instance)
    assert (second.metadata["rows_read"], second.metadata["updated"], second.metadata["inserted"]) == (3, 1, 0)
    assert second.metadata["unchanged_or_older"] == 1
    assert database.query("SELECT plan FROM accounts WHERE account_id = 2")[0]["plan"] == "enterprise"
    # --full reads everything again; unchanged rows count as updated or unchanged, nothing is duplicated.
    full = import_project.run_import("accounts_sync", instance, full=True)
    assert full.metadata["rows_read"] == 3
    assert database.query("SELECT COUNT(*) AS n FROM accounts")[0]["n"] == 2


def test_expectations_are_blocking_checks_and_row_rules_reject_rows(import_project, instance, pg_database):
    warehouse_import(
        import_project,
        pg_database,
        expectations=[
            {"expect": "in_set", "column": "plan", "values": ["free", "team"]},
            {"expect": "not_null", "column": "mrr", "mostly": 0.5},
        ],
    )
    add_rows(
        pg_database,
        [
            (1, "Acme", "team", "1,00", "01/01/2025", T0),
            (2, "Globex", "platinum", "2,00", "01/01/2025", T0),
            (3, "Initech", "free", "", "01/01/2025", T0),
        ],
    )
    defs = import_project.defs()
    asset = defs.resolve_assets_def(dg.AssetKey(["import", "accounts_sync", "accounts"]))
    checks = {key.name: spec for key, spec in ((s.key, s) for s in asset.check_specs)}
    assert set(checks) == {"expect_in_set_plan_1", "expect_not_null_mrr_2"}
    assert all(spec.blocking for spec in checks.values())

    run = import_project.run_import("accounts_sync", instance)
    assert run.checks == {"expect_in_set_plan_1": False, "expect_not_null_mrr_2": True}
    assert not run.success  # a failed blocking check fails the run (downstream assets would not run)
    # The gate: nothing was merged, so nothing was materialized; the failure names the expectation.
    assert run.metadata == {}
    assert "nothing was merged" in run.failure() and "'platinum'" in run.failure()
    assert pg_database.query("SELECT account_id FROM accounts ORDER BY 1") == []
    state = import_project.state()
    try:
        assert state.watermark("accounts_sync") is None
    finally:
        state.dispose()
    # Fixed at the source, the next run loads; rows breaking a row-level rule are rejected with their reason
    # (`mostly` only decides whether the check passes), the rest load.
    pg_database.execute("UPDATE src_accounts SET plan = 'team' WHERE account_id = 2")
    fixed = import_project.run_import("accounts_sync", instance)
    assert fixed.success, fixed.failure()
    ids = [r["account_id"] for r in pg_database.query("SELECT account_id FROM accounts ORDER BY 1")]
    assert ids == [1, 2]
    reasons = {r["key"]: r["reason"] for r in pq.read_table(fixed.metadata["rejections_path"]).to_pylist()}
    assert set(reasons) == {"3"} and "mrr" in reasons["3"]


def test_mapping_that_does_not_fit_the_table_fails_the_run_and_names_the_cause(import_project, instance, pg_database):
    warehouse_import(import_project, pg_database)
    pg_database.execute("ALTER TABLE accounts RENAME COLUMN plan TO plan_code")
    add_rows(pg_database, [(1, "Acme", "team", "1,00", "01/01/2025", T0)])
    run = import_project.run_import("accounts_sync", instance)
    assert not run.success
    assert "column 'plan' is mapped but table 'accounts' has no such column" in run.failure()
    assert "allow new attributes" in run.failure()


def test_allow_new_records_off_counts_and_skips_new_keys(import_project, instance, pg_database):
    warehouse_import(import_project, pg_database, target={"allow_new_records": False})
    pg_database.execute("INSERT INTO accounts (account_id, name) VALUES (1, 'old name')")
    add_rows(pg_database, [(1, "Acme", "team", "1,00", "01/01/2025", T0), (2, "New", "team", "1,00", "01/01/2025", T0)])
    run = import_project.run_import("accounts_sync", instance)
    assert (run.metadata["updated"], run.metadata["skipped_new"], run.metadata["inserted"]) == (1, 1, 0)
    assert [r["account_id"] for r in pg_database.query("SELECT account_id FROM accounts")] == [1]


def test_rebuild_forgets_the_watermark_and_reads_everything(import_project, instance, pg_database):
    warehouse_import(import_project, pg_database)
    add_rows(pg_database, [(1, "Acme", "team", "1,00", "01/01/2025", T0)])
    assert import_project.run_import("accounts_sync", instance).metadata["rows_read"] == 1
    again = import_project.run_import("accounts_sync", instance)
    assert (again.metadata["rows_read"], again.metadata["unchanged_or_older"]) == (1, 1)  # the row at the watermark
    pg_database.execute("DELETE FROM accounts")
    rebuilt = import_project.run_import("accounts_sync", instance, rebuild=True)
    assert (rebuilt.metadata["rows_read"], rebuilt.metadata["inserted"]) == (1, 1)


# ---- what starts runs ------------------------------------------------------------------------------------------


def test_schedule_waits_for_a_preview_then_runs(import_project, pg_database):
    warehouse_import(import_project, pg_database, schedule={"cadence": "workdays", "hour_of_day": 6})
    defs = import_project.defs()
    schedule = defs.resolve_schedule_def("import_accounts_sync_schedule")
    assert schedule.cron_schedule == "0 6 * * 1-5"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.build_schedule_context(
        resources=import_project.top_level_resources(), scheduled_execution_time=dt.datetime(2026, 11, 23, 6, 0)
    ) as context:
        skipped = schedule.evaluate_tick(context)
    assert not skipped.run_requests and "preview" in skipped.skip_message
    import_project.record_preview("accounts_sync")
    with dg.build_schedule_context(
        resources=import_project.top_level_resources(), scheduled_execution_time=dt.datetime(2026, 11, 23, 6, 0)
    ) as context:
        ran = schedule.evaluate_tick(context)
    assert len(ran.run_requests) == 1


def test_a_changed_source_needs_a_new_preview(import_project, pg_database):
    warehouse_import(import_project, pg_database, schedule={"cadence": "daily"})
    import_project.record_preview("accounts_sync")
    import_project.connectors["accounts_sync"]["import"]["source"]["warehouse"]["query"] = (
        "SELECT * FROM src_accounts WHERE plan <> 'free'"
    )
    schedule = import_project.defs().resolve_schedule_def("import_accounts_sync_schedule")
    with dg.build_schedule_context(
        resources=import_project.top_level_resources(), scheduled_execution_time=dt.datetime(2026, 11, 23)
    ) as context:
        assert not schedule.evaluate_tick(context).run_requests


def test_workdays_schedule_fires_monday_to_friday_only(import_project, pg_database):
    from dagster._utils.schedules import cron_string_iterator

    warehouse_import(
        import_project, pg_database, schedule={"cadence": "workdays", "hour_of_day": 7, "timezone": "Europe/Paris"}
    )
    schedule = import_project.defs().resolve_schedule_def("import_accounts_sync_schedule")
    fires = cron_string_iterator(dt.datetime(2026, 11, 20, 12, 0).timestamp(), schedule.cron_schedule, "Europe/Paris")
    days = [next(fires).strftime("%a %H:%M") for _ in range(7)]
    assert days == ["Mon 07:00", "Tue 07:00", "Wed 07:00", "Thu 07:00", "Fri 07:00", "Mon 07:00", "Tue 07:00"]


def test_disabled_import_schedule_is_stopped(import_project, pg_database):
    warehouse_import(import_project, pg_database, schedule={"cadence": "hourly"}, enabled=False)
    schedule = import_project.defs().resolve_schedule_def("import_accounts_sync_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_once_runs_a_single_time_and_sync_on_save_once_per_spec_version(import_project, fresh_instance, pg_database):
    warehouse_import(import_project, pg_database, schedule={"cadence": "once"})
    import_project.record_preview("accounts_sync")
    defs = import_project.defs()
    with pytest.raises(dg.DagsterInvariantViolationError):
        defs.resolve_schedule_def("import_accounts_sync_schedule")
    once = defs.resolve_sensor_def("import_accounts_sync_once")
    with dg.build_sensor_context(instance=fresh_instance, resources=import_project.top_level_resources()) as context:
        keys = [r.run_key for r in once.evaluate_tick(context).run_requests]
    assert keys == ["once"]  # Dagster starts a run key once per sensor: later ticks ask for the same key

    spec = import_project.connectors["accounts_sync"]["import"]
    del spec["schedule"]
    spec["sync_on_save"] = True
    first = import_project.defs().resolve_sensor_def("import_accounts_sync_once")
    spec["mapping"][2]["default"] = "free"  # an edit of the spec
    second = import_project.defs().resolve_sensor_def("import_accounts_sync_once")
    key_of = {}
    for label, sensor in (("first", first), ("second", second)):
        with dg.build_sensor_context(
            instance=fresh_instance, resources=import_project.top_level_resources()
        ) as context:
            key_of[label] = sensor.evaluate_tick(context).run_requests[0].run_key
    assert key_of["first"].startswith("spec:") and key_of["first"] != key_of["second"]


def test_definitions_name_and_describe_the_import(import_project, pg_database):
    warehouse_import(import_project, pg_database, owners=["data@acme.example"])
    defs = build_definitions(import_project.write())
    asset = defs.resolve_assets_def(dg.AssetKey(["import", "accounts_sync", "accounts"]))
    spec = next(iter(asset.specs))
    assert spec.group_name == "accounts_sync"
    assert {"postgres", "table"} <= set(spec.kinds)
    assert spec.owners == ["data@acme.example"]
    assert defs.resolve_job_def("import_accounts_sync") is not None


def test_the_readme_import_examples_load_and_match_the_demo(tmp_path):
    """The README's YAML examples of imports are real specs, the same imports as the demo's files."""
    import re
    import shutil
    from pathlib import Path

    from connector_pipelines.spec.loader import load_project

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    # The demo's two imports; the other examples (an API source beside its connection) start otherwise.
    examples = [block for block in re.findall(r"```yaml\n(.*?)```", readme, re.S) if block.startswith("kind: import")]
    assert len(examples) == 2
    resources = tmp_path / "resources"
    (resources / "connectors").mkdir(parents=True)
    shutil.copy(root / "resources" / "connections.yaml", resources / "connections.yaml")
    for name, example in zip(("warehouse_customers", "partner_conversions"), examples, strict=True):
        (resources / "connectors" / f"{name}.yaml").write_text(example)
    examples = load_project(resources)
    demo = load_project(root / "resources")
    for name in ("warehouse_customers", "partner_conversions"):
        assert examples.connector(name).spec.import_.model_dump() == demo.connector(name).spec.import_.model_dump()


def test_a_mapping_reading_a_column_the_query_lacks_does_not_run(import_project, instance, pg_database):
    warehouse_import(import_project, pg_database)
    import_project.connectors["accounts_sync"]["import"]["mapping"][2]["source"] = "plann"
    add_rows(pg_database, [(1, "Acme", "team", "1,00", "01/01/2025", T0)])
    run = import_project.run_import("accounts_sync", instance)
    assert not run.success
    assert "the mapping reads column 'plann', which the query's result does not have (did you mean 'plan'?)" in (
        run.failure()
    )
    assert pg_database.query("SELECT COUNT(*) AS n FROM accounts")[0]["n"] == 0
