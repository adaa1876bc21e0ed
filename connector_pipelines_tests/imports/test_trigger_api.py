"""Starting an import from another system through the Dagster webserver's GraphQL API, as docs/triggering.md
tells customers to: a real `dagster-webserver` and `dagster-daemon` on loopback over a temporary project (a SQLite
warehouse and a SQLite target), the project's own dagster.yaml in a temporary DAGSTER_HOME, and the page's curl
commands, shell script and Python snippet run as written (only the address, the sample run id, the polling
interval and the Python snippet's give-up deadline are swapped in).

The project's dagster.yaml configures `concurrency:`, so the instance queues launched runs (QueuedRunCoordinator)
and the daemon starts them: without it every run would stay QUEUED. curl and jq are not installed by the tests:
without them the tests that need them skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from connector_pipelines.spec.loader import RESOURCES_ENV
from connector_pipelines.state.database import default_state_url
from connector_pipelines.state.import_state import ImportState
from connector_pipelines.storage import STORAGE_ENV, Storage
from connector_pipelines_tests.fixtures.extract import TestDatabase
from connector_pipelines_tests.fixtures.imports import ImportProject
from connector_pipelines_tests.fixtures.webserver import FINAL, LOCATION, RUN_TIMEOUT, Dagster, running_dagster

pytestmark = [
    pytest.mark.timeout(240),
    # dagster_graphql's client calls gql the old way; not ours to fix.
    pytest.mark.filterwarnings("ignore:Using variable_values and operation_name:DeprecationWarning"),
]

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "triggering.md"
DOC_URL = "http://127.0.0.1:3000"


SOURCE_DDL = "CREATE TABLE src_orders (id INTEGER, name TEXT, amount TEXT, updated_at TEXT)"
SEED = [
    {"id": 1, "name": "Ann", "amount": "10.50", "updated_at": "2024-03-01 10:00:00"},
    {"id": 2, "name": "Bob", "amount": "7.25", "updated_at": "2024-03-01 11:00:00"},
    {"id": 3, "name": "Cy", "amount": "1", "updated_at": "2024-03-01 12:00:00"},
]
TARGET_DDL = (
    "CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(12,2), updated_at TIMESTAMP)"
)
MAPPING = [
    {"target": "id", "source": "id", "type": "integer"},
    {"target": "name", "source": "name"},
    {"target": "amount", "source": "amount", "type": "currency", "parse": "currency"},
    {"target": "updated_at", "source": "updated_at", "type": "datetime", "parse": "datetime"},
]
CHECK_MIN_AMOUNT = 5  # orders_checked: `between amount min 5` fails on Cy (1.00), a row-level rule


def import_spec(table: str, expectations: list[dict]) -> dict:
    return {
        "source": {"warehouse": {"connection": "dwh", "query": "SELECT * FROM src_orders", "updated_at": "updated_at"}},
        "target": {"connection": "crm", "table": table, "key": "id"},
        "mapping": MAPPING,
        "expectations": expectations,
    }


def sqlite_database(path: Path) -> TestDatabase:
    return TestDatabase("sqlite", f"sqlite:///{path}", sa.create_engine(f"sqlite:///{path}"))


# --------------------------------------------------------------------------------------------------
# The servers


@dataclass
class Api(Dagster):
    """The servers over the test project, and the project's two databases."""

    root: Path = Path()
    source: TestDatabase | None = None
    target: TestDatabase | None = None


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("trigger_api")
    with pytest.MonkeyPatch.context() as monkeypatch:
        # The project: orders_sync (the doc's example) and orders_checked (a blocking check that fails).
        project = ImportProject(root, monkeypatch)  # also points CONNECTOR_PIPELINES_STORAGE here at root/storage
        source, target = sqlite_database(root / "dwh.db"), sqlite_database(root / "crm.db")
        source.execute(SOURCE_DDL)
        source.execute("INSERT INTO src_orders VALUES (:id, :name, :amount, :updated_at)", SEED)
        for table in ("orders", "checked_orders"):
            target.execute(TARGET_DDL.format(table=table))
        project.add_database(source, "dwh")
        project.add_database(target, "crm")
        project.add_import("orders_sync", import_spec("orders", [{"expect": "not_null", "column": "name"}]))
        project.add_import(
            "orders_checked",
            import_spec("checked_orders", [{"expect": "between", "column": "amount", "min": CHECK_MIN_AMOUNT}]),
        )
        project.write()
        env = {RESOURCES_ENV: str(project.resources), STORAGE_ENV: str(project.storage)}
        try:
            with running_dagster(root, env, monkeypatch) as dagster:
                yield Api(**vars(dagster), root=root, source=source, target=target)
        finally:
            source.engine.dispose()
            target.engine.dispose()


# --------------------------------------------------------------------------------------------------
# The doc's commands


def doc_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)


def doc_block(language: str, marker: str, *, script: bool = False, without: str | None = None) -> str:
    """The one code block of the doc holding `marker` (the shell script, or one of the single commands)."""
    found = [
        block
        for block in doc_blocks(language)
        if marker in block and block.startswith("#!") == script and (without is None or without not in block)
    ]
    assert len(found) == 1, f"expected one {language} block with {marker!r} in {DOC}, found {len(found)}"
    return found[0]


def require(tool: str) -> None:
    if shutil.which(tool) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is not installed: CI must provide it for the documented commands")
        pytest.skip(f"{tool} is not installed")


def run_shell(api: Api, block: str, *, run_id: str | None = None, timeout: float = 30) -> dict:
    """Run one of the doc's curl commands against the test webserver; its output parsed as JSON."""
    assert DOC_URL in block or "$DAGSTER_URL" in block
    command = block.replace(DOC_URL, api.url)
    env = dict(api.env)
    if run_id is not None:
        command, samples = re.subn(r"^RUN_ID=\S+", f"RUN_ID={run_id}", command, flags=re.M)
        assert samples <= 1
        env["RUN_ID"] = run_id
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{command}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return json.loads(done.stdout)


def metadata_of(details: dict) -> dict[str, int]:
    materializations = details["runOrError"]["assetMaterializations"]
    assert len(materializations) == 1, details
    return {e["label"]: e["intValue"] for e in materializations[0]["metadataEntries"] if "intValue" in e}


def source_rows(api: Api) -> list[tuple]:
    return [
        (row["id"], row["name"], float(row["amount"]))
        for row in api.source.query("SELECT id, name, amount FROM src_orders ORDER BY id")
    ]


def target_rows(api: Api, table: str) -> list[tuple]:
    return [
        (row["id"], row["name"], float(row["amount"]))
        for row in api.target.query(f"SELECT id, name, amount FROM {table} ORDER BY id")
    ]


def add_source_row(api: Api) -> None:
    """A new order, changed after every row so far: what an incremental run must pick up."""
    top = api.source.query("SELECT MAX(id) AS id, MAX(updated_at) AS at FROM src_orders")[0]
    at = dt_text(top["at"], seconds=60)
    api.source.execute(
        "INSERT INTO src_orders VALUES (:id, :name, :amount, :at)",
        {"id": top["id"] + 1, "name": f"Customer {top['id'] + 1}", "amount": "42.00", "at": at},
    )


def dt_text(text: str, *, seconds: int) -> str:
    return str(dt.datetime.fromisoformat(text) + dt.timedelta(seconds=seconds))


# --------------------------------------------------------------------------------------------------
# The tests


def test_curl_finds_the_names_launches_an_import_and_polls_it_to_success(api: Api) -> None:
    require("curl")
    # The names the doc gives: repository __repository__, location MODULE:ATTRIBUTE, job import_NAME.
    found = run_shell(api, doc_block("bash", "repositoriesOrError"))["data"]["repositoriesOrError"]
    assert found["__typename"] == "RepositoryConnection", found
    assert [(n["name"], n["location"]["name"]) for n in found["nodes"]] == [("__repository__", LOCATION)]
    jobs = {job["name"] for job in found["nodes"][0]["jobs"]}
    assert {"import_orders_sync", "import_orders_checked"} <= jobs

    add_source_row(api)
    new_ids = {r[0] for r in source_rows(api)} - {r[0] for r in target_rows(api, "orders")}

    launched = run_shell(api, doc_block("bash", "launchRun(", without="#!"))["data"]["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    assert launched["run"]["status"] == "QUEUED"  # the daemon starts it

    status_block = doc_block("bash", "runOrError(", without="logsForRun")
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        answer = run_shell(api, status_block, run_id=run_id)["data"]["runOrError"]
        assert answer["__typename"] == "Run" and answer["runId"] == run_id, answer
        if answer["status"] in FINAL:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} still {answer['status']} after {RUN_TIMEOUT} s\n{api.explain(run_id)}")
        time.sleep(0.5)
    assert answer["status"] == "SUCCESS", api.explain(run_id)

    assert target_rows(api, "orders") == source_rows(api)
    details = run_shell(api, doc_block("bash", "logsForRun("), run_id=run_id)["data"]
    counts = metadata_of(details)
    # Incremental: exactly the rows past the watermark, which are the ones the target did not have yet.
    assert (counts["inserted"], counts["rows_read"], counts["rows_rejected"]) == (len(new_ids), len(new_ids), 0)
    checks = [
        e["evaluation"] for e in details["logsForRun"]["events"] if e["__typename"] == "AssetCheckEvaluationEvent"
    ]
    assert checks == [{"checkName": "expect_not_null_name_1", "success": True}]


def test_python_client_runs_a_full_sync(api: Api) -> None:
    snippet = doc_block("python", "DagsterGraphQLClient(")
    for sample, here in (
        ("port_number=3000", f"port_number={api.port}"),
        ("time.sleep(10)", "time.sleep(0.5)"),
        ("time.monotonic() + 3600", f"time.monotonic() + {RUN_TIMEOUT}"),
    ):
        assert snippet.count(sample) == 1, f"the doc's Python snippet no longer has {sample!r}"
        snippet = snippet.replace(sample, here)
    missing_ids = {r[0] for r in source_rows(api)} - {r[0] for r in target_rows(api, "orders")}

    namespace: dict = {}
    try:
        exec(compile(snippet, str(DOC), "exec"), namespace)  # noqa: S102 - the documented snippet, as written
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{api.explain(namespace.get('run_id'))}")
    run_id, status = namespace["run_id"], namespace["status"]
    assert status == dg.DagsterRunStatus.SUCCESS, api.explain(run_id)

    assert target_rows(api, "orders") == source_rows(api)
    with dg.DagsterInstance.from_config(str(api.home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(["import", "orders_sync", "orders"]))
        assert event is not None and event.run_id == run_id
        counts = {key: value.value for key, value in event.asset_materialization.metadata.items()}
        config = instance.get_run_by_id(run_id).run_config
    assert config == {"ops": {"import__orders_sync__orders": {"config": {"full": True}}}}
    # A full sync reads every row; the ones already there are updated or unchanged, none duplicated.
    total = len(source_rows(api))
    assert counts["rows_read"] == total and counts["inserted"] == len(missing_ids)
    assert counts["inserted"] + counts["updated"] + counts["unchanged_or_older"] == total


def test_script_exits_1_and_the_events_name_the_failed_blocking_check(api: Api) -> None:
    require("curl")
    require("jq")
    script = api.root / "trigger-import.sh"
    script.write_text(doc_block("bash", "launchRun(", script=True), encoding="utf-8")
    env = {**api.env, "POLL_SECONDS": "0.5"}
    try:
        done = subprocess.run(
            ["bash", str(script), "orders_checked", "checked_orders"],
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT + 15,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the script did not finish within {RUN_TIMEOUT + 15} s: {exc.stdout}\n{api.explain(None)}")
    launched = re.search(r"^run (\S+) launched$", done.stdout, flags=re.M)
    assert launched, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}\n{api.logs()}"
    run_id = launched.group(1)
    assert done.returncode == 1 and done.stderr.strip() == f"run {run_id}: FAILURE", (
        f"exit {done.returncode}, stderr {done.stderr!r}\n{api.explain(run_id)}"
    )

    details = run_shell(api, doc_block("bash", "logsForRun("), run_id=run_id)["data"]
    assert details["runOrError"]["status"] == "FAILURE"
    events = details["logsForRun"]["events"]
    checks = [e["evaluation"] for e in events if e["__typename"] == "AssetCheckEvaluationEvent"]
    assert checks == [{"checkName": "expect_between_amount_1", "success": False}]
    failures = [e["error"]["message"] for e in events if e["__typename"] == "ExecutionStepFailureEvent"]
    assert len(failures) == 1
    assert "nothing was merged (the target table is as it was, the watermark did not move)" in failures[0]
    assert "blocking check expect_between_amount_1 failed: amount is at least 5 (between)" in failures[0]

    # The gate: a failed blocking expectation merges nothing, so no materialization, an untouched table and the
    # watermark where it was; the rejected rows and their reasons are still in the run's folder.
    assert details["runOrError"]["assetMaterializations"] == []
    assert target_rows(api, "checked_orders") == []
    state = ImportState(default_state_url(Storage.for_project(api.root).root))
    try:
        assert state.watermark("orders_checked") is None
    finally:
        state.dispose()


def test_a_launch_that_cannot_start_says_why(api: Api) -> None:
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    client = DagsterGraphQLClient("127.0.0.1", port_number=api.port)
    with pytest.raises(DagsterGraphQLClientError) as refused:
        client.submit_job_execution(
            "import_orders_sync",
            repository_location_name=LOCATION,
            repository_name="__repository__",
            run_config={"ops": {"import__orders_sync__orders": {"config": {"full": "yes"}}}},
        )
    assert refused.value.args[0] == "RunConfigValidationInvalid"
    assert "full" in str(refused.value.args[1])

    require("curl")
    require("jq")
    script = api.root / "trigger-import.sh"
    script.write_text(doc_block("bash", "launchRun(", script=True), encoding="utf-8")
    done = subprocess.run(
        ["bash", str(script), "no_such_import", "orders"], env=api.env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2, f"stdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.stderr.startswith("not started: ") and "PipelineNotFoundError" in done.stderr
    # Nothing was started by either.
    runs = api.graphql("{ runsOrError { ... on Runs { results { jobName runConfigYaml } } } }")
    assert all("yes" not in run["runConfigYaml"] for run in runs["runsOrError"]["results"])
