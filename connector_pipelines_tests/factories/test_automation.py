"""`depends_on:` and `automation:`: lineage to other assets and connectors, and chains started by Dagster's
declarative automation, evaluated tick by tick against a real instance as the automation sensor does."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time

import dagster as dg
import pytest

from connector_pipelines.demo.crm_api import CrmApi
from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.factories.naming import AUTOMATION_SENSOR
from connector_pipelines_tests.fixtures.project import ConnectorProject
from connector_pipelines_tests.servers import free_port

IMPORT_TABLE = dg.AssetKey(["import", "accounts_import", "customers"])
DATA_SET = dg.AssetKey(["integration", "accounts_to_crm", "data_set"])
PROFILES = dg.AssetKey(["integration", "accounts_to_crm", "profiles"])


def _chain_project(root, crm_port: int, *, automation: str = "on_upstream_update") -> ConnectorProject:
    """An import from a shop database into the app's customers table, and an integration pushing that table to
    a CRM, which depends on the import."""
    with sqlite3.connect(root / "shop.db") as db:
        db.execute("CREATE TABLE accounts (account_id INTEGER, name TEXT)")
        db.executemany("INSERT INTO accounts VALUES (?, ?)", [(i, f"Account {i}") for i in range(1, 6)])
    with sqlite3.connect(root / "app.db") as db:
        db.execute("CREATE TABLE customers (account_id INTEGER PRIMARY KEY, name TEXT)")
    project = ConnectorProject(root)
    project.connections = {
        "shop": {"type": "sql", "url": "sqlite:///shop.db"},
        "app": {"type": "sql", "url": "sqlite:///app.db"},
        "crm": {"type": "http", "base_url": f"http://127.0.0.1:{crm_port}", "honours_idempotency_key": True},
    }
    project.connectors["accounts_import"] = {
        "kind": "import",
        "import": {
            "source": {"warehouse": {"connection": "shop", "query": "SELECT account_id, name FROM accounts"}},
            "target": {"connection": "app", "table": "customers", "key": "account_id"},
            "mapping": [
                {"target": "account_id", "source": "account_id", "type": "integer"},
                {"target": "name", "source": "name", "type": "text"},
            ],
            "expectations": [{"expect": "unique", "column": "account_id"}],
        },
    }
    project.connectors["accounts_to_crm"] = {
        "kind": "integration",
        "depends_on": [{"connector": "accounts_import"}, "marts/account_scores"],
        "automation": automation,
        "integration": {
            "data_set": {"connection": "app", "table": "customers", "key": "account_id"},
            "target": {"connection": "crm", "fields": [{"name": "id", "type": "text", "required": True}]},
            "configurations": [
                {
                    "name": "profiles",
                    "mapping": [{"target": "id", "expression": "concat('ACC-', account_id)"}],
                    "request": {"method": "PUT", "path": "/customers/{{id}}", "body": {"id": "{{id}}"}},
                }
            ],
            **({"schedule": {"cadence": "every 5 minutes"}} if automation == "on_cron" else {}),
        },
    }
    project.write()
    return project


class Automation:
    """The automation sensor's ticks over a project's definitions, each followed by the run it asks for."""

    def __init__(self, project: ConnectorProject, instance: dg.DagsterInstance):
        self.defs = project.defs()
        self.instance = instance
        self.sensor = self.defs.resolve_sensor_def(AUTOMATION_SENSOR)
        self.cursor = None

    def tick(self, at: dt.datetime | None = None) -> set[dg.AssetKey]:
        evaluation = dg.evaluate_automation_conditions(
            defs=self.defs,
            instance=self.instance,
            asset_selection=self.sensor.asset_selection,
            cursor=self.cursor,
            evaluation_time=at,
        )
        self.cursor = evaluation.cursor
        requested = {
            r.key for r in evaluation.results if isinstance(r.key, dg.AssetKey) and evaluation.get_num_requested(r.key)
        }
        if requested:
            job = self.defs.resolve_implicit_global_asset_job_def()
            result = job.execute_in_process(instance=self.instance, asset_selection=list(requested))
            assert result.success
        return requested

    def materialize(self, key: dg.AssetKey) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_implicit_global_asset_job_def()
        return job.execute_in_process(instance=self.instance, asset_selection=[key], raise_on_error=False)

    def dbt_model_updated(self) -> None:
        self.instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=["marts", "account_scores"]))


@pytest.fixture
def crm():
    with CrmApi(port=free_port()) as api:
        yield api


def test_depends_on_becomes_asset_dependencies_of_the_connectors_first_asset(tmp_path, crm):
    defs = _chain_project(tmp_path, crm.port).defs()
    graph = defs.resolve_asset_graph()
    assert graph.get(DATA_SET).parent_keys == {IMPORT_TABLE, dg.AssetKey(["marts", "account_scores"])}
    assert graph.get(PROFILES).parent_keys == {DATA_SET}
    assert set(defs.resolve_sensor_def(AUTOMATION_SENSOR).asset_selection.resolve(graph)) == {DATA_SET, PROFILES}
    assert defs.resolve_sensor_def(AUTOMATION_SENSOR).default_status == dg.DefaultSensorStatus.RUNNING


def test_chain_runs_the_integration_only_after_every_upstream_updated_and_once(tmp_path, crm):
    project = _chain_project(tmp_path, crm.port)
    with dg.instance_for_test() as instance:
        automation = Automation(project, instance)
        assert automation.tick() == set()  # a fresh deployment starts nothing by itself

        assert automation.materialize(IMPORT_TABLE).success  # the import's own trigger (schedule, sensor, CLI)
        assert automation.tick() == set()  # the dbt model has not been updated yet: wait for every upstream
        assert len(crm.records("customers")) == 0

        automation.dbt_model_updated()
        assert automation.tick() == {DATA_SET, PROFILES}  # data set and delivery in one run
        assert sorted(crm.records("customers")) == [f"ACC-{i}" for i in range(1, 6)]

        assert automation.tick() == set()  # handled: nothing new upstream since
        assert automation.materialize(IMPORT_TABLE).success
        assert automation.tick() == set()  # one upstream again is not enough
        automation.dbt_model_updated()
        assert automation.tick() == {DATA_SET, PROFILES}


def test_a_failed_blocking_check_upstream_stops_the_chain(tmp_path, crm):
    project = _chain_project(tmp_path, crm.port)
    with sqlite3.connect(tmp_path / "shop.db") as db:
        db.execute("INSERT INTO accounts VALUES (3, 'Account 3 again')")  # breaks the import's unique check
    with dg.instance_for_test() as instance:
        automation = Automation(project, instance)
        automation.tick()
        automation.dbt_model_updated()
        imported = automation.materialize(IMPORT_TABLE)
        assert not imported.success
        assert [e.passed for e in imported.get_asset_check_evaluations()] == [False]
        assert automation.tick() == set()
        assert len(crm.records("customers")) == 0


def test_on_cron_runs_after_the_cadence_tick_once_the_upstreams_updated_and_replaces_the_schedule(tmp_path, crm):
    project = _chain_project(tmp_path, crm.port, automation="on_cron")
    assert "integration_accounts_to_crm_schedule" not in {
        s.name for s in project.defs().get_repository_def().schedule_defs
    }
    now = dt.datetime.now(dt.UTC)
    last_tick = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
    if now - last_tick < dt.timedelta(seconds=2) or last_tick + dt.timedelta(minutes=5) - now < dt.timedelta(
        seconds=30
    ):
        # Keep the cadence tick strictly before the updates below, and the next one after the test's last tick.
        time.sleep((last_tick + dt.timedelta(minutes=5, seconds=2) - now).total_seconds())
        now = dt.datetime.now(dt.UTC)
        last_tick = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
    with dg.instance_for_test() as instance:
        automation = Automation(project, instance)
        assert automation.tick(at=last_tick - dt.timedelta(seconds=1)) == set()
        assert automation.materialize(IMPORT_TABLE).success
        automation.dbt_model_updated()
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        assert automation.tick(at=later) == {DATA_SET, PROFILES}  # the tick passed and both upstreams updated since
        assert len(crm.records("customers")) == 5
        assert automation.materialize(IMPORT_TABLE).success
        automation.dbt_model_updated()
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        assert automation.tick(at=soon) == set()  # upstreams updated again, but no cadence tick since the last run


def test_spec_problems_of_depends_on_and_automation_name_the_file_line_and_field(tmp_path, crm):
    project = _chain_project(tmp_path, crm.port)
    project.connectors["accounts_to_crm"]["depends_on"] = [{"connector": "acounts_import"}]
    project.connectors["accounts_import"]["automation"] = "on_cron"
    project.write()
    with pytest.raises(ConnectorConfigError) as raised:
        project.load()
    problems = "\n".join(raised.value.problems)
    assert (
        "accounts_to_crm.yaml:3 depends_on.0.connector: no connector named 'acounts_import' (did you mean "
        "'accounts_import'?); known connectors: accounts_import"
    ) in problems
    assert "accounts_import.yaml:" in problems and "automation: on_cron runs on the schedule's cadence" in problems


def test_connectors_that_wait_for_each_other_are_one_problem_at_the_first_of_the_cycle(tmp_path, crm):
    project = _chain_project(tmp_path, crm.port)
    project.connectors["accounts_import"]["depends_on"] = [{"connector": "accounts_to_crm"}]
    project.write()
    path = project.resources / "connectors" / "accounts_import.yaml"
    lines = path.read_text().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if text.strip() == "- connector: accounts_to_crm")
    with pytest.raises(ConnectorConfigError) as raised:
        project.load()
    assert raised.value.problems == [
        f"{path}:{line} depends_on.0.connector: these connectors wait for "
        "each other (accounts_import -> accounts_to_crm -> accounts_import), so none of them would ever run; "
        "remove one of the dependencies"
    ]
