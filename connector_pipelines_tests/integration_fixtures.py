"""Fixtures for integration tests: a source database with customers, a project folder, and a way to run the job.

`integration_project(yaml_text, ...)` writes connections.yaml (the SQLite source, the loopback HTTP target) and
one connector file, and returns an `IntegrationProject` that runs the connector's Dagster job in process, on an
ephemeral instance, with its storage (ledger, snapshots, audit files) under the test's tmp_path.
"""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from connector_pipelines.definitions import definitions_for
from connector_pipelines.delivery.ledger import DeliveryLedger, default_ledger_url
from connector_pipelines.factories.integration import job_name, run_config_for
from connector_pipelines.spec.loader import Project, load_project
from connector_pipelines.storage import STORAGE_ENV, storage_dir

CUSTOMERS = """
CREATE TABLE customers (
    customer_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT,
    balance REAL,
    signup_date TEXT,
    owner_id INTEGER,
    updated_at TEXT NOT NULL
);
CREATE TABLE customer_changes (
    sequence_id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER NOT NULL,
    operation TEXT NOT NULL
);
CREATE TRIGGER customers_created AFTER INSERT ON customers
BEGIN INSERT INTO customer_changes (customer_id, operation) VALUES (NEW.customer_id, 'create'); END;
CREATE TRIGGER customers_updated AFTER UPDATE ON customers
BEGIN INSERT INTO customer_changes (customer_id, operation) VALUES (NEW.customer_id, 'update'); END;
CREATE TRIGGER customers_deleted AFTER DELETE ON customers
BEGIN INSERT INTO customer_changes (customer_id, operation) VALUES (OLD.customer_id, 'delete'); END;
CREATE TABLE users (user_id INTEGER PRIMARY KEY, email TEXT NOT NULL);
CREATE TABLE user_roles (user_id INTEGER NOT NULL, role TEXT NOT NULL);
"""


class SourceDatabase:
    """The SQLite file an integration reads from (and writes its audit back to)."""

    def __init__(self, path: Path):
        self.path = path
        self.url = f"sqlite:///{path}"
        with self.connect() as conn:
            conn.executescript(CUSTOMERS)

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path)

    def add_customers(self, count: int, start: int = 1, **overrides) -> None:
        rows = [
            {
                "customer_id": i,
                "name": f"Customer {i}",
                "email": f"c{i}@example.test",
                "balance": round(i * 10.5, 2),
                "signup_date": f"2024-{(i % 12) + 1:02d}-{(i % 28) + 1:02d}",
                "owner_id": (i % 3) + 1,
                "updated_at": "2026-01-01 00:00:00",
                **overrides,
            }
            for i in range(start, start + count)
        ]
        with self.connect() as conn:
            conn.executemany(
                "INSERT INTO customers VALUES "
                "(:customer_id, :name, :email, :balance, :signup_date, :owner_id, :updated_at)",
                rows,
            )

    def execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.connect() as conn:
            return conn.execute(sql, params).fetchall()


@dataclass
class RunResult:
    success: bool
    run_id: str
    metadata: dict[str, dict]  # configuration -> metadata values as plain Python
    checks: dict[str, bool]  # check name -> passed
    result: dg.ExecuteInProcessResult


class IntegrationProject:
    def __init__(self, root: Path, name: str, instance: dg.DagsterInstance):
        self.root = root
        self.name = name
        self.instance = instance

    def load(self) -> Project:
        return load_project(self.root / "resources")

    @property
    def connector(self):
        return self.load().connector(self.name).spec

    def definitions(self) -> dg.Definitions:
        return definitions_for(self.load())

    def run(self, **config) -> RunResult:
        job = self.definitions().resolve_job_def(job_name(self.name))
        result = job.execute_in_process(
            instance=self.instance, run_config=run_config_for(self.connector, **config), raise_on_error=False
        )
        return _summarize(result)

    def ledger(self) -> DeliveryLedger:
        return DeliveryLedger(default_ledger_url(storage_dir(self.root)))

    def audit_rows(self, metadata: dict) -> list[dict]:
        return pq.read_table(metadata["audit_path"]).to_pylist()


def _summarize(result: dg.ExecuteInProcessResult) -> RunResult:
    metadata: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        metadata[materialization.asset_key.path[-1]] = {
            key: getattr(value, "value", value) for key, value in materialization.metadata.items()
        }
    checks = {
        event.asset_check_evaluation_data.check_name: event.asset_check_evaluation_data.passed
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    return RunResult(result.success, result.run_id, metadata, checks, result)


@pytest.fixture
def source_db(tmp_path: Path) -> SourceDatabase:
    return SourceDatabase(tmp_path / "source.db")


@pytest.fixture
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def integration_project(
    tmp_path: Path, source_db: SourceDatabase, http_target, dagster_instance, monkeypatch
) -> Callable[..., IntegrationProject]:
    """`integration_project(connector_yaml, name="sync", http_extra="")` -> an IntegrationProject."""
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "storage"))

    def make(connector_yaml: str, name: str = "sync", http_extra: str = "") -> IntegrationProject:
        resources = tmp_path / "resources"
        (resources / "connectors").mkdir(parents=True, exist_ok=True)
        extra = textwrap.indent(textwrap.dedent(http_extra).strip(), "    ") if http_extra.strip() else ""
        (resources / "connections.yaml").write_text(
            "connections:\n"
            "  source:\n"
            "    type: sql\n"
            f"    url: {source_db.url}\n"
            "  target:\n"
            "    type: http\n"
            f"    base_url: {http_target.base_url}\n"
            "    retry: {max_attempts: 4, initial_backoff_seconds: 0.01, max_backoff_seconds: 0.05}\n"
            + (extra + "\n" if extra else "")
        )
        (resources / "connectors" / f"{name}.yaml").write_text(textwrap.dedent(connector_yaml))
        return IntegrationProject(tmp_path, name, dagster_instance)

    return make


BASIC_SYNC = """
kind: integration
integration:
  data_set:
    connection: source
    table: customers
    key: customer_id
    updated_at: updated_at
  target:
    connection: target
    fields:
      - {name: id, type: integer, required: true}
      - {name: name, type: text, required: true}
      - {name: email, type: text}
      - {name: balance, type: currency}
  configurations:
    - name: customers
      mapping:
        - {target: id, source: customer_id}
        - {target: name, expression: "upper(name)"}
        - {target: email, source: email}
        - {target: balance, source: balance}
      request:
        method: PUT
        path: /customers/{{id}}
        body: {id: "{{id}}", name: "{{name}}", email: "{{email}}", balance: "{{balance}}"}
      target_ref: id
"""

# BASIC_SYNC with an owner column and roles: only customers whose owner holds `sales` are pushed.
ROLES_SPEC = (
    BASIC_SYNC.replace("    updated_at: updated_at\n", "    updated_at: updated_at\n    owner: owner_id\n")
    + "  roles: {allowed: [sales], table: user_roles, user_column: user_id, role_column: role}\n"
)
