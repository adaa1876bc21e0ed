"""Environments: a connection's per-environment values (inline `environments:` and `connections.<env>.yaml`),
chosen with `--env` / `CONNECTOR_PIPELINES_ENV`; problems named at the line that set the value; every run tagged
with its environment; and the ledger kept per environment, so testing on the sandbox with `push --key K --env
sandbox` never marks production's records as delivered (SQLite files beside each other, a PostgreSQL schema)."""

from __future__ import annotations

import os
import textwrap

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from connector_pipelines.cli import main
from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.factories.naming import ENVIRONMENT_TAG
from connector_pipelines.spec.environments import ENVIRONMENT_ENV
from connector_pipelines.spec.loader import load_project
from connector_pipelines.state.database import environment_state_url
from connector_pipelines.state.ledger import DeliveryLedger
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC, SourceDatabase
from connector_pipelines_tests.fixtures.postgres import PG_SERVER
from connector_pipelines_tests.servers.http_target import RecordingTarget


def _write(resources, connections: str, overlays: dict[str, str] | None = None, connector: str | None = None):
    (resources / "connectors").mkdir(parents=True, exist_ok=True)
    (resources / "connections.yaml").write_text(textwrap.dedent(connections), encoding="utf-8")
    for name, text in (overlays or {}).items():
        (resources / f"connections.{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    if connector:
        (resources / "connectors" / "sync.yaml").write_text(connector, encoding="utf-8")


INLINE = """\
connections:
  crm:
    type: http
    base_url: https://crm.example
    environments:
      sandbox: {base_url: "https://test.crm.example", timeout_seconds: 5}
      production: {timeout_seconds: 60}
"""


@pytest.fixture(autouse=True)
def _no_environment_set(monkeypatch):
    monkeypatch.delenv(ENVIRONMENT_ENV, raising=False)


def test_a_connection_takes_the_values_of_the_environment_chosen(tmp_path, monkeypatch):
    _write(tmp_path, INLINE)
    sandbox = load_project(tmp_path, environment="sandbox")
    assert sandbox.environment == "sandbox"
    assert sandbox.connections["crm"].base_url == "https://test.crm.example"
    assert sandbox.connections["crm"].timeout_seconds == 5
    default = load_project(tmp_path)  # declared environments and none chosen: production
    assert default.environment == "production"
    assert (default.connections["crm"].base_url, default.connections["crm"].timeout_seconds) == (
        "https://crm.example",
        60,
    )
    monkeypatch.setenv(ENVIRONMENT_ENV, "sandbox")
    assert load_project(tmp_path).connections["crm"].base_url == "https://test.crm.example"


def test_a_project_without_environments_has_none(tmp_path):
    _write(tmp_path, "connections:\n  crm: {type: http, base_url: 'https://crm.example'}\n")
    assert load_project(tmp_path).environment is None


def test_an_overlay_file_replaces_keys_and_may_add_connections(tmp_path):
    overlay = """\
    connections:
      crm: {base_url: "https://sandbox.crm.example"}
      mock_bank: {type: folder, path: /tmp/mock-bank}
    """
    _write(tmp_path, INLINE, {"staging": overlay})
    staging = load_project(tmp_path, environment="staging")
    assert staging.connections["crm"].base_url == "https://sandbox.crm.example"
    assert staging.connections["crm"].timeout_seconds == 30  # the base's default: staging has no inline values
    assert staging.connections["mock_bank"].type == "folder"


def test_an_environment_nobody_declares_is_refused_naming_those_declared(tmp_path):
    _write(tmp_path, INLINE)
    with pytest.raises(ConnectorConfigError) as error:
        load_project(tmp_path, environment="qa")
    assert "CONNECTOR_PIPELINES_ENV=qa, but no connection declares it" in str(error.value)
    assert "connections.qa.yaml; declared: production, sandbox" in str(error.value)


def test_a_bad_value_is_named_at_the_line_that_set_it(tmp_path):
    broken = INLINE.replace("timeout_seconds: 5}", "timeout_seconds: soon}")
    _write(tmp_path, broken)
    with pytest.raises(ConnectorConfigError) as error:
        load_project(tmp_path, environment="sandbox")
    [problem] = error.value.problems
    assert problem.startswith(f"{tmp_path / 'connections.yaml'}:6 connections.crm.environments.sandbox.timeout_seconds")
    assert "(in sandbox)" in problem

    _write(tmp_path, INLINE, {"staging": "connections:\n  crm:\n    base_url: 12\n    timeout_seconds: -3\n"})
    with pytest.raises(ConnectorConfigError) as error:
        load_project(tmp_path, environment="staging")
    assert any(
        p.startswith(f"{tmp_path / 'connections.staging.yaml'}:4 connections.crm.timeout_seconds")
        for p in error.value.problems
    ), error.value.problems


def test_an_environment_may_not_change_a_connections_type(tmp_path):
    _write(tmp_path, INLINE.replace('{base_url: "https://test.crm.example",', '{type: folder, base_url: "x",'))
    with pytest.raises(ConnectorConfigError, match="changes a connection's settings, not its type"):
        load_project(tmp_path, environment="sandbox")


def test_each_environment_keeps_its_own_state_database(tmp_path, fresh_pg_database):
    assert environment_state_url("sqlite:////x/ledger.db", "sandbox") == "sqlite:////x/ledger.sandbox.db"
    assert environment_state_url("sqlite:////x/ledger.db", "production") == "sqlite:////x/ledger.db"
    for base in (f"{PG_SERVER}/{fresh_pg_database}", f"sqlite:///{tmp_path / 'ledger.db'}"):
        production = DeliveryLedger(base)
        sandbox = DeliveryLedger(environment_state_url(base, "sandbox"))
        try:
            with sandbox.engine.begin() as connection:
                connection.execute(
                    sa.text(
                        "INSERT INTO cp_delivery_records (connector, configuration, record_key, status, operation, "
                        "version, attempts, updated_at, failed_runs) "
                        "VALUES ('sync', 'customers', '1', 'delivered', 'create', 1, 1, CURRENT_TIMESTAMP, 0)"
                    )
                )
            assert sandbox.counts("sync", "customers").get("delivered") == 1
            assert not production.counts("sync", "customers").get("delivered")
        finally:
            production.dispose()
            sandbox.dispose()


def test_push_on_the_sandbox_does_not_mark_productions_records_and_runs_are_tagged(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("CONNECTOR_PIPELINES_STORAGE", str(tmp_path / "storage"))
    monkeypatch.delenv("CONNECTOR_PIPELINES_LEDGER_URL", raising=False)
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    source = SourceDatabase(tmp_path / "source.db")
    source.add_customers(3)
    with RecordingTarget() as production, RecordingTarget() as sandbox:
        connections = f"""\
        connections:
          source: {{type: sql, url: "{source.url}"}}
          target:
            type: http
            base_url: {production.base_url}
            environments:
              sandbox: {{base_url: "{sandbox.base_url}"}}
        """
        _write(tmp_path / "resources", connections, connector=BASIC_SYNC)
        runner = CliRunner()

        def cli(*args):
            result = runner.invoke(main, [*args, "--resources", str(tmp_path / "resources")], catch_exceptions=False)
            os.environ.pop(ENVIRONMENT_ENV, None)  # --env set it in this (the test's) process: for that command only
            return result

        pushed = cli("push", "sync", "--key", "2", "--env", "sandbox")
        assert pushed.exit_code == 0, pushed.output
        assert list(sandbox.records("customers")) == ["2"] and not production.records("customers")

        listed = cli("list", "--env", "sandbox")
        assert listed.exit_code == 0 and listed.output.splitlines()[0] == "environment: sandbox", listed.output

        ran = cli("run", "sync")  # production: the sandbox push marked nothing here
        assert ran.exit_code == 0, ran.output
        assert sorted(production.records("customers")) == ["1", "2", "3"]  # all three: none was marked
        assert (tmp_path / "storage" / "ledger.sandbox.db").exists() and (tmp_path / "storage" / "ledger.db").exists()

    with dg.DagsterInstance.get() as instance:
        tags = [record.dagster_run.tags.get(ENVIRONMENT_TAG) for record in instance.get_run_records()]
    assert sorted(tags) == ["production", "sandbox"]
