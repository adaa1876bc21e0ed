"""An integration's data set in the source database: its rows, its changes, its owners' roles, its lookups.

Every query is built from the spec's validated identifiers (quoted by the database's own preparer) and bound
parameters; no value from anywhere is formatted into SQL. The data set query is used as a subquery `ds`, so a
query may be anything that returns rows (a WITH clause included on the databases that allow it there).
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import logging
import math
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import sqlalchemy as sa

from connector_pipelines.mapping.engine import MappingError
from connector_pipelines.spec.common import quoted
from connector_pipelines.spec.integration import DataSet, Roles
from connector_pipelines.transports.sql import SqlSource, strip_trailing_semicolon

log = logging.getLogger(__name__)

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

    def read_keys(self, keys: Iterable[str], chunk: int = 500) -> Iterator[pa.RecordBatch]:
        """The rows whose record key (the text `record_key` writes) is one of `keys`, read `chunk` keys a query.

        Each chunk is `SELECT ds.* FROM (<base>) ds WHERE ds."id" IN (:k_0, :k_1, ...)` for one key column, or
        `WHERE (ds."a" = :k0_0 AND ds."b" = :k1_0) OR ...` for several, every value bound as text: the database
        coerces it to the column's type, so an index on the key serves the read. A database may match more loosely
        than the ledger's text ('01' = 1, a case-insensitive collation, trailing spaces), so each chunk's rows are
        kept only when their `record_keys` text is one of that chunk's keys: the result is exact, and a row comes
        once however the keys fall into chunks.

        Before the first chunk one `LIMIT 0` query describes the data set (no row read): a key column the data set
        does not return raises `MissingColumn`, and on PostgreSQL it gives the key columns' types. Keys no row can
        have are then skipped, never sent, with a warning that names them and why:
        - a composite key whose text does not split (`split_record_key`) into one part per key column;
        - on PostgreSQL, a part that is not the text a value of its column's type has as a record key ('abc' or
          '1.0' for an integer column, '99999999999' for an `integer`, a malformed date, timestamp or uuid, text
          holding NUL). PostgreSQL refuses such a literal with an error that fails the whole statement; and since a
          row's key text always has that form, the exact filter above would drop whatever such a key matched, so
          skipping it changes no result. A key column of a type without such a check (json, interval, timetz...)
          is compared as text, `CAST(ds."k" AS TEXT)`: PostgreSQL's own output, which is what its record key holds,
          so exact and never refused, but not served by an index.
        On SQLite a subquery's column has no type affinity when it is an expression (`id + 0`, a column without a
        declared type), and then the integer 1 never equals the text '1': there a key that is a number's text is
        bound both as the text and as the number.

        Empty `keys` (or only skipped ones) yields nothing and reads nothing. Otherwise at least one batch comes,
        empty when no row matched, so the caller still gets the columns. Batches after the first are cast to its
        schema (SQLite's and MariaDB's types are inferred per query, so a chunk whose column is all NULL would
        otherwise come back as text).
        """
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1 key, not {chunk}")
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return
        parts, skipped = split_keys(wanted, len(self.key))
        if not parts:
            _warn_skipped(skipped)
            return
        type_codes = self._describe_key_columns()
        columns = [f"ds.{self._quote(k)}" for k in self.key]
        if self.source.dialect == "postgresql":
            columns = [
                column if code in _PG_CHECKED else f"CAST({column} AS TEXT)"
                for column, code in zip(columns, type_codes)
            ]
            parts, refused = postgres_readable(parts, type_codes)
            skipped.update(refused)
        _warn_skipped(skipped)
        numbers = self.source.dialect == "sqlite"
        items = list(parts.items())
        schema: pa.Schema | None = None
        empty: pa.RecordBatch | None = None
        for start in range(0, len(items), chunk):
            asked = dict(items[start : start + chunk])
            where, params = key_condition(columns, list(asked.values()), numbers=numbers)
            query = f"SELECT ds.* FROM ({self.base_query}) ds WHERE {where}"
            for batch in self.source.stream_batches(query, params):
                batch = only_keys(batch, self.key, asked)
                if not batch.num_rows:
                    empty = batch if empty is None else empty
                    continue
                schema = batch.schema if schema is None else schema
                yield conform(batch, schema)
        if schema is None and empty is not None:
            yield empty

    def _describe_key_columns(self) -> list[object]:
        """The driver's type code of each key column (PostgreSQL's type OIDs), from a query that reads no row."""
        with self.source.engine.connect() as conn:
            result = conn.execute(sa.text(f"SELECT ds.* FROM ({self.base_query}) ds LIMIT 0"))
            description = list(result.cursor.description)
            result.close()
        names = [column[0] for column in description]
        problems = [line for line in column_problems(self.data_set, names) if line.startswith("data_set.key")]
        if problems:
            raise MissingColumn(problems)
        return [description[names.index(k)][1] for k in self.key]

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

    # ---- roles ----------------------------------------------------------------------------------

    def owners_with_roles(self, roles: Roles) -> set[str]:
        """User ids (as text) that hold at least one of the allowed roles."""
        table = self._table(roles.table)
        user, role = self._quote(roles.user_column), self._quote(roles.role_column)
        statement = sa.text(f"SELECT DISTINCT r.{user} FROM {table} r WHERE r.{role} IN :roles").bindparams(
            sa.bindparam("roles", expanding=True)
        )
        with self.source.engine.connect() as conn:
            return {str(row[0]) for row in conn.execute(statement, {"roles": list(roles.allowed)})}

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


def split_record_key(text: str, width: int) -> list[str]:
    """The values of a record key of `width` columns: the exact inverse of `record_key` (as text).

    One column: the text itself (`record_key` escapes nothing then). Several: split on each '|' not escaped,
    with '\\|' and '\\\\' read back as '|' and '\\'. Text `record_key` cannot have written (another part count,
    a lone or unknown escape) raises ValueError.
    """
    if width < 1:
        raise ValueError(f"a key has at least one column, not {width}")
    if width == 1:
        return [text]
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            if char not in "\\|":
                raise ValueError(f"record key {quoted(text)} escapes {quoted(char)}; only '\\|' and '\\\\' are escapes")
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "|":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        raise ValueError(f"record key {quoted(text)} ends in a lone '\\' (a '\\' in a value is written '\\\\')")
    parts.append("".join(current))
    if len(parts) != width:
        raise ValueError(
            f"record key {quoted(text)} has {len(parts)} part(s) but the data set's key has {width} columns "
            "(values are joined by '|', and a '|' or '\\' in a value is written '\\|' or '\\\\')"
        )
    return parts


def split_keys(keys: Iterable[str], width: int) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Each key's values (`split_record_key`), and the keys that do not split, with the reason."""
    parts: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    for key in keys:
        try:
            parts[key] = split_record_key(key, width)
        except ValueError as exc:
            skipped[key] = str(exc)
    return parts, skipped


def key_condition(columns: Sequence[str], keys: Sequence[Sequence[str]], *, numbers: bool = False) -> tuple[str, dict]:
    """The WHERE condition matching rows whose `columns` hold one of `keys` (each one value per column), and its
    bound parameters. With `numbers` (SQLite) a value that is a number's text is bound as that number too."""
    params: dict[str, object] = {}

    def binds(text: str, name: str) -> list[str]:
        params[name] = text
        number = _number(text) if numbers else None
        if number is None:
            return [f":{name}"]
        params[f"{name}_n"] = number
        return [f":{name}", f":{name}_n"]

    if len(columns) == 1:
        names = [bind for i, (text,) in enumerate(keys) for bind in binds(text, f"k_{i}")]
        return f"{columns[0]} IN ({', '.join(names)})", params
    clauses = []
    for i, values in enumerate(keys):
        terms = []
        for c, (column, text) in enumerate(zip(columns, values, strict=True)):
            names = binds(text, f"k{c}_{i}")
            terms.append(f"{column} = {names[0]}" if len(names) == 1 else f"{column} IN ({', '.join(names)})")
        clauses.append("(" + " AND ".join(terms) + ")")
    return "(" + " OR ".join(clauses) + ")", params


def only_keys(batch: pa.RecordBatch, key: Sequence[str], wanted: Mapping[str, object] | set[str]) -> pa.RecordBatch:
    """The rows of `batch` whose record key is one of `wanted`."""
    if not batch.num_rows:
        return batch
    return batch.filter(pa.array([k in wanted for k in record_keys(batch, key)], pa.bool_()))


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` (the same query's columns, in order) with `schema`'s types; text columns take any value as text."""
    if batch.schema.equals(schema):
        return batch
    arrays = []
    for column, field in zip(batch.columns, schema, strict=True):
        if column.type == field.type:
            arrays.append(column)
            continue
        try:
            arrays.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            if not pa.types.is_string(field.type):
                raise ValueError(
                    f"column '{field.name}' holds {column.type} values in one chunk of keys and {field.type} in an "
                    f"earlier one; cast it in the query, for example CAST({field.name} AS TEXT)"
                ) from None
            arrays.append(pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string()))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def postgres_readable(
    parts: Mapping[str, Sequence[str]], type_codes: Sequence[object]
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The keys whose every value PostgreSQL takes for its column's type (by OID), and the others with why."""
    readable: dict[str, list[str]] = {}
    refused: dict[str, str] = {}
    for key, values in parts.items():
        problem = next(
            (p for p in (postgres_key_problem(v, code) for v, code in zip(values, type_codes, strict=True)) if p), None
        )
        if problem:
            refused[key] = problem
        else:
            readable[key] = list(values)
    return readable, refused


def postgres_key_problem(text: str, type_code: object) -> str | None:
    """Why `text` cannot be the record-key text of a value of the PostgreSQL type `type_code`, or None when it
    can (or the type is compared as text)."""
    if "\x00" in text:
        return f"{quoted(text)} holds a NUL character, which no PostgreSQL value has"
    checked = _PG_CHECKS.get(type_code) if isinstance(type_code, int) else None
    if checked is None:
        return None
    name, valid = checked
    return None if valid(text) else f"{quoted(text)} is not the record-key text of a {name} value"


def _canonical_int(text: str, low: int, high: int) -> bool:
    return bool(re.fullmatch(r"-?(0|[1-9][0-9]*)", text)) and text != "-0" and low <= int(text) <= high


def _canonical_float(text: str, limit: float) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return _key_text(value) == text and (not math.isfinite(value) or abs(value) <= limit)


def _numeric(text: str) -> bool:
    # PostgreSQL's numeric input (no Infinity before PostgreSQL 14): digits, a point, an exponent; or NaN.
    return text == "NaN" or bool(re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,4})?", text))


def _iso(parse) -> object:
    def valid(text: str) -> bool:
        try:
            return parse(text).isoformat() == text
        except ValueError:
            return False

    return valid


def _uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


# PostgreSQL type OID -> (name, check of a value's record-key text). The checks mirror the values the COPY path
# gives (integers, floats, dates and times as Python values; numeric and uuid as PostgreSQL prints them).
_PG_CHECKS: dict[int, tuple[str, object]] = {
    21: ("smallint", lambda t: _canonical_int(t, -(2**15), 2**15 - 1)),
    23: ("integer", lambda t: _canonical_int(t, -(2**31), 2**31 - 1)),
    20: ("bigint", lambda t: _canonical_int(t, -(2**63), 2**63 - 1)),
    26: ("oid", lambda t: _canonical_int(t, 0, 2**32 - 1)),
    700: ("real", lambda t: _canonical_float(t, 3.4028234663852886e38)),
    701: ("double precision", lambda t: _canonical_float(t, math.inf)),
    1700: ("numeric", _numeric),
    16: ("boolean", lambda t: t in ("True", "False")),
    1082: ("date", _iso(dt.date.fromisoformat)),
    1083: ("time", _iso(dt.time.fromisoformat)),
    1114: ("timestamp", _iso(dt.datetime.fromisoformat)),
    1184: ("timestamp with time zone", _iso(dt.datetime.fromisoformat)),
    2950: ("uuid", _uuid),
}
# Text types take any text (NUL aside); they and the checked types are compared as they are, served by an index.
_PG_TEXT = {18, 19, 25, 1042, 1043}
_PG_CHECKED = set(_PG_CHECKS) | _PG_TEXT


def _number(text: str) -> int | float | None:
    """The number whose record-key text `text` is, for SQLite's columns without affinity; None for other text."""
    if _canonical_int(text, -(2**63), 2**63 - 1):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and _key_text(value) == text else None


def _warn_skipped(skipped: Mapping[str, str], shown: int = 5) -> None:
    if skipped:
        reasons = "; ".join(list(skipped.values())[:shown])
        more = f" (and {len(skipped) - shown:,} more)" if len(skipped) > shown else ""
        log.warning("%s key(s) skipped, no record can have them: %s%s", f"{len(skipped):,}", reasons, more)


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
