"""The shape of deploy/ on this machine: PostgreSQL instance storage, the connectors in their own `dagster api grpc`
code server, `dagster-webserver` and `dagster-daemon` as separate processes, the delivery ledger in PostgreSQL.
A run launched through GraphQL is queued, started by the daemon from the code server, and delivers; its ledger
rows are in PostgreSQL and its audit file where the storage keeps it."""

from __future__ import annotations

import pyarrow.parquet as pq
import sqlalchemy as sa
import yaml

from connector_pipelines.spec.loader import RESOURCES_ENV
from connector_pipelines.state.database import LEDGER_URL_ENV
from connector_pipelines.state.ledger import records_table
from connector_pipelines.storage import STORAGE_ENV, Storage
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC, SourceDatabase
from connector_pipelines_tests.fixtures.postgres import PG_SERVER
from connector_pipelines_tests.fixtures.project import ConnectorProject
from connector_pipelines_tests.fixtures.webserver import running_dagster
from connector_pipelines_tests.servers.http_target import RecordingTarget


def test_a_graphql_launch_is_run_by_the_daemon_from_the_code_server_with_the_ledger_in_postgresql(
    tmp_path, monkeypatch, fresh_pg_database
):
    ledger_url = f"{PG_SERVER}/{fresh_pg_database}"
    source = SourceDatabase(tmp_path / "source.db")
    source.add_customers(25)
    with RecordingTarget() as target:
        project = ConnectorProject(tmp_path)
        project.connections = {
            "source": {"type": "sql", "url": source.url},
            "target": {"type": "http", "base_url": target.base_url},
        }
        project.connectors["sync"] = yaml.safe_load(BASIC_SYNC)
        project.write()
        env = {
            RESOURCES_ENV: str(project.resources),
            STORAGE_ENV: str(tmp_path / "storage"),
            LEDGER_URL_ENV: ledger_url,
        }
        with running_dagster(tmp_path, env, monkeypatch, pg_url=ledger_url, grpc=True) as dagster:
            answer = dagster.launch("integration_sync", {})
            assert answer["__typename"] == "LaunchRunSuccess", answer
            run_id = answer["run"]["runId"]
            assert dagster.wait(run_id) == "SUCCESS", dagster.explain(run_id)
            events = {event["__typename"] for event in dagster.events(run_id)}

        assert sorted(target.records("customers"), key=int) == [str(i) for i in range(1, 26)]
        assert max(target.applied.values()) == 1
    assert "RunEnqueuedEvent" in events  # the queued run coordinator, then the daemon launched it

    engine = sa.create_engine(ledger_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(records_table.c.record_key, records_table.c.status, records_table.c.run_id).where(
                    records_table.c.connector == "sync"
                )
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == 25 and {(status, last) for _, status, last in rows} == {("delivered", run_id)}
    audit = Storage(tmp_path / "storage").integration_dir("sync", "customers") / f"{run_id}.parquet"
    assert pq.read_table(audit).num_rows == 25
