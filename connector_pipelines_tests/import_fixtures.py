"""Fixtures for import tests: a project folder with databases and file connections, and ways to run an import's
job, evaluate its sensors and read its state (loaded as a plugin by conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from connector_pipelines.definitions import definitions_for
from connector_pipelines.factories.imports import job_name, run_config_for, state_for
from connector_pipelines.spec.loader import load_project
from connector_pipelines_tests.extract_fixtures import ExtractProject


@dataclass
class ImportRun:
    success: bool
    run_id: str
    metadata: dict[str, Any]  # the materialization's metadata as plain Python
    checks: dict[str, bool]  # check name -> passed
    result: dg.ExecuteInProcessResult

    @property
    def files(self) -> dict[str, dict]:
        """file name -> {status, rows, reason} from the run's files table."""
        table = self.metadata.get("files")
        return {} if table is None else {record.data["file"]: dict(record.data) for record in table.records}

    def failure(self) -> str:
        from connector_pipelines.runs import failure_message

        return failure_message(self.result)


class ImportProject(ExtractProject):
    """ExtractProject's connections and folders, plus import connectors and their runs."""

    def add_import(self, name: str, spec: dict, **connector: Any) -> None:
        self.connectors[name] = {"kind": "import", **connector, "import": spec}

    def project(self):
        self.write()
        return load_project(self.resources)

    def connector(self, name: str):
        return self.project().connector(name).spec

    def run_import(self, name: str, instance: dg.DagsterInstance, **config: Any) -> ImportRun:
        project = self.project()
        connector = project.connector(name).spec
        result = (
            definitions_for(project)
            .resolve_job_def(job_name(name))
            .execute_in_process(instance=instance, run_config=run_config_for(connector, **config), raise_on_error=False)
        )
        metadata: dict[str, Any] = {}
        for event in result.get_asset_materialization_events():
            metadata = {key: getattr(value, "value", value) for key, value in event.materialization.metadata.items()}
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        return ImportRun(result.success, result.run_id, metadata, checks, result)

    def sensor_tick(
        self, sensor_name: str, instance: dg.DagsterInstance, cursor: str | None, defs: dg.Definitions | None = None
    ):
        """One evaluation of a sensor as the daemon runs it: with the top-level resources it requires (as the code
        server passes them; build_sensor_context's `definitions=` does not fill `context.resources`) and the
        cursor stored after the previous tick. A new `defs` stands for a restarted daemon."""
        defs = defs or self.defs()
        sensor = defs.resolve_sensor_def(sensor_name)
        top_level = defs.get_repository_def().get_top_level_resources()
        resources = {key: top_level[key] for key in sensor.required_resource_keys}
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
            return sensor.evaluate_tick(context)

    def launch_request(self, name: str, instance: dg.DagsterInstance, request: dg.RunRequest):
        """Run what a sensor asked for, tagged with its run key as the daemon does (the file sensor looks it up)."""
        job = self.defs().resolve_job_def(job_name(name))
        return job.execute_in_process(
            run_config=request.run_config,
            instance=instance,
            tags={**request.tags, "dagster/run_key": request.run_key},
            raise_on_error=False,
        )

    def record_preview(self, name: str) -> None:
        """What a successful `preview NAME` records: automatic runs of this source may start."""
        project = self.project()
        state = state_for(project.base_dir)
        try:
            state.record_preview(name, project.connector(name).spec.source_hash(project.connections))
        finally:
            state.dispose()

    def state(self):
        return state_for(self.root)


@pytest.fixture
def import_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ImportProject:
    return ImportProject(tmp_path, monkeypatch)
