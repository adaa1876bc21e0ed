"""A SQLite ledger is one machine's file: an instance that launches runs elsewhere (a pod per run) refuses it,
saying what to set, before a single record is read; the default launcher keeps working with it."""

from __future__ import annotations

import sqlite3

import dagster as dg
from dagster._core.launcher import RunLauncher
from dagster._serdes import ConfigurableClass

from connector_pipelines_tests.fixtures.project import ConnectorProject


class ElsewhereRunLauncher(RunLauncher, ConfigurableClass):
    """Stands for Dagster's K8sRunLauncher or DockerRunLauncher (not installed here): runs start on other machines.
    Only its class matters to the check; nothing is launched through it in this test."""

    def __init__(self, inst_data=None):
        self._inst_data = inst_data

    @property
    def inst_data(self):
        return self._inst_data

    @classmethod
    def config_type(cls):
        return {}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data)

    def launch_run(self, context) -> None:
        raise NotImplementedError("runs of this test are executed in process")

    def terminate(self, run_id: str) -> bool:
        return False


def _import_project(root) -> ConnectorProject:
    with sqlite3.connect(root / "shop.db") as db:
        db.execute("CREATE TABLE accounts (account_id INTEGER, name TEXT)")
        db.execute("INSERT INTO accounts VALUES (1, 'Ann')")
        db.execute("CREATE TABLE customers (account_id INTEGER PRIMARY KEY, name TEXT)")
    project = ConnectorProject(root)
    project.connections = {"shop": {"type": "sql", "url": "sqlite:///shop.db"}}
    project.connectors["accounts_import"] = {
        "kind": "import",
        "import": {
            "source": {"warehouse": {"connection": "shop", "query": "SELECT account_id, name FROM accounts"}},
            "target": {"connection": "shop", "table": "customers", "key": "account_id"},
            "mapping": [
                {"target": "account_id", "source": "account_id", "type": "integer"},
                {"target": "name", "source": "name", "type": "text"},
            ],
        },
    }
    project.write()
    return project


def test_an_instance_that_launches_runs_elsewhere_refuses_the_sqlite_state_database(tmp_path, monkeypatch):
    monkeypatch.delenv("CONNECTOR_PIPELINES_LEDGER_URL", raising=False)
    project = _import_project(tmp_path)
    launcher = {"module": __name__, "class": "ElsewhereRunLauncher"}
    with dg.instance_for_test(overrides={"run_launcher": launcher}) as instance:
        result = project.run_job("accounts_import", instance)
    assert not result.success
    errors = [e.event_specific_data.error for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    assert errors, [e.event_type_value for e in result.all_events]
    message = errors[0].message if errors[0].cause is None else errors[0].cause.message
    assert "a SQLite file of one machine, but this Dagster instance launches runs with ElsewhereRunLauncher" in message
    assert "set CONNECTOR_PIPELINES_LEDGER_URL to a PostgreSQL database" in message
    with sqlite3.connect(tmp_path / "shop.db") as db:
        assert db.execute("SELECT COUNT(*) FROM customers").fetchone() == (0,)


def test_the_default_launcher_runs_with_the_sqlite_state_database(tmp_path, monkeypatch):
    monkeypatch.delenv("CONNECTOR_PIPELINES_LEDGER_URL", raising=False)
    project = _import_project(tmp_path)
    with dg.instance_for_test() as instance:
        assert project.run_job("accounts_import", instance).success
