"""Run one import: rows from a warehouse query or one delivered file, mapped, checked and upserted into a table.

    mapping, upsert = build_upsert(connector.import_, target_url)
    report = run_warehouse_import(connector, SqlSource(url), target_url, state, storage_dir, run_id)
    report = import_file(connector, FolderClient(root), "orders_2024-03-31.csv", target_url, state, storage, run_id)

Per run, under `storage_dir/<connector>/<run_id>/`:
- `snapshot.parquet`: the source rows exactly as read (before mapping), for audit and replay.
- `rejections.parquet` (only when a row was rejected): row number (1-based, in read order), the key when known,
  and the reason (a mapping failure such as a bad date, or a broken row-level expectation).

Rows flow: source batch -> snapshot -> ArrowMapper (rows failing a rule are rejected) -> row-level expectations
(`row_rejections`; rejected rows are removed) -> `TableUpsert.write` (one transaction per batch of
`target.batch_rows` rows). Expectation results are computed per mapped batch (before row rejection, so that
`mostly` judges the data as delivered) and aggregated: an expectation succeeds only if it succeeded in every batch.

Warehouse imports are incremental when `updated_at` is set: the query is wrapped as
`SELECT * FROM (<query>) q WHERE q."<updated_at>" > :watermark` (the watermark bound, the name quoted). The new
watermark (the highest `updated_at` read, as text) is saved only after the whole write succeeded, so a failed run
is read again from the same point next time.

File imports parse the whole file into the snapshot before writing a single row, so a malformed row anywhere in
the file quarantines it with nothing loaded. Only a failure of the target itself (UpsertError: a batch refused by
the database) can leave earlier batches committed; the file is then quarantined and the reason says so.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connector_pipelines.imports.expectations import Expectation, ExpectationResult, row_rejections, run_expectations
from connector_pipelines.imports.file_reader import FileRejected, read_file
from connector_pipelines.imports.files import check_file_name
from connector_pipelines.imports.upsert import (
    ArrowMapper,
    TableUpsert,
    TargetColumn,
    UpsertError,
    UpsertSettings,
    combine_batches,
)
from connector_pipelines.mapping.engine import NO_CONSTANT, CompiledMapping, FieldRule, MappingError, TargetField
from connector_pipelines.mapping.suggest import did_you_mean
from connector_pipelines.spec.imports import ImportConnector, ImportSpec
from connector_pipelines.state.import_state import ImportState
from connector_pipelines.transports.base import FileSource
from connector_pipelines.transports.sql_source import SqlSource, strip_trailing_semicolon

SAMPLE_SIZE = 10
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileOutcome:
    """What became of one delivered file: imported (archived), rejected (quarantined) or duplicate (archived)."""

    name: str
    status: str  # imported | rejected | duplicate
    reason: str | None = None


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
    seconds: float = 0.0
    file: FileOutcome | None = None  # file imports only


# --------------------------------------------------------------------------------------------------
# Mapping and target


def build_upsert(spec: ImportSpec, target_url: str) -> tuple[CompiledMapping, TableUpsert]:
    """The compiled mapping and the (unopened) upsert of an import spec.

    `foreign_key` is mapped as text (a key value copied as it is, leading zeros kept; no arithmetic is done on
    it) and written as the upsert's `foreign_key` column type, whose Arrow type follows the values, so the
    database converts it to the referenced column's type. Key fields are required: a row without a key fails
    in the mapping (with a reason) instead of failing a whole batch in the database.
    """
    rules: list[FieldRule] = []
    fields: list[TargetField] = []
    columns: list[TargetColumn] = []
    for rule in spec.mapping:
        constant = rule.constant if "constant" in rule.model_fields_set else NO_CONSTANT
        rules.append(
            FieldRule(
                target=rule.target,
                source=rule.source,
                expression=rule.expression,
                constant=constant,
                parse=rule.parse,
                default=rule.default,
                note=rule.note,
            )
        )
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
    return CompiledMapping(rules, fields), TableUpsert(target_url, settings, columns)


def _expectations(spec: ImportSpec) -> list[Expectation]:
    return [
        Expectation(
            kind=item.expect,
            column=item.column,
            values=tuple(item.values),
            pattern=item.pattern,
            min=item.min,
            max=item.max,
            mostly=item.mostly,
        )
        for item in spec.expectations
    ]


# --------------------------------------------------------------------------------------------------
# The shared pipeline: snapshot, map, check, collect rejections


class _Snapshot:
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


class _Pipeline:
    """Maps and checks source batches on their way to the upsert, keeping count of what it saw."""

    def __init__(self, spec: ImportSpec, mapping: CompiledMapping, upsert: TableUpsert):
        self.mapper = ArrowMapper(mapping, upsert.columns)
        self.expectations = _expectations(spec)
        self.key = list(spec.target.key)
        # Source columns copied into key fields: the key of a row that fails to map is read from them.
        self.key_sources = {rule.target: rule.source for rule in spec.mapping if rule.target in self.key}
        self.rows_read = 0
        self.rejected: list[tuple[int, str | None, str]] = []  # (row number, key, reason)
        self.results: list[list[ExpectationResult]] = []

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch's rows that mapped and kept every row-level expectation, as an upsert batch."""
        offset = self.rows_read
        self.rows_read += batch.num_rows
        mapped, failures = self.mapper.map(batch)
        failed = {row for row, _ in failures}
        for row, reason in failures:
            self.rejected.append((offset + row + 1, self._source_key(batch, row), reason))
        if not self.expectations or mapped.num_rows == 0:
            return mapped
        # Row numbers of the mapped rows in the source batch, to report rejections by source row.
        positions = [row for row in range(batch.num_rows) if row not in failed]
        frame = mapped.to_pandas()
        self.results.append(run_expectations(frame, self.expectations))
        reasons = row_rejections(frame, self.expectations)
        if not any(reason is not None for reason in reasons):
            return mapped
        keys = mapped.select(self.key).to_pylist()
        for index, reason in enumerate(reasons):
            if reason is not None:
                self.rejected.append((offset + positions[index] + 1, _key_text(keys[index], self.key), reason))
        return mapped.filter(pa.array([reason is None for reason in reasons], pa.bool_()))

    def _source_key(self, batch: pa.RecordBatch, row: int) -> str | None:
        sources = [self.key_sources.get(name) for name in self.key]
        if any(source is None or source not in batch.schema.names for source in sources):
            return None  # a key computed by an expression or constant: not known for a row that failed
        values = {name: batch.column(source)[row].as_py() for name, source in zip(self.key, sources, strict=True)}
        return _key_text(values, self.key)

    def aggregated_results(self) -> list[ExpectationResult]:
        return _aggregate(self.expectations, self.results)

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


def _aggregate(
    expectations: Sequence[Expectation], per_batch: list[list[ExpectationResult]]
) -> list[ExpectationResult]:
    """One result per expectation over all batches: success only when every batch succeeded.

    Counts are summed; unexpected_percent is recomputed over the summed element count (for kinds other than
    not_null GX counts only non-null values, so for those this is an approximation); details are those of the
    first failing batch (or the last batch when none failed).
    """
    if not per_batch:
        return []
    results: list[ExpectationResult] = []
    for position, expectation in enumerate(expectations):
        items = [batch[position] for batch in per_batch]
        unexpected = sum(item.unexpected_count for item in items)
        elements = sum(item.element_count for item in items)
        sample: list = []
        for item in items:
            sample.extend(item.sample_unexpected[: SAMPLE_SIZE - len(sample)])
        failing = next((item for item in items if not item.success), None)
        results.append(
            ExpectationResult(
                expectation=expectation,
                success=failing is None,
                unexpected_count=unexpected,
                element_count=elements,
                unexpected_percent=100.0 * unexpected / elements if elements else 0.0,
                sample_unexpected=sample,
                details=(failing or items[-1]).details,
            )
        )
    return results


def _run_paths(storage_dir: Path, connector: ImportConnector, run_id: str) -> tuple[Path, Path]:
    folder = Path(storage_dir) / connector.name / run_id
    return folder / "snapshot.parquet", folder / "rejections.parquet"


def _fill(report: ImportReport, pipeline: _Pipeline, result, rejections_path: Path) -> None:
    report.rows_read = pipeline.rows_read
    report.rows_rejected = len(pipeline.rejected)
    report.rejections_path = pipeline.write_rejections(rejections_path)
    report.expectation_results = pipeline.aggregated_results()
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


def incremental_query(query: str, updated_at: str, source: SqlSource) -> str:
    """The import query restricted to rows changed after `:watermark` (the column name quoted, never the value)."""
    quoted = source.engine.dialect.identifier_preparer.quote(updated_at)
    return f"SELECT * FROM ({strip_trailing_semicolon(query)}) q WHERE q.{quoted} > :watermark"


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
) -> ImportReport:
    """Read the query (only rows newer than the watermark unless `full` or none is saved), map, check, upsert.

    Raises UpsertError / UpsertConfigError / MappingError as they come; the watermark is then left as it was.
    """
    started = time.perf_counter()
    spec = connector.import_
    warehouse = spec.source.warehouse
    if warehouse is None:
        raise ValueError(f"connector '{connector.name}' imports from {spec.source.kind}, not from a warehouse")
    previous = state.watermark(connector.name) if warehouse.updated_at else None
    if warehouse.updated_at and previous is not None and not full:
        query, params = incremental_query(warehouse.query, warehouse.updated_at, source), {"watermark": previous}
    else:
        query, params = warehouse.query, {}

    snapshot_path, rejections_path = _run_paths(storage_dir, connector, run_id)
    snapshot = _Snapshot(snapshot_path)
    mapping, upsert = build_upsert(spec, target_url)
    pipeline = _Pipeline(spec, mapping, upsert)
    highest: list[object] = []  # the largest updated_at seen (a list so the generator can set it)

    def batches() -> Iterator[pa.RecordBatch]:
        checked = False
        for batch in source.stream_batches(query, params):
            if not checked:
                # Before the first row is written: a mapping that reads a column the query does not return
                # would reject every row, so the import does not run at all.
                check_source_columns(mapping, batch.schema.names, "the query's result")
                checked = True
            if batch.num_rows == 0:
                continue
            batch = snapshot.write(batch)
            if warehouse.updated_at and warehouse.updated_at in batch.schema.names:
                top = pc.max(batch.column(warehouse.updated_at)).as_py()
                if top is not None and (not highest or top > highest[0]):
                    highest[:] = [top]
            yield pipeline.process(batch)

    try:
        with upsert:
            result = upsert.write(combine_batches(batches(), spec.target.batch_rows))
    finally:
        snapshot.close()

    report = ImportReport(snapshot_path=snapshot_path)
    _fill(report, pipeline, result, rejections_path)
    report.watermark = _watermark_text(highest[0]) if highest else previous
    if warehouse.updated_at and report.watermark != previous:
        state.set_watermark(connector.name, report.watermark, run_id)  # only now: the whole write succeeded
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


def import_file(
    connector: ImportConnector,
    source: FileSource,
    name: str,
    target_url: str,
    state: ImportState,
    storage_dir: Path,
    run_id: str,
    modified: dt.datetime | None = None,
) -> ImportReport:
    """Import one delivered file: archive it when loaded or a duplicate, quarantine it (with a report) when not.

    The file is downloaded to `storage_dir/<connector>/<run_id>/staging/`, parsed whole into the snapshot (so a
    malformed row quarantines it before anything is written), then upserted from the snapshot. The outcome is
    recorded in `state` (by name and checksum). Configuration problems (UpsertConfigError, MappingError) and
    transport failures are raised and leave the file where it is, since they are not the file's fault.
    """
    started = time.perf_counter()
    spec = connector.import_
    files = spec.source.files
    email = spec.source.email
    folder = files.folder if files else ""
    archive = files.archive_folder if files else "archive"
    quarantine = files.quarantine_folder if files else "quarantine"
    file_format = files.format if files else email.format if email else None
    csv = files.csv if files else email.csv if email else None

    report = ImportReport()

    def finish(status: str, reason: str | None) -> ImportReport:
        report.file = FileOutcome(name, status, reason)
        report.seconds = time.perf_counter() - started
        return report

    unsafe = check_file_name(name)
    if unsafe is not None:
        # The name cannot be handed to move() (it could lead out of the folder): report beside the quarantine.
        reason = f"file name refused: {unsafe}; the file was left in place (its name is unsafe to move)"
        source.write_text(quarantine, _refused_report_name(name), _report_text(name, run_id, reason))
        state.record_file(
            connector.name,
            name=name,
            sha256="",
            size=0,
            modified=modified,
            status="rejected",
            reason=reason,
            rows=None,
            run_id=run_id,
        )
        return finish("rejected", reason)

    # One folder per file: a run may import several files.
    snapshot_path, rejections_path = _run_paths(storage_dir, connector, f"{run_id}/files/{name}")
    staging = snapshot_path.parent / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    local = staging / name
    try:
        source.download(folder, name, local)
        sha256 = _sha256(local)
        size = local.stat().st_size

        def record(status: str, reason: str | None, rows: int | None) -> None:
            state.record_file(
                connector.name,
                name=name,
                sha256=sha256,
                size=size,
                modified=modified,
                status=status,
                reason=reason,
                rows=rows,
                run_id=run_id,
            )

        def reject(reason: str, rows: int | None = None) -> ImportReport:
            source.move(folder, name, quarantine)
            source.write_text(quarantine, f"{name}.report.txt", _report_text(name, run_id, reason))
            record("rejected", reason, rows)
            return finish("rejected", reason)

        earlier = state.file_with_checksum(connector.name, sha256)
        if earlier is not None:
            reason = f"same content as '{earlier.name}', imported in run {earlier.run_id}"
            source.move(folder, name, archive)
            record("duplicate", reason, 0)
            return finish("duplicate", reason)

        mapping, upsert = build_upsert(spec, target_url)
        snapshot = _Snapshot(snapshot_path)
        try:
            reading = read_file(
                local,
                format=file_format,
                expected_columns=sorted(mapping.source_columns),
                csv_delimiter=csv.delimiter if csv else None,
                csv_header=csv.header if csv else True,
                batch_rows=spec.target.batch_rows,
            )
            with reading:
                for batch in reading.batches():
                    snapshot.write(batch)
        except FileRejected as rejected:
            snapshot.close()
            upsert.close()
            return reject(rejected.reason)
        snapshot.close()
        report.snapshot_path = snapshot_path

        pipeline = _Pipeline(spec, mapping, upsert)

        def batches() -> Iterable[pa.RecordBatch]:
            parquet = pq.ParquetFile(snapshot_path)
            try:
                for batch in parquet.iter_batches(batch_size=spec.target.batch_rows):
                    yield pipeline.process(batch)
            finally:
                parquet.close()

        try:
            with upsert:
                result = upsert.write(combine_batches(batches(), spec.target.batch_rows))
        except UpsertError as exc:
            _fill(report, pipeline, exc.result, rejections_path)
            return reject(f"the target refused the rows: {exc}", rows=pipeline.rows_read)
        _fill(report, pipeline, result, rejections_path)
        source.move(folder, name, archive)
        record("imported", None, report.rows_read)
        return finish("imported", None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
