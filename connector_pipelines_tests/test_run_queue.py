"""`connector-pipelines run` through the instance: submitted to the run queue when a real `dagster-daemon` runs
against the instance (PostgreSQL storage on the machine's server), followed with `--wait`; in process otherwise."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from connector_pipelines.factories.naming import HOST_TAG
from connector_pipelines.spec.loader import RESOURCES_ENV
from connector_pipelines.storage import STORAGE_ENV
from connector_pipelines_tests.fixtures.postgres import PG_SERVER
from connector_pipelines_tests.fixtures.webserver import running_dagster

CLI = str(Path(sys.executable).with_name("connector-pipelines"))


@pytest.fixture
def dagster_database(fresh_pg_database) -> str:
    """A fresh PostgreSQL database for the instance's storage (runs, events, schedules)."""
    return f"{PG_SERVER}/{fresh_pg_database}"


def _extract_project(root: Path) -> dict[str, str]:
    """An extract of a SQLite table into a folder; returns the environment that points the CLI and servers at it."""
    with sqlite3.connect(root / "shop.db") as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount REAL)")
        db.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i * 2.5) for i in range(1, 41)])
    (root / "out").mkdir()
    resources = root / "resources"
    (resources / "connectors").mkdir(parents=True)
    (resources / "connections.yaml").write_text(
        yaml.safe_dump(
            {
                "connections": {
                    "shop": {"type": "sql", "url": "sqlite:///shop.db"},
                    "out": {"type": "folder", "path": "out"},
                }
            }
        )
    )
    (resources / "connectors" / "orders_full.yaml").write_text(
        yaml.safe_dump(
            {
                "kind": "extract",
                "extract": {
                    "source": {"connection": "shop", "query": "SELECT id, amount FROM orders ORDER BY id"},
                    "format": "csv",
                    "file_name": "orders.csv",
                    "destinations": [{"connection": "out"}],
                },
            }
        )
    )
    return {RESOURCES_ENV: str(resources), STORAGE_ENV: str(root / "storage")}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=300)


def test_run_is_submitted_to_the_daemon_on_postgresql_storage_and_followed_with_wait(
    tmp_path, monkeypatch, dagster_database
):
    env = _extract_project(tmp_path)
    with running_dagster(tmp_path, env, monkeypatch, pg_url=dagster_database) as dagster:
        done = _cli(dagster.env, "run", "orders_full", "--wait")
        output = done.stdout + done.stderr
        assert done.returncode == 0, output + dagster.logs()
        assert "submitted run " in output and "the dagster-daemon launches it" in output
        assert "running in this process" not in output
        assert " succeeded: 40 rows" in output, output
        assert (tmp_path / "out" / "orders.csv").read_text().count("\n") == 41

        with dg.DagsterInstance.get() as instance:
            assert "postgres" in type(instance.run_storage).__name__.lower()
            [run] = instance.get_runs()
            assert run.status == dg.DagsterRunStatus.SUCCESS
            assert HOST_TAG not in run.tags  # the daemon's run monitoring watches it, not our reaper
            event_types = {
                record.dagster_event.event_type_value
                for record in instance.all_logs(run.run_id)
                if record.dagster_event is not None
            }
            assert {"PIPELINE_ENQUEUED", "PIPELINE_SUCCESS"} <= event_types  # queued, then launched by the daemon
        # --wait printed the run's status changes (as the daemon moved it) and its log lines, then its end.
        statuses = [line.split(": ", 1)[1] for line in output.splitlines() if line.startswith(f"run {run.run_id}: ")]
        assert statuses[-1] == "success" and len(statuses) >= 2, output


def test_run_without_a_daemon_runs_in_process_and_says_so(tmp_path, monkeypatch):
    env = _extract_project(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    done = _cli(env, "run", "orders_full")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "no dagster-daemon is running against DAGSTER_HOME=" in output and "running in this process" in output
    assert "submitted run" not in output
    assert (tmp_path / "out" / "orders.csv").exists()


def test_run_wait_with_in_process_is_a_usage_error(tmp_path, monkeypatch):
    env = _extract_project(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    done = _cli(env, "run", "orders_full", "--wait", "--in-process")
    assert done.returncode == 2
    assert "--wait follows a run the daemon launches" in done.stderr
