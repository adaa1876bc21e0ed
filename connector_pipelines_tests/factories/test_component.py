"""`ConnectorComponent` in a team's own `dg` project, driven by the real `dg` commands.

The project skeleton (pyproject.toml with `[tool.dg]`, a package with `definitions.py` and an empty `defs/`) is
written here rather than by `create-dagster project`, which would build a fresh virtualenv with uv for every
test; everything after it goes through `dg`: list components, scaffold defs, check defs, list defs, launch.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox

from connector_pipelines import ConnectorComponent, build_definitions
from connector_pipelines.factories.naming import AUTOMATION_SENSOR

DG = str(Path(sys.executable).with_name("dg"))
DEMO_RESOURCES = Path(__file__).resolve().parents[2] / "resources"
COMPONENT = "connector_pipelines.ConnectorComponent"

ORDERS_EXTRACT = """\
kind: extract
description: Every order as CSV, each morning.
extract:
  source:
    connection: shop
    query: SELECT id, amount FROM orders ORDER BY id
  format: csv
  file_name: "orders_{now:%Y%m%d}.csv"
  destinations:
    - connection: out_folder
  schedule:
    cadence: "0 6 * * *"
    timezone: UTC
"""


def _team_project(root: Path) -> Path:
    """A minimal dg project `team_project` with src/ layout and an empty defs folder."""
    package = root / "src" / "team_project"
    (package / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "team_project"\nversion = "0.1.0"\n\n'
        '[tool.dg]\ndirectory_type = "project"\n\n[tool.dg.project]\nroot_module = "team_project"\n'
    )
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    (package / "definitions.py").write_text(
        "from pathlib import Path\n\nimport dagster as dg\n\n\n@dg.definitions\ndef defs():\n"
        "    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)\n"
    )
    return package / "defs"


def _dg(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("DAGSTER_HOME", None)  # dg launch runs on an ephemeral instance, as a team's laptop would
    done = subprocess.run([DG, *args], cwd=root, env=env, capture_output=True, text=True, timeout=240)
    if check:
        assert done.returncode == 0, f"dg {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def _listed(root: Path) -> dict:
    listed = json.loads(_dg(root, "list", "defs", "--json").stdout)
    return {
        "assets": sorted(asset["asset_key"] for asset in listed["assets"]),
        "checks": sorted(check["key"] for check in listed["asset_checks"]),
        "jobs": sorted(job["name"] for job in listed["jobs"] if not job["name"].startswith("__")),
        "schedules": sorted(schedule["name"] for schedule in listed["schedules"]),
        "sensors": sorted(sensor["name"] for sensor in listed["sensors"]),
    }


def _described(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    repository = defs.get_repository_def()
    return {
        "assets": sorted(key.to_user_string() for key in graph.get_all_asset_keys()),
        "checks": sorted(check.to_user_string() for check in graph.asset_check_keys),
        "jobs": sorted(job.name for job in repository.get_all_jobs() if not job.name.startswith("__")),
        "schedules": sorted(schedule.name for schedule in repository.schedule_defs),
        "sensors": sorted(sensor.name for sensor in repository.sensor_defs),
    }


def test_dg_lists_the_component_and_scaffolds_a_defs_yaml_with_a_resources_shaped_folder(tmp_path):
    defs_folder = _team_project(tmp_path)

    components = json.loads(_dg(tmp_path, "list", "components", "--json").stdout)["items"]
    assert COMPONENT in {component["key"] for component in components}

    _dg(tmp_path, "scaffold", "defs", COMPONENT, "my_connectors")
    folder = defs_folder / "my_connectors"
    assert yaml.safe_load((folder / "defs.yaml").read_text()) == {
        "type": COMPONENT,
        "attributes": {"connections": "connections.yaml", "connectors": ["connectors/*.yaml", "connectors/*.yml"]},
    }
    assert "connections" in yaml.safe_load((folder / "connections.yaml").read_text())
    assert (folder / "connectors").is_dir()
    assert "All definitions loaded successfully" in _dg(tmp_path, "check", "defs").stdout


def test_dg_list_defs_of_the_component_matches_definitions_py_on_the_same_files(tmp_path):
    """The demo's resources/ copied into a scaffolded component: dg shows the same assets, checks, jobs,
    schedules and sensors as `build_definitions` of those files."""
    defs_folder = _team_project(tmp_path)
    _dg(tmp_path, "scaffold", "defs", COMPONENT, "demo_connectors")
    folder = defs_folder / "demo_connectors"
    shutil.copy(DEMO_RESOURCES / "connections.yaml", folder / "connections.yaml")
    shutil.copytree(DEMO_RESOURCES / "connectors", folder / "connectors", dirs_exist_ok=True)

    listed = _listed(tmp_path)
    expected = _described(build_definitions(DEMO_RESOURCES))
    # The one name that differs: each component has its own automation sensor.
    expected["sensors"] = sorted(
        f"{name}_demo_connectors" if name == AUTOMATION_SENSOR else name for name in expected["sensors"]
    )
    assert listed == expected
    assert len(listed["assets"]) > 8 and listed["checks"] and listed["schedules"] and listed["sensors"]


def test_dg_launch_runs_an_extract_of_the_component_and_writes_its_file(tmp_path):
    defs_folder = _team_project(tmp_path)
    _dg(tmp_path, "scaffold", "defs", COMPONENT, "shop")
    folder = defs_folder / "shop"
    with sqlite3.connect(tmp_path / "shop.db") as db:  # relative URLs resolve against the project root
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount REAL)")
        db.executemany("INSERT INTO orders VALUES (?, ?)", [(1, 9.5), (2, 20.0), (3, 0.25)])
    (folder / "connections.yaml").write_text(
        "connections:\n  shop: {type: sql, url: 'sqlite:///shop.db'}\n"
        "  out_folder: {type: folder, path: var/connector_out}\n"
    )
    (folder / "connectors" / "orders_daily.yaml").write_text(ORDERS_EXTRACT)
    (tmp_path / "var" / "connector_out").mkdir(parents=True)

    assert _listed(tmp_path)["schedules"] == ["extract_orders_daily_schedule"]
    _dg(tmp_path, "launch", "--assets", "extract/orders_daily/file")

    [written] = (tmp_path / "var" / "connector_out").glob("orders_*.csv")
    assert written.read_text().splitlines() == ['"id","amount"', "1,9.5", "2,20", "3,0.25"]


def test_dg_check_defs_reports_a_broken_connector_file_with_its_file_line_and_field(tmp_path):
    defs_folder = _team_project(tmp_path)
    _dg(tmp_path, "scaffold", "defs", COMPONENT, "shop")
    folder = defs_folder / "shop"
    (folder / "connections.yaml").write_text(
        "connections:\n  shop: {type: sql, url: 'sqlite:///shop.db'}\n"
        "  out_folder: {type: folder, path: var/connector_out}\n"
    )
    (folder / "connectors" / "orders_daily.yaml").write_text(ORDERS_EXTRACT.replace("format: csv", "format: cvs"))

    checked = _dg(tmp_path, "check", "defs", check=False)
    assert checked.returncode == 1
    assert (
        "src/team_project/defs/shop/connectors/orders_daily.yaml:7 extract.format: 'cvs' is not one of csv, tsv, "
        "parquet, jsonl (did you mean 'csv'?)"
    ) in checked.stdout + checked.stderr


@pytest.fixture
def sandbox():
    with create_defs_folder_sandbox(project_name="sandbox_project") as sandbox:
        yield sandbox


def test_component_key_prefix_and_group_name_apply_to_every_asset_and_names_stay_derived(sandbox):
    path = sandbox.scaffold_component(
        ConnectorComponent,
        defs_path="crm",
        defs_yaml_contents={
            "type": COMPONENT,
            "attributes": {"key_prefix": ["reverse_etl"], "group_name": "crm_sync", "root": "."},
        },
    )
    (path / "connections.yaml").write_text(
        "connections:\n  shop: {type: sql, url: 'sqlite:///shop.db'}\n"
        "  out_folder: {type: folder, path: var/connector_out}\n"
    )
    (path / "connectors" / "orders_daily.yaml").write_text(ORDERS_EXTRACT)
    with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
        assert isinstance(component, ConnectorComponent)
        graph = defs.resolve_asset_graph()
        keys = graph.get_all_asset_keys()
        assert keys == {dg.AssetKey(["reverse_etl", "extract", "orders_daily", "file"])}
        assert {graph.get(key).group_name for key in keys} == {"crm_sync"}
        job = defs.resolve_job_def("extract_orders_daily")
        assert job.asset_layer.selected_asset_keys == keys
