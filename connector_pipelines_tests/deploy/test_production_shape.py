"""The shape of deploy/ on this machine: PostgreSQL instance storage, the connectors in their own `dagster api grpc`
code server, `dagster-webserver` and `dagster-daemon` as separate processes, the delivery ledger in PostgreSQL and
the storage's archive on the loopback S3 server. A run launched through GraphQL is queued, started by the daemon
from the code server, and delivers; its ledger rows are in PostgreSQL and its snapshot and audit file in the
bucket. And two runs of one integration launched at once from two code servers, with the pool limit that would
keep them apart lifted, overlap and still deliver each record once: the ledger's lock, not the pool."""

from __future__ import annotations

import io
import uuid

import pyarrow.parquet as pq
import sqlalchemy as sa
import yaml

from connector_pipelines.spec.loader import RESOURCES_ENV
from connector_pipelines.state.database import LEDGER_URL_ENV
from connector_pipelines.state.ledger import records_table
from connector_pipelines.storage import ARCHIVE_ENV, STORAGE_ENV
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC, SourceDatabase
from connector_pipelines_tests.fixtures.postgres import PG_SERVER
from connector_pipelines_tests.fixtures.project import ConnectorProject
from connector_pipelines_tests.fixtures.webserver import running_dagster
from connector_pipelines_tests.servers.http_target import RecordingTarget


def _project(tmp_path, source: SourceDatabase, target: RecordingTarget, s3_server, prefix: str) -> ConnectorProject:
    project = ConnectorProject(tmp_path)
    project.connections = {
        "source": {"type": "sql", "url": source.url},
        "target": {"type": "http", "base_url": target.base_url},
        "archive": s3_server.connection({"prefix": prefix}),
    }
    project.connectors["sync"] = yaml.safe_load(BASIC_SYNC)
    project.write()
    return project


def _env(tmp_path, project: ConnectorProject, ledger_url: str, s3_server) -> dict[str, str]:
    return {
        RESOURCES_ENV: str(project.resources),
        STORAGE_ENV: str(tmp_path / "storage"),
        LEDGER_URL_ENV: ledger_url,
        ARCHIVE_ENV: "archive",
        **s3_server.env(),
    }


def test_a_graphql_launch_is_run_by_the_daemon_with_the_ledger_in_postgresql_and_its_files_on_s3(
    tmp_path, monkeypatch, fresh_pg_database, s3_server
):
    ledger_url = f"{PG_SERVER}/{fresh_pg_database}"
    prefix = f"production-{uuid.uuid4().hex[:8]}"
    source = SourceDatabase(tmp_path / "source.db")
    source.add_customers(25)
    with RecordingTarget() as target:
        project = _project(tmp_path, source, target, s3_server, prefix)
        env = _env(tmp_path, project, ledger_url, s3_server)
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
    bucket = s3_server.client()
    listed = bucket.list_objects_v2(Bucket=s3_server.bucket, Prefix=f"{prefix}/")
    assert sorted(entry["Key"].removeprefix(f"{prefix}/") for entry in listed["Contents"]) == [
        f"integrations/sync/customers/{run_id}.parquet",
        f"integrations/sync/data_set/{run_id}.json",
        f"integrations/sync/data_set/{run_id}.parquet",
    ]
    audit = bucket.get_object(Bucket=s3_server.bucket, Key=f"{prefix}/integrations/sync/customers/{run_id}.parquet")
    assert pq.read_table(io.BytesIO(audit["Body"].read())).num_rows == 25


def test_two_runs_from_two_code_servers_at_once_deliver_each_record_once(
    tmp_path, monkeypatch, fresh_pg_database, s3_server
):
    ledger_url = f"{PG_SERVER}/{fresh_pg_database}"
    source = SourceDatabase(tmp_path / "source.db")
    source.add_customers(25)
    with RecordingTarget() as target:
        project = _project(tmp_path, source, target, s3_server, f"production-{uuid.uuid4().hex[:8]}")
        env = _env(tmp_path, project, ledger_url, s3_server)
        with running_dagster(
            tmp_path, env, monkeypatch, pg_url=ledger_url, grpc=True, code_servers=2, pool_limit=4
        ) as dagster:
            assert len(dagster.locations) == 2
            # One run first: Dagster creates a pool's slots on first use, and two runs doing that at once on
            # PostgreSQL collide in its own table (InFailedSqlTransaction on concurrency_limits).
            warm_up = dagster.launch("integration_sync", {})["run"]["runId"]
            assert dagster.wait(warm_up) == "SUCCESS", dagster.explain(warm_up)
            source.execute("UPDATE customers SET name = name || ' changed', updated_at = '2030-01-01 00:00:00'")
            target.clear()
            # The first requests are slow: whichever run delivers first is still sending when the other is ready.
            target.delay_next(4, seconds=6.0)
            answers = [dagster.launch("integration_sync", {}, location=location) for location in dagster.locations]
            assert all(answer["__typename"] == "LaunchRunSuccess" for answer in answers), answers
            run_ids = [answer["run"]["runId"] for answer in answers]
            for run_id in run_ids:
                assert dagster.wait(run_id, timeout=120) == "SUCCESS", dagster.explain(run_id)
            messages = {run_id: [e.get("message") or "" for e in dagster.events(run_id)] for run_id in run_ids}
            spans = {run_id: dagster.run_span(run_id) for run_id in run_ids}

        assert len(target.applied) == 25 and max(target.applied.values()) == 1  # 25 updates, each applied once
        assert {target.record("customers", str(i))["name"].endswith("CHANGED") for i in range(1, 26)} == {True}
    (first_start, first_end), (second_start, second_end) = spans.values()
    assert first_start < second_end and second_start < first_end, spans  # the two runs overlapped
    waited = [run_id for run_id, lines in messages.items() if any("another run is delivering" in m for m in lines)]
    assert len(waited) == 1, messages  # one run found the configuration locked, waited, then sent nothing
    delivered_by = set(run_ids) - set(waited)
    engine = sa.create_engine(ledger_url)
    try:
        with engine.connect() as connection:
            last_runs = set(
                connection.execute(
                    sa.select(records_table.c.run_id).where(records_table.c.connector == "sync").distinct()
                ).scalars()
            )
    finally:
        engine.dispose()
    assert last_runs == delivered_by
