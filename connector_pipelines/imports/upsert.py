"""Upsert mapped rows into a target table: the write side of imports.

    columns = [TargetColumn("invoice_id", "integer"), TargetColumn("total", "currency"), ...]
    with TableUpsert(url, UpsertSettings("crm.invoices", key=("invoice_id",), most_recent_column="updated_at"),
                     columns) as upsert:
        problems = upsert.prepare()      # for `validate`: checks the table, changes nothing
        mapper = ArrowMapper(mapping, columns)
        result = upsert.write(combine_batches(mapper.map(batch)[0] for batch in source.stream_batches(q, {})))

How batches are written (set-based; the SQL per database is in delivery/staging.py):
- **One transaction per batch.** The batch is loaded into a TEMPORARY staging table (PostgreSQL: `COPY ...
  FROM STDIN`) and merged into the target by ONE statement (`INSERT ... ON CONFLICT`, `ON DUPLICATE KEY
  UPDATE`, or an `UPDATE ... FROM` when new records are not allowed). A batch that fails (a value too long,
  a NOT NULL violation, a lost connection) is rolled back whole, so the target holds none of its changes;
  the batches before it were committed and stay, and none after it is written. `UpsertError` says which
  batch failed, why, and how many rows were committed before it. Batches are committed in the order given;
  on PostgreSQL the next batch is COPY-ed into its own staging table (on a second connection, in its own
  transaction) while the current one merges. 100,000 rows a batch (`combine_batches`) keep memory low
  without costing speed.
- **Duplicate keys in a batch: the last row wins.** Earlier rows with the same key are dropped before staging
  (counted in `UpsertResult.duplicates`), so the merge never meets a key twice. Keys are compared exactly (as
  Arrow compares them); a database that calls two different values equal (a case-insensitive collation on
  MariaDB) sees both rows, applied in order. A NULL key fails the batch: map key fields as required, so such
  rows fail in the mapping instead. Across batches, a later batch wins, as it is merged later.
- **Most recent wins** (`most_recent_column`): a stored row is overwritten only when the incoming value of
  that column is newer than the stored one; equal or older rows are left alone and counted as
  `unchanged_or_older`. The rule is part of the merge statement, not evaluated in Python. A stored NULL is
  older than any value; an incoming NULL is never newer.
- **Counts** come from the database: PostgreSQL aggregates the merge's `RETURNING (xmax = 0)`; MariaDB and
  SQLite count a join of staging and target just before the merge, in the same transaction. Rows whose
  values equal the stored ones are not rewritten and count as unchanged.
- **Times:** naive datetimes are UTC wall-clock times. PostgreSQL transactions run in UTC (`SET LOCAL`);
  an engine made here from a MariaDB URL sets its sessions to UTC; with an engine of your own, MariaDB
  `TIMESTAMP` columns use that session's time zone (`DATETIME` columns are unaffected).

Values are always bound or COPY-ed, never formatted into SQL; table and column names are validated here and
quoted by the dialect's identifier preparer.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import make_url

from connector_pipelines.imports.staging import (
    STAGING_TABLE,
    BatchFailed,
    BatchWriter,
    MergeCounts,
    MergePlan,
    staging_for,
)
from connector_pipelines.mapping.engine import CompiledMapping, MappedBatch, MappingError
from connector_pipelines.mapping.suggest import did_you_mean

COLUMN_TYPES: tuple[str, ...] = (
    "text",
    "integer",
    "number",
    "currency",
    "boolean",
    "date",
    "datetime",
    "json",
    "foreign_key",
)
DEFAULT_BATCH_ROWS = 100_000
# Longest identifier PostgreSQL keeps (it truncates longer ones silently); MariaDB allows 64.
_MAX_IDENTIFIER = 63
# Letters, digits, _ and $, with inner spaces or hyphens; not starting with a digit. Quoting makes the rest safe,
# the rule keeps names readable and rules out quotes, dots and control characters altogether.
_IDENTIFIER = re.compile(r"[^\W\d][\w$]*(?:[ -][\w$]+)*")
# Arrow types of mapped values per column type (mapped_to_arrow); foreign_key is inferred from its values.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "currency": pa.decimal128(38, 2),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "datetime": pa.timestamp("us"),  # aware values are converted to UTC, naive ones kept (UTC by convention)
    "json": pa.string(),
}


@dataclass(frozen=True)
class TargetColumn:
    """A mapped column of the target table and its type (one of COLUMN_TYPES)."""

    name: str
    type: str = "text"


@dataclass(frozen=True)
class UpsertSettings:
    """Where and how mapped rows are upserted."""

    table: str  # [schema.]table
    key: tuple[str, ...]  # the column(s) that identify a row; the table needs a unique index on exactly them
    allow_new_records: bool = True  # off: only existing keys are updated; new keys are counted and skipped
    most_recent_column: str | None = None  # overwrite only when this column's incoming value is newer
    allow_new_attributes: bool = False  # add mapped columns the table lacks (ALTER TABLE ... ADD COLUMN)

    def __post_init__(self) -> None:
        if isinstance(self.key, str):
            object.__setattr__(self, "key", (self.key,))  # key="id" means one column, not ('i', 'd')
        else:
            object.__setattr__(self, "key", tuple(self.key))


@dataclass
class UpsertResult:
    """What a write did. Every staged row is exactly one of inserted, updated, unchanged_or_older, skipped_new."""

    inserted: int = 0
    updated: int = 0
    unchanged_or_older: int = 0  # equal or older by the most-recent rule, or identical to the stored row
    skipped_new: int = 0  # new keys left out because allow_new_records is off
    added_columns: list[str] = field(default_factory=list)
    batches: int = 0  # batches committed
    seconds: float = 0.0
    rows: int = 0  # rows received, duplicates included
    duplicates: int = 0  # rows replaced by a later row with the same key in the same batch

    def add(self, counts: MergeCounts) -> None:
        self.inserted += counts.inserted
        self.updated += counts.updated
        self.unchanged_or_older += counts.unchanged_or_older
        self.skipped_new += counts.skipped_new


class UpsertConfigError(ValueError):
    """The settings or the target table do not allow the upsert; `problems` holds one line per problem."""

    def __init__(self, problems: str | Sequence[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class UpsertError(Exception):
    """A batch failed and was rolled back. `result` counts what the committed batches before it did."""

    def __init__(self, message: str, result: UpsertResult):
        super().__init__(message)
        self.result = result


class TableUpsert:
    """Upserts batches of mapped rows into one table of a PostgreSQL, MariaDB/MySQL or SQLite database.

    `engine_or_url` is a SQLAlchemy engine or URL (a URL's engine is ours: `close()` disposes of it).
    `columns` are the mapped columns, key columns included; every batch holds exactly these columns.
    Settings are checked here (names, key, types: UpsertConfigError); the table is checked by `prepare()`.
    """

    def __init__(self, engine_or_url: sa.Engine | str, settings: UpsertSettings, columns: Sequence[TargetColumn]):
        self.settings = settings
        self.columns: tuple[TargetColumn, ...] = tuple(columns)
        self.schema, self.table = _check_settings(settings, self.columns)
        self._owns_engine = not isinstance(engine_or_url, sa.Engine)
        self.engine = _create_engine(engine_or_url) if self._owns_engine else engine_or_url
        backend = self.engine.dialect.name
        if backend not in ("postgresql", "mysql", "mariadb", "sqlite"):
            raise UpsertConfigError(f"upserts support PostgreSQL, MariaDB/MySQL and SQLite, not {backend}")
        # PostgreSQL keeps the case of the (quoted) names; the others compare column names case-insensitively.
        self._fold = (lambda name: name) if backend == "postgresql" else str.lower

    @property
    def system(self) -> str:
        """`postgresql 127.0.0.1:5432/test`: the database, without user or password, for messages."""
        url = self.engine.url
        if url.get_backend_name() == "sqlite":
            return f"sqlite {url.database or ':memory:'}"
        port = f":{url.port}" if url.port else ""
        return f"{url.get_backend_name()} {url.host}{port}/{url.database or ''}"

    # Checks and schema -------------------------------------------------------------------------------

    def prepare(self) -> list[str]:
        """Problems that would stop a write, one line each (empty: ready). Changes nothing.

        The table must exist, the key columns too, with a primary key or unique index on exactly them, and
        every mapped column must exist or be allowed to be added (allow_new_attributes).
        """
        return self._check()[0]

    def _check(self) -> tuple[list[str], _TableShape | None]:
        """(prepare()'s problems, the table as reflected, or None when it could not be read)."""
        label = self.settings.table
        try:
            inspector = sa.inspect(self.engine)
            if not inspector.has_table(self.table, schema=self.schema):
                names = inspector.get_table_names(schema=self.schema)
                return [f"table '{label}' does not exist on {self.system}{did_you_mean(self.table, names)}"], None
            shape = _reflect(inspector, self.table, self.schema, self._fold)
        except sa.exc.SQLAlchemyError as exc:
            return [f"cannot read the definition of table '{label}' on {self.system}: {_cause(exc)}"], None
        problems: list[str] = []
        missing_key = [name for name in self.settings.key if self._fold(name) not in shape.columns]
        for name in missing_key:
            problems.append(f"key column '{name}' is not a column of table '{label}'{did_you_mean(name, shape.names)}")
        wanted = frozenset(self._fold(name) for name in self.settings.key)
        if not missing_key and wanted not in shape.unique_keys:
            keys = ", ".join("(" + ", ".join(sorted(k)) + ")" for k in shape.unique_keys) or "none"
            problems.append(
                f"table '{label}' has no primary key or unique index on exactly ({', '.join(self.settings.key)}), "
                f"which the upsert needs to find existing rows (its unique keys: {keys}); create one, e.g. "
                f"CREATE UNIQUE INDEX ON {label} ({', '.join(self.settings.key)})"
            )
        mapped = {self._fold(column.name) for column in self.columns}
        for name in shape.names:
            if self._fold(name) in mapped and self._fold(name) in shape.generated:
                problems.append(f"column '{name}' of table '{label}' is generated by the database and cannot be mapped")
        unset = [name for name in shape.required if self._fold(name) not in mapped]
        if unset and self.settings.allow_new_records:
            # PostgreSQL and MariaDB check an INSERT's row before they find the conflict: even updates would fail.
            problems.append(
                f"table '{label}' requires a value in {', '.join(repr(n) for n in unset)} (NOT NULL, no default), "
                "which the mapping does not fill, so no record could be inserted; map "
                f"{'them' if len(unset) > 1 else 'it'}, give {'them' if len(unset) > 1 else 'it'} a default, or "
                "turn allow_new_records off to update existing records only"
            )
        for column in self._new_columns(shape):
            if column.name in self.settings.key:
                continue  # reported above
            if not self.settings.allow_new_attributes:
                problems.append(
                    f"column '{column.name}' is mapped but table '{label}' has no such column"
                    f"{did_you_mean(column.name, shape.names)}; add it to the table, or allow new attributes "
                    f"so the import adds it as {self._describe_new_type(column, shape)}"
                )
            elif column.type == "foreign_key" and len(self.settings.key) != 1:
                problems.append(
                    f"column '{column.name}' (foreign_key) would be added with the key column's type, but the "
                    f"key has {len(self.settings.key)} columns; give it another type"
                )
        return problems, shape

    def apply_schema(self) -> list[str]:
        """Add the mapped columns the table lacks (when allowed); returns their names. Raises on problems."""
        problems, shape = self._check()
        if problems:
            raise UpsertConfigError(problems)
        missing = self._new_columns(shape)
        if not missing:
            return []
        preparer = self.engine.dialect.identifier_preparer
        target = preparer.format_table(sa.table(self.table, schema=self.schema))
        # One transaction: on PostgreSQL and SQLite either every column is added or none (MariaDB commits DDL).
        with self.engine.begin() as connection:
            for column in missing:
                sql_type = self._new_type(column, shape).compile(dialect=self.engine.dialect)
                connection.exec_driver_sql(f"ALTER TABLE {target} ADD COLUMN {preparer.quote(column.name)} {sql_type}")
        return [column.name for column in missing]

    def _new_columns(self, shape: _TableShape) -> list[TargetColumn]:
        return [column for column in self.columns if self._fold(column.name) not in shape.columns]

    def _new_type(self, column: TargetColumn, shape: _TableShape) -> sa.types.TypeEngine:
        if column.type == "foreign_key":
            return shape.columns[self._fold(self.settings.key[0])]
        return _sql_type(column.type, self.engine.dialect.name)

    def _describe_new_type(self, column: TargetColumn, shape: _TableShape) -> str:
        if column.type == "foreign_key" and len(self.settings.key) != 1:
            return "the key column's type"
        if column.type == "foreign_key" and self._fold(self.settings.key[0]) not in shape.columns:
            return "the key column's type"
        return self._new_type(column, shape).compile(dialect=self.engine.dialect)

    # Writing -----------------------------------------------------------------------------------------

    def write(self, batches: Iterable[pa.RecordBatch | pa.Table], *, prefetch: bool = True) -> UpsertResult:
        """Upsert every batch, one transaction each, in order; returns the counts. See the module docstring.

        Checks the table first (UpsertConfigError with prepare()'s problems) and adds allowed new columns.
        With `prefetch` the next batch is pulled from `batches` (reading and mapping it) on a worker thread
        while the database takes the current one. A failed batch raises UpsertError: it was rolled back, the
        batches before it stay committed, and none after it is written. An error raised by `batches` itself
        is raised as it is, once the batches before it are committed.
        """
        started = time.perf_counter()
        problems, shape = self._check()
        if problems:
            raise UpsertConfigError(problems)
        added = self.apply_schema() if self._new_columns(shape) else []
        if added:
            shape = _reflect(sa.inspect(self.engine), self.table, self.schema, self._fold)
        staging = staging_for(self._plan(shape), self.engine.dialect)
        result = UpsertResult(added_columns=added)
        stream = _Prefetch(batches) if prefetch else nullcontext(iter(batches))
        try:
            with stream as items, BatchWriter(self.engine, staging) as writer:
                self._write_batches(items, writer, result)
        except BatchFailed as failed:
            result.seconds = time.perf_counter() - started
            raise UpsertError(self._failure(failed.tag, failed.__cause__, result), result) from failed.__cause__
        result.seconds = time.perf_counter() - started
        return result

    def _write_batches(self, items: Iterator, writer: BatchWriter, result: UpsertResult) -> None:
        names = [column.name for column in self.columns]
        number, next_row = 0, 1
        try:
            for item in items:
                rows = _conform(item, names, self.settings.table)
                if rows.num_rows == 0:
                    continue
                number += 1
                batch = _Batch(number, next_row, rows.num_rows)
                next_row += rows.num_rows
                try:
                    rows, batch.duplicates = _last_row_per_key(rows, self.settings.key)
                except _NullKeyError as exc:
                    _count(writer.finish(), result)
                    raise UpsertError(self._failure(batch, exc, result), result) from None
                _count(writer.submit(batch, rows), result)
        except (BatchFailed, UpsertError):
            raise
        except Exception:
            # Not the database's error (the source, the mapping, a malformed batch): the batches handed over
            # are whole and valid, so the one still open is committed, as it would be without the overlap.
            _count(writer.finish(), result)
            raise
        _count(writer.finish(), result)

    def _plan(self, shape: _TableShape) -> MergePlan:
        compare_as_text = frozenset(
            column.name
            for column in self.columns
            if isinstance(shape.columns[self._fold(column.name)], sa.JSON | sa.types.NullType)
        )
        return MergePlan(
            schema=self.schema,
            table=self.table,
            columns=tuple(column.name for column in self.columns),
            key=self.settings.key,
            most_recent=self.settings.most_recent_column,
            allow_new_records=self.settings.allow_new_records,
            compare_as_text=compare_as_text,
        )

    def _failure(self, batch: _Batch, exc: BaseException | None, result: UpsertResult) -> str:
        if result.batches == 0:
            committed = "no earlier batch was written"
        elif result.batches == 1:
            committed = (
                f"the earlier batch ({result.rows:,} row{'s' if result.rows != 1 else ''}) was committed and stays"
            )
        else:
            committed = f"the {result.batches} earlier batches ({result.rows:,} rows) were committed and stay"
        last_row = batch.first_row + batch.received - 1
        return (
            f"upsert into table '{self.settings.table}' on {self.system} failed in batch {batch.number} "
            f"(rows {batch.first_row:,}-{last_row:,} of this write): {_cause(exc).rstrip('.')}. "
            f"That batch was rolled back, so the table holds none of its changes; {committed}."
        )

    # Lifecycle ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Dispose of the engine when it was made here from a URL."""
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> TableUpsert:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# From mapped rows to batches


def mapped_to_arrow(mapped: MappedBatch, columns: Sequence[TargetColumn]) -> pa.RecordBatch:
    """The rows of `mapped` that mapped without a problem, as a record batch with one column per `columns`.

    Each column gets the Arrow type of its column type (currency: decimal(38, 2); datetime: timestamp[us]
    with aware values converted to UTC; json: JSON text, str values kept as they are). Failed rows are left
    out: the mapping reports them.
    """
    arrays = [_arrow_column(mapped, column) for column in columns]
    batch = pa.RecordBatch.from_arrays(arrays, names=[column.name for column in columns])
    if mapped.failed_count:
        batch = batch.filter(pa.array([reason is None for reason in mapped.errors], pa.bool_()))
    return batch


def _arrow_column(mapped: MappedBatch, column: TargetColumn) -> pa.Array:
    if column.name not in mapped.columns:
        raise ValueError(f"column '{column.name}' is not among the mapped fields ({', '.join(mapped.columns)})")
    values = mapped.columns[column.name]
    if column.type == "json":
        values = [v if v is None or isinstance(v, str) else json.dumps(v, default=str) for v in values]
    try:
        return pa.array(values, type=_ARROW_TYPES.get(column.type))
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"column '{column.name}' ({column.type}) holds a value that does not fit: {exc}") from None


class ArrowMapper:
    """Map source batches into upsert batches: `mapped_to_arrow(mapping.map_batch(batch), columns)`, faster.

    The mapping engine turns every value it reads into a Python object and `mapped_to_arrow` turns it back.
    For a rule that only copies a source column whose Arrow type already holds exactly what the target type
    would make of each value, that round trip changes nothing, so such a column is cast in Arrow instead:
    integers to integer, strings to text, timestamps (s/ms/us) to datetime, dates to date, booleans to boolean,
    decimals with at most two places to currency, finite float64 to number. A rule with a parse step or a
    default, and any value the engine would refuse (a NULL or '' in a required field, NaN as a number), go
    through the engine as before; so do expressions, constants and lookups. Same rows, values and failures.
    """

    def __init__(self, mapping: CompiledMapping, columns: Sequence[TargetColumn]):
        self.mapping = mapping
        self.columns = tuple(columns)
        fields = {target.name: target for target in mapping.target_fields}
        column_types = {column.name: column.type for column in self.columns}
        self._copies: dict[str, tuple[str, str, bool]] = {}  # target -> (source, type, required)
        for rule in mapping.rules:
            target = fields.get(rule.target)
            if (
                target is not None
                and rule.source is not None
                and rule.parse is None
                and rule.default is None
                and target.type in _ARROW_COPIES
                and column_types.get(rule.target) == target.type
            ):
                self._copies[rule.target] = (rule.source, target.type, target.required)
        self._engines: dict[frozenset[str], CompiledMapping | None] = {}

    def map(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[tuple[int, str]]]:
        """(the rows that mapped, as an upsert batch; (row, reason) for each row that failed)."""
        problems = self.mapping.check_columns(batch.schema.names)
        if problems:
            raise MappingError(problems)
        copied: dict[str, pa.Array] = {}
        for target, (source, kind, required) in self._copies.items():
            array = _copy_in_arrow(batch.column(source), kind, required)
            if array is not None:
                copied[target] = array
        engine = self._engine(frozenset(copied))
        mapped = engine.map_batch(batch) if engine is not None else MappedBatch({}, [None] * batch.num_rows)
        arrays = [copied[c.name] if c.name in copied else _arrow_column(mapped, c) for c in self.columns]
        out = pa.RecordBatch.from_arrays(arrays, names=[column.name for column in self.columns])
        if mapped.failed_count:
            out = out.filter(pa.array([reason is None for reason in mapped.errors], pa.bool_()))
        return out, mapped.failures()

    def _engine(self, copied: frozenset[str]) -> CompiledMapping | None:
        """The mapping without the copied rules (compiled once per set), or None when every rule was copied."""
        if copied not in self._engines:
            rules = [rule for rule in self.mapping.rules if rule.target not in copied]
            fields = [target for target in self.mapping.target_fields if target.name not in copied]
            self._engines[copied] = CompiledMapping(rules, fields, self.mapping.lookups) if rules else None
        return self._engines[copied]


# Target types whose engine conversion can be an Arrow cast (see ArrowMapper).
_ARROW_COPIES = frozenset({"integer", "text", "datetime", "date", "boolean", "currency", "number"})


def _copy_in_arrow(column: pa.Array, kind: str, required: bool) -> pa.Array | None:
    """The column as the engine would map it, cast in Arrow; None when only the engine can say."""
    source = column.type
    if required and column.null_count:
        return None  # those rows fail with 'required field is empty'
    if kind == "integer" and (pa.types.is_signed_integer(source) or source in _SMALL_UNSIGNED):
        return column.cast(pa.int64())
    if kind == "text" and (pa.types.is_string(source) or pa.types.is_large_string(source)):
        if required and pc.any(pc.equal(column, "")).as_py():
            return None
        return column.cast(pa.string())
    if kind == "datetime" and pa.types.is_timestamp(source) and source.unit in ("s", "ms", "us"):
        return column.cast(pa.timestamp("us"))  # aware values as UTC wall-clock times, as mapped_to_arrow does
    if kind == "date" and pa.types.is_date(source):
        return column.cast(pa.date32())
    if kind == "boolean" and pa.types.is_boolean(source):
        return column
    if (
        kind == "currency"
        and pa.types.is_decimal(source)
        and source.scale <= 2
        and source.precision - source.scale <= 36
    ):
        return column.cast(_ARROW_TYPES["currency"])  # at most cents already: rounding to cents changes nothing
    if kind == "number" and pa.types.is_float64(source) and pc.all(pc.is_finite(column)).as_py() is not False:
        return column
    return None


_SMALL_UNSIGNED = (pa.uint8(), pa.uint16(), pa.uint32())


def combine_batches(batches: Iterable[pa.RecordBatch], rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.Table]:
    """Group consecutive batches into tables of at least `rows` rows (the last may be smaller), without copying.

    Sources yield small batches (PostgreSQL's COPY path: ~40,000 rows); each write batch is a transaction,
    a staging load and a merge, so fewer, larger ones are faster, at the cost of memory.
    """
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield _table(pending)
            pending, count = [], 0
    if pending:
        yield _table(pending)


def _table(batches: list[pa.RecordBatch]) -> pa.Table:
    try:
        return pa.Table.from_batches(batches)
    except pa.ArrowInvalid:
        # Types inferred per batch differ (an all-NULL foreign_key column is of type null): promote them.
        tables = [pa.Table.from_batches([batch]) for batch in batches]
        return pa.concat_tables(tables, promote_options="permissive")


# --------------------------------------------------------------------------------------------------
# Checks


@dataclass(frozen=True)
class _TableShape:
    columns: dict[str, sa.types.TypeEngine]  # folded name -> type
    names: tuple[str, ...]  # as the database spells them
    unique_keys: frozenset[frozenset[str]]  # folded column sets of the primary key and unique indexes
    required: tuple[str, ...]  # NOT NULL without a default, identity or generation: an insert must set them
    generated: frozenset[str]  # folded names of columns the database computes (cannot be written)


def _reflect(inspector: sa.Inspector, table: str, schema: str | None, fold) -> _TableShape:
    reflected = inspector.get_columns(table, schema=schema)
    keys: set[frozenset[str]] = set()
    primary = inspector.get_pk_constraint(table, schema=schema) or {}
    if primary.get("constrained_columns"):
        keys.add(frozenset(fold(name) for name in primary["constrained_columns"]))
    for constraint in inspector.get_unique_constraints(table, schema=schema):
        keys.add(frozenset(fold(name) for name in constraint["column_names"]))
    for index in inspector.get_indexes(table, schema=schema):
        names = index.get("column_names") or []
        if not index.get("unique") or not names or any(name is None for name in names):
            continue  # not unique, or on an expression
        options = index.get("dialect_options") or {}
        if any(key.endswith("_where") and value is not None for key, value in options.items()):
            continue  # a partial index cannot be the arbiter of every row
        keys.add(frozenset(fold(name) for name in names))
    return _TableShape(
        columns={fold(column["name"]): column["type"] for column in reflected},
        names=tuple(column["name"] for column in reflected),
        unique_keys=frozenset(keys),
        required=tuple(
            column["name"]
            for column in reflected
            if not column.get("nullable", True)
            and column.get("default") is None
            and not column.get("identity")
            and not column.get("computed")
            and column.get("autoincrement") is not True
        ),
        generated=frozenset(fold(column["name"]) for column in reflected if column.get("computed")),
    )


def _check_settings(settings: UpsertSettings, columns: Sequence[TargetColumn]) -> tuple[str | None, str]:
    """(schema, table) from the settings; raise UpsertConfigError listing every problem found."""
    problems: list[str] = []
    parts = settings.table.split(".") if isinstance(settings.table, str) else []
    if len(parts) not in (1, 2):
        problems.append(f"table must be 'table' or 'schema.table', got {settings.table!r}")
        parts = ["x"]
    for part in parts:
        problems.extend(_identifier_problems(part, "table"))
    names = [column.name for column in columns]
    if not columns:
        problems.append("no mapped columns: an upsert needs at least the key columns")
    seen: set[str] = set()
    for column in columns:
        problems.extend(_identifier_problems(column.name, "column"))
        if column.name.lower() in seen:
            problems.append(f"column '{column.name}' is mapped twice")
        seen.add(str(column.name).lower())
        if column.type not in COLUMN_TYPES:
            problems.append(
                f"column '{column.name}' has unknown type {column.type!r}{did_you_mean(column.type, COLUMN_TYPES)}; "
                f"types: {', '.join(COLUMN_TYPES)}"
            )
    if not settings.key:
        problems.append("key must name at least one column")
    for name in settings.key:
        if name not in names:
            problems.append(
                f"key column '{name}' is not among the mapped columns{did_you_mean(name, names)}; "
                "every batch must carry the key"
            )
    if len(set(settings.key)) != len(settings.key):
        problems.append(f"key names a column twice: {', '.join(settings.key)}")
    recent = settings.most_recent_column
    if recent is not None:
        if recent not in names:
            problems.append(
                f"most_recent_column '{recent}' is not among the mapped columns{did_you_mean(recent, names)}"
            )
        elif recent in settings.key:
            problems.append(f"most_recent_column '{recent}' is a key column; it must be a value that changes")
    if problems:
        raise UpsertConfigError(problems)
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def _identifier_problems(name: object, what: str) -> list[str]:
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        return [
            f"{what} name {name!r} is not a plain identifier (letters, digits, _ and $, inner spaces or "
            "hyphens; not starting with a digit)"
        ]
    if len(name) > _MAX_IDENTIFIER:
        return [f"{what} name '{name[:20]}...' is longer than {_MAX_IDENTIFIER} characters"]
    if name.lower() == STAGING_TABLE:
        return [f"{what} name '{name}' is reserved for the upsert's staging table"]
    return []


def _sql_type(kind: str, dialect_name: str) -> sa.types.TypeEngine:
    """The SQL type a new column of this column type gets (foreign_key is handled by the caller)."""
    if kind == "datetime":
        # Microseconds on MariaDB too; PostgreSQL keeps instants.
        return mysql.DATETIME(fsp=6) if dialect_name in ("mysql", "mariadb") else sa.DateTime(timezone=True)
    if kind == "json":
        return postgresql.JSONB() if dialect_name == "postgresql" else sa.JSON()
    return {
        "text": sa.Text(),
        "integer": sa.BigInteger(),
        "number": sa.Double(),
        "currency": sa.Numeric(18, 2),
        "boolean": sa.Boolean(),
        "date": sa.Date(),
    }[kind]


# --------------------------------------------------------------------------------------------------
# Batches


@dataclass
class _Batch:
    """A batch on its way: its place in the write, for counts and messages."""

    number: int
    first_row: int
    received: int  # rows as given, duplicates included
    duplicates: int = 0


def _count(committed: list[tuple[_Batch, MergeCounts]], result: UpsertResult) -> None:
    """Add committed batches to the result."""
    for batch, counts in committed:
        result.add(counts)
        result.rows += batch.received
        result.duplicates += batch.duplicates
        result.batches += 1


class _NullKeyError(ValueError):
    """A key column holds NULL: the row cannot be matched (reported as the batch's failure)."""


def _conform(item: pa.RecordBatch | pa.Table, names: list[str], table: str) -> pa.Table:
    """The batch as a table (zero-copy) with exactly the mapped columns, in the settings' order."""
    if isinstance(item, pa.RecordBatch):
        item = pa.Table.from_batches([item])
    have = item.schema.names
    if sorted(have) != sorted(names):
        missing = [name for name in names if name not in have]
        extra = [name for name in have if name not in names]
        raise UpsertConfigError(
            f"a batch for table '{table}' must hold exactly the mapped columns ({', '.join(names)}); "
            + "; ".join(
                part
                for part in (
                    f"missing: {', '.join(missing)}" if missing else "",
                    f"not mapped: {', '.join(extra)}" if extra else "",
                    "a column appears twice" if len(have) != len(set(have)) else "",
                )
                if part
            )
        )
    return item if have == names else item.select(names)


def _last_row_per_key(rows: pa.Table, key: Sequence[str]) -> tuple[pa.Table, int]:
    """The rows without those whose key appears again later (the last one wins), and how many were dropped."""
    for name in key:
        nulls = rows.column(name).null_count
        if nulls:
            raise _NullKeyError(
                f"key column '{name}' is empty in {nulls:,} row(s); map key fields as required so that such rows "
                "fail in the mapping"
            )
    if rows.group_by(list(key), use_threads=False).aggregate([]).num_rows == rows.num_rows:
        return rows, 0  # the usual case: one hash pass, no copy
    numbered = rows.append_column("__cp_row", pa.array(range(rows.num_rows), pa.int64()))
    last = numbered.group_by(list(key), use_threads=False).aggregate([("__cp_row", "max")]).column("__cp_row_max")
    last = last.combine_chunks()
    keep = last.take(pc.sort_indices(last))  # in the rows' own order
    return rows.take(keep), rows.num_rows - len(keep)


class _Prefetch:
    """Pull items from an iterable on a worker thread, at most one ahead of the consumer.

    Used as `with _Prefetch(batches) as items: for item in items: ...`. The worker produces the next item
    only once the consumer has taken the previous one, so at most two items are alive: the one being
    written and the next. An exception raised while producing is raised to the consumer; leaving the block
    early stops the worker and closes the iterable (so a generator's cleanup, such as ending a COPY, runs).
    """

    _END = object()

    def __init__(self, iterable: Iterable):
        self._iterable = iterable
        self._queue: queue.Queue = queue.Queue()
        self._slot = threading.Semaphore(1)  # taken by the worker before it produces, given back on delivery
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="upsert-prefetch", daemon=True)

    def __enter__(self) -> Iterator:
        self._thread.start()
        return self._consume()

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._slot.release()  # wake a worker waiting for a slot; it sees the stop and leaves
        self._thread.join()

    def _consume(self) -> Iterator:
        while True:
            item, error = self._queue.get()
            if error is not None:
                raise error
            if item is self._END:
                return
            self._slot.release()
            yield item

    def _produce(self) -> None:
        iterator = None
        try:
            iterator = iter(self._iterable)
            while True:
                self._slot.acquire()
                if self._stop.is_set():
                    return
                item = next(iterator, self._END)
                self._queue.put((item, None))
                if item is self._END:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._queue.put((None, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()


# --------------------------------------------------------------------------------------------------
# Engines and errors


def _create_engine(url: str | sa.URL) -> sa.Engine:
    parsed = make_url(url)
    connect_args: dict = {}
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")  # COPY through psycopg2's copy_expert
    elif parsed.drivername in ("mysql", "mariadb"):
        parsed = parsed.set(drivername=f"{parsed.drivername}+pymysql")
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = 15
    elif parsed.get_backend_name() in ("mysql", "mariadb"):
        # TIMESTAMP columns convert through the session's zone; ours writes naive UTC (see the module docstring).
        connect_args["init_command"] = "SET time_zone = '+00:00'"
        connect_args["connect_timeout"] = 15
    return sa.create_engine(parsed, connect_args=connect_args, pool_pre_ping=True)


_COPY_CONTEXT = re.compile(rf"COPY {STAGING_TABLE}, line (\d+), column ([^:]+)(?:: (.*))?")


def _cause(exc: BaseException) -> str:
    """The database's own message (with PostgreSQL's detail and, for COPY, the row and column)."""
    original = getattr(exc, "orig", None) or exc
    diag = getattr(original, "diag", None)
    if diag is not None and getattr(diag, "message_primary", None):
        parts = [diag.message_primary]
        if diag.message_detail:
            parts.append(diag.message_detail)
        context = (diag.context or "").splitlines()
        match = _COPY_CONTEXT.match(context[0]) if context else None
        if match:
            value = f" (value {match.group(3)})" if match.group(3) else ""
            parts.append(f"row {match.group(1)} of the batch, column {match.group(2)}{value}")
        return "; ".join(parts)
    args = getattr(original, "args", ())
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        return f"{args[1]} (error {args[0]})"  # PyMySQL: (code, message)
    text = str(original).strip() or type(original).__name__
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(("[SQL", "(Background"))]
    return " ".join(lines[:3]) if lines else type(original).__name__
