"""The Dagster UI in a real browser (headless Chromium through Playwright): the demo's assets in the asset graph,
an extract materialized from the UI, its run and its materialization metadata. Screenshots go to var/ui-check/.

`make ui-check` runs this alone; CI installs Debian's chromium for it (.ci/run)."""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest

from connector_pipelines.demo.run import run_demo
from connector_pipelines.spec.loader import RESOURCES_ENV, load_project
from connector_pipelines.storage import STORAGE_ENV
from connector_pipelines_tests.fixtures.webserver import REPO_ROOT, running_dagster
from connector_pipelines_tests.servers import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = REPO_ROOT / "var" / "ui-check"
EXTRACT_KEY = "extract/accounts_full/file"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="needs Debian's chromium (apt-get install -y chromium); CI installs it",
)


def test_the_ui_shows_every_demo_asset_materializes_an_extract_and_shows_its_metadata(tmp_path, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    resources = tmp_path / "resources"
    shutil.copytree(REPO_ROOT / "resources", resources)
    connections = resources / "connections.yaml"
    connections.write_text(connections.read_text().replace(":18765", f":{free_port()}"))
    env = {RESOURCES_ENV: str(resources), STORAGE_ENV: str(tmp_path / "storage")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    assert run_demo(resources, scale=0.1, echo=lambda line: None)
    groups = sorted(load_project(resources).connectors)
    SHOTS.mkdir(parents=True, exist_ok=True)

    with running_dagster(tmp_path, env, monkeypatch) as dagster, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            # The asset graph: one group per connector, each shown with its name.
            page.goto(f"{dagster.url}/asset-groups")
            _dismiss_welcome(page)
            for group in groups:
                expect(page.get_by_text(group, exact=True).first).to_be_visible()
            page.screenshot(path=SHOTS / "asset-graph.png", full_page=True)

            # Materialize the extract from its asset page, as a user would.
            before = {run["runId"] for run in _runs(dagster)}
            page.goto(f"{dagster.url}/assets/{EXTRACT_KEY}")
            _dismiss_welcome(page)
            page.locator("button").filter(has_text=re.compile(r"^Materialize$")).first.click()
            run_id = _new_run(dagster, before)
            assert dagster.wait(run_id) == "SUCCESS", dagster.explain(run_id)

            page.goto(f"{dagster.url}/runs/{run_id}")
            expect(page.get_by_text("Success").first).to_be_visible()
            page.screenshot(path=SHOTS / "run.png", full_page=True)

            # Its materialization: the metadata the extract recorded, by name.
            page.goto(f"{dagster.url}/assets/{EXTRACT_KEY}?view=events")
            expect(page.get_by_text(f"Materialized in run {run_id[:8]}").first).to_be_visible()  # the UI's run
            for label in ("rows", "bytes", "sha256", "file_name", "uri"):
                expect(page.get_by_text(label, exact=True).first).to_be_visible()
            page.screenshot(path=SHOTS / "materialization.png", full_page=True)
        finally:
            browser.close()
    assert all((SHOTS / name).stat().st_size > 0 for name in ("asset-graph.png", "run.png", "materialization.png"))


def _dismiss_welcome(page) -> None:
    """A new UI greets its first visitor with a "Join the Dagster community" dialog over the page: skip it."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=8_000)
    except Exception:  # noqa: BLE001 - no dialog this time (it was skipped already)
        return
    skip.click()


RUNS_QUERY = "query { runsOrError(limit: 20) { ... on Runs { results { runId jobName status } } } }"


def _runs(dagster) -> list[dict]:
    return dagster.graphql(RUNS_QUERY)["runsOrError"]["results"]


def _new_run(dagster, before: set[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [run["runId"] for run in _runs(dagster) if run["runId"] not in before]
        if new:
            return new[0]
        time.sleep(0.5)
    pytest.fail(f"no run was launched from the UI within {timeout} s\n{dagster.logs()}")
