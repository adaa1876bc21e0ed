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

`import_file` reads as its stages: name check, download, duplicate check (by checksum), parse to the snapshot,
load (map, expectations, upsert), set aside (archive, or quarantine with a report), record the outcome.
File imports parse the whole file into the snapshot before writing a single row, so a malformed row anywhere in
the file quarantines it with nothing loaded. Only a failure of the target itself (UpsertError: a batch refused by
the database) can leave earlier batches committed; the file is then quarantined and the reason says so.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
from connector_pipelines.mapping.engine import CompiledMapping, FieldRule, MappingError, TargetField
from connector_pipelines.mapping.suggest import did_you_mean
from connector_pipelines.spec.imports import ImportConnector, ImportSpec
from connector_pipelines.state.import_state import ImportState
from connector_pipelines.transports.base import FileSource
from connector_pipelines.transports.sql import SqlSource, strip_trailing_semicolon

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
        rules.append(FieldRule.from_spec(rule))
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
    delivered = _DeliveredFile(connector, source, name, state, run_id, modified)
    unsafe = check_file_name(name)
    if unsafe is not None:
        return delivered.finish(delivered.refuse_unsafe_name(unsafe))

    spec = connector.import_
    # One folder per file: a run may import several files.
    snapshot_path, rejections_path = _run_paths(storage_dir, connector, f"{run_id}/files/{name}")
    with _staging_folder(snapshot_path.parent / "staging") as staging:
        download = delivered.download(staging)
        duplicate = delivered.seen_before(download)
        if duplicate is not None:
            return delivered.conclude(duplicate, download, rows=0)

        mapping, upsert = build_upsert(spec, target_url)
        refused = _parse_to_snapshot(download.path, spec, delivered.handling, mapping, snapshot_path)
        if refused is not None:
            upsert.close()  # never opened by `with`, but the engine it made from the URL is ours to dispose of
            return delivered.conclude(FileOutcome(name, "rejected", refused), download, rows=None)
        delivered.report.snapshot_path = snapshot_path

        refused = _load(spec, mapping, upsert, snapshot_path, rejections_path, delivered.report)
        rows = delivered.report.rows_read
        if refused is not None:
            return delivered.conclude(FileOutcome(name, "rejected", refused), download, rows=rows)
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
        self.source.move(self.handling.folder, self.name, destination)
        if outcome.status == "rejected":
            report = _report_text(self.name, self.run_id, outcome.reason)
            self.source.write_text(destination, f"{self.name}.report.txt", report)

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
    snapshot = _Snapshot(snapshot_path)
    try:
        reading = read_file(
            local,
            format=handling.format,
            expected_columns=sorted(mapping.source_columns),
            csv_delimiter=handling.csv_delimiter,
            csv_header=handling.csv_header,
            batch_rows=spec.target.batch_rows,
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
) -> str | None:
    """Map, check (expectations) and upsert the snapshot's rows, filling `report`; why the target refused them, or
    None. A refusal (UpsertError) may leave the batches before it committed; the report counts them."""
    pipeline = _Pipeline(spec, mapping, upsert)
    mapped = (pipeline.process(batch) for batch in _snapshot_batches(snapshot_path, spec.target.batch_rows))
    try:
        with upsert:
            result = upsert.write(combine_batches(mapped, spec.target.batch_rows))
    except UpsertError as exc:
        _fill(report, pipeline, exc.result, rejections_path)
        return f"the target refused the rows: {exc}"
    _fill(report, pipeline, result, rejections_path)
    return None


def _snapshot_batches(path: Path, batch_rows: int) -> Iterator[pa.RecordBatch]:
    parquet = pq.ParquetFile(path)
    try:
        yield from parquet.iter_batches(batch_size=batch_rows)
    finally:
        parquet.close()
