"""`history NAME` and `download NAME RUN_ID` for every kind.

History: a connector's runs from the Dagster instance (its jobs' runs, and the automation or UI runs that
materialized its assets), newest first, with what each run's materializations recorded. Download: the data a run
left behind: an extract's file, fetched back from its first file destination and checked against the checksum
the run recorded; an integration's data-set snapshot and audit files; an import's source data (as read).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from connector_pipelines.cli.import_history import RunNotFound, export_file, export_snapshots, only_match
from connector_pipelines.factories.naming import CUSTOM_FILE, DATA_SET, TRIGGER_TAG, custom_window_job_name
from connector_pipelines.factories.translator import configured_translator, connector_names
from connector_pipelines.instance import ensure_dagster_home
from connector_pipelines.spec.loader import LoadedConnector, Project
from connector_pipelines.state.resources import project_storage
from connector_pipelines.transports.registry import client_for

EXTRACT_FIELDS = ("rows", "bytes", "file_name", "sha256", "uri", "window_start", "window_end")
DELIVERY_FIELDS = ("sent", "delivered", "failed", "skipped", "unchanged", "audit_path")
DATA_SET_FIELDS = ("rows", "scope", "snapshot_path")
IMPORT_FIELDS = ("rows_read", "inserted", "updated", "rows_rejected", "files_imported", "files_rejected")


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    started: dt.datetime | None
    trigger: str
    status: str
    details: dict = field(default_factory=dict)  # what the run recorded, by kind (see `_details`)

    def as_json(self) -> dict:
        started = self.started.isoformat() if self.started else None
        return {"run_id": self.run_id, "started": started, "trigger": self.trigger, "status": self.status} | dict(
            self.details
        )


def run_history(
    project: Project, loaded: LoadedConnector, limit: int = 20, instance: dg.DagsterInstance | None = None
) -> list[RunSummary]:
    """The connector's runs, newest first, at most `limit` (on `instance`, else the DAGSTER_HOME one)."""
    if instance is None:
        ensure_dagster_home(project.base_dir)
        with dg.DagsterInstance.get() as owned:
            return run_history(project, loaded, limit, owned)
    names = connector_names(loaded, project.connections, configured_translator())
    jobs = [names.job]
    if loaded.kind == "extract" and loaded.spec.extract.partitioned:
        jobs.append(custom_window_job_name(loaded.name))
    values: dict[str, dict[str, dict]] = {}  # run id -> part -> metadata values
    for part, key in names.keys.items():
        for record in instance.fetch_materializations(key, limit=limit * 2).records:
            materialization = record.asset_materialization
            if materialization is not None:
                plain = {name: getattr(value, "value", value) for name, value in materialization.metadata.items()}
                values.setdefault(record.run_id, {}).setdefault(part, plain)
    records = {}
    for job in jobs:
        for record in instance.get_run_records(filters=dg.RunsFilter(job_name=job), limit=limit):
            records[record.dagster_run.run_id] = record
    elsewhere = [run_id for run_id in values if run_id not in records]  # automation, or the UI's asset job
    if elsewhere:
        for record in instance.get_run_records(filters=dg.RunsFilter(run_ids=elsewhere)):
            records[record.dagster_run.run_id] = record
    newest = sorted(records.values(), key=lambda r: r.create_timestamp, reverse=True)[:limit]
    return [
        RunSummary(
            record.dagster_run.run_id,
            dt.datetime.fromtimestamp(record.start_time, dt.UTC) if record.start_time else None,
            trigger_of(record.dagster_run.tags),
            record.dagster_run.status.value,
            _details(loaded, values.get(record.dagster_run.run_id, {})),
        )
        for record in newest
    ]


def trigger_of(tags: dict[str, str]) -> str:
    """What started a run: our own tag, else Dagster's schedule, sensor and automation tags, else the UI."""
    if TRIGGER_TAG in tags:
        return tags[TRIGGER_TAG]
    if "dagster/schedule_name" in tags:
        return "schedule"
    if "dagster/from_automation_condition" in tags or "dagster/auto_materialize" in tags:
        return "automation"
    if "dagster/sensor_name" in tags:
        return "sensor"
    return "ui"


def _details(loaded: LoadedConnector, by_part: dict[str, dict]) -> dict:
    if loaded.kind == "extract":
        values = next(iter(by_part.values()), {})  # the file (or the custom-window file) the run wrote
        return _pick(values, EXTRACT_FIELDS) | ({"custom_window": True} if CUSTOM_FILE in by_part else {})
    if loaded.kind == "integration":
        return {
            "data_set": _pick(by_part.get(DATA_SET, {}), DATA_SET_FIELDS),
            "configurations": {
                part: _pick(values, DELIVERY_FIELDS) for part, values in by_part.items() if part != DATA_SET
            },
        }
    return _pick(next(iter(by_part.values()), {}), IMPORT_FIELDS)


def _pick(values: dict, names: tuple[str, ...]) -> dict:
    return {name: values[name] for name in names if name in values}


def history_table(loaded: LoadedConnector, rows: list[RunSummary]) -> list[tuple]:
    """The table `history` prints: the same first columns for every kind, then the kind's own counts."""
    head = ("RUN", "STARTED (UTC)", "TRIGGER", "STATUS")
    if loaded.kind == "extract":
        header = (*head, "ROWS", "BYTES", "FILE", "SHA256")
    elif loaded.kind == "integration":
        header = (*head, "READ", "SENT", "DELIVERED", "FAILED", "UNCHANGED")
    else:
        header = (*head, "READ", "INSERTED", "UPDATED", "REJECTED", "FILES")
    return [header, *(_cells(loaded, row) for row in rows)]


def _cells(loaded: LoadedConnector, row: RunSummary) -> tuple:
    started = row.started.strftime("%Y-%m-%d %H:%M:%S") if row.started else ""
    head = (row.run_id[:8], started, row.trigger, row.status)
    details = row.details
    if loaded.kind == "extract":
        sha = details.get("sha256", "")
        return (*head, _count(details, "rows"), _count(details, "bytes"), details.get("file_name", ""), sha[:12])
    if loaded.kind == "integration":
        configurations = details["configurations"].values()
        totals = {name: sum(c.get(name, 0) for c in configurations) for name in DELIVERY_FIELDS[:-1]}
        read = _count(details["data_set"], "rows")
        counted = bool(configurations)
        return (
            *head,
            read,
            *(f"{totals[n]:,}" if counted else "" for n in ("sent", "delivered", "failed", "unchanged")),
        )
    files = details.get("files_imported")
    files_text = "" if files is None else f"{files}+{details.get('files_rejected', 0)}r"
    return (*head, *(_count(details, name) for name in IMPORT_FIELDS[:4]), files_text)


def _count(values: dict, name: str) -> str:
    return f"{values[name]:,}" if isinstance(values.get(name), int) else ""


# ---- download ------------------------------------------------------------------------------------------------


def download_run(
    project: Project, loaded: LoadedConnector, run_id: str, output: Path | None, file_format: str
) -> list[tuple[Path, int | None]]:
    """Write what the run left behind; returns (path, rows or None) per file written."""
    if loaded.kind == "import":
        return list(export_snapshots(project, loaded, run_id, output, file_format))
    run = _find_run(project, loaded, run_id)
    if loaded.kind == "integration":
        return _integration_files(project, loaded, run, output, file_format)
    return [_extract_file(project, loaded, run, output)]


def _find_run(project: Project, loaded: LoadedConnector, run_id: str) -> RunSummary:
    """The run among the connector's recent ones; `run_id` may be a unique prefix of 8 characters or more."""
    if len(run_id) < 8:
        raise RunNotFound(f"'{run_id}' is not a run id; give at least its first 8 characters (see `history`)")
    matches = [row for row in run_history(project, loaded, limit=500) if row.run_id.startswith(run_id)]
    missing = (
        f"no run '{run_id}' of {loaded.kind} '{loaded.name}'; `connector-pipelines history {loaded.name}` lists them"
    )
    return only_match(matches, run_id, missing)


def _integration_files(
    project: Project, loaded, run: RunSummary, output: Path | None, file_format: str
) -> list[tuple[Path, int]]:
    """The run's data set snapshot and audit files, from the storage (or its archive, wherever the run was)."""
    storage = project_storage(project)
    parts = {"snapshot": DATA_SET} | {f"audit_{c.name}": c.name for c in loaded.spec.integration.configurations}
    sources = {
        name: storage.integration_dir(loaded.name, part) / f"{run.run_id}.parquet" for name, part in parts.items()
    }
    present = {name: path for name, path in sources.items() if storage.fetch(path)}
    if not present:
        raise RunNotFound(
            f"run '{run.run_id}' of integration '{loaded.name}' left no snapshot or audit file that is still kept "
            "(retention may have removed them)"
        )
    folder = output or Path.cwd() / f"{loaded.name}-{run.run_id[:8]}"
    suffix = ".parquet" if file_format == "parquet" else ".csv"
    return [
        (folder / f"{name}{suffix}", export_file(path, folder / f"{name}{suffix}", file_format))
        for name, path in present.items()
    ]


def _extract_file(project: Project, loaded: LoadedConnector, run: RunSummary, output: Path | None):
    """Fetch the run's file back from the first destination it can be read from, and check its checksum."""
    name, expected = run.details.get("file_name"), run.details.get("sha256")
    if not name:
        raise RunNotFound(f"run '{run.run_id}' of extract '{loaded.name}' wrote no file")
    destinations = [d for d in loaded.spec.extract.destinations if project.connections[d.connection].type != "smtp"]
    if not destinations:
        raise RunNotFound(f"extract '{loaded.name}' only emails its file; there is no copy to fetch back")
    destination = destinations[0]
    target = output or Path.cwd() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    client = client_for(project.connections[destination.connection], project.base_dir, destination.connection)
    try:
        client.download(destination.folder, name, target)
    finally:
        client.close()
    with target.open("rb") as fetched:
        digest = hashlib.file_digest(fetched, "sha256").hexdigest()
    if expected and digest != expected:
        raise RunNotFound(
            f"{destination.connection}:{destination.folder}/{name} is not the file run '{run.run_id}' wrote (sha256 "
            f"{digest[:12]}..., the run recorded {expected[:12]}...): a later run replaced it"
        )
    return target, run.details.get("rows")
