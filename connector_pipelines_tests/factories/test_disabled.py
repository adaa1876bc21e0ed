"""Off is off: a connector with `enabled: false` (extract, integration, import) refuses in every asset, whatever
starts it (the job, one asset materialized alone, the CLI), and nothing reaches its target; its schedules and
sensors, ticked as the daemon does when someone switched them on, skip with the reason. `list` shows the live
state beside the YAML's `enabled`."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from connector_pipelines.factories.naming import CUSTOM_FILE, DATA_SET
from connector_pipelines.spec.loader import RESOURCES_ENV
from connector_pipelines.spec.yaml_source import display_path
from connector_pipelines_tests.fixtures.extract import TICKS_QUERY, create_ticks_table, failure_text, files_under
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC
from connector_pipelines_tests.imports.test_jobs import add_rows, warehouse_import

UTC = dt.UTC
DAILY = {"cadence": "daily", "inception_date": "2024-01-01"}
REPO_ROOT = Path(__file__).resolve().parents[2]


def reason_for(resources: Path, name: str) -> str:
    return f"connector {name} is disabled (enabled: false in {display_path(resources / 'connectors' / f'{name}.yaml')})"


def materialize_alone(defs: dg.Definitions, key: dg.AssetKey, instance, **kwargs) -> dg.ExecuteInProcessResult:
    """What the UI's Materialize of one asset does: that asset only, with the project's resources."""
    return dg.materialize(
        list(defs.assets or []),
        resources=defs.resources,
        selection=[key],
        instance=instance,
        raise_on_error=False,
        **kwargs,
    )


def schedule_tick(defs: dg.Definitions, name: str, instance, when: dt.datetime, resources: dict | None = None):
    schedule = defs.resolve_schedule_def(name)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=when, resources=resources) as context:
        return schedule, schedule.evaluate_tick(context)


# ---- extract --------------------------------------------------------------------------------------------------


def test_a_disabled_extract_refuses_its_job_each_asset_and_the_cli(project, instance, pg_database, cli):
    create_ticks_table(pg_database, {1: dt.datetime(2024, 1, 2, 9)})
    project.add_database(pg_database)
    outbox = project.add_folder()
    project.add_extract("ticks", TICKS_QUERY, schedule=DAILY, enabled=False)
    defs = project.defs()
    reason = reason_for(project.resources, "ticks")
    names = project.names("ticks")

    runs = {
        "job": project.run("ticks", instance, partition_key="2024-01-02", defs=defs),
        "file alone": materialize_alone(defs, names.key("file"), instance, partition_key="2024-01-02"),
        "custom_file alone": materialize_alone(
            defs,
            names.key(CUSTOM_FILE),
            instance,
            run_config=names.run_config([CUSTOM_FILE], window_start="2024-01-02", window_end="2024-01-03"),
        ),
    }
    for how, result in runs.items():
        assert not result.success, how
        assert f"{reason}: nothing was read or sent" in failure_text(result), how

    for args in (
        ("run", "ticks"),
        ("run", "ticks", "--partition", "2024-01-02"),
        ("run", "ticks", "--window", "2024-01-02..2024-01-03"),
    ):
        refused = cli(*args)
        assert refused.exit_code == 2, args
        assert reason in refused.output

    assert files_under(outbox) == []
    assert project.staging_files() == []


@pytest.mark.parametrize(
    "schedule",
    [DAILY, {**DAILY, "rolling": 3}, {"cadence": "daily", "hour_of_day": 5}],
    ids=["partitioned", "rolling", "full"],
)
def test_a_disabled_extracts_schedule_keeps_its_cron_and_skips_with_the_reason(
    project, instance, pg_database, schedule
):
    create_ticks_table(pg_database, {1: dt.datetime(2024, 1, 2, 9)})
    project.add_database(pg_database)
    outbox = project.add_folder()
    project.add_extract(
        "ticks", TICKS_QUERY if "inception_date" in schedule else "SELECT * FROM ticks", schedule=schedule
    )
    enabled_cron = project.defs().resolve_schedule_def("extract_ticks_schedule").cron_schedule
    project.connectors["ticks"]["enabled"] = False
    defs = project.defs()

    definition, tick = schedule_tick(defs, "extract_ticks_schedule", instance, dt.datetime(2024, 1, 5, 1, tzinfo=UTC))

    assert definition.cron_schedule == enabled_cron
    assert definition.default_status == dg.DefaultScheduleStatus.STOPPED
    assert tick.skip_message == reason_for(project.resources, "ticks")
    assert not tick.run_requests
    assert files_under(outbox) == []


# ---- integration ----------------------------------------------------------------------------------------------

TRIGGERED = BASIC_SYNC + "  triggers: [on_create, on_update]\n  schedule: {cadence: daily}\n"


def test_a_disabled_integration_refuses_every_asset_and_the_cli(integration_project, source_db, http_target, cli):
    source_db.add_customers(3)
    project = integration_project(TRIGGERED)
    assert project.run().success  # a snapshot and a delivery exist: a delivery re-run alone would have data
    http_target.clear()
    source_db.execute("UPDATE customers SET name = 'changed', updated_at = '2026-02-01 00:00:00'")
    project = integration_project("enabled: false\n" + TRIGGERED)
    defs = project.defs()
    names = project.names("sync")
    reason = reason_for(project.resources, "sync")

    runs = {
        "job": project.run_job("sync", project.instance),
        "job --full": project.run_job("sync", project.instance, full=True),
        "push": project.run_job("sync", project.instance, keys=["1"]),
        "data set alone": materialize_alone(defs, names.key(DATA_SET), project.instance),
        "delivery alone": materialize_alone(defs, names.key("customers"), project.instance),
    }
    for how, result in runs.items():
        assert not result.success, how
        assert f"{reason}: nothing was read or sent" in failure_text(result), how

    for args in (("run", "sync"), ("run", "sync", "--full")):
        refused = cli(*args)
        assert refused.exit_code == 2, args
        assert reason in refused.output
    assert http_target.requests == []


def test_a_disabled_integrations_schedule_and_sensor_skip_with_the_reason(integration_project, source_db, http_target):
    source_db.add_customers(3)  # changes the sensor would see
    project = integration_project("enabled: false\n" + TRIGGERED)
    defs = project.defs()
    reason = reason_for(project.resources, "sync")

    schedule, tick = schedule_tick(
        defs, "integration_sync_schedule", project.instance, dt.datetime(2026, 3, 2, tzinfo=UTC)
    )
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert (tick.skip_message, tick.run_requests) == (reason, [])

    sensor = defs.resolve_sensor_def("integration_sync_changes")
    resources = project.top_level_resources(defs)
    with dg.build_sensor_context(
        instance=project.instance, resources={key: resources[key] for key in sensor.required_resource_keys}
    ) as context:
        evaluation = sensor.evaluate_tick(context)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert (evaluation.skip_message, evaluation.run_requests) == (reason, [])
    assert http_target.requests == []


# ---- import ---------------------------------------------------------------------------------------------------


def test_a_disabled_import_refuses_its_asset_and_the_cli_and_its_triggers_skip(
    import_project, instance, pg_database, cli
):
    warehouse_import(import_project, pg_database, schedule={"cadence": "daily"}, enabled=False)
    import_project.connectors["accounts_sync"]["import"]["sync_on_save"] = True
    add_rows(pg_database, [(1, "Acme", "team", "1,00", "31/12/2024", dt.datetime(2026, 3, 1, 9))])
    import_project.record_preview("accounts_sync")  # previewed: only `enabled: false` stands in the way
    defs = import_project.defs()
    reason = reason_for(import_project.resources, "accounts_sync")
    names = import_project.names("accounts_sync")

    runs = {
        "job": import_project.run_job("accounts_sync", instance),
        "job --full": import_project.run_job("accounts_sync", instance, full=True),
        "asset alone": materialize_alone(defs, names.key("accounts"), instance),
    }
    for how, result in runs.items():
        assert not result.success, how
        assert f"{reason}: nothing was read or sent" in failure_text(result), how
    refused = cli("run", "accounts_sync", "--full")
    assert refused.exit_code == 2 and reason in refused.output
    assert pg_database.query("SELECT * FROM accounts") == []

    schedule, tick = schedule_tick(defs, "import_accounts_sync_schedule", instance, dt.datetime(2026, 3, 2, tzinfo=UTC))
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert (tick.skip_message, tick.run_requests) == (reason, [])
    once = import_project.sensor_tick("import_accounts_sync_once", instance, None, defs)
    assert (once.skip_message, once.run_requests) == (reason, [])


def test_a_disabled_file_imports_sensor_skips_though_a_matching_file_waits(import_project, instance, pg_database):
    pg_database.execute("CREATE TABLE leads (lead_id INTEGER PRIMARY KEY, email TEXT)")
    import_project.add_database(pg_database, "crm")
    inbox = import_project.add_folder("drop")
    (inbox / "leads_1.csv").write_text("lead_id,email\n1,a@example.test\n")
    import_project.add_import(
        "leads",
        {
            "source": {"files": {"connection": "drop", "pattern": "leads_*.csv"}},
            "target": {"connection": "crm", "table": "leads", "key": "lead_id"},
            "mapping": [
                {"target": "lead_id", "source": "lead_id", "type": "integer"},
                {"target": "email", "source": "email"},
            ],
        },
        enabled=False,
    )
    import_project.record_preview("leads")

    tick = import_project.sensor_tick("import_leads_files", instance, None)

    assert (tick.skip_message, tick.run_requests) == (reason_for(import_project.resources, "leads"), [])
    assert [path.name for path in inbox.iterdir()] == ["leads_1.csv"]  # not picked up, not archived


# ---- list -----------------------------------------------------------------------------------------------------


def _dagster(*args: str, env: dict) -> None:
    """The dagster CLI on the project's workspace, as an operator switches a schedule or sensor."""
    command = [str(Path(sys.executable).parent / "dagster"), *args, "-w", str(REPO_ROOT / "workspace.yaml")]
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_list_shows_the_live_state_of_schedules_and_sensors_beside_enabled(
    integration_project, source_db, tmp_path, cli
):
    project = integration_project("enabled: false\n" + TRIGGERED)
    env = {"DAGSTER_HOME": str(tmp_path / "dagster_home"), RESOURCES_ENV: str(project.resources)}
    before = cli("list")
    assert before.exit_code == 0, before.output
    [line] = [line for line in before.output.splitlines() if line.startswith("sync ")]
    assert "  no  " in line
    assert "schedule stopped (default), changes stopped (default)" in line

    _dagster("schedule", "start", "integration_sync_schedule", env=env)

    after = cli("list")
    [line] = [line for line in after.output.splitlines() if line.startswith("sync ")]
    assert "schedule running (switched on), skips: disabled, changes stopped (default)" in line
