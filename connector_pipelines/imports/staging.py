"""Staging tables and merge statements for the upsert (`delivery/upsert.py`), one class per database family.

Every batch goes the same way, in one transaction (`BatchWriter`, at the end of this module, owns the
transactions and, on PostgreSQL, loads the next batch on a second connection while the current one merges):

1. a TEMPORARY staging table is created from the target itself (`SELECT <mapped columns> FROM target`, no
   rows), so it has the target's own column types: values are parsed into those types while loading, and a
   value that does not fit (too long for a varchar(5), not a date...) fails there, naming its column;
2. the batch is loaded into it in bulk: PostgreSQL `COPY ... FROM STDIN` of CSV that pyarrow writes in C++,
   elsewhere one executemany (PyMySQL turns it into multi-row INSERTs);
3. ONE set-based statement merges the staging table into the target. The most-recent rule is part of that
   statement's SQL, never evaluated row by row in Python, and so are the counts.

Rows whose values equal the stored ones are not rewritten and count as unchanged, like rows the most-recent
rule keeps. A stored NULL in the most-recent column counts as older than any incoming value; an incoming NULL
is never newer.

The batch must hold each key once (the caller removes duplicates: delivery/upsert.py, last row wins) and no
NULL key: PostgreSQL's ON CONFLICT cannot touch one row twice in one statement.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa

STAGING_TABLE = "cp_upsert_staging"
# psycopg2 asks COPY's source for chunks of this size (its default, 8 KB, means a Python call per 8 KB).
COPY_CHUNK_BYTES = 1 << 20
# CsvStream writes this many rows of CSV at a time (about 1 MB at 100 bytes a row).
CSV_SLICE_ROWS = 10_000
_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, batch_size=CSV_SLICE_ROWS, quoting_style="needed")


@dataclass
class MergeCounts:
    """What one merge did; `inserted + updated + unchanged_or_older + skipped_new` is the rows staged."""

    inserted: int = 0
    updated: int = 0
    unchanged_or_older: int = 0
    skipped_new: int = 0


@dataclass(frozen=True)
class MergePlan:
    """The merge, in names already validated (delivery/upsert.py) and not yet quoted."""

    schema: str | None
    table: str
    columns: tuple[str, ...]  # every mapped column, key columns included, in the batch's order
    key: tuple[str, ...]
    most_recent: str | None
    allow_new_records: bool
    # Columns without an equality operator (PostgreSQL json): compared as text to tell unchanged rows apart.
    compare_as_text: frozenset[str] = frozenset()

    @property
    def values(self) -> tuple[str, ...]:
        """The columns an update sets: all but the key."""
        return tuple(name for name in self.columns if name not in self.key)


class Staging:
    """Staging table, bulk load and merge for one database family; subclasses hold the dialect's SQL."""

    staging_schema: str | None = None
    # Whether the next batch may be staged on a second connection while this one merges (BatchWriter).
    overlap_loads = False

    def __init__(self, plan: MergePlan, dialect: sa.Dialect):
        self.plan = plan
        self._quote = dialect.identifier_preparer.quote
        schema = f"{dialect.identifier_preparer.quote_schema(plan.schema)}." if plan.schema else ""
        self.target = schema + self._quote(plan.table)
        staging_schema = self.staging_schema if self.staging_schema is not None else plan.schema
        self.staging = (
            f"{dialect.identifier_preparer.quote_schema(staging_schema)}." if staging_schema else ""
        ) + self._quote(STAGING_TABLE)
        self._staging_table = sa.table(STAGING_TABLE, *(sa.column(name) for name in plan.columns))
        self._staging_table.schema = staging_schema

    def stage(self, connection: sa.Connection, rows: pa.Table) -> None:
        """Load `rows` into a new staging table, in the caller's transaction."""
        self.begin(connection)
        self.create(connection)
        self.load(connection, rows)

    def finish(self, connection: sa.Connection, staged: int) -> MergeCounts:
        """Merge the staging table into the target and drop it, in the same transaction as `stage`."""
        counts = self.merge(connection, staged)
        self.drop(connection)
        return counts

    # Steps -------------------------------------------------------------------------------------------

    def begin(self, connection: sa.Connection) -> None:
        """Session settings for this transaction; by default none."""

    def create(self, connection: sa.Connection) -> None:
        raise NotImplementedError

    def load(self, connection: sa.Connection, rows: pa.Table) -> None:
        """One executemany of the rows (PyMySQL sends multi-row INSERTs of about 1 MB each)."""
        names = self.plan.columns
        columns = python_columns(rows, text_temporal=False)
        connection.execute(sa.insert(self._staging_table), [dict(zip(names, row)) for row in zip(*columns)])

    def merge(self, connection: sa.Connection, staged: int) -> MergeCounts:
        raise NotImplementedError

    def drop(self, connection: sa.Connection) -> None:
        raise NotImplementedError

    # SQL pieces --------------------------------------------------------------------------------------

    def _shape(self) -> str:
        """A query with the target's mapped columns and no rows: the staging table's shape."""
        return f"SELECT {self._list(self.plan.columns)} FROM {self.target} WHERE 1 = 0"

    def _list(self, names: Sequence[str], prefix: str = "") -> str:
        return ", ".join(prefix + self._quote(name) for name in names)

    def _key_match(self, left: str, right: str) -> str:
        return " AND ".join(f"{left}.{self._quote(k)} = {right}.{self._quote(k)}" for k in self.plan.key)

    def _newer(self, incoming: str, stored: str) -> str:
        """SQL that is true when the incoming most-recent value is newer than the stored one (TRUE without one)."""
        column = self.plan.most_recent
        if column is None:
            return "1 = 1"
        new, old = f"{incoming}.{self._quote(column)}", f"{stored}.{self._quote(column)}"
        return f"({new} > {old} OR ({old} IS NULL AND {new} IS NOT NULL))"

    def _pre_merge_counts(self, connection: sa.Connection, distinct: str) -> tuple[int, int]:
        """(staged rows whose key exists, of those the ones the merge will change), read before the merge."""
        sql = (
            f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN {self._newer('s', 't')} AND {distinct} THEN 1 ELSE 0 END), 0) "
            f"FROM {self.staging} s JOIN {self.target} t ON {self._key_match('t', 's')}"
        )
        existing, changing = connection.exec_driver_sql(sql).one()
        return int(existing), int(changing)


class PostgresStaging(Staging):
    """COPY into a temporary table, then INSERT ... ON CONFLICT (or UPDATE ... FROM) with counts from RETURNING."""

    staging_schema = "pg_temp"
    # COPY into a temporary table (one per session) takes no lock on the target: it can run beside a merge.
    overlap_loads = True

    def begin(self, connection: sa.Connection) -> None:
        # Naive datetimes are UTC wall-clock times (see delivery/upsert.py); only this transaction is affected.
        connection.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")

    def create(self, connection: sa.Connection) -> None:
        # ON COMMIT DROP: gone at the commit, and a rollback undoes the CREATE itself.
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {self.staging} ON COMMIT DROP AS {self._shape()} WITH NO DATA"
        )

    def drop(self, connection: sa.Connection) -> None:
        """Nothing to do: ON COMMIT DROP."""

    def _shape(self) -> str:
        return f"SELECT {self._list(self.plan.columns)} FROM {self.target}"

    def load(self, connection: sa.Connection, rows: pa.Table) -> None:
        if connection.dialect.driver != "psycopg2":
            super().load(connection, rows)  # another driver (psycopg 3, pg8000): executemany
            return
        driver = connection.connection.driver_connection
        with driver.cursor() as cursor:
            cursor.copy_expert(
                f"COPY {self.staging} ({self._list(self.plan.columns)}) FROM STDIN WITH (FORMAT csv)",
                CsvStream(rows),
                size=COPY_CHUNK_BYTES,
            )

    def _distinct(self, stored: str, incoming: str) -> str:
        if not self.plan.values:
            return "FALSE"

        def side(prefix: str) -> str:
            return ", ".join(
                f"{prefix}.{self._quote(name)}" + ("::text" if name in self.plan.compare_as_text else "")
                for name in self.plan.values
            )

        # ROW(...) so that a single column is a row too.
        return f"ROW({side(stored)}) IS DISTINCT FROM ROW({side(incoming)})"

    def merge(self, connection: sa.Connection, staged: int) -> MergeCounts:
        plan = self.plan
        condition = f"{self._newer('s', 't')} AND {self._distinct('t', 's')}"
        if not plan.allow_new_records:
            if plan.values:
                assignments = ", ".join(f"{self._quote(name)} = s.{self._quote(name)}" for name in plan.values)
                update = (
                    f"UPDATE {self.target} AS t SET {assignments} FROM {self.staging} AS s "
                    f"WHERE {self._key_match('t', 's')} AND {condition} RETURNING 1"
                )
            else:
                update = "SELECT 1 WHERE FALSE"
            # One snapshot for both parts: the NOT EXISTS sees the keys as they were before the update, and
            # keys are never updated.
            sql = (
                f"WITH updated AS ({update}) SELECT (SELECT COUNT(*) FROM updated), "
                f"(SELECT COUNT(*) FROM {self.staging} s WHERE NOT EXISTS "
                f"(SELECT 1 FROM {self.target} t WHERE {self._key_match('t', 's')}))"
            )
            updated, new = connection.exec_driver_sql(sql).one()
            return MergeCounts(updated=updated, unchanged_or_older=staged - updated - new, skipped_new=new)
        columns = self._list(plan.columns)
        if plan.values:
            assignments = ", ".join(f"{self._quote(name)} = EXCLUDED.{self._quote(name)}" for name in plan.values)
            action = (
                f"DO UPDATE SET {assignments} "
                f"WHERE {self._newer('EXCLUDED', 't')} AND {self._distinct('t', 'EXCLUDED')}"
            )
        else:
            action = "DO NOTHING"
        # xmax = 0 only on a freshly inserted row version: inserted and updated rows counted in one pass.
        sql = (
            f"WITH merged AS (INSERT INTO {self.target} AS t ({columns}) SELECT {columns} FROM {self.staging} "
            f"ON CONFLICT ({self._list(plan.key)}) {action} RETURNING (t.xmax = 0) AS inserted) "
            "SELECT COUNT(*) FILTER (WHERE inserted), COUNT(*) FILTER (WHERE NOT inserted) FROM merged"
        )
        inserted, updated = connection.exec_driver_sql(sql).one()
        return MergeCounts(inserted=inserted, updated=updated, unchanged_or_older=staged - inserted - updated)


class MariaDbStaging(Staging):
    """executemany into a temporary table, then INSERT ... SELECT ... ON DUPLICATE KEY UPDATE (or UPDATE ... JOIN).

    Counts come from one join of staging and target read just before the merge, in the same transaction.
    Equality uses the column's collation: under a case-insensitive one, a change of case only is written but
    counted as unchanged. A row that collides with another unique index than the key updates that row
    (MySQL's ON DUPLICATE KEY semantics) and is counted as inserted.
    """

    def create(self, connection: sa.Connection) -> None:
        # A failed batch may leave the temporary table behind on a pooled connection (dropping it is not
        # transactional here): start clean. No implicit commit: these statements are on a temporary table.
        connection.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {self.staging}")
        connection.exec_driver_sql(f"CREATE TEMPORARY TABLE {self.staging} AS {self._shape()}")

    def drop(self, connection: sa.Connection) -> None:
        connection.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {self.staging}")

    def _distinct(self, stored: str, incoming: str) -> str:
        if not self.plan.values:
            return "FALSE"
        same = " AND ".join(f"{stored}.{self._quote(n)} <=> {incoming}.{self._quote(n)}" for n in self.plan.values)
        return f"NOT ({same})"

    def merge(self, connection: sa.Connection, staged: int) -> MergeCounts:
        plan = self.plan
        existing, changing = self._pre_merge_counts(connection, self._distinct("t", "s"))
        if not plan.allow_new_records:
            if plan.values:
                assignments = ", ".join(f"t.{self._quote(name)} = s.{self._quote(name)}" for name in plan.values)
                # A multi-table UPDATE filters on WHERE before it assigns anything: the rule sees stored values.
                connection.exec_driver_sql(
                    f"UPDATE {self.target} AS t JOIN {self.staging} AS s ON {self._key_match('t', 's')} "
                    f"SET {assignments} WHERE {self._newer('s', 't')}"
                )
            return MergeCounts(updated=changing, unchanged_or_older=existing - changing, skipped_new=staged - existing)
        columns = self._list(plan.columns)
        connection.exec_driver_sql(
            f"INSERT INTO {self.target} ({columns}) SELECT {columns} FROM {self.staging} "
            f"ON DUPLICATE KEY UPDATE {self._on_duplicate()}"
        )
        return MergeCounts(inserted=staged - existing, updated=changing, unchanged_or_older=existing - changing)

    def _on_duplicate(self) -> str:
        plan = self.plan
        if not plan.values:
            key = f"{self.target}.{self._quote(plan.key[0])}"
            return f"{key} = {key}"  # keep the row as it is (ON DUPLICATE KEY needs an assignment)
        if plan.most_recent is None:
            return ", ".join(f"{self.target}.{self._quote(n)} = VALUES({self._quote(n)})" for n in plan.values)
        stored = f"{self.target}.{self._quote(plan.most_recent)}"
        new = f"VALUES({self._quote(plan.most_recent)})"
        newer = f"({new} > {stored} OR ({stored} IS NULL AND {new} IS NOT NULL))"
        # Assignments run left to right and later ones see earlier results, so the most-recent column, which
        # the condition reads, is assigned last.
        ordered = [n for n in plan.values if n != plan.most_recent] + [plan.most_recent]
        return ", ".join(
            f"{self.target}.{self._quote(n)} = IF({newer}, VALUES({self._quote(n)}), {self.target}.{self._quote(n)})"
            for n in ordered
        )


class SqliteStaging(Staging):
    """executemany into a temporary table, then INSERT ... SELECT ... ON CONFLICT DO UPDATE (or UPDATE ... FROM).

    Counts come from one join read just before the merge. SQLite keeps dates and times as text, so the
    most-recent rule compares text: stored values must use the same ISO form ('YYYY-MM-DD HH:MM:SS[.ffffff]').
    """

    staging_schema = "temp"

    def create(self, connection: sa.Connection) -> None:
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {self.staging}")
        connection.exec_driver_sql(f"CREATE TABLE {self.staging} AS {self._shape()}")

    def drop(self, connection: sa.Connection) -> None:
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {self.staging}")

    def load(self, connection: sa.Connection, rows: pa.Table) -> None:
        names = self.plan.columns
        columns = python_columns(rows, text_temporal=True)
        connection.execute(sa.insert(self._staging_table), [dict(zip(names, row)) for row in zip(*columns)])

    def _distinct(self, stored: str, incoming: str) -> str:
        if not self.plan.values:
            return "0"
        return f"({self._list(self.plan.values, stored + '.')}) IS NOT ({self._list(self.plan.values, incoming + '.')})"

    def merge(self, connection: sa.Connection, staged: int) -> MergeCounts:
        plan = self.plan
        existing, changing = self._pre_merge_counts(connection, self._distinct("t", "s"))
        condition = f"{self._newer('s', 't')} AND {self._distinct('t', 's')}"
        if not plan.allow_new_records:
            if plan.values:
                assignments = ", ".join(f"{self._quote(n)} = s.{self._quote(n)}" for n in plan.values)
                connection.exec_driver_sql(
                    f"UPDATE {self.target} AS t SET {assignments} FROM {self.staging} AS s "
                    f"WHERE {self._key_match('t', 's')} AND {condition}"
                )
            return MergeCounts(updated=changing, unchanged_or_older=existing - changing, skipped_new=staged - existing)
        columns = self._list(plan.columns)
        if plan.values:
            assignments = ", ".join(f"{self._quote(n)} = excluded.{self._quote(n)}" for n in plan.values)
            action = (
                f"DO UPDATE SET {assignments} "
                f"WHERE {self._newer('excluded', 't')} AND {self._distinct('t', 'excluded')}"
            )
        else:
            action = "DO NOTHING"
        # 'WHERE true' keeps SQLite's parser from reading ON CONFLICT as a join constraint of the SELECT.
        connection.exec_driver_sql(
            f"INSERT INTO {self.target} AS t ({columns}) SELECT {columns} FROM {self.staging} WHERE true "
            f"ON CONFLICT ({self._list(plan.key)}) {action}"
        )
        return MergeCounts(inserted=staged - existing, updated=changing, unchanged_or_older=existing - changing)


class CsvStream:
    """Rows as a readable CSV stream for psycopg2's `copy_expert`, written a slice of rows at a time.

    Writing all of them first would hold their CSV (about as large as the rows) in memory beside them;
    slices keep that to about 1 MB. `read` may return more or less than asked for, which copy_expert accepts.
    """

    def __init__(self, rows: pa.Table, slice_rows: int = CSV_SLICE_ROWS):
        self._slices = iter(rows.to_batches(max_chunksize=slice_rows))

    def read(self, size: int = -1) -> bytes:
        piece = next(self._slices, None)
        while piece is not None and piece.num_rows == 0:
            piece = next(self._slices, None)
        if piece is None:
            return b""
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(csv_ready(piece), sink, _CSV_OPTIONS)
        return sink.getvalue().to_pybytes()


class BatchFailed(Exception):
    """The batch tagged `tag` failed and was rolled back; the database's error is the __cause__."""

    def __init__(self, tag: object):
        super().__init__(f"batch {tag!r} failed")
        self.tag = tag


@dataclass
class _OpenBatch:
    tag: object
    staged: int  # rows in its staging table
    connection: sa.Connection
    transaction: sa.RootTransaction
    loading: Future


class BatchWriter:
    """Writes batches through a Staging strategy, one transaction each, committed in the order given.

    Where the strategy allows (`overlap_loads`: PostgreSQL), two connections take turns: while one merges
    and commits batch N, the other already COPYs batch N+1 into its own temporary staging table, in its own
    transaction, whose merge starts only once N is committed. The server's COPY then runs beside the merge
    instead of after it. Elsewhere each batch is staged and merged on one connection, one after the other.

    `submit` and `finish` return (tag, counts) for each batch they committed and raise BatchFailed for one
    that failed; a failed batch is rolled back, and the batch staged after it too (it is never written).
    Leaving the `with` block rolls back a batch still open: call `finish` first to commit it.
    """

    def __init__(self, engine: sa.Engine, staging: Staging):
        self._engine = engine
        self._staging = staging
        self._overlap = staging.overlap_loads
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="upsert-load") if self._overlap else None
        self._connections: list[sa.Connection] = []
        self._open: _OpenBatch | None = None

    def submit(self, tag: object, rows: pa.Table) -> list[tuple[object, MergeCounts]]:
        if not self._overlap:
            try:
                with self._engine.begin() as connection:
                    self._staging.stage(connection, rows)
                    return [(tag, self._staging.finish(connection, rows.num_rows))]
            except Exception as exc:
                raise BatchFailed(tag) from exc
        previous = self._open
        connection = self._free_connection(previous)
        transaction = connection.begin()
        loading = self._executor.submit(self._staging.stage, connection, rows)
        self._open = _OpenBatch(tag, rows.num_rows, connection, transaction, loading)
        if previous is None:
            return []
        try:
            return [self._complete(previous)]  # merges N while N+1 loads
        except BatchFailed:
            self._abandon()
            raise

    def finish(self) -> list[tuple[object, MergeCounts]]:
        """Merge and commit the batch still open, if any."""
        if self._open is None:
            return []
        opened, self._open = self._open, None
        return [self._complete(opened)]

    def _complete(self, opened: _OpenBatch) -> tuple[object, MergeCounts]:
        try:
            opened.loading.result()
            counts = self._staging.finish(opened.connection, opened.staged)
            opened.transaction.commit()
        except Exception as exc:
            _rollback(opened)
            raise BatchFailed(opened.tag) from exc
        return opened.tag, counts

    def _abandon(self) -> None:
        """Roll back the open batch: a batch before it failed (or the writer is closed), so it is not written."""
        opened, self._open = self._open, None
        if opened is not None:
            wait([opened.loading])  # its own error, if any, no longer matters
            _rollback(opened)

    def _free_connection(self, busy: _OpenBatch | None) -> sa.Connection:
        return next(c for c in self._connections if busy is None or c is not busy.connection)

    def __enter__(self) -> BatchWriter:
        if self._overlap:
            # Both now: a connection that cannot be had fails the write before any batch, not between two.
            for _ in range(2):
                try:
                    self._connections.append(self._engine.connect())
                except Exception:
                    self.__exit__(None, None, None)
                    raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._abandon()
        for connection in self._connections:
            connection.close()
        if self._executor is not None:
            self._executor.shutdown()


def _rollback(opened: _OpenBatch) -> None:
    try:
        opened.transaction.rollback()
    except sa.exc.SQLAlchemyError:
        opened.connection.invalidate()  # a broken connection (mid-COPY, lost): never hand it back to the pool


def staging_for(plan: MergePlan, dialect: sa.Dialect) -> Staging:
    """The staging/merge strategy for the engine's dialect; raise ValueError for databases we do not support."""
    name = dialect.name
    if name == "postgresql":
        return PostgresStaging(plan, dialect)
    if name in ("mysql", "mariadb"):
        return MariaDbStaging(plan, dialect)
    if name == "sqlite":
        return SqliteStaging(plan, dialect)
    raise ValueError(f"upserts support PostgreSQL, MariaDB/MySQL and SQLite, not {name}")


# --------------------------------------------------------------------------------------------------
# Values


def csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with every column in a form pyarrow's CSV writer writes and COPY reads back exactly.

    Nested values (struct, list, map) become JSON text, binary becomes bytea hex, dictionaries are decoded.
    Everything else is written as it is: decimals exactly, floats in shortest round-trip form, timestamps in
    ISO form ('Z' on time-zone-aware ones), booleans as true/false, NULL as an unquoted empty field and ''
    as "" (COPY's CSV rules).
    """
    arrays = []
    changed = False
    for column in batch.columns:
        converted = _csv_column(column)
        changed = changed or converted is not column
        arrays.append(converted)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names) if changed else batch


def _csv_column(column: pa.Array) -> pa.Array:
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _csv_column(column.dictionary_decode())
    if pa.types.is_null(kind):
        return column.cast(pa.string())
    if _is_nested(kind):
        return pa.array(_json_texts(column), pa.string())
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        return pa.array([None if v is None else "\\x" + v.hex() for v in column.to_pylist()], pa.string())
    return column


def python_columns(rows: pa.Table, *, text_temporal: bool) -> list[list]:
    """The columns as Python lists for executemany.

    Time-zone-aware timestamps become naive UTC (these databases have no zone-aware type); nested values become
    JSON text. `text_temporal` (SQLite): dates and times as ISO text and decimals as exact text, since sqlite3
    binds neither.
    """
    out: list[list] = []
    for chunked in rows.columns:
        column = chunked.combine_chunks()
        kind = column.type
        if pa.types.is_dictionary(kind):
            column = column.dictionary_decode()
            kind = column.type
        if pa.types.is_timestamp(kind) and kind.tz is not None:
            column = column.cast(pa.timestamp(kind.unit))  # the same instants, as UTC wall-clock times
            kind = column.type
        if _is_nested(kind):
            out.append(_json_texts(column))
        elif text_temporal and pa.types.is_decimal(kind):
            out.append([None if value is None else format(value, "f") for value in column.to_pylist()])
        elif text_temporal and pa.types.is_temporal(kind):
            # str(datetime) leaves out zero microseconds, like the ISO text other writers store.
            out.append([None if value is None else str(value) for value in column.to_pylist()])
        else:
            out.append(column.to_pylist())
    return out


def _is_nested(kind: pa.DataType) -> bool:
    return pa.types.is_struct(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_map(kind)


def _json_texts(column: pa.Array) -> list[str | None]:
    """Nested values as JSON text; a map (a list of key/value pairs in Python) as a JSON object."""
    is_map = pa.types.is_map(column.type)
    return [
        None if value is None else json.dumps(dict(value) if is_map else value, default=str, ensure_ascii=False)
        for value in column.to_pylist()
    ]
