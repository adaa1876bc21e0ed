"""A snapshot of the demo project's definitions: every asset key with its group and kinds, every check, job
(with the keys it selects), schedule (with its cron) and sensor. A change of names is then a visible diff.

After an intended change, rewrite the snapshot with `UPDATE_SNAPSHOTS=1 pytest connector_pipelines_tests/factories`
and review the diff of `snapshots/demo_definitions.json` like code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from connector_pipelines import ConnectorTranslator, build_definitions

SNAPSHOT = Path(__file__).parent / "snapshots" / "demo_definitions.json"
DEMO_RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def describe(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    repository = defs.get_repository_def()  # schedules built from partitioned jobs are resolved here
    jobs = {}
    for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue  # Dagster's implicit job of every asset
        jobs[job.name] = {
            "assets": sorted(key.to_user_string() for key in job.asset_layer.selected_asset_keys),
            "ops": sorted(node.name for node in job.nodes),
        }
    return {
        "assets": {
            key.to_user_string(): {"group": graph.get(key).group_name, "kinds": sorted(graph.get(key).kinds)}
            for key in sorted(graph.get_all_asset_keys())
        },
        "checks": sorted(check.to_user_string() for check in graph.asset_check_keys),
        "jobs": jobs,
        "schedules": {
            schedule.name: {"cron": schedule.cron_schedule, "job": schedule.job_name}
            for schedule in sorted(repository.schedule_defs, key=lambda s: s.name)
        },
        "sensors": {
            sensor.name: {"jobs": sorted(target.job_name for target in sensor.targets)}
            for sensor in sorted(repository.sensor_defs, key=lambda s: s.name)
        },
    }


def test_the_demo_definitions_match_their_snapshot():
    actual = describe(build_definitions(DEMO_RESOURCES, translator=ConnectorTranslator()))
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert actual == expected, "the definitions changed; see this module's docstring to update the snapshot"
