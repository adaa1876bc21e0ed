"""The platform's state is provided as resources: a test or a deployment swaps them without environment variables."""

from __future__ import annotations

import dagster as dg

from connector_pipelines.definitions import definitions_for
from connector_pipelines.factories.naming import LEDGER_RESOURCE, STORAGE_RESOURCE
from connector_pipelines.spec.loader import Project
from connector_pipelines.state.ledger import DeliveryLedger
from connector_pipelines.state.resources import LedgerResource, StorageResource
from connector_pipelines.storage import STORAGE_ENV
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC


def test_a_run_keeps_its_ledger_and_files_where_the_resources_say(
    integration_project, source_db, http_target, pg_database, tmp_path, monkeypatch
):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    source_db.add_customers(3)
    project = integration_project(BASIC_SYNC)
    storage = tmp_path / "elsewhere"
    state = {LEDGER_RESOURCE: LedgerResource(url=pg_database.url), STORAGE_RESOURCE: StorageResource(root=str(storage))}
    loaded = project.load()
    defs = definitions_for(loaded, state=state)
    names = project.names("sync", loaded)

    result = defs.resolve_job_def(names.job).execute_in_process(instance=project.instance, raise_on_error=False)

    assert result.success
    assert len(http_target.requests) == 3
    ledger = DeliveryLedger(pg_database.url)
    try:
        assert len(ledger.keys_with_status("sync", "customers", ["delivered"])) == 3
    finally:
        ledger.dispose()
    assert sorted(p.name for p in (storage / "integrations" / "sync" / "data_set").iterdir()) == [
        f"{result.run_id}.json",  # what the snapshot holds (complete or not), for its deliveries
        f"{result.run_id}.parquet",
    ]
    assert not (tmp_path / "var").exists()  # nothing in the project's default storage folder


def test_state_resources_from_environment_variables_show_their_names(tmp_path, monkeypatch):
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "storage"))
    monkeypatch.setenv("CONNECTOR_PIPELINES_LEDGER_URL", "postgresql://postgres@127.0.0.1:5432/test")
    from connector_pipelines.state.resources import default_state_resources

    project = Project(resources_dir=tmp_path / "resources", connections={})
    storage, ledger, import_state = default_state_resources(project)
    assert storage.root == dg.EnvVar(STORAGE_ENV)
    assert ledger.url == dg.EnvVar("CONNECTOR_PIPELINES_LEDGER_URL") == import_state.url
