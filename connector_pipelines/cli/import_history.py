"""What the CLI shows of an import's past runs (from the Dagster instance) and the source data each one read."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from connector_pipelines.factories.naming import TRIGGER_TAG
from connector_pipelines.factories.translator import configured_translator, connector_names
from connector_pipelines.instance import ensure_dagster_home
from connector_pipelines.spec.loader import LoadedConnector, Project
from connector_pipelines.storage import Storage


class RunNotFound(LookupError):
    pass


@dataclass(frozen=True)
class RunRow:
    run_id: str
    started: dt.datetime | None
    trigger: str
    status: str
    counts: dict

    def cells(self) -> tuple:
        started = self.started.strftime("%Y-%m-%d %H:%M:%S") if self.started else ""
        files = self.counts.get("files_imported")
        files_text = "" if files is None else f"{files}+{self.counts.get('files_rejected', 0)}r"
        return (
            self.run_id[:8],
            started,
            self.trigger,
            self.status,
            *(f"{self.counts[name]:,}" if name in self.counts else "" for name in _COUNTS),
            files_text,
        )


_COUNTS = ("rows_read", "inserted", "updated", "rows_rejected")


def import_history(project: Project, loaded: LoadedConnector, limit: int = 20) -> list[RunRow]:
    """The import's runs, newest first, with the counts their materialization recorded."""
    ensure_dagster_home(project.base_dir)
    with dg.DagsterInstance.get() as instance:
        names = connector_names(loaded, project.connections, configured_translator())
        records = instance.get_run_records(filters=dg.RunsFilter(job_name=names.job), limit=limit)
        key = names.key(loaded.spec.import_.target.table)
        metadata: dict[str, dict] = {}
        for event in instance.fetch_materializations(key, limit=limit * 2).records:
            materialization = event.asset_materialization
            if materialization is not None and event.run_id not in metadata:
                metadata[event.run_id] = {
                    name: getattr(value, "value", value) for name, value in materialization.metadata.items()
                }
    rows = []
    for record in records:
        run = record.dagster_run
        started = dt.datetime.fromtimestamp(record.start_time, dt.UTC) if record.start_time else None
        values = metadata.get(run.run_id, {})
        counts = {name: values[name] for name in (*_COUNTS, "files_imported", "files_rejected") if name in values}
        rows.append(RunRow(run.run_id, started, run.tags.get(TRIGGER_TAG, "ui"), run.status.value, counts))
    return rows


def _run_folder(project: Project, loaded: LoadedConnector, run_id: str) -> Path:
    """The run's folder; `run_id` may be a unique prefix (the 8 characters the UI and `history` show)."""
    base = Storage.for_project(project.base_dir).import_dir(loaded.name)
    if len(run_id) < 8 or "/" in run_id or "\\" in run_id or run_id.startswith("."):
        raise RunNotFound(f"'{run_id}' is not a run id; give at least its first 8 characters (see `history`)")
    matches = sorted(path for path in base.glob(f"{run_id}*") if path.is_dir()) if base.is_dir() else []
    if not matches:
        raise RunNotFound(
            f"no source data kept for run '{run_id}' of import '{loaded.name}' under {base}; "
            f"`connector-pipelines history {loaded.name}` lists the runs"
        )
    if len(matches) > 1:
        raise RunNotFound(f"'{run_id}' matches {len(matches)} runs; give more of the run id")
    return matches[0]


def export_snapshots(
    project: Project, loaded: LoadedConnector, run_id: str, output: Path | None, file_format: str
) -> list[tuple[Path, int]]:
    """Write the snapshot(s) of a run as Parquet or CSV; returns (path, rows) per file written.

    A warehouse run has one snapshot; a file run one per file, written into a folder (`output`, or one named after
    the run) under the file's own name.
    """
    folder = _run_folder(project, loaded, run_id)
    single = folder / "snapshot.parquet"
    per_file = sorted((folder / "files").glob("*/snapshot.parquet")) if (folder / "files").is_dir() else []
    suffix = ".parquet" if file_format == "parquet" else ".csv"
    if single.exists():
        target = output or Path.cwd() / f"{loaded.name}-{folder.name[:8]}{suffix}"
        return [(target, _export(single, target, file_format))]
    if not per_file:
        raise RunNotFound(f"run '{folder.name}' of import '{loaded.name}' read no source data (no file arrived)")
    target_folder = output or Path.cwd() / f"{loaded.name}-{folder.name[:8]}"
    target_folder.mkdir(parents=True, exist_ok=True)
    return [
        (
            target_folder / f"{path.parent.name}{suffix}",
            _export(path, target_folder / f"{path.parent.name}{suffix}", file_format),
        )
        for path in per_file
    ]


def _export(snapshot: Path, target: Path, file_format: str) -> int:
    """Copy a snapshot batch by batch (bounded memory, however large the run was)."""
    parquet = pq.ParquetFile(snapshot)
    rows = parquet.metadata.num_rows
    target.parent.mkdir(parents=True, exist_ok=True)
    if file_format == "parquet":
        with pq.ParquetWriter(target, parquet.schema_arrow) as writer:
            for batch in parquet.iter_batches():
                writer.write_batch(batch)
        return rows
    with pa_csv.CSVWriter(target, parquet.schema_arrow) as writer:
        for batch in parquet.iter_batches():
            writer.write_batch(batch)
    return rows
