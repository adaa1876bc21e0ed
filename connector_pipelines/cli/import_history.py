"""The source data an import's past runs read (kept per run under storage), exported as Parquet or CSV."""

from __future__ import annotations

from pathlib import Path

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from connector_pipelines.spec.loader import LoadedConnector, Project
from connector_pipelines.state.resources import project_storage


class RunNotFound(LookupError):
    pass


def _run_folder(project: Project, loaded: LoadedConnector, run_id: str) -> Path:
    """The run's folder, from the archive when it was kept there; `run_id` may be a unique prefix (the 8 characters
    the UI and `history` show)."""
    storage = project_storage(project)
    base = storage.import_dir(loaded.name)
    if len(run_id) < 8 or "/" in run_id or "\\" in run_id or run_id.startswith("."):
        raise RunNotFound(f"'{run_id}' is not a run id; give at least its first 8 characters (see `history`)")
    here = {path.name for path in base.glob(f"{run_id}*") if path.is_dir()} if base.is_dir() else set()
    archived = (
        {stored.path.relative_to(base).parts[0] for stored in storage.archived(base)} if storage.archive else set()
    )
    matches = sorted(name for name in here | archived if name.startswith(run_id))
    missing = (
        f"no source data kept for run '{run_id}' of import '{loaded.name}' under {storage.where(base)}; "
        f"`connector-pipelines history {loaded.name}` lists the runs"
    )
    folder = base / only_match(matches, run_id, missing)
    storage.fetch_folder(folder)
    return folder


def only_match(matches: list, run_id: str, missing: str):
    """The one run a run id (prefix) names; RunNotFound with `missing` for none, and for several."""
    if not matches:
        raise RunNotFound(missing)
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
        return [(target, export_file(single, target, file_format))]
    if not per_file:
        raise RunNotFound(f"run '{folder.name}' of import '{loaded.name}' read no source data (no file arrived)")
    target_folder = output or Path.cwd() / f"{loaded.name}-{folder.name[:8]}"
    target_folder.mkdir(parents=True, exist_ok=True)
    return [
        (
            target_folder / f"{path.parent.name}{suffix}",
            export_file(path, target_folder / f"{path.parent.name}{suffix}", file_format),
        )
        for path in per_file
    ]


def export_file(snapshot: Path, target: Path, file_format: str) -> int:
    """Copy a Parquet file (a snapshot, an audit file) batch by batch (bounded memory, however large)."""
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
