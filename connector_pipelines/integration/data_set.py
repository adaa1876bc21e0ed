"""An integration's data set in the source database: its rows, its changes, its owners' roles, its lookups.

Every query is built from the spec's validated identifiers (quoted by the database's own preparer) and bound
parameters; no value from anywhere is formatted into SQL. The data set query is used as a subquery `ds`, so a
query may be anything that returns rows (a WITH clause included on the databases that allow it there).
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import sqlalchemy as sa

from connector_pipelines.mapping.engine import MappingError
from connector_pipelines.spec.integration import DataSet, LookupSpec, Roles
from connector_pipelines.transports.sql import SqlSource, strip_trailing_semicolon

OPERATIONS = {"create": "create", "insert": "create", "update": "update", "delete": "delete"}


def cursor_text(value: object) -> str | None:
    """A database value as the text a cursor keeps (and binds back: every database compares it correctly)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return str(value)


@dataclass(frozen=True)
class ChangeSummary:
    """What a change log or updated_at column shows since a cursor."""

    until: str | None  # the new cursor value (highest sequence or updated_at seen); None: nothing yet
    changes: int
    operations: Mapping[str, int]  # create/update/delete -> count (change logs only)


class DataSetReader:
    """Reads one data set through a SqlSource."""

    def __init__(self, source: SqlSource, data_set: DataSet):
        self.source = source
        self.data_set = data_set
        self._quote = source.engine.dialect.identifier_preparer.quote

    # ---- the rows -------------------------------------------------------------------------------------------

    @property
    def base_query(self) -> str:
        if self.data_set.table:
            return f"SELECT * FROM {self._table(self.data_set.table)}"
        return strip_trailing_semicolon(self.data_set.query or "")

    def read(
        self,
        *,
        updated_after: str | None = None,
        changes_after: str | None = None,
        changes_until: str | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """All rows, or those changed since a cursor (updated_at, or a range of change-log sequence ids)."""
        query = f"SELECT ds.* FROM ({self.base_query}) ds"
        params: dict[str, object] = {}
        if updated_after is not None:
            query += f" WHERE ds.{self._quote(self._updated_at)} >= :updated_after"
            params["updated_after"] = updated_after
        elif changes_after is not None or changes_until is not None:
            log = self.data_set.change_log
            assert log is not None, "changes_after needs a change log"
            match = " AND ".join(
                f"cl.{self._quote(log_key)} = ds.{self._quote(key)}" for log_key, key in zip(self._log_keys, self.key)
            )
            query += (
                f" WHERE EXISTS (SELECT 1 FROM {self._table(log.table)} cl WHERE {match}"
                + self._sequence_range("cl", changes_after, changes_until, params)
                + ")"
            )
        yield from self.source.stream_batches(query, params)

    def columns(self) -> list[str]:
        return list(self.source.schema(f"SELECT ds.* FROM ({self.base_query}) ds", {}).names)

    def preview(self, rows: int = 10) -> pa.Table:
        batches = []
        remaining = rows
        for batch in self.read():
            batches.append(batch.slice(0, remaining))
            remaining -= min(remaining, batch.num_rows)
            if remaining == 0:
                break
        return pa.Table.from_batches(batches) if batches else pa.table({})

    @property
    def key(self) -> list[str]:
        return list(self.data_set.key)

    @property
    def _updated_at(self) -> str:
        if not self.data_set.updated_at:
            raise ValueError("the data set has no updated_at column")
        return self.data_set.updated_at

    @property
    def _log_keys(self) -> list[str]:
        log = self.data_set.change_log
        assert log is not None
        return list(log.key) or self.key

    # ---- changes, for the sensors ---------------------------------------------------------------------------

    def change_log_summary(self, after: str | None) -> ChangeSummary:
        """Changes in the change log after the cursor, by operation."""
        log = self.data_set.change_log
        assert log is not None
        params: dict[str, object] = {}
        where = self._sequence_range("cl", after, None, params).removeprefix(" AND ")
        sql = (
            f"SELECT cl.{self._quote(log.operation)}, COUNT(*), MAX(cl.{self._quote(log.sequence)}) "
            f"FROM {self._table(log.table)} cl"
            + (f" WHERE {where}" if where else "")
            + f" GROUP BY cl.{self._quote(log.operation)}"
        )
        operations: dict[str, int] = {}
        highest = None
        with self.source.engine.connect() as conn:
            for operation, count, top in conn.execute(sa.text(sql), params):
                name = OPERATIONS.get(str(operation).strip().lower(), str(operation))
                operations[name] = operations.get(name, 0) + count
                highest = top if highest is None or (top is not None and top > highest) else highest
        return ChangeSummary(until=cursor_text(highest), changes=sum(operations.values()), operations=operations)

    def changes(self, after: str | None, until: str | None) -> dict[str, str]:
        """The last operation per record key in a range of the change log: key -> create/update/delete."""
        log = self.data_set.change_log
        assert log is not None
        params: dict[str, object] = {}
        where = self._sequence_range("cl", after, until, params).removeprefix(" AND ")
        keys = ", ".join(f"cl.{self._quote(k)}" for k in self._log_keys)
        sql = (
            f"SELECT {keys}, cl.{self._quote(log.operation)} FROM {self._table(log.table)} cl"
            + (f" WHERE {where}" if where else "")
            + f" ORDER BY cl.{self._quote(log.sequence)}"
        )
        last: dict[str, str] = {}
        width = len(self._log_keys)
        with self.source.engine.connect() as conn:
            for row in conn.execute(sa.text(sql), params):
                key = record_key(row[:width])
                last[key] = OPERATIONS.get(str(row[width]).strip().lower(), "update")
        return last

    def updated_summary(self, after: str | None) -> ChangeSummary:
        column = self._quote(self._updated_at)
        params: dict[str, object] = {}
        sql = f"SELECT COUNT(*), MAX(ds.{column}) FROM ({self.base_query}) ds"
        if after is not None:
            sql += f" WHERE ds.{column} > :after"
            params["after"] = after
        with self.source.engine.connect() as conn:
            count, highest = conn.execute(sa.text(sql), params).one()
        return ChangeSummary(until=cursor_text(highest) if count else after, changes=count, operations={})

    def key_set_digest(self) -> tuple[str, int]:
        """A digest of every record key (order-independent) and the count: a changed digest means keys came or
        went, which is how deletes show without a change log."""
        keys = ", ".join(f"ds.{self._quote(k)}" for k in self.key)
        digest = 0
        count = 0
        with self.source.engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(
                sa.text(f"SELECT {keys} FROM ({self.base_query}) ds")
            )
            for row in result:
                value = hashlib.blake2b(record_key(row).encode(), digest_size=8).digest()
                digest ^= int.from_bytes(value, "big")
                count += 1
        return f"{digest:016x}", count

    # ---- roles and lookups ----------------------------------------------------------------------------------

    def owners_with_roles(self, roles: Roles) -> set[str]:
        """User ids (as text) that hold at least one of the allowed roles."""
        table = self._table(roles.table)
        user, role = self._quote(roles.user_column), self._quote(roles.role_column)
        statement = sa.text(f"SELECT DISTINCT r.{user} FROM {table} r WHERE r.{role} IN :roles").bindparams(
            sa.bindparam("roles", expanding=True)
        )
        with self.source.engine.connect() as conn:
            return {str(row[0]) for row in conn.execute(statement, {"roles": list(roles.allowed)})}

    def lookup_table(self, lookup: LookupSpec) -> dict:
        """The lookup's key -> value pairs. Loaded once per run: lookup tables are reference data, not facts."""
        sql = f"SELECT l.{self._quote(lookup.key)}, l.{self._quote(lookup.value)} FROM {self._table(lookup.table)} l"
        with self.source.engine.connect() as conn:
            return {key: value for key, value in conn.execute(sa.text(sql))}

    # ---- helpers --------------------------------------------------------------------------------------------

    def _table(self, name: str) -> str:
        return ".".join(self._quote(part) for part in name.split("."))

    def _sequence_range(self, alias: str, after: str | None, until: str | None, params: dict) -> str:
        log = self.data_set.change_log
        assert log is not None
        column = f"{alias}.{self._quote(log.sequence)}"
        clause = ""
        if after is not None:
            clause += f" AND {column} > :seq_after"
            params["seq_after"] = _number_or_text(after)
        if until is not None:
            clause += f" AND {column} <= :seq_until"
            params["seq_until"] = _number_or_text(until)
        return clause


def record_key(values: Sequence[object]) -> str:
    """The ledger's text form of a key: the value for one column, values joined by '|' for several."""
    if len(values) == 1:
        return _key_text(values[0])
    return "|".join(_key_text(v).replace("\\", "\\\\").replace("|", "\\|") for v in values)


def _key_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return "" if value is None else str(value)


class MissingColumn(MappingError):
    """A column the spec names (the key, the owner) is not one the data set returns: the run stops, nothing is sent.

    pyarrow answers an unknown name with index -1, which `column()` reads as the *last* column: records would be
    keyed, or judged for their roles, by whatever column happens to come last.
    """


def column_problems(data_set: DataSet, columns: Sequence[str]) -> list[str]:
    """Every column named by `data_set.key` and `data_set.owner` that is not among `columns`, as one line each."""
    named = [(f"data_set.key '{k}'", k) for k in data_set.key]
    if data_set.owner:
        named.append((f"data_set.owner '{data_set.owner}'", data_set.owner))
    return [_missing(field, name, columns) for field, name in named if name not in columns]


def column_values(batch: pa.RecordBatch, name: str, field: str) -> list:
    """The values of column `name`, by name only; a missing column raises `MissingColumn` naming `field`."""
    index = batch.schema.get_field_index(name)
    if index < 0:
        raise MissingColumn(_missing(f"{field} '{name}'", name, batch.schema.names))
    return batch.column(index).to_pylist()


def _missing(field: str, name: str, columns: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(columns), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{field} is not a column of the data set{hint}; its columns are: {', '.join(columns)}"


def record_keys(batch: pa.RecordBatch, key: Sequence[str]) -> list[str]:
    """Record keys of every row of a batch, in row order."""
    columns = [column_values(batch, k, "data_set.key") for k in key]
    if len(columns) == 1:
        return [_key_text(v) for v in columns[0]]
    return [record_key(values) for values in zip(*columns)]


def _number_or_text(value: str) -> object:
    try:
        return int(value)
    except ValueError:
        return value
