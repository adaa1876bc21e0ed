"""A translator that changes every key and every group is authoritative: the definitions it builds run end to end.

`PrefixedTranslator` puts every asset under `acme/` and in a group `team_<connector>`. It is configured the way a
deployment does it (`$CONNECTOR_PIPELINES_TRANSLATOR`), so the definitions, the CLI's runs and the sensors' run
config all go through it. Jobs must keep all their ops, an integration must run through its job with the config
its sensor and the CLI send, and an import must run from its file sensor's request.
"""

from __future__ import annotations

import dagster as dg
import pytest
from click.testing import CliRunner

from connector_pipelines import ConnectorAssetData, ConnectorTranslator, build_definitions
from connector_pipelines.cli import main
from connector_pipelines.factories.naming import change_sensor_name, file_sensor_name, job_name, op_name
from connector_pipelines.factories.translator import TRANSLATOR_ENV
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC
from connector_pipelines_tests.imports.test_files import NAME as FILES_IMPORT
from connector_pipelines_tests.imports.test_files import csv_text, deliver, files_import, row, table


class PrefixedTranslator(ConnectorTranslator):
    """Every key under `acme/`, every connector in its team's group."""

    def get_asset_spec(self, data: ConnectorAssetData) -> dg.AssetSpec:
        spec = super().get_asset_spec(data)
        return spec.replace_attributes(key=spec.key.with_prefix("acme"), group_name=f"team_{data.connector.name}")


@pytest.fixture
def prefixed(monkeypatch):
    monkeypatch.setenv(TRANSLATOR_ENV, f"{__name__}:PrefixedTranslator")


def _job_keys(defs: dg.Definitions, name: str) -> set[dg.AssetKey]:
    """The assets a job materializes, after checking that it holds exactly the op of each."""
    job = defs.resolve_job_def(name)
    keys = set(job.asset_layer.selected_asset_keys)
    assert {node.name for node in job.nodes} == {op_name(key) for key in keys}, name
    return keys


def test_every_demo_job_keeps_its_ops_under_another_key_and_group(prefixed):
    default = build_definitions(translator=ConnectorTranslator())
    prefixed_defs = build_definitions()  # the configured translator
    jobs = [job.name for job in default.resolve_all_job_defs() if not job.name.startswith("__")]
    assert len(jobs) > 5
    for name in jobs:
        expected = {key.with_prefix("acme") for key in _job_keys(default, name)}
        assert expected and _job_keys(prefixed_defs, name) == expected, name
    graph = prefixed_defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert key.path[0] == "acme"
        assert graph.get(key).group_name.startswith("team_")


def test_an_integration_runs_through_its_job_from_the_cli_and_from_its_sensor(
    prefixed, integration_project, source_db, http_target, tmp_path, monkeypatch
):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    source_db.add_customers(3)
    spec = BASIC_SYNC.replace("    updated_at: updated_at\n", "    updated_at: updated_at\n  triggers: [on_create]\n")
    project = integration_project(spec)

    # The CLI: `run` builds the definitions and the run config through the same translator.
    result = CliRunner().invoke(main, ["run", "sync", "--resources", str(tmp_path / "resources")])
    assert result.exit_code == 0, result.output
    assert len(http_target.requests) == 3

    # The sensor: a new record, one tick, and the run it asks for.
    source_db.add_customers(1, start=4)
    defs = project.definitions()
    sensor = defs.resolve_sensor_def(change_sensor_name("sync"))
    resources = defs.get_repository_def().get_top_level_resources()
    context = dg.build_sensor_context(
        instance=project.instance, resources={key: resources[key] for key in sensor.required_resource_keys}
    )
    requests = sensor.evaluate_tick(context).run_requests
    assert len(requests) == 1
    assert all(op.startswith("acme__integration__sync__") for op in requests[0].run_config["ops"])
    run = defs.resolve_job_def(job_name("integration", "sync")).execute_in_process(
        run_config=requests[0].run_config, instance=project.instance, raise_on_error=False
    )
    assert run.success
    materialized = {event.materialization.asset_key for event in run.get_asset_materialization_events()}
    assert materialized == {
        dg.AssetKey(["acme", "integration", "sync", "data_set"]),
        dg.AssetKey(["acme", "integration", "sync", "customers"]),
    }
    assert [r.path for r in http_target.requests[3:]] == ["/customers/4"]


def test_an_import_runs_from_its_file_sensor_request(prefixed, import_project, fresh_instance, pg_database):
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database)
    deliver(inbox, "Conversions_2024_a.csv", csv_text(row(1), row(2)))
    import_project.record_preview(FILES_IMPORT)

    tick = import_project.sensor_tick(file_sensor_name(FILES_IMPORT), fresh_instance, None)
    assert len(tick.run_requests) == 1
    (op,) = tick.run_requests[0].run_config["ops"]
    assert op == f"acme__import__{FILES_IMPORT}__conversions"
    run = import_project.launch_request(FILES_IMPORT, fresh_instance, tick.run_requests[0])
    assert run.success
    assert sorted(table(pg_database)) == [1, 2]
