"""Runs through the instance: the CLI submits a run to the Dagster instance's run queue when a `dagster-daemon` is
running against that instance, so the queued run coordinator's limits and pools apply and the daemon launches
(and monitors) the run; `--wait` follows a submitted run to its end.

Submitting is `dagster job launch -w workspace.yaml` (Dagster's own command: it loads the code location as the
daemon does, so the run carries the origin the daemon launches from).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import dagster as dg

HEARTBEAT_TOLERANCE_SECONDS = 90  # the daemon beats every 30 s; a heartbeat older than this is a stopped daemon
QUEUE_DAEMON = "QUEUED_RUN_COORDINATOR"
FINAL_STATUSES = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
SUBMIT_TIMEOUT_SECONDS = 300


class SubmitError(Exception):
    """Dagster refused to queue the run (its message says why)."""


def daemon_running(instance: dg.DagsterInstance, now: float | None = None) -> bool:
    """A run queue is there and a daemon takes runs from it: a queued run coordinator, and the daemon's queue
    heartbeat recent."""
    if not isinstance(instance.run_coordinator, dg.QueuedRunCoordinator):
        return False
    beat = instance.get_daemon_heartbeats().get(QUEUE_DAEMON)
    return beat is not None and (now or time.time()) - beat.timestamp < HEARTBEAT_TOLERANCE_SECONDS


def submit(workspace: Path, job: str, run_config: dict, tags: dict[str, str], env: dict[str, str], cwd: Path) -> str:
    """Queue a run of `job` (the daemon launches it); returns its run id."""
    run_id = str(uuid.uuid4())
    command = [
        str(Path(sys.executable).with_name("dagster")),
        "job",
        "launch",
        "-w",
        str(workspace),
        "-j",
        job,
        "--config-json",
        json.dumps(run_config),
        "--tags",
        json.dumps(tags),
        "--run-id",
        run_id,
    ]
    done = subprocess.run(
        command, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=SUBMIT_TIMEOUT_SECONDS
    )
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise SubmitError(lines[-1] if lines else f"dagster job launch exited {done.returncode}")
    return run_id


def follow(
    instance: dg.DagsterInstance, run_id: str, echo: Callable[[str], None], poll_seconds: float = 1.0
) -> dg.DagsterRunStatus:
    """Print a submitted run's status changes and its log lines (the connectors' progress) until it ends."""
    status, seen = None, 0
    while True:
        run = instance.get_run_by_id(run_id)
        if run is None:
            raise SubmitError(f"run {run_id} is not in the instance")
        if run.status != status:
            status = run.status
            echo(f"run {run_id}: {status.value.lower()}")
        records = instance.all_logs(run_id)
        for record in records[seen:]:
            if record.dagster_event is None and record.user_message:
                echo(record.user_message)
            elif record.dagster_event is not None and record.dagster_event.is_step_failure:
                echo(f"step {record.step_key} failed")
        seen = len(records)
        if status in FINAL_STATUSES:
            return status
        time.sleep(poll_seconds)


class FinishedRun:
    """A run that ran elsewhere, read back from the instance's event log, with what `runs.py` reads of an
    in-process result: success, run id, events, materializations and check evaluations."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str):
        run = instance.get_run_by_id(run_id)
        self.run_id = run_id
        self.success = run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        self.all_events = [r.dagster_event for r in instance.all_logs(run_id) if r.dagster_event is not None]

    def get_asset_materialization_events(self) -> list:
        return [e for e in self.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]

    def get_asset_check_evaluations(self) -> list:
        checks = [e for e in self.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        return [e.asset_check_evaluation_data for e in checks]


class QueuedRun:
    """A run handed to the daemon and not followed (no --wait)."""

    def __init__(self, run_id: str):
        self.run_id = run_id
