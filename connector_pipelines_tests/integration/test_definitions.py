"""The demo's integrations as Dagster objects: assets per configuration, checks, job, schedule, sensor."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from connector_pipelines.definitions import build_definitions
from connector_pipelines.spec.loader import load_project

DEMO_RESOURCES = Path(__file__).resolve().parents[2] / "resources"


@pytest.fixture(scope="module")
def demo():
    return load_project(DEMO_RESOURCES), build_definitions(DEMO_RESOURCES)


def test_each_integration_has_a_data_set_and_a_delivery_asset_per_configuration(demo):
    project, defs = demo
    specs = {spec.key: spec for spec in defs.resolve_all_asset_specs()}
    integrations = [loaded for loaded in project.connectors.values() if loaded.kind == "integration"]
    assert {i.name for i in integrations} == {"crm_accounts", "contact_webhooks", "customers_to_crm"}
    for loaded in integrations:
        name = loaded.name
        data_set = specs[dg.AssetKey(["integration", name, "data_set"])]
        assert data_set.group_name == name and "sqlite" in {t.split("/")[-1] for t in data_set.tags}
        for configuration in loaded.spec.integration.configurations:
            key = dg.AssetKey(["integration", name, configuration.name])
            spec = specs[key]
            assert [dep.asset_key for dep in spec.deps] == [data_set.key]
            assert spec.group_name == name and spec.owners == ["team:revops"]
            checks = defs.resolve_assets_def(key).check_specs
            assert {(c.name, c.blocking) for c in checks} == {("no_duplicate_delivery", True), ("rejected_rate", True)}
        job = defs.resolve_job_def(f"integration_{name}")
        assert {node.name for node in job.nodes} >= {f"integration__{name}__data_set"}


def test_schedule_and_sensor_follow_the_spec(demo):
    _, defs = demo
    schedule = defs.resolve_schedule_def("integration_crm_accounts_schedule")
    assert schedule.cron_schedule == "0 7 * * 1-5"  # workdays at 07:00
    assert schedule.execution_timezone == "Europe/Paris"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    sensor = defs.resolve_sensor_def("integration_contact_webhooks_changes")
    assert sensor.minimum_interval_seconds == 30
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == "integration_contact_webhooks"
    with pytest.raises(dg.DagsterInvariantViolationError):
        defs.resolve_sensor_def("integration_crm_accounts_changes")  # no triggers, no sensor


def test_workdays_schedule_fires_monday_to_friday_only(demo):
    _, defs = demo
    schedule = defs.resolve_schedule_def("integration_crm_accounts_schedule")
    import datetime as dt

    from dagster._utils.schedules import cron_string_iterator

    start = dt.datetime(2026, 11, 20, 12, 0).timestamp()  # a Friday
    fires = cron_string_iterator(start, schedule.cron_schedule, "Europe/Paris")
    days = [next(fires).strftime("%a %H:%M") for _ in range(6)]
    assert days == ["Mon 07:00", "Tue 07:00", "Wed 07:00", "Thu 07:00", "Fri 07:00", "Mon 07:00"]


def test_the_readme_integration_examples_load(tmp_path):
    """The README's YAML examples of integrations are real specs: they must keep loading as the code changes."""
    import re
    import shutil

    readme = (DEMO_RESOURCES.parent / "README.md").read_text()
    # Whole specs only: an excerpt that elides its body with `...` (the chain example) is not one.
    examples = [
        block
        for block in re.findall(r"```yaml\n(.*?)```", readme, re.S)
        if "kind: integration" in block and "\n  ...\n" not in block
    ]
    assert len(examples) == 2
    resources = tmp_path / "resources"
    (resources / "connectors").mkdir(parents=True)
    shutil.copy(DEMO_RESOURCES / "connections.yaml", resources / "connections.yaml")
    for index, example in enumerate(examples):
        (resources / "connectors" / f"example_{index}.yaml").write_text(example)

    project = load_project(resources)

    assert [c.kind for c in project.connectors.values()] == ["integration", "integration"]
    assert project.connector("example_1").spec.integration.triggers == ["on_create", "on_update", "on_delete"]
