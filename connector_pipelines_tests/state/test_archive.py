"""The storage's archive on the loopback S3 server (`CONNECTOR_PIPELINES_ARCHIVE` names an `s3` connection): what a
run leaves (an integration's data set snapshot and audit files, an import run's folder with its rejections) is in
the bucket when the run ends, and another machine, whose storage folder is empty, downloads it, re-delivers from
it, and prunes it. A setting that names no s3 connection, and an archive that cannot be reached, are said plainly.

"Another machine" is a second, empty storage folder on this one, with the same ledger and Dagster instance: what
a pod per run or the CLI on a laptop sees."""

from __future__ import annotations

import shutil
import uuid

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from connector_pipelines.cli import main
from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.state.database import LEDGER_URL_ENV
from connector_pipelines.storage import ARCHIVE_ENV, STORAGE_ENV
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC, SourceDatabase
from connector_pipelines_tests.fixtures.project import ConnectorProject
from connector_pipelines_tests.servers import free_port


class Machine:
    """The project as one machine sees it: its own storage folder, the shared ledger, DAGSTER_HOME and archive."""

    def __init__(self, project: ConnectorProject, tmp_path, monkeypatch, name: str):
        self.project, self.monkeypatch = project, monkeypatch
        self.storage = tmp_path / f"storage-{name}"

    def cli(self, *args: str):
        self.monkeypatch.setenv(STORAGE_ENV, str(self.storage))
        result = CliRunner().invoke(main, [*args, "--resources", str(self.project.resources)], catch_exceptions=False)
        return result


@pytest.fixture
def archived(tmp_path, monkeypatch, s3_server, http_target):
    """A project whose storage archive is the `archive` connection: a prefix of its own in the test bucket."""
    prefix = f"archive-{uuid.uuid4().hex[:8]}"
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(ARCHIVE_ENV, "archive")
    monkeypatch.setenv(LEDGER_URL_ENV, f"sqlite:///{tmp_path / 'ledger.db'}")  # shared by both "machines"
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    project = ConnectorProject(tmp_path)
    project.connections = {
        "archive": s3_server.connection({"prefix": prefix}),
        "target": {"type": "http", "base_url": http_target.base_url},
    }

    def keys() -> list[str]:
        listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix + "/")
        return sorted(entry["Key"].removeprefix(prefix + "/") for entry in listed.get("Contents", []))

    project.archive_keys = keys
    project.archive_prefix = prefix
    return project


def _run_id(output: str) -> str:
    return output.split("run ")[-1].split()[0]


def _integration(project: ConnectorProject, tmp_path, extra: str = "") -> SourceDatabase:
    source = SourceDatabase(tmp_path / "source.db")
    source.add_customers(5)
    project.connections["source"] = {"type": "sql", "url": source.url}
    project.write()
    (project.resources / "connectors" / "sync.yaml").write_text(BASIC_SYNC + extra, encoding="utf-8")
    return source


def test_an_integration_run_keeps_its_files_in_the_archive_and_another_machine_downloads_them(
    archived, tmp_path, monkeypatch, http_target
):
    _integration(archived, tmp_path)
    here = Machine(archived, tmp_path, monkeypatch, "a")
    run = here.cli("run", "sync")
    assert run.exit_code == 0, run.output
    run_id = _run_id(run.output)
    assert len(http_target.applied) == 5

    assert archived.archive_keys() == [
        f"integrations/sync/customers/{run_id}.parquet",
        f"integrations/sync/data_set/{run_id}.json",
        f"integrations/sync/data_set/{run_id}.parquet",
    ]
    shutil.rmtree(here.storage)  # the pod is gone

    elsewhere = Machine(archived, tmp_path, monkeypatch, "b")
    out = tmp_path / "downloaded"
    download = elsewhere.cli("download", "sync", run_id[:8], "-o", str(out))
    assert download.exit_code == 0, download.output
    assert pq.read_table(out / "snapshot.parquet").num_rows == 5
    audit = pq.read_table(out / "audit_customers.parquet").to_pylist()
    assert sorted(row["record_key"] for row in audit) == ["1", "2", "3", "4", "5"]


def test_a_delivery_run_alone_on_another_machine_reads_the_snapshot_from_the_archive(
    archived, tmp_path, monkeypatch, http_target, fresh_instance
):
    source = _integration(archived, tmp_path)
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "storage-a"))
    first = archived.run_job("sync", fresh_instance)
    assert first.success
    shutil.rmtree(tmp_path / "storage-a")
    source.execute("UPDATE customers SET name = 'changed' WHERE customer_id = 2")  # not in the snapshot

    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "storage-b"))
    names = archived.names("sync")
    defs = archived.defs()
    rerun = defs.resolve_job_def(names.job).execute_in_process(
        instance=fresh_instance, asset_selection=[names.key("customers")], raise_on_error=False
    )
    assert rerun.success
    messages = [entry.user_message for entry in fresh_instance.all_logs(rerun.run_id)]
    assert any("re-delivering the data set snapshot of an earlier run: s3://" in m for m in messages), messages
    assert max(http_target.applied.values()) == 1 and len(http_target.applied) == 5  # the same snapshot: unchanged


def test_retention_removes_old_files_from_the_archive(archived, tmp_path, monkeypatch, http_target):
    source = _integration(archived, tmp_path, "  retention: {snapshots: 1 runs, audit_files: 1 runs}\n")
    machine = Machine(archived, tmp_path, monkeypatch, "a")
    first = _run_id(machine.cli("run", "sync").output)
    shutil.rmtree(machine.storage)  # the next run is on another pod: only the archive knows the first run's files
    source.execute("UPDATE customers SET name = 'changed' WHERE customer_id = 2")
    second_run = machine.cli("run", "sync")
    assert second_run.exit_code == 0, second_run.output
    second = _run_id(second_run.output)
    keys = archived.archive_keys()
    assert not [key for key in keys if first in key], keys
    assert f"integrations/sync/data_set/{second}.parquet" in keys
    assert f"integrations/sync/customers/{second}.parquet" in keys


def test_an_import_run_keeps_its_folder_with_its_rejections_in_the_archive(
    archived, tmp_path, monkeypatch, sqlite_database
):
    sqlite_database.execute("CREATE TABLE src (id INTEGER, amount TEXT, updated_at TEXT)")
    sqlite_database.execute("CREATE TABLE dest (id INTEGER PRIMARY KEY, amount NUMERIC)")
    sqlite_database.execute(
        "INSERT INTO src VALUES (1, '12.50', '2026-01-01'), (2, 'not a number', '2026-01-01'), (3, '4', '2026-01-01')"
    )
    archived.connections["db"] = {"type": "sql", "url": sqlite_database.url}
    archived.connectors["orders"] = {
        "kind": "import",
        "import": {
            "source": {"warehouse": {"connection": "db", "query": "SELECT * FROM src", "updated_at": "updated_at"}},
            "target": {"connection": "db", "table": "dest", "key": "id"},
            "mapping": [
                {"target": "id", "source": "id", "type": "integer"},
                {"target": "amount", "source": "amount", "type": "number"},
            ],
        },
    }
    archived.write()
    machine = Machine(archived, tmp_path, monkeypatch, "a")
    run = machine.cli("run", "orders")
    assert run.exit_code == 0, run.output
    run_id = _run_id(run.output)
    keys = archived.archive_keys()
    assert f"imports/orders/{run_id}/snapshot.parquet" in keys, keys
    assert f"imports/orders/{run_id}/rejections.parquet" in keys, keys
    shutil.rmtree(machine.storage)

    elsewhere = Machine(archived, tmp_path, monkeypatch, "b")
    rejections = elsewhere.storage / "imports" / "orders" / run_id / "rejections.parquet"
    out = tmp_path / "source.csv"
    download = elsewhere.cli("download", "orders", run_id[:8], "-o", str(out), "--format", "csv")
    assert download.exit_code == 0, download.output
    assert out.read_text().count("\n") == 4  # the header and the three rows as read
    rejected = pq.read_table(rejections).to_pylist()  # fetched with the run's folder
    assert [row.get("id", row.get("key")) for row in rejected] and len(rejected) == 1


def test_an_archive_setting_that_names_no_s3_connection_is_refused_plainly(archived, tmp_path, monkeypatch):
    _integration(archived, tmp_path)
    monkeypatch.setenv(ARCHIVE_ENV, "target")
    with pytest.raises(ConnectorConfigError, match="CONNECTOR_PIPELINES_ARCHIVE=target: the storage archive must be"):
        archived.defs()
    monkeypatch.setenv(ARCHIVE_ENV, "missing")
    with pytest.raises(ConnectorConfigError, match="there is no 'missing'; s3 connections: archive"):
        archived.defs()


def test_an_archive_that_cannot_be_reached_fails_the_run_naming_the_bucket_not_the_secret(
    archived, tmp_path, monkeypatch, s3_server, fresh_instance
):
    _integration(archived, tmp_path)
    archived.connections["archive"]["endpoint_url"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    archived.write()
    (archived.resources / "connectors" / "sync.yaml").write_text(BASIC_SYNC, encoding="utf-8")
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "storage-a"))
    result = archived.run_job("sync", fresh_instance)
    assert not result.success
    failure = "\n".join(
        str(event.event_specific_data.error.message)
        for event in result.all_events
        if event.is_step_failure and event.event_specific_data.error is not None
    )
    assert f"s3 bucket '{s3_server.bucket}'" in failure and "upload of" in failure, failure
    assert s3_server.secret_access_key not in failure
