"""`connector-pipelines ui --read-only`: the webserver a viewer gets (README, Security). Started for real over a
project with an extract on a schedule (switched off: `enabled: false`); every mutation a viewer could send through
GraphQL is refused, and what a viewer is there for (the jobs, the schedule's state) is answered."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from connector_pipelines.spec.loader import RESOURCES_ENV
from connector_pipelines.storage import STORAGE_ENV
from connector_pipelines_tests.fixtures.extract import ExtractProject, TestDatabase
from connector_pipelines_tests.fixtures.webserver import LOCATION, REPOSITORY, Dagster, running_dagster

pytestmark = pytest.mark.timeout(300)

SCHEDULE_QUERY = (
    "query Schedules($selector: RepositorySelector!) { schedulesOrError(repositorySelector: $selector) { "
    "... on Schedules { results { name scheduleState { status } } } } }"
)
START_SCHEDULE = (
    "mutation Start($selector: ScheduleSelector!) { startSchedule(scheduleSelector: $selector) { __typename "
    "... on UnauthorizedError { message } ... on PythonError { message } } }"
)
RUNS_QUERY = "{ runsOrError { ... on Runs { results { runId } } } }"


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dagster, ExtractProject]]:
    root = tmp_path_factory.mktemp("read_only_ui")
    with pytest.MonkeyPatch.context() as monkeypatch:
        url = f"sqlite:///{root / 'source.db'}"
        database = TestDatabase("sqlite", url, sa.create_engine(url))
        database.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        database.execute("INSERT INTO customers VALUES (1, 'Ada')")
        project = ExtractProject(root, monkeypatch)
        project.add_database(database)
        outbox = project.add_folder("outbox")
        project.add_extract("customers_file", "SELECT * FROM customers", schedule={"cadence": "daily"}, enabled=False)
        project.write()
        env = {RESOURCES_ENV: str(project.resources), STORAGE_ENV: str(project.storage)}
        with running_dagster(root, env, monkeypatch, read_only=True) as dagster:
            yield dagster, project
        database.engine.dispose()
        assert list(outbox.iterdir()) == []  # nothing ran while the viewer's UI was up


def test_a_read_only_ui_refuses_to_launch_a_run(viewer) -> None:
    dagster, project = viewer

    answer = dagster.launch(project.names("customers_file").job, {})

    assert answer["__typename"] == "UnauthorizedError", answer
    assert dagster.graphql(RUNS_QUERY)["runsOrError"]["results"] == []


def test_a_read_only_ui_refuses_to_switch_a_schedule_on_and_still_shows_it(viewer) -> None:
    dagster, project = viewer
    name = project.names("customers_file").schedule
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "scheduleName": name}

    answer = dagster.graphql(START_SCHEDULE, {"selector": selector})["startSchedule"]

    assert answer["__typename"] == "UnauthorizedError", answer
    schedules = dagster.graphql(
        SCHEDULE_QUERY, {"selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}}
    )["schedulesOrError"]["results"]
    assert [(s["name"], s["scheduleState"]["status"]) for s in schedules] == [(name, "STOPPED")]
