"""Launching runs as an attacker who can reach the UI or GraphQL: a real `dagster-webserver` and `dagster-daemon`
over a project with an integration (basic auth to a loopback target), a folder import and an extract.

What an attacker tries, through GraphQL `launchRun` (what the Launchpad sends too):
- repoint a connection in `resources.<name>.config`: the HTTP target at their own server (with the worker's password
  on its way), the import's folder at a private one, the source database, the ledger, the storage;
- read a worker's environment variable through Dagster's `{env: NAME}` in a run's own settings, hoping to see it
  echoed in an error.
Each test asserts what happened: the launch refused and no run created, no request at the attacker's server, the
private file where it was, no secret in the run's events.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from connector_pipelines.factories.naming import IMPORT_STATE_RESOURCE, LEDGER_RESOURCE, STORAGE_RESOURCE
from connector_pipelines.spec.loader import RESOURCES_ENV
from connector_pipelines.storage import STORAGE_ENV
from connector_pipelines_tests.fixtures.extract import TestDatabase
from connector_pipelines_tests.fixtures.imports import ImportProject
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC, SourceDatabase
from connector_pipelines_tests.fixtures.webserver import Dagster, running_dagster
from connector_pipelines_tests.servers.http_target import RecordingTarget

pytestmark = pytest.mark.timeout(300)

PASSWORD = "pw-launch-5e1d07"  # the target's password, in the worker's environment only
WORKER_SECRET = "ws-launch-93ab44"  # any other variable of the worker
PRIVATE_FILE = "Conversions_2024_private.csv"
IMPORT_SPEC = {
    "source": {"files": {"connection": "partner", "pattern": "Conversions_2024_*.csv"}},
    "target": {"connection": "crm", "table": "conversions", "key": "id"},
    "mapping": [{"target": "id", "source": "id", "type": "integer"}, {"target": "name", "source": "name"}],
}


@dataclass
class Stage:
    dagster: Dagster
    project: ImportProject
    target: RecordingTarget  # the integration's own target
    attacker: RecordingTarget  # a server of the attacker's
    private: Path  # a folder the worker can read, not a connection of the project
    crm: TestDatabase

    def job(self, name: str) -> str:
        return self.project.names(name).job

    def op(self, name: str, part: str) -> str:
        return self.project.names(name).op(part)

    def run_count(self) -> int:
        runs = self.dagster.graphql("{ runsOrError { ... on Runs { results { runId } } } }")
        return len(runs["runsOrError"]["results"])


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    root = tmp_path_factory.mktemp("launch_attacks")
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        RecordingTarget() as target,
        RecordingTarget() as attacker,
    ):
        target.require_basic(password=PASSWORD)
        source = SourceDatabase(root / "source.db")
        source.add_customers(3)
        crm_url = f"sqlite:///{root / 'crm.db'}"
        crm = TestDatabase("sqlite", crm_url, sa.create_engine(crm_url))
        crm.execute("CREATE TABLE conversions (id INTEGER PRIMARY KEY, name TEXT)")
        private = root / "private"
        private.mkdir()
        (private / PRIVATE_FILE).write_text("id,name\n1,payroll\n", encoding="utf-8")

        project = ImportProject(root, monkeypatch)
        project.add_connection("source", {"type": "sql", "url": source.url})
        project.add_connection(
            "target",
            {
                "type": "http",
                "base_url": target.base_url,
                "auth": {"type": "basic", "username": "pipelines", "password": "${TARGET_PASSWORD}"},
            },
        )
        project.add_folder("partner")
        project.add_folder("outbox")
        project.add_database(crm, "crm")
        project.connectors["sync"] = yaml.safe_load(BASIC_SYNC)
        project.add_import("conversions", IMPORT_SPEC)
        project.add_extract("customers_file", "SELECT * FROM customers", source="source")
        project.write()
        env = {
            RESOURCES_ENV: str(project.resources),
            STORAGE_ENV: str(project.storage),
            "TARGET_PASSWORD": PASSWORD,
            "WORKER_SECRET": WORKER_SECRET,
        }
        with running_dagster(root, env, monkeypatch) as dagster:
            yield Stage(dagster, project, target, attacker, private, crm)
        crm.engine.dispose()


def _refused(stage: Stage, job: str, run_config: dict) -> str:
    """Launch and expect Dagster to refuse the run config; the refusal's messages, and no run created."""
    before = stage.run_count()
    answer = stage.dagster.launch(job, run_config)
    assert answer["__typename"] == "RunConfigValidationInvalid", answer
    assert stage.run_count() == before
    return " ".join(error["message"] for error in answer["errors"])


# ---- connections cannot be repointed ---------------------------------------------------------------------------


def test_the_http_target_cannot_be_pointed_at_another_server(stage: Stage) -> None:
    config = {
        "base_url": stage.attacker.base_url,
        "auth": {"basic": {"username": "x", "password": {"env": "TARGET_PASSWORD"}}},
    }

    message = _refused(stage, stage.job("sync"), {"resources": {"target": {"config": config}}})

    assert "target" in message
    assert stage.attacker.requests == [] and stage.target.requests == []


def test_the_import_folder_cannot_be_pointed_at_a_private_folder(stage: Stage) -> None:
    run_config = {"resources": {"partner": {"config": {"path": str(stage.private)}}}}

    _refused(stage, stage.job("conversions"), run_config)

    assert (stage.private / PRIVATE_FILE).exists()  # neither imported nor moved
    assert stage.crm.query("SELECT * FROM conversions") == []


@pytest.mark.parametrize(
    ("resource", "setting"),
    [
        ("source", {"url": "sqlite:////tmp/attacker.db"}),
        (LEDGER_RESOURCE, {"url": "sqlite:////tmp/attacker-ledger.db"}),
        (IMPORT_STATE_RESOURCE, {"url": "sqlite:////tmp/attacker-state.db"}),
        (STORAGE_RESOURCE, {"root": "/tmp/attacker-storage"}),
    ],
)
def test_no_database_or_state_resource_can_be_repointed(stage: Stage, resource: str, setting: dict) -> None:
    job = stage.job("conversions" if resource == IMPORT_STATE_RESOURCE else "sync")

    _refused(stage, job, {"resources": {resource: {"config": setting}}})

    assert stage.attacker.requests == []


# ---- run settings are literal values, never echoed ------------------------------------------------------------


def _failed_without_echo(stage: Stage, job: str, run_config: dict) -> str:
    answer = stage.dagster.launch(job, run_config)
    assert answer["__typename"] == "LaunchRunSuccess", answer
    run_id = answer["run"]["runId"]
    assert stage.dagster.wait(run_id) == "FAILURE", stage.dagster.explain(run_id)
    events = json.dumps(stage.dagster.events(run_id))
    assert WORKER_SECRET not in events
    return events


def test_an_env_reference_in_the_pushed_keys_is_refused_without_reading_it(stage: Stage) -> None:
    op = stage.op("sync", "data_set")
    run_config = {"ops": {op: {"config": {"keys": [{"env": "WORKER_SECRET"}]}}}}

    events = _failed_without_echo(stage, stage.job("sync"), run_config)

    assert "run config keys: write the value itself" in events
    assert stage.target.requests == []


def test_an_env_reference_in_an_extract_window_is_refused_without_reading_it(stage: Stage) -> None:
    op = stage.op("customers_file", "file")
    window = {"window_start": {"env": "WORKER_SECRET"}, "window_end": "2024-02-01"}

    events = _failed_without_echo(stage, stage.job("customers_file"), {"ops": {op: {"config": window}}})

    assert "run config window_start: write the value itself" in events
    assert list((stage.project.root / "outbox").iterdir()) == []


def test_an_unparsable_window_is_refused_without_repeating_it(stage: Stage) -> None:
    op = stage.op("customers_file", "file")
    window = {"window_start": "not-a-date-7f3a", "window_end": "2024-02-01"}

    events = _failed_without_echo(stage, stage.job("customers_file"), {"ops": {op: {"config": window}}})

    assert "is not an ISO date or datetime" in events and "not-a-date-7f3a" not in events


# ---- and a plain launch still works -----------------------------------------------------------------------------


def test_a_plain_launch_delivers_with_the_connections_of_connections_yaml(stage: Stage) -> None:
    answer = stage.dagster.launch(stage.job("sync"), {})
    assert answer["__typename"] == "LaunchRunSuccess", answer

    status = stage.dagster.wait(answer["run"]["runId"])

    assert status == "SUCCESS", stage.dagster.explain(answer["run"]["runId"])
    assert sorted(stage.target.records("customers"), key=int) == ["1", "2", "3"]
    assert stage.attacker.requests == []
