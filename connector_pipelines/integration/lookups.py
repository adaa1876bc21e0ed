"""Lookup tables read per batch, for the values the batch needs, with a bounded cache.

A configuration's `lookups:` resolve a value through another table (`lookup('owner', owner_id)`). Loading such a
table whole into a dict once per run costs memory in proportion to the table: gigabytes for ten million rows.
`SqlLookup` instead answers `get(value)` from a cache that `prefetch(values)` fills before each batch is mapped
(`mapping/expressions.py` calls it with the batch's argument values): the distinct values not cached yet are asked in
`SELECT l.key, l.value FROM <table> l WHERE l.key IN (:v0, ...)`, 500 bound values a statement, and both the values
found and the misses are remembered, least recently used first out beyond `cache_entries`.

Answers are exactly those of a dict of the whole table (what runs loaded before), as `functions.lookup` reads it:
`table.get(value)` with Python's equality (7, 7.0, Decimal('7') and True are one key; 7 is not '7'), then, for a
non-text value, `table.get(as_text(value))`. The database compares more loosely (a case-insensitive collation, '7'
coerced to 7), so each statement's rows are put in a dict and read with Python's equality: a row the database
returned for a value but Python would not match is never an answer. What is bound for a value is the form of that
value the key column can hold, by the column's type (`_TypedKey`): a value no key of that type can equal is never
sent, which keeps PostgreSQL from refusing a statement (`'abc'` for an integer column) and MariaDB from comparing a
text column with a number (no index then). SQLite's columns hold any type of value whatever they are declared, so
there every value is bound as the nearest type SQLite has (`_sqlite_bind`).

A key column of a type without a rule here (json, intervals on PostgreSQL, geometry...) raises `MappingError` when
the lookup is first used: look it up through a view that casts the key to text, and the value with `text(...)`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from connector_pipelines.mapping.conversions import as_text
from connector_pipelines.mapping.engine import MappingError
from connector_pipelines.spec.integration import LookupSpec
from connector_pipelines.transports.sql import SqlSource

log = logging.getLogger(__name__)

CHUNK = 500  # bound values per statement: well under every driver's parameter limit (SQLite's is 32,766)
_MISS = object()  # cached: the table has no such key (a NULL value is cached as None)
_NOT_CACHED = object()
_NUMBER = (int, float, Decimal)  # bool is an int: True == 1 in a dict as well
_INT64 = (-(2**63), 2**63 - 1)


class SqlLookup:
    """A lookup table in a SQL database, read per batch for the values it needs; `get` answers as a dict would.

    Memory is bounded whatever the table's size: at most `cache_entries` values (found or not) stay cached between
    batches, plus the answers for the last `prefetch` (at most two per distinct value of that batch: the value and
    its text). Not thread-safe: one mapping evaluates it at a time.
    """

    def __init__(self, source: SqlSource, spec: LookupSpec, cache_entries: int = 100_000, chunk: int = CHUNK):
        if cache_entries < 0:
            raise ValueError(f"cache_entries is at least 0, not {cache_entries}")
        if chunk < 1:
            raise ValueError(f"chunk is at least 1 value, not {chunk}")
        self.source = source
        self.spec = spec
        self.cache_entries = cache_entries
        self.chunk = chunk
        self.statements = 0  # lookup statements run, and values bound in them (for logs and benchmarks)
        self.values_asked = 0
        self._cache: OrderedDict[object, object] = OrderedDict()
        self._batch: dict[object, object] = {}
        self._bind: Callable[[object], object] | None = None

    def __repr__(self) -> str:
        return f"SqlLookup({self.spec.table}.{self.spec.key} -> {self.spec.value}, {len(self._cache):,} cached)"

    @property
    def cached(self) -> int:
        """How many values the cache holds between batches (never more than `cache_entries`)."""
        return len(self._cache)

    def check(self) -> None:
        """Fail now, not at the first batch, when the table or its columns are not there or the key's type has no
        rule: reads the catalog and runs the lookup's SELECT with `WHERE 1 = 0` (no row is read).

        Raises `MappingError` saying what is missing; a database that cannot be reached still raises its own error
        (that is no configuration problem, and a retry may succeed)."""
        self._binder()
        quote = self.source.engine.dialect.identifier_preparer.quote
        sql = (
            f"SELECT l.{quote(self.spec.key)}, l.{quote(self.spec.value)} FROM {_table(quote, self.spec.table)} l "
            "WHERE 1 = 0"
        )
        with self.source.engine.connect() as conn:
            try:
                conn.execute(sa.text(sql)).close()
            except sa.exc.DBAPIError as exc:  # connected, and the statement refused: the spec names what is not there
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
                raise MappingError(
                    f"lookup table {self.spec.table} ({self.spec.key} -> {self.spec.value}) cannot be read in "
                    f"{self.source.display_name}: {reason}"
                ) from None

    def prefetch(self, values: Iterable[object]) -> None:
        """Make `get` answer every value of `values` (and its text, as `lookup` also tries) without a statement
        more: one statement per `chunk` values neither cached nor known missing."""
        batch: dict[object, object] = {}
        wanted: list[object] = []
        for key in probe_keys(values):
            found = self._cache.get(key, _NOT_CACHED)
            if found is _NOT_CACHED:
                wanted.append(key)
            else:
                self._cache.move_to_end(key)
                batch[key] = found
        fetched = self._fetch(wanted)
        batch.update(fetched)
        self._remember(fetched)
        self._batch = batch

    def get(self, key: object, default: object = None) -> object:
        """`table.get(key, default)` of the whole table: from the last prefetch, the cache, or else a statement."""
        found = self._batch.get(key, _NOT_CACHED)  # an unhashable key raises TypeError here, as a dict's get does
        if found is _NOT_CACHED:
            found = self._cache.get(key, _NOT_CACHED)
            if found is _NOT_CACHED:
                fetched = self._fetch([key])
                self._remember(fetched)
                found = fetched[key]
            else:
                self._cache.move_to_end(key)
        return default if found is _MISS else found

    # ---- the statements ---------------------------------------------------------------------------------------

    def _fetch(self, keys: Sequence[object]) -> dict[object, object]:
        """key -> value found (or _MISS) for each of `keys`, asking the database only for the forms it can match."""
        answers: dict[object, object] = dict.fromkeys(keys, _MISS)
        if not keys:
            return answers
        bind = self._binder()
        bound: dict[object, object] = {}  # key -> the value bound for it
        for key in keys:
            value = bind(key)
            if value is not None:
                bound[key] = value
        if not bound:
            return answers
        # One dict of every row returned, read with Python's equality: exactly the rows of the whole table whose key
        # equals one of `keys`, since every such row equals its bound form in the database too.
        rows: dict[object, object] = {}
        for chunk in _chunks(list(dict.fromkeys(bound.values())), self.chunk):
            rows.update(self._select(chunk))
        for key in bound:
            answers[key] = rows.get(key, _MISS)
        return answers

    def _select(self, values: Sequence[object]) -> Iterator[tuple[object, object]]:
        names = [f"v{i}" for i in range(len(values))]
        quote = self.source.engine.dialect.identifier_preparer.quote
        key = f"l.{quote(self.spec.key)}"
        sql = (
            f"SELECT {key}, l.{quote(self.spec.value)} FROM {_table(quote, self.spec.table)} l "
            f"WHERE {key} IN ({', '.join(':' + n for n in names)})"
        )
        self.statements += 1
        self.values_asked += len(values)
        with self.source.engine.connect() as conn:
            for found, value in conn.execute(sa.text(sql), dict(zip(names, values))):
                # psycopg2 gives bytea as a memoryview, which equals bytes but cannot be a dict key
                yield (bytes(found) if isinstance(found, memoryview) else found), value

    def _remember(self, answers: Mapping[object, object]) -> None:
        if not self.cache_entries:
            return
        cache = self._cache
        for key, found in answers.items():
            cache[key] = found
            cache.move_to_end(key)
        while len(cache) > self.cache_entries:
            cache.popitem(last=False)

    def _binder(self) -> Callable[[object], object]:
        if self._bind is None:
            self._bind = _sqlite_bind if self.source.dialect == "sqlite" else self._typed_binder()
        return self._bind

    def _typed_binder(self) -> Callable[[object], object]:
        """The bind rule for the key column's type, read once from the database's catalog (no row is read)."""
        schema, _, name = self.spec.table.rpartition(".")
        with self.source.engine.connect() as conn:
            try:
                columns = sa.inspect(conn).get_columns(name, schema=schema or None)
            except sa.exc.NoSuchTableError:
                raise MappingError(
                    f"lookup table {self.spec.table} does not exist in {self.source.display_name}"
                ) from None
        types = {column["name"]: column["type"] for column in columns}
        folded = {column["name"].lower(): column["type"] for column in columns}  # a catalog may fold the case
        column_type = types.get(self.spec.key, folded.get(self.spec.key.lower()))
        if column_type is None:
            raise MappingError(
                f"lookup key '{self.spec.key}' is not a column of {self.spec.table}; its columns are: "
                + ", ".join(column["name"] for column in columns)
            )
        bind = typed_binder(column_type, self.source.dialect)
        if bind is None:
            raise MappingError(
                f"lookup key {self.spec.table}.{self.spec.key} is of type {column_type}, which a lookup does not "
                "match by: look it up through a view that casts the key to text, and the value with text(...)"
            )
        return bind


class SqlLookups(AbstractContextManager):
    """A configuration's lookups as `SqlLookup`s, and the connections opened for those on another database;
    `close()` (or leaving the `with` block) disposes of those connections, not of the data set's.

    `close()` may be called more than once: a lookup used after it connects again (a `SqlSource` makes its engine
    when next asked), and the next `close()` disposes of that too. So a delivery can close its lookups at the end of
    each entry point (preview, plan, run) and still be used again.
    """

    def __init__(
        self,
        specs: Mapping[str, LookupSpec],
        source: SqlSource,
        open_source: Callable[[str], SqlSource],
        cache_entries: int = 100_000,
    ):
        self._opened: dict[str, SqlSource] = {}
        self.tables: dict[str, SqlLookup] = {}
        for name, spec in specs.items():
            own = source
            if spec.connection:
                if spec.connection not in self._opened:
                    self._opened[spec.connection] = open_source(spec.connection)
                own = self._opened[spec.connection]
            self.tables[name] = SqlLookup(own, spec, cache_entries)

    def check(self) -> None:
        """`SqlLookup.check` for each table, its lookup's name in the error: a bad lookup spec fails the run before
        anything is read or sent, as loading the tables whole used to."""
        for name, table in self.tables.items():
            try:
                table.check()
            except MappingError as exc:
                raise MappingError([f"lookup '{name}': {problem}" for problem in exc.problems]) from None

    def close(self) -> None:
        for opened in self._opened.values():
            opened.dispose()

    def __exit__(self, *exc_info) -> None:
        self.close()


# ---- what a value is bound as -------------------------------------------------------------------------------------


def probe_keys(values: Iterable[object]) -> list[object]:
    """The distinct keys `functions.lookup` may ask a table for these values: each value, and the text of a
    non-text one. None (never looked up) and unhashable values (a row error at `get`) are left out."""
    keys: dict[object, None] = {}
    for value in values:
        if value is None:
            continue
        try:
            keys[value] = None
        except TypeError:
            continue
        if not isinstance(value, str):
            text = as_text(value)
            if text is not None:
                keys[text] = None
    return list(keys)


def typed_binder(column_type: sa.types.TypeEngine, dialect: str) -> Callable[[object], object] | None:
    """For a key column of this type on PostgreSQL or MariaDB: a function giving, for a Python value, the value to
    bind so that the database matches every key equal to it in Python, or None when no key of that type can equal
    it (then nothing is asked). None for a type without such a rule."""
    rule = _rule(column_type, dialect)
    if rule is None:
        return None

    def bind(value: object) -> object:
        try:
            return rule(value)
        except (ValueError, TypeError, ArithmeticError, OverflowError):
            return None  # e.g. a signalling NaN, or a number past float's range: no key of the type equals it

    return bind


def _rule(column_type: sa.types.TypeEngine, dialect: str) -> Callable[[object], object] | None:
    # Order matters: Float is a Numeric, DateTime is not a Date but datetime is a date, Enum is a String.
    if isinstance(column_type, sa.Boolean):
        return lambda v: bool(v) if isinstance(v, _NUMBER) and v in (0, 1) else None
    if isinstance(column_type, sa.Integer):
        low, high = _INT64 if dialect == "postgresql" else (_INT64[0], 2**64 - 1)  # MariaDB's BIGINT UNSIGNED
        return lambda v: _integral(v, low, high)
    if isinstance(column_type, sa.Float):
        return _as_float
    if isinstance(column_type, sa.Numeric):
        return lambda v: Decimal(v) if isinstance(v, _NUMBER) and _finite(v) else None
    if isinstance(column_type, sa.DateTime):
        aware = bool(getattr(column_type, "timezone", False)) and dialect == "postgresql"
        # A naive and an aware datetime are never equal in Python; binding one for the other would also make
        # PostgreSQL cast the column (no index).
        return lambda v: v if isinstance(v, dt.datetime) and (v.utcoffset() is not None) == aware else None
    if isinstance(column_type, sa.Date):
        return lambda v: v if isinstance(v, dt.date) and not isinstance(v, dt.datetime) else None
    if isinstance(column_type, sa.Time):
        kind = dt.timedelta if isinstance(column_type, mysql.TIME) else dt.time  # pymysql reads TIME as a duration
        return lambda v: v if isinstance(v, kind) else None
    if isinstance(column_type, sa.String):
        if dialect == "postgresql":
            return lambda v: v if isinstance(v, str) and "\x00" not in v else None  # PostgreSQL text has no NUL
        return lambda v: v if isinstance(v, str) else None
    if isinstance(column_type, sa.Uuid):
        return lambda v: v if isinstance(v, uuid.UUID) else None  # psycopg2 reads uuid as uuid.UUID
    if isinstance(column_type, sa.LargeBinary | sa.types._Binary):
        return lambda v: v if isinstance(v, bytes) else None
    return None


def _sqlite_bind(value: object) -> object:
    """What to bind for a value on SQLite, whose values are integers, reals, text and blobs whatever a column
    declares: the one of those equal to the value in Python; None when none is (a date, a Decimal like 0.1)."""
    if isinstance(value, str | bytes):
        return value
    if not isinstance(value, _NUMBER):
        return None
    try:
        integral = _integral(value, *_INT64)
        return integral if integral is not None else _as_float(value)
    except (ValueError, TypeError, ArithmeticError, OverflowError):
        return None


def _integral(value: object, low: int, high: int) -> int | None:
    if not isinstance(value, _NUMBER) or not _finite(value) or value != int(value):
        return None
    number = int(value)
    return number if low <= number <= high else None


def _as_float(value: object) -> float | None:
    if not isinstance(value, _NUMBER) or not _finite(value):
        return None
    number = float(value)
    return number if number == value else None  # Python compares int, float and Decimal exactly


def _finite(value: int | float | Decimal) -> bool:
    if isinstance(value, Decimal):
        return value.is_finite()
    return isinstance(value, int) or math.isfinite(value)


def _table(quote: Callable[[str], str], name: str) -> str:
    return ".".join(quote(part) for part in name.split("."))


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
