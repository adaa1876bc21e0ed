"""The demo project's definitions, without running anything: they load, and every connector has the keys, group,
kinds, code version, code reference, jobs, checks and schedule its YAML asks for."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml
from sqlalchemy.engine import make_url

from connector_pipelines.definitions import build_definitions
from connector_pipelines.spec.loader import load_project

DEMO_RESOURCES = Path(__file__).resolve().parents[2] / "resources"
FORMAT_KINDS = {"csv": "csv", "tsv": "csv", "parquet": "parquet", "jsonl": "json"}
TRANSPORT_KINDS = {"s3": "s3", "sftp": "sftp", "ftp": "ftp", "smtp": "email", "folder": "file"}
DIALECT_KINDS = {"postgresql": "postgres", "sqlite": "sqlite", "mysql": "mysql", "mariadb": "mariadb"}


def _extracts(project):
    """The demo's extract connectors (the demo also ships integrations, tested elsewhere)."""
    return {name: loaded for name, loaded in project.connectors.items() if loaded.kind == "extract"}


@pytest.fixture(scope="module")
def demo():
    return load_project(DEMO_RESOURCES), build_definitions(DEMO_RESOURCES)


def test_demo_definitions_load(demo):
    _, defs = demo
    dg.Definitions.validate_loadable(defs)


def test_demo_covers_each_kind_of_extract(demo):
    project, _ = demo
    specs = [loaded.spec.extract for loaded in _extracts(project).values()]
    assert any(spec.partitioned and not spec.schedule.rolling for spec in specs)
    assert any(spec.partitioned and spec.schedule.rolling for spec in specs)
    assert any(spec.schedule is not None and not spec.partitioned for spec in specs)  # full extract on a cron
    assert any(spec.schedule is None for spec in specs)  # custom windows only


def test_every_connector_has_its_assets_jobs_and_schedule(demo):
    project, defs = demo
    specs = {spec.key: spec for spec in defs.resolve_all_asset_specs()}
    jobs = {job.name for job in defs.jobs}
    schedules = {schedule.name for schedule in defs.schedules}
    expected_keys = set()
    for name, loaded in _extracts(project).items():
        extract = loaded.spec.extract
        parts = ["file", "custom_file"] if extract.partitioned else ["file"]
        expected_keys |= {dg.AssetKey(["extract", name, part]) for part in parts}
        assert f"extract_{name}" in jobs
        assert (f"extract_{name}_custom" in jobs) == extract.partitioned
        assert (f"extract_{name}_schedule" in schedules) == (extract.schedule is not None)

        source = project.connections[extract.source.connection]
        kinds = {FORMAT_KINDS[extract.format], DIALECT_KINDS[make_url(source.url).get_backend_name()]}
        kinds |= {TRANSPORT_KINDS[project.connections[d.connection].type] for d in extract.destinations}
        for part in parts:
            spec = specs[dg.AssetKey(["extract", name, part])]
            assert spec.group_name == name
            assert {tag.removeprefix("dagster/kind/") for tag in spec.tags if tag.startswith("dagster/kind/")} == kinds
            assert {k: v for k, v in spec.tags.items() if not k.startswith("dagster/")} == loaded.spec.tags
            assert spec.owners == loaded.spec.owners
            assert spec.code_version and len(spec.code_version) == 16
            [reference] = spec.metadata["dagster/code_references"].code_references
            assert Path(reference.file_path) == (DEMO_RESOURCES / "connectors" / f"{name}.yaml").resolve()
            assert reference.line_number == 1
            check_keys = defs.resolve_assets_def(spec.key).check_keys
            assert (dg.AssetCheckKey(spec.key, "not_empty") in check_keys) == extract.checks.not_empty
    assert {key for key in specs if key.path[0] == "extract"} == expected_keys


def test_partitioned_assets_share_the_schedule_partitions(demo):
    project, defs = demo
    for name, loaded in _extracts(project).items():
        extract = loaded.spec.extract
        asset = defs.resolve_assets_def(dg.AssetKey(["extract", name, "file"]))
        if not extract.partitioned:
            assert asset.partitions_def is None
            continue
        assert isinstance(asset.partitions_def, dg.TimeWindowPartitionsDefinition)
        assert asset.partitions_def.timezone == extract.schedule.timezone
        inception = extract.schedule.inception_date
        if isinstance(inception, dt.datetime):
            inception = inception.date()
        assert asset.partitions_def.start.date() == inception
        assert asset.backfill_policy == dg.BackfillPolicy.single_run()
        custom = defs.resolve_assets_def(dg.AssetKey(["extract", name, "custom_file"]))
        assert custom.partitions_def is None


def _code_versions(resources: Path) -> dict[str, str]:
    return {
        spec.key.path[1]: spec.code_version
        for spec in build_definitions(resources).resolve_all_asset_specs()
        if spec.key.path[2] == "file"
    }


def test_code_version_follows_the_yaml(tmp_path):
    resources = tmp_path / "resources"
    shutil.copytree(DEMO_RESOURCES, resources)
    before = _code_versions(resources)
    files = sorted((resources / "connectors").glob("*.yaml"))
    changed, reformatted = files[0], files[1]

    data = yaml.safe_load(changed.read_text(encoding="utf-8"))
    data["extract"]["source"]["query"] += "\n-- a changed query\n"
    changed.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    # Comments and layout are not configuration: the same spec keeps its version.
    reformatted.write_text(
        "# reformatted\n" + yaml.safe_dump(yaml.safe_load(reformatted.read_text(encoding="utf-8")), indent=4),
        encoding="utf-8",
    )
    after = _code_versions(resources)

    assert after[changed.stem] != before[changed.stem]
    assert {name: v for name, v in after.items() if name != changed.stem} == {
        name: v for name, v in before.items() if name != changed.stem
    }
