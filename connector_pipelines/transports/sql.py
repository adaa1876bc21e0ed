"""Read a SQL query's rows as Arrow record batches, with bound window parameters.

Two paths:
- PostgreSQL: the server's `COPY (query) TO STDOUT` stream, which is the fastest way out of PostgreSQL. A CSV/TSV
  extract writes that stream straight to the file; other formats parse it into Arrow batches with pyarrow's
  multithreaded CSV reader (see `postgres_copy.py`).
- Any other SQLAlchemy database: a server-side cursor (`stream_results`) read in chunks into Arrow batches.
Both keep memory flat: at most a few batches are alive at any time.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from connector_pipelines.transports import postgres_copy

DEFAULT_BATCH_ROWS = 65_536


@dataclass(frozen=True)
class Window:
    """A half-open time window [start, end), time-zone aware."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be time-zone aware")
        if self.end <= self.start:
            raise ValueError(f"window end {self.end.isoformat()} is not after its start {self.start.isoformat()}")


class SqlSource:
    """A SQL database reached through SQLAlchemy, read in Arrow record batches.

    `timezone` is the zone windows are expressed in: PostgreSQL sessions run in it (so `timestamp` columns
    compare as wall-clock times there and `timestamptz` output shows its offset); for databases without
    time-zone-aware types the window bounds are bound as wall-clock times in that zone.
    """

    def __init__(
        self, url: str, password: str | None = None, *, timezone: str = "UTC", batch_rows: int = DEFAULT_BATCH_ROWS
    ):
        parsed = make_url(url)
        if password:
            parsed = parsed.set(password=password)
        if parsed.drivername == "postgresql":
            # psycopg2 streams COPY in C (see postgres_copy.py); SQLAlchemy 2.1 would otherwise pick psycopg 3.
            parsed = parsed.set(drivername="postgresql+psycopg2")
        self._url = parsed
        self.timezone = timezone
        self.batch_rows = batch_rows
        self._engine: sa.Engine | None = None

    @property
    def dialect(self) -> str:
        return self._url.get_backend_name()

    @property
    def display_name(self) -> str:
        """`postgresql 127.0.0.1:5432/test`: the system, without user or password, for messages."""
        url = self._url
        if url.get_backend_name() == "sqlite":
            return f"sqlite {url.database}"
        port = f":{url.port}" if url.port else ""
        return f"{url.get_backend_name()} {url.host}{port}/{url.database}"

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            connect_args: dict = {}
            if self.dialect == "postgresql":
                # connect_args replaces the URL's own `?options=...` (e.g. -csearch_path=...): keep those too.
                configured = self._url.query.get("options")
                if isinstance(configured, tuple):
                    configured = " ".join(configured)
                timezone_option = f"-c TimeZone={self.timezone}"
                connect_args["options"] = f"{configured} {timezone_option}" if configured else timezone_option
                connect_args["connect_timeout"] = 15
            self._engine = sa.create_engine(self._url, connect_args=connect_args, pool_pre_ping=True)
        return self._engine

    @property
    def is_postgres_copy_capable(self) -> bool:
        return self._url.drivername == "postgresql+psycopg2"

    def window_parameters(self, query: str, window: Window | None) -> dict:
        """The bound values for :window_start/:window_end, in the form this database compares correctly."""
        if window is None:
            return {}
        if self.dialect == "postgresql":
            return {"window_start": window.start, "window_end": window.end}
        zone = _zone(self.timezone)
        start = window.start.astimezone(zone).replace(tzinfo=None)
        end = window.end.astimezone(zone).replace(tzinfo=None)
        if self.dialect == "sqlite":
            # SQLite stores timestamps as text; compare in the same 'YYYY-MM-DD HH:MM:SS' shape.
            return {"window_start": start.isoformat(sep=" "), "window_end": end.isoformat(sep=" ")}
        return {"window_start": start, "window_end": end}

    def schema(self, query: str, params: dict) -> pa.Schema:
        """The result's Arrow schema, from the query's description (runs it with LIMIT 0 where possible)."""
        if self.is_postgres_copy_capable:
            with self._raw_connection() as connection:
                return postgres_copy.describe(connection, query, params)
        for batch in self.stream_batches(query, params):
            return batch.schema
        return pa.schema([])

    def copy_csv(self, query: str, params: dict, out: BinaryIO, *, delimiter: str, header: bool) -> int:
        """PostgreSQL only: stream the result as CSV into `out`; returns the row count."""
        with self._raw_connection() as connection:
            return postgres_copy.copy_csv(connection, query, params, out, delimiter=delimiter, header=header)

    def stream_batches(self, query: str, params: dict) -> Iterator[pa.RecordBatch]:
        """Yield the result in record batches of at most `batch_rows` rows."""
        query = strip_trailing_semicolon(query)
        if self.is_postgres_copy_capable:
            with self._raw_connection() as connection:
                schema = postgres_copy.describe(connection, query, params)
            yield from postgres_copy.stream_batches(self._raw_connection, query, params, schema)
            return
        yield from self._stream_generic(query, params)

    def _stream_generic(self, query: str, params: dict) -> Iterator[pa.RecordBatch]:
        with self.engine.connect() as connection:
            result = connection.execution_options(stream_results=True, max_row_buffer=self.batch_rows).execute(
                sa.text(query), params
            )
            names = list(result.keys())
            schema: pa.Schema | None = None
            for rows in result.partitions(self.batch_rows):
                columns = list(zip(*rows)) if rows else [[] for _ in names]
                if schema is None:
                    schema = pa.schema([pa.field(n, _infer_type(c)) for n, c in zip(names, columns)])
                yield pa.RecordBatch.from_arrays(
                    [_to_array(c, f.type, f.name) for c, f in zip(columns, schema)], schema=schema
                )
            if schema is None:
                # No rows, but still columns: an empty batch gives the file its header (CSV) or schema (Parquet),
                # as PostgreSQL's path does.
                schema = pa.schema([pa.field(n, pa.string()) for n in names])
                yield pa.RecordBatch.from_arrays([pa.array([], pa.string()) for _ in names], schema=schema)

    def _raw_connection(self):
        return _RawConnection(self.engine)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class _RawConnection:
    """The driver's own connection (psycopg2), returned to SQLAlchemy's pool afterwards."""

    def __init__(self, engine: sa.Engine):
        self._engine = engine

    def __enter__(self):
        self._wrapper = self._engine.raw_connection()
        return self._wrapper.driver_connection

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            # A failed COPY can leave the connection mid-protocol: never hand it back to the pool.
            self._wrapper.invalidate()
            return
        self._wrapper.rollback()
        self._wrapper.close()


def strip_trailing_semicolon(query: str) -> str:
    return re.sub(r"[;\s]+$", "", query)


def _zone(name: str):
    import zoneinfo

    return zoneinfo.ZoneInfo(name)


def _infer_type(values) -> pa.DataType:
    """An Arrow type for a column, from its first batch. Decimals are widened so later batches fit."""
    sample = next((v for v in values if v is not None), None)
    if sample is None:
        return pa.string()
    if isinstance(sample, bool):
        return pa.bool_()
    if isinstance(sample, int):
        # SQLite's NUMERIC affinity keeps 10.0 as the integer 10 beside 10.5 as a real: any float makes it float.
        return pa.float64() if any(isinstance(v, float) for v in values) else pa.int64()
    if isinstance(sample, float):
        return pa.float64()
    if isinstance(sample, decimal.Decimal):
        scale = max((-v.as_tuple().exponent for v in values if isinstance(v, decimal.Decimal)), default=0)
        return pa.decimal128(38, max(0, min(int(scale), 18)))
    if isinstance(sample, dt.datetime):
        return pa.timestamp("us", tz=str(sample.tzinfo) if sample.tzinfo else None)
    if isinstance(sample, dt.date):
        return pa.date32()
    if isinstance(sample, dt.time):
        return pa.time64("us")
    if isinstance(sample, (bytes, bytearray, memoryview)):
        return pa.binary()
    return pa.string()


def _to_array(values, arrow_type: pa.DataType, name: str) -> pa.Array:
    misfit = ValueError(
        f"column '{name}' holds values that do not fit its type {arrow_type} (seen in the first rows); "
        "cast it in the query, for example CAST({name} AS TEXT)".replace("{name}", name)
    )
    if pa.types.is_integer(arrow_type) and any(isinstance(v, float) and not v.is_integer() for v in values):
        # pyarrow would silently truncate 10.5 to 10 in an integer column.
        raise misfit
    try:
        return pa.array(values, type=arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        if pa.types.is_string(arrow_type):
            # The first batch held only NULLs (typed as text), or SQLite mixed types in one column: keep as text.
            return pa.array([None if v is None else str(v) for v in values], type=pa.string())
        raise misfit from None


def resolve_sqlite_path(url: str, base_dir: Path) -> str:
    """`sqlite:///var/demo.db` is relative to the project root, not to wherever Dagster was started."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database)
        if not path.is_absolute():
            return parsed.set(database=str((base_dir / path).resolve())).render_as_string(hide_password=False)
    return url
