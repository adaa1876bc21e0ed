"""Run one import: rows from a warehouse query or one delivered file, mapped, checked and upserted into a table.

    mapping, upsert = build_upsert(connector.import_, target_url)
    report = run_warehouse_import(connector, SqlSource(url), target_url, state, storage_dir, run_id)
    report = import_file(connector, FolderClient(root), "orders_2024-03-31.csv", target_url, state, storage, run_id)

Per run, under `storage_dir/<connector>/<run_id>/`:
- `snapshot.parquet`: the source rows exactly as read (before mapping), for audit and replay.
- `rejections.parquet` (only when a row was rejected): row number (1-based, in read order), the key when known,
  and the reason (a mapping failure such as a bad date, or a broken row-level expectation).

- `staged.parquet` while the run lasts: the mapped rows that passed, waiting for the gate (removed afterwards).

Rows flow in two passes. Pass one, the whole read: source batch -> snapshot -> ArrowMapper (rows failing a rule
are rejected) -> expectations (GX, per mapped batch, before row rejection so that `mostly` judges the data as
delivered) -> row-level rejections -> the staged file. Then the gate: every expectation is judged over the whole
read (`combine_results`: counts summed, `mostly` applied to the sums, `unique` across batches), and when a
blocking one (severity error, the default) failed nothing is merged: the target is left exactly as it was and the
watermark does not move (`ImportReport.blocked` says why). A failing `severity: warn` expectation is reported and
the rows merge. Pass two, only past the gate: the staged rows -> `TableUpsert.write` (one transaction per batch
of `target.batch_rows` rows).

Warehouse imports are incremental when `updated_at` is set (`imports/source_query.py`): rows with `updated_at >=
watermark - lookback` are read (the name quoted, the value bound), so rows committed late with an equal or
slightly earlier `updated_at` are picked up by the next run. Rows read again in that overlap are merged like the
rest: one row per key, the one with the newest `updated_at` (the last read on a tie), through the target's own
conflict rule, so they are neither duplicated nor allowed to overwrite a newer value. The new watermark (the
highest `updated_at` read, as text; never lower than the previous one) is saved only after the merge succeeded.

`import_file` reads as its stages: name check, download, duplicate check (by checksum), parse to the snapshot,
load (map, expectations, upsert), set aside (archive, or quarantine with a report), record the outcome.
File imports parse the whole file into the snapshot before writing a single row, so a malformed row anywhere in
the file quarantines it with nothing loaded; so does a failed blocking expectation. Only a failure of the target
itself (UpsertError: a batch refused by the database) can leave earlier batches committed; the file is then
quarantined and the reason says so.

The report beside a quarantined file is for the partner who sent it: the file, the run, and why, in terms of the
file's rows and values. It never holds the database's own message, SQL, table names or addresses: those go to
`FileOutcome.reason` (the run's log, metadata and import state), for the operator only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connector_pipelines.imports.expectations import (
    ExpectationResult,
    blocking_failures,
    combine_results,
    describe_failure,
    expectations_from_specs,
    row_rejections,
    run_expectations,
)
from connector_pipelines.imports.file_reader import FileRejected, read_file, read_limits
from connector_pipelines.imports.files import check_file_name
from connector_pipelines.imports.lookups import field_rules, import_lookups
from connector_pipelines.imports.source_query import (
    SINCE_PARAMETER,
    incremental_query,
    later_watermark,
    read_from,
    strip_query_end,
)
from connector_pipelines.imports.upsert import (
    ArrowMapper,
    TableUpsert,
    TargetColumn,
    UpsertConfigError,
    UpsertError,
    UpsertSettings,
    combine_batches,
)
from connector_pipelines.mapping.engine import CompiledMapping, MappingError, TargetField
from connector_pipelines.mapping.suggest import did_you_mean
from connector_pipelines.progress import Pacer
from connector_pipelines.spec.imports import ImportConnector, ImportSpec
from connector_pipelines.state.import_state import ImportState
from connector_pipelines.transports.base import FileSource
from connector_pipelines.transports.sql import SqlSource

_HASH_CHUNK = 1 << 20
# The source's updated_at of each staged row (warehouse imports), for one row per key: dropped before the upsert.
_SOURCE_TIME = "__cp_source_updated_at"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileOutcome:
    """What became of one delivered file: imported (archived), rejected (quarantined) or duplicate (archived)."""

    name: str
    status: str  # imported | rejected | duplicate
    reason: str | None = None  # for the operator: may name the table and quote the database
    partner_reason: str | None = None  # for the partner's report when it must differ from `reason`

    @property
    def report_reason(self) -> str | None:
        """What the partner's report says."""
        return self.partner_reason if self.partner_reason is not None else self.reason


@dataclass
class ImportReport:
    """What one import run did. `rows_rejected` counts mapping failures and row-level expectation failures."""

    rows_read: int = 0
    rows_rejected: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged_or_older: int = 0
    skipped_new: int = 0
    added_columns: list[str] = field(default_factory=list)
    watermark: str | None = None  # warehouse: the watermark after this run (saved in the state)
    snapshot_path: Path | None = None
    rejections_path: Path | None = None  # None when no row was rejected
    expectation_results: list[ExpectationResult] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # failed blocking expectations, described; nothing merged
    merged: bool = False  # the gate passed and the rows went to the target
    seconds: float = 0.0
    file: FileOutcome | None = None  # file imports only


# --------------------------------------------------------------------------------------------------
# Mapping and target


def build_upsert(
    spec: ImportSpec, target_url, open_source: Callable[[str], SqlSource] | None = None
) -> tuple[CompiledMapping, TableUpsert]:
    """The compiled mapping and the (unopened) upsert of an import spec.

    `foreign_key` is mapped as text (a key value copied as it is, leading zeros kept; no arithmetic is done on
    it) and written as the upsert's `foreign_key` column type, whose Arrow type follows the values, so the
    database converts it to the referenced column's type. Key fields are required: a row without a key fails
    in the mapping (with a reason) instead of failing a whole batch in the database. The spec's lookups and its
    foreign keys' references are read in the target's database (`target_url`: an engine or a URL) or through
    `open_source(connection)` (`imports.lookups`).
    """
    rules = field_rules(spec.mapping)
    fields: list[TargetField] = []
    columns: list[TargetColumn] = []
    for rule in spec.mapping:
        mapped_type = "text" if rule.type == "foreign_key" else rule.type
        fields.append(TargetField(rule.target, mapped_type, required=rule.target in spec.target.key))
        columns.append(TargetColumn(rule.target, rule.type))
    target = spec.target
    settings = UpsertSettings(
        table=target.table,
        key=tuple(target.key),
        allow_new_records=target.allow_new_records,
        most_recent_column=target.timestamp if target.resolve_conflicts == "most_recent" else None,
        allow_new_attributes=target.allow_new_attributes,
    )
    upsert = TableUpsert(target_url, settings, columns)
    if not spec.lookups and not any(rule.references for rule in spec.mapping):
        return CompiledMapping(rules, fields), upsert
    try:
        lookups = import_lookups(spec, upsert.engine, open_source)
    except BaseException:
        upsert.close()
        raise
    return CompiledMapping(rules, fields, lookups), upsert


# --------------------------------------------------------------------------------------------------
# The shared pipeline: snapshot, map, check, collect rejections


class SnapshotWriter:
    """Writes source batches to one Parquet file as they are read.

    The schema is the first batch's, with null-typed columns (a column empty in the first batch) widened to
    text, so that later batches that do hold values can be cast to it.
    """

    def __init__(self, path: Path):
        self.path = path
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self._writer is None:
            self._schema = pa.schema(
                [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in batch.schema]
            )
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, self._schema)
        if batch.schema != self._schema:
            batch = batch.cast(self._schema)
        self._writer.write_batch(batch)
        return batch

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        elif not self.path.exists():
            # Nothing was read: an empty snapshot still says so (and keeps snapshot_path valid).
            self.path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({}), self.path)


class ImportPipeline:
    """Maps and checks source batches on their way to the upsert, keeping count of what it saw."""

    def __init__(self, spec: ImportSpec, mapping: CompiledMapping, upsert: TableUpsert, source_time: str | None = None):
        self.mapper = ArrowMapper(mapping, upsert.columns)
        self.expectations = expectations_from_specs(spec.expectations)
        self.source_time = source_time  # the source's updated_at column: staged beside the rows (one per key)
        self.key = list(spec.target.key)
        # Source columns copied into key fields: the key of a row that fails to map is read from them.
        self.key_sources = {rule.target: rule.source for rule in spec.mapping if rule.target in self.key}
        self.rows_read = 0
        self.rejected: list[tuple[int, str | None, str]] = []  # (row number, key, reason)
        self.results: list[list[ExpectationResult]] = []
        # Per unique expectation (by position), its column in every mapped batch: judged over the whole read.
        self.unique_values: dict[int, list[pd.Series]] = {
            position: [] for position, item in enumerate(self.expectations) if item.kind == "unique"
        }

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch's rows that mapped and kept every row-level expectation, as a batch for the staged file
        (with the source's updated_at in `_SOURCE_TIME` when the import has one)."""
        offset = self.rows_read
        self.rows_read += batch.num_rows
        mapped, failures = self.mapper.map(batch)
        failed = {row for row, _ in failures}
        for row, reason in failures:
            self.rejected.append((offset + row + 1, self._source_key(batch, row), reason))
        # Row numbers of the mapped rows in the source batch, to report rejections by source row.
        positions = [row for row in range(batch.num_rows) if row not in failed]
        if not self.expectations or mapped.num_rows == 0:
            return self._with_source_time(mapped, batch, positions)
        frame = mapped.to_pandas()
        self.results.append(run_expectations(frame, self.expectations))
        for position, columns in self.unique_values.items():
            name = self.expectations[position].column
            if name in frame.columns:
                columns.append(frame[name])
        reasons = row_rejections(frame, self.expectations)
        if not any(reason is not None for reason in reasons):
            return self._with_source_time(mapped, batch, positions)
        keys = mapped.select(self.key).to_pylist()
        for index, reason in enumerate(reasons):
            if reason is not None:
                self.rejected.append((offset + positions[index] + 1, _key_text(keys[index], self.key), reason))
        kept = [reason is None for reason in reasons]
        accepted = mapped.filter(pa.array(kept, pa.bool_()))
        return self._with_source_time(accepted, batch, [row for row, keep in zip(positions, kept) if keep])

    def _with_source_time(self, rows: pa.RecordBatch, batch: pa.RecordBatch, positions: list[int]) -> pa.RecordBatch:
        if self.source_time is None or self.source_time not in batch.schema.names:
            return rows
        times = batch.column(self.source_time).take(pa.array(positions, pa.int64()))
        return rows.append_column(_SOURCE_TIME, times)

    def _source_key(self, batch: pa.RecordBatch, row: int) -> str | None:
        sources = [self.key_sources.get(name) for name in self.key]
        if any(source is None or source not in batch.schema.names for source in sources):
            return None  # a key computed by an expression or constant: not known for a row that failed
        values = {name: batch.column(source)[row].as_py() for name, source in zip(self.key, sources, strict=True)}
        return _key_text(values, self.key)

    def aggregated_results(self) -> list[ExpectationResult]:
        """Every expectation judged over the whole read (see `combine_results`)."""
        unique = {
            position: pd.concat(columns, ignore_index=True)
            for position, columns in self.unique_values.items()
            if columns
        }
        return combine_results(self.expectations, self.results, unique)

    def write_rejections(self, path: Path) -> Path | None:
        if not self.rejected:
            return None
        rows, keys, reasons = zip(*sorted(self.rejected, key=lambda item: item[0]), strict=True)
        table = pa.table(
            {
                "row": pa.array(rows, pa.int64()),
                "key": pa.array(keys, pa.string()),
                "reason": pa.array(reasons, pa.string()),
            }
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return path


def _key_text(values: dict, key: Sequence[str]) -> str | None:
    if all(values.get(name) is None for name in key):
        return None
    if len(key) == 1:
        return str(values[key[0]])
    return ", ".join(f"{name}={values.get(name)}" for name in key)


def run_paths(storage_dir: Path, connector: ImportConnector, run_id: str) -> tuple[Path, Path]:
    """A run's source snapshot and rejections, in its folder of the storage (every source kind's)."""
    folder = Path(storage_dir) / connector.name / run_id
    return folder / "snapshot.parquet", folder / "rejections.parquet"


def staged_path_for(snapshot_path: Path) -> Path:
    """The mapped rows that wait for the gate, beside the snapshot (removed after the merge)."""
    return snapshot_path.with_name("staged.parquet")


def gate_and_merge(
    spec: ImportSpec,
    pipeline: ImportPipeline,
    upsert: TableUpsert,
    staged_path: Path,
    rejections_path: Path,
    report: ImportReport,
) -> None:
    """Judge every expectation over the whole read; merge the staged rows only when no blocking one failed.

    Fills `report` (counts, results, `blocked` or `merged`). UpsertError propagates, with the report filled
    from the batches committed before it.
    """
    results = pipeline.aggregated_results()
    blocked = blocking_failures(results)
    if blocked:
        upsert.close()  # never opened by `with`, but the engine it made from the URL is ours to dispose of
        report.blocked = [describe_failure(result) for result in blocked]
        _fill(report, pipeline, None, rejections_path, results)
        return
    keep = _newest_per_key(staged_path, list(spec.target.key)) if pipeline.source_time else None
    batches = _staged_batches(staged_path, spec.target.batch_rows, keep)
    try:
        with upsert:
            result = upsert.write(combine_batches(batches, spec.target.batch_rows))
    except UpsertError as exc:
        _fill(report, pipeline, exc.result, rejections_path, results)
        raise
    report.merged = True
    _fill(report, pipeline, result, rejections_path, results)


def _newest_per_key(path: Path, key: list[str]) -> pa.Array | None:
    """Which staged rows to merge (a mask) when a key appears more than once: per key the row with the newest
    source updated_at, the last read on a tie (a NULL time is the oldest). None when every key is there once."""
    parquet = pq.ParquetFile(path)
    try:
        if _SOURCE_TIME not in parquet.schema_arrow.names:
            return None
        table = parquet.read(columns=[*key, _SOURCE_TIME])
    finally:
        parquet.close()
    if table.group_by(key, use_threads=False).aggregate([]).num_rows == table.num_rows:
        return None
    numbered = table.append_column("__cp_row", pa.array(range(table.num_rows), pa.int64()))
    # Newest first within a key (NULL times sort last, so they lose), the last read first on a tie.
    ordered = numbered.sort_by(
        [*((name, "ascending") for name in key), (_SOURCE_TIME, "descending"), ("__cp_row", "descending")]
    )
    newest = ordered.group_by(key, use_threads=False).aggregate([("__cp_row", "first")]).column("__cp_row_first")
    return pc.is_in(pa.array(range(table.num_rows), pa.int64()), value_set=newest.combine_chunks())


def _staged_batches(path: Path, batch_rows: int, keep: pa.Array | None) -> Iterator[pa.RecordBatch]:
    """The staged rows as upsert batches: without the source time, and only the rows `keep` marks (if given)."""
    offset = 0
    for batch in _snapshot_batches(path, batch_rows):
        if keep is not None:
            mask = keep.slice(offset, batch.num_rows)
            offset += batch.num_rows
            batch = batch.filter(mask)
        if _SOURCE_TIME in batch.schema.names:
            batch = batch.drop_columns([_SOURCE_TIME])
        yield batch


def _fill(
    report: ImportReport, pipeline: ImportPipeline, result, rejections_path: Path, results: list[ExpectationResult]
) -> None:
    report.rows_read = pipeline.rows_read
    report.rows_rejected = len(pipeline.rejected)
    report.rejections_path = pipeline.write_rejections(rejections_path)
    report.expectation_results = results
    if result is not None:
        report.inserted = result.inserted
        report.updated = result.updated
        report.unchanged_or_older = result.unchanged_or_older
        report.skipped_new = result.skipped_new
        report.added_columns = list(result.added_columns)


# --------------------------------------------------------------------------------------------------
# Warehouse


def check_source_columns(mapping: CompiledMapping, columns: Sequence[str], where: str) -> None:
    """Raise MappingError naming each column the mapping reads that `columns` lacks (with a did-you-mean)."""
    missing = sorted(mapping.source_columns - set(columns))
    if missing:
        raise MappingError(
            [
                f"the mapping reads column '{name}', which {where} does not have{did_you_mean(name, columns)}; "
                f"its columns: {', '.join(columns)}"
                for name in missing
            ]
        )


def _watermark_text(value: object) -> str:
    """A watermark as text the database compares with the column: ISO with a space, as SQL writes timestamps."""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def run_warehouse_import(
    connector: ImportConnector,
    source: SqlSource,
    target_url: str,
    state: ImportState,
    storage_dir: Path,
    run_id: str,
    full: bool = False,
    logger: logging.Logger | Any = log,
    open_source: Callable[[str], SqlSource] | None = None,
) -> ImportReport:
    """Read the query (from the watermark less the lookback, unless `full` or none is saved), map, check, and merge
    when no blocking expectation failed. Logs the rows read so far at a steady pace (a long read shows moving).

    Raises UpsertError / UpsertConfigError / MappingError as they come; the watermark is then left as it was, and
    so it is when the gate blocked the merge (`report.blocked`).
    """
    started = time.perf_counter()
    spec = connector.import_
    warehouse = spec.source.warehouse
    if warehouse is None:
        raise ValueError(f"connector '{connector.name}' imports from {spec.source.kind}, not from a warehouse")
    previous = state.watermark(connector.name) if warehouse.updated_at else None
    if warehouse.updated_at and previous is not None and not full:
        quoted = source.engine.dialect.identifier_preparer.quote(warehouse.updated_at)
        since = read_from(previous, warehouse.lookback_delta)
        query, params = incremental_query(warehouse.query, quoted), {SINCE_PARAMETER: since}
    else:
        # Without what follows its last token: a driver or COPY wrapping it must not meet a `; -- comment`.
        query, params = strip_query_end(warehouse.query), {}

    snapshot_path, rejections_path = run_paths(storage_dir, connector, run_id)
    staged_path = staged_path_for(snapshot_path)
    snapshot, staged = SnapshotWriter(snapshot_path), SnapshotWriter(staged_path)
    mapping, upsert = build_upsert(spec, target_url, open_source)
    pipeline = ImportPipeline(spec, mapping, upsert, source_time=warehouse.updated_at)
    highest: object = None  # the largest updated_at seen
    report = ImportReport(snapshot_path=snapshot_path)
    pacer, batches_read = Pacer(), 0
    try:
        try:
            checked = False
            for batch in source.stream_batches(query, params):
                if not checked:
                    # Before anything is staged: a mapping that reads a column the query does not return would
                    # reject every row, so the import does not run at all.
                    check_source_columns(mapping, batch.schema.names, "the query's result")
                    checked = True
                if batch.num_rows == 0:
                    continue
                batch = snapshot.write(batch)
                if warehouse.updated_at and warehouse.updated_at in batch.schema.names:
                    top = pc.max(batch.column(warehouse.updated_at)).as_py()
                    if top is not None and (highest is None or top > highest):
                        highest = top
                rows = pipeline.process(batch)
                if rows.num_rows:
                    staged.write(rows)
                batches_read += 1
                if pacer.due():
                    read, plural = pipeline.rows_read, "es" if batches_read != 1 else ""
                    logger.info(
                        f"{connector.name}: {read:,} rows read in {batches_read:,} batch{plural}, "
                        f"{len(pipeline.rejected):,} rejected so far; {read / pacer.elapsed():,.0f} rows/s"
                    )
        except BaseException:
            upsert.close()
            raise
        finally:
            snapshot.close()
            staged.close()
        logger.info(f"{connector.name}: {pipeline.rows_read:,} rows read; checking the expectations, then merging")
        gate_and_merge(spec, pipeline, upsert, staged_path, rejections_path, report)
    finally:
        staged_path.unlink(missing_ok=True)

    report.watermark = previous
    if report.merged:
        report.watermark = later_watermark(previous, _watermark_text(highest) if highest is not None else None)
        if warehouse.updated_at and report.watermark != previous:
            state.set_watermark(connector.name, report.watermark, run_id)  # only now: the whole merge succeeded
    report.seconds = time.perf_counter() - started
    return report


# --------------------------------------------------------------------------------------------------
# Files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _refused_report_name(name: str) -> str:
    """A safe name for the report on a file whose own name may not be used (derived from a hash of the name)."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"refused-name-{digest}.report.txt"


def _report_text(name: str, run_id: str, reason: str) -> str:
    return f"file: {name!r}\nrun: {run_id}\nstatus: rejected\nreason: {reason}\n"


def _partner_reason(reason: str, private: Sequence[Path], name: str) -> str:
    """`reason` with the platform's own paths (the staging copy a parser may quote) replaced by the file's name."""
    for path in sorted((str(p) for p in private), key=len, reverse=True):
        reason = reason.replace(path, name)
    return reason


def _unmappable(exc: Exception, run_id: str) -> tuple[str, str]:
    """(operator's reason, partner's reason) for a file whose values failed to map other than row by row."""
    partner = (
        "nothing was loaded: values in the file could not be converted. "
        f"The operator has the details of run {run_id}; check the values against the agreed format, or ask them."
    )
    return f"nothing was loaded: mapping the rows failed: {type(exc).__name__}: {exc}", partner


def _refused_by_target(exc: UpsertError, rows: int, run_id: str) -> tuple[str, str]:
    """(operator's reason, partner's reason) for a file whose rows the target database refused."""
    committed = exc.result.rows
    loaded = (
        f"{committed:,} of its {rows:,} rows were loaded before the failure (loading the file again updates them)"
        if committed
        else "nothing from it was loaded"
    )
    partner = (
        f"the rows could not be written to the destination: the database refused them ({loaded}). "
        f"The operator has the details of run {run_id}; check the values against the agreed format, or ask them."
    )
    return f"the target refused the rows: {exc}", partner


def import_file(
    connector: ImportConnector,
    source: FileSource,
    name: str,
    target_url: str,
    state: ImportState,
    storage_dir: Path,
    run_id: str,
    modified: dt.datetime | None = None,
    open_source: Callable[[str], SqlSource] | None = None,
) -> ImportReport:
    """Import one delivered file: archive it when loaded or a duplicate, quarantine it (with a report) when not.

    The file is downloaded to `storage_dir/<connector>/<run_id>/staging/`, parsed whole into the snapshot (so a
    malformed row quarantines it before anything is written), then upserted from the snapshot. The outcome is
    recorded in `state` (by name and checksum). Configuration problems (UpsertConfigError, MappingError) and
    transport failures are raised and leave the file where it is, since they are not the file's fault.
    """
    delivered = _DeliveredFile(connector, source, name, state, run_id, modified)
    unsafe = check_file_name(name)
    if unsafe is not None:
        return delivered.finish(delivered.refuse_unsafe_name(unsafe))

    spec = connector.import_
    # One folder per file: a run may import several files.
    snapshot_path, rejections_path = run_paths(storage_dir, connector, f"{run_id}/files/{name}")
    with _staging_folder(snapshot_path.parent / "staging") as staging:
        download = delivered.download(staging)
        duplicate = delivered.seen_before(download)
        if duplicate is not None:
            return delivered.conclude(duplicate, download, rows=0)

        mapping, upsert = build_upsert(spec, target_url, open_source)
        refused = _parse_to_snapshot(download.path, spec, delivered.handling, mapping, snapshot_path)
        if refused is not None:
            upsert.close()  # never opened by `with`, but the engine it made from the URL is ours to dispose of
            return delivered.conclude(FileOutcome(name, "rejected", refused), download, rows=None)
        delivered.report.snapshot_path = snapshot_path

        refused = _load(spec, mapping, upsert, snapshot_path, rejections_path, delivered.report, run_id)
        rows = delivered.report.rows_read
        if refused is not None:
            reason, partner = refused
            return delivered.conclude(FileOutcome(name, "rejected", reason, partner), download, rows=rows)
        return delivered.conclude(FileOutcome(name, "imported", None), download, rows=rows)


@dataclass(frozen=True)
class FileHandling:
    """Where a delivered file is read from and set aside afterwards, and how it is parsed.

    A files source names its folders; email attachments lie at the root of the connector's inbox, with the
    default archive and quarantine folders.
    """

    folder: str
    archive_folder: str
    quarantine_folder: str
    format: str | None  # None: from the file's extension
    csv_delimiter: str | None
    csv_header: bool

    def folder_for(self, status: str) -> str:
        """Where a file goes once its outcome is known: the archive when imported or a duplicate, else quarantine."""
        return self.quarantine_folder if status == "rejected" else self.archive_folder


def file_handling(spec: ImportSpec) -> FileHandling:
    """The folders and parse options of an import's delivered files (files or email source)."""
    files, email = spec.source.files, spec.source.email
    if files is not None:
        return FileHandling(
            files.folder,
            files.archive_folder,
            files.quarantine_folder,
            files.format,
            files.csv.delimiter,
            files.csv.header,
        )
    if email is not None:
        return FileHandling("", "archive", "quarantine", email.format, email.csv.delimiter, email.csv.header)
    return FileHandling("", "archive", "quarantine", None, None, True)


@dataclass(frozen=True)
class _Download:
    """The local copy of a delivered file, with what identifies its content."""

    path: Path
    sha256: str
    size: int


@contextmanager
def _staging_folder(path: Path) -> Iterator[Path]:
    """A folder for the downloaded copy, removed with it however the import ends."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class _DeliveredFile:
    """One delivered file of one run: the stages of `import_file` that act on the file in its folder, on its record
    in the import state, and on the run's report."""

    def __init__(
        self,
        connector: ImportConnector,
        source: FileSource,
        name: str,
        state: ImportState,
        run_id: str,
        modified: dt.datetime | None,
    ):
        self.started = time.perf_counter()
        self.connector_name = connector.name
        self.source = source
        self.name = name
        self.handling = file_handling(connector.import_)
        self.state = state
        self.run_id = run_id
        self.modified = modified
        self.report = ImportReport()
        self.private_paths: list[Path] = []  # local paths of ours a parser's message may quote

    def refuse_unsafe_name(self, problem: str) -> FileOutcome:
        """Report and record a file whose name may not be used; the file itself is left in place."""
        # The name cannot be handed to move() (it could lead out of the folder): report beside the quarantine.
        reason = f"file name refused: {problem}; the file was left in place (its name is unsafe to move)"
        report_name = _refused_report_name(self.name)
        self.source.write_text(
            self.handling.quarantine_folder, report_name, _report_text(self.name, self.run_id, reason)
        )
        outcome = FileOutcome(self.name, "rejected", reason)
        self.record_outcome(outcome, None, rows=None)
        return outcome

    def download(self, staging: Path) -> _Download:
        """Copy the file into `staging` and fingerprint it."""
        local = staging / self.name
        self.private_paths += [local, staging]
        self.source.download(self.handling.folder, self.name, local)
        return _Download(local, _sha256(local), local.stat().st_size)

    def seen_before(self, download: _Download) -> FileOutcome | None:
        """The duplicate outcome when a file with the same bytes was imported before, else None."""
        earlier = self.state.file_with_checksum(self.connector_name, download.sha256)
        if earlier is None:
            return None
        return FileOutcome(
            self.name, "duplicate", f"same content as '{earlier.name}', imported in run {earlier.run_id}"
        )

    def conclude(self, outcome: FileOutcome, download: _Download, rows: int | None) -> ImportReport:
        """The last stages: set the file aside, record its outcome, finish the report."""
        self.set_aside(outcome)
        self.record_outcome(outcome, download, rows)
        return self.finish(outcome)

    def set_aside(self, outcome: FileOutcome) -> None:
        """Move the file to the archive or the quarantine; a quarantined file gets a report beside it."""
        destination = self.handling.folder_for(outcome.status)
        # The name it got there: folder and SFTP number a taken name rather than replace the file.
        moved = self.source.move(self.handling.folder, self.name, destination) or self.name
        if outcome.status == "rejected":
            reason = _partner_reason(outcome.report_reason or "", self.private_paths, self.name)
            report = _report_text(self.name, self.run_id, reason)
            self.source.write_text(destination, f"{moved}.report.txt", report)

    def record_outcome(self, outcome: FileOutcome, download: _Download | None, rows: int | None) -> None:
        """Remember the file by name and checksum; `download` is None for a file refused by its name (never read)."""
        self.state.record_file(
            self.connector_name,
            name=self.name,
            sha256=download.sha256 if download is not None else "",
            size=download.size if download is not None else 0,
            modified=self.modified,
            status=outcome.status,
            reason=outcome.reason,
            rows=rows,
            run_id=self.run_id,
        )

    def finish(self, outcome: FileOutcome) -> ImportReport:
        """The run's report, with the file's outcome and the time the import took."""
        self.report.file = outcome
        self.report.seconds = time.perf_counter() - self.started
        return self.report


def _parse_to_snapshot(
    local: Path, spec: ImportSpec, handling: FileHandling, mapping: CompiledMapping, snapshot_path: Path
) -> str | None:
    """Parse the whole file into the snapshot before any row is written; why the file was refused, or None."""
    snapshot = SnapshotWriter(snapshot_path)
    try:
        reading = read_file(
            local,
            format=handling.format,
            expected_columns=sorted(mapping.source_columns),
            csv_delimiter=handling.csv_delimiter,
            csv_header=handling.csv_header,
            batch_rows=spec.target.batch_rows,
            limits=read_limits(spec),
        )
        with reading:
            for batch in reading.batches():
                snapshot.write(batch)
    except FileRejected as rejected:
        snapshot.close()
        return rejected.reason
    snapshot.close()
    return None


def _load(
    spec: ImportSpec,
    mapping: CompiledMapping,
    upsert: TableUpsert,
    snapshot_path: Path,
    rejections_path: Path,
    report: ImportReport,
    run_id: str,
) -> tuple[str, str | None] | None:
    """Map, check (expectations) and, past the gate, upsert the snapshot's rows, filling `report`; None when
    loaded, else (why, for the operator; the partner's wording or None when the same). A refusal by the target
    (UpsertError) may leave the batches before it committed; the report counts them."""
    pipeline = ImportPipeline(spec, mapping, upsert)
    staged_path = staged_path_for(snapshot_path)
    staged = SnapshotWriter(staged_path)
    try:
        try:
            for batch in _snapshot_batches(snapshot_path, spec.target.batch_rows):
                try:
                    rows = pipeline.process(batch)
                except (MappingError, UpsertConfigError):
                    raise  # the mapping or the table is wrong, not this file
                except Exception as exc:
                    # Anything else while mapping this file's values is the file's: quarantined (nothing merged
                    # yet), not failing every run that tries it.
                    upsert.close()
                    return _unmappable(exc, run_id)
                if rows.num_rows:
                    staged.write(rows)
        except BaseException:
            upsert.close()
            raise
        finally:
            staged.close()
        try:
            gate_and_merge(spec, pipeline, upsert, staged_path, rejections_path, report)
        except UpsertError as exc:
            return _refused_by_target(exc, pipeline.rows_read, run_id)
    finally:
        staged_path.unlink(missing_ok=True)
    if report.blocked:
        reason = "nothing was loaded: the rows fail a blocking expectation: " + "; ".join(report.blocked)
        return reason, None
    return None


def _snapshot_batches(path: Path, batch_rows: int) -> Iterator[pa.RecordBatch]:
    parquet = pq.ParquetFile(path)
    try:
        yield from parquet.iter_batches(batch_size=batch_rows)
    finally:
        parquet.close()
