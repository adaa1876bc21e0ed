"""Shared fixtures for the end-to-end extract tests (loaded as a plugin by conftest.py).

Each test gets its own project folder (`project`: connections.yaml and connectors/*.yaml written from Python
dicts), its own database namespace (a PostgreSQL schema, a MariaDB database or a SQLite file, dropped at
teardown), its own Dagster instance and staging folder. Databases that cannot be reached fail the tests that
need them; nothing here skips.

Helpers read an extract file back (CSV/TSV/Parquet/JSON Lines, optionally gzip) and normalize values so a
file's rows compare with the rows of a SQLAlchemy query over the same window, whatever each format does to
decimals, timestamps and booleans.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import gzip
import hashlib
import io
import json
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml

from connector_pipelines.definitions import build_definitions
from connector_pipelines.factories.extract import STORAGE_ENV

PG_SERVER_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
MARIADB_SERVER_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
UTC = dt.UTC


# --------------------------------------------------------------------------------------------------
# Databases


class TestDatabase:
    """One disposable namespace on a database server: what connections.yaml names (`url`) and an engine to
    seed it and to query the reference rows with (`engine`, sessions in UTC)."""

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, dialect: str, url: str, engine: sa.Engine):
        self.dialect = dialect
        self.url = url
        self.engine = engine

    def execute(self, statement: str, rows: Sequence[dict] | dict | None = None) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.text(statement), rows if rows is not None else {})

    def query(self, statement: str, params: dict | None = None) -> list[dict]:
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(sa.text(statement), params or {})]

    def bind_window(self, start: dt.datetime, end: dt.datetime) -> dict:
        """The window as this database compares it: aware on PostgreSQL, wall-clock UTC elsewhere."""
        if self.dialect == "postgresql":
            return {"window_start": start, "window_end": end}
        naive = [value.astimezone(UTC).replace(tzinfo=None) for value in (start, end)]
        if self.dialect == "sqlite":
            return {"window_start": naive[0].isoformat(sep=" "), "window_end": naive[1].isoformat(sep=" ")}
        return {"window_start": naive[0], "window_end": naive[1]}

    def timestamp_value(self, value: dt.datetime | None) -> Any:
        """How a test writes a timestamp into this database."""
        if value is None or self.dialect == "postgresql":
            return value
        if self.dialect == "sqlite":
            return str(value)  # SQLite keeps timestamps as ISO text
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value  # MariaDB: naive UTC


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pg_database() -> Iterator[TestDatabase]:
    """A fresh PostgreSQL schema; the connection URL puts it first on the search_path."""
    schema = _unique("cp_extract")
    admin = sa.create_engine(PG_SERVER_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    engine = sa.create_engine(
        PG_SERVER_URL, connect_args={"options": f"-csearch_path={schema} -cTimeZone=UTC"}, pool_pre_ping=True
    )
    try:
        yield TestDatabase("postgresql", url, engine)
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def mariadb_database() -> Iterator[TestDatabase]:
    """A fresh MariaDB database (MariaDB's schemas are databases), in utf8mb4."""
    name = _unique("cp_extract")
    admin = sa.create_engine(MARIADB_SERVER_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
    url = f"mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"
    engine = sa.create_engine(url)
    try:
        yield TestDatabase("mariadb", url, engine)
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(sa.text(f"DROP DATABASE {name}"))
        admin.dispose()


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Iterator[TestDatabase]:
    path = tmp_path / "source.db"
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    try:
        yield TestDatabase("sqlite", url, engine)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------------
# The sample table: every awkward value a file format can get wrong


SAMPLE_COLUMNS = {
    "id": "int",
    "label": "text",
    "amount": "decimal",
    "happened_at": "timestamp",
    "happened_tz": "timestamptz",
    "flag": "bool",
}
SAMPLE_QUERY = (
    "SELECT id, label, amount, happened_at, happened_tz, flag FROM sample "
    "WHERE happened_at >= :window_start AND happened_at < :window_end ORDER BY id"
)


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


# (id, label, amount, happened_at, happened_tz, flag); January 2024 holds ids 1-10.
SAMPLE_ROWS: list[tuple] = [
    (1, "plain", decimal.Decimal("10.00"), _at("2024-01-01 00:00:00"), _at("2024-01-01 00:00:00+00:00"), True),
    (
        2,
        "comma, inside",
        decimal.Decimal("1234.50"),
        _at("2024-01-05 08:30:00"),
        _at("2024-01-05 09:30:00+01:00"),
        False,
    ),
    (3, 'quote " inside and ""doubled""', decimal.Decimal("-0.01"), _at("2024-01-10 12:00:00.123456"), None, None),
    (
        4,
        "multi\nline\r\nwindows",
        decimal.Decimal("9999999999.99"),
        _at("2024-01-15 23:00:00"),
        _at("2024-01-15 23:00:00-05:00"),
        True,
    ),
    (
        5,
        "Zürich — 東京 ✓ café\u2028line separator",
        decimal.Decimal("0.00"),
        _at("2024-01-20 06:00:00"),
        _at("2024-01-20 06:00:00+09:00"),
        False,
    ),
    (6, None, None, _at("2024-01-21 00:00:00"), None, None),
    (7, "", decimal.Decimal("42.00"), _at("2024-01-22 10:15:30"), _at("2024-01-22 10:15:30+00:00"), True),
    (8, "NULL", decimal.Decimal("0.10"), _at("2024-01-23 00:00:01"), _at("2024-01-23 00:00:01+00:00"), False),
    (
        9,
        "tab\there;  padded  ",
        decimal.Decimal("7.25"),
        _at("2024-01-30 18:45:00"),
        _at("2024-01-30 18:45:00+02:00"),
        True,
    ),
    (
        10,
        "last instant",
        decimal.Decimal("1.00"),
        _at("2024-01-31 23:59:59.999999"),
        _at("2024-01-31 23:59:59.999999+00:00"),
        True,
    ),
    (11, "before the window", decimal.Decimal("1.00"), _at("2023-12-31 23:59:59.999999"), None, True),
    (12, "the window's end", decimal.Decimal("1.00"), _at("2024-02-01 00:00:00"), None, True),
]
JANUARY_IDS = list(range(1, 11))

_SAMPLE_DDL = {
    "postgresql": "CREATE TABLE sample (id integer PRIMARY KEY, label text, amount numeric(12,2), "
    "happened_at timestamp, happened_tz timestamptz, flag boolean)",
    "mariadb": "CREATE TABLE sample (id INT PRIMARY KEY, label TEXT, amount DECIMAL(12,2), happened_at DATETIME(6), "
    "happened_tz TIMESTAMP(6) NULL DEFAULT NULL, flag BOOLEAN) DEFAULT CHARSET=utf8mb4",
    "sqlite": "CREATE TABLE sample (id INTEGER PRIMARY KEY, label TEXT, amount NUMERIC(12,2), "
    "happened_at TIMESTAMP, happened_tz TIMESTAMP, flag BOOLEAN)",
}


def create_sample_table(database: TestDatabase, rows: Sequence[tuple] = SAMPLE_ROWS) -> None:
    database.execute(_SAMPLE_DDL[database.dialect])
    database.execute(
        "INSERT INTO sample (id, label, amount, happened_at, happened_tz, flag) "
        "VALUES (:id, :label, :amount, :happened_at, :happened_tz, :flag)",
        [
            {
                "id": row[0],
                "label": row[1],
                "amount": row[2] if database.dialect != "sqlite" or row[2] is None else float(row[2]),
                "happened_at": database.timestamp_value(row[3]),
                "happened_tz": database.timestamp_value(row[4]),
                "flag": row[5],
            }
            for row in rows
        ],
    )


def create_ticks_table(database: TestDatabase, ticks: dict[int, dt.datetime]) -> None:
    """`ticks(id, at)`: one timestamp per row, for window-boundary tests (aware values go into timestamptz)."""
    aware = any(value.tzinfo is not None for value in ticks.values())
    column = {"postgresql": "timestamptz" if aware else "timestamp", "mariadb": "DATETIME(6)"}.get(
        database.dialect, "TIMESTAMP"
    )
    database.execute(f"CREATE TABLE ticks (id integer PRIMARY KEY, at {column})")
    if not ticks:
        return
    database.execute(
        "INSERT INTO ticks (id, at) VALUES (:id, :at)",
        [{"id": key, "at": database.timestamp_value(value)} for key, value in ticks.items()],
    )


TICKS_QUERY = "SELECT id, at FROM ticks WHERE at >= :window_start AND at < :window_end ORDER BY id"


# --------------------------------------------------------------------------------------------------
# Normalizing values across formats


def _parse_datetime(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def _normalize(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "int":
        return int(value)
    if kind == "text":
        return str(value)
    if kind == "decimal":
        return decimal.Decimal(str(value))  # Decimal("1234.5") == Decimal("1234.50")
    if kind == "timestamp":
        parsed = _parse_datetime(value)
        return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
    if kind == "timestamptz":
        # An instant: compared in UTC. Databases without a zone-aware type hand back UTC wall-clock times.
        parsed = _parse_datetime(value)
        return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
    if kind == "bool":
        if isinstance(value, str):
            return {"t": True, "true": True, "1": True, "f": False, "false": False, "0": False}[value.lower()]
        return bool(value)
    raise AssertionError(f"unknown kind {kind}")


def normalize_rows(rows: list[dict], columns: dict[str, str]) -> list[dict]:
    return [{name: _normalize(kind, row[name]) for name, kind in columns.items()} for row in rows]


# --------------------------------------------------------------------------------------------------
# Reading extract files back


def file_bytes(path: Path, compression: str = "none") -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if compression == "gzip" else data


def read_extract_file(
    data: bytes, fmt: str, columns: Sequence[str], *, delimiter: str | None = None, header: bool = True
) -> list[dict]:
    """The file's rows as dicts of Python values (text values stay text in CSV/TSV).

    CSV/TSV: an unquoted empty field is NULL and a quoted one ("") is the empty string, as both PostgreSQL's
    COPY and pyarrow's writer write them; no other text (not even 'NULL') means NULL. The header, when there
    is one, must name the columns in order.
    """
    if fmt in ("csv", "tsv"):
        delimiter = delimiter or ("\t" if fmt == "tsv" else ",")
        if header:
            first = next(csv.reader(io.StringIO(data.decode("utf-8")), delimiter=delimiter), None)
            assert first == list(columns), f"header {first} != {list(columns)}"
        if not data:
            return []
        table = pa_csv.read_csv(
            io.BytesIO(data),
            read_options=pa_csv.ReadOptions(column_names=list(columns), skip_rows=1 if header else 0),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in columns},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        return table.to_pylist()
    if fmt == "jsonl":
        text = data.decode("utf-8")
        assert text == "" or text.endswith("\n"), "a JSON Lines file ends with a newline"
        # Split on "\n" only: splitlines() would also split inside strings holding U+2028 and the like.
        return [json.loads(line) for line in text.split("\n") if line]
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data)).to_pylist()
    raise AssertionError(f"unknown format {fmt}")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------------
# A project folder per test


class ExtractProject:
    """A connector project in a temporary folder: add connections and extracts, then build and run them."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.root = root
        self.resources = root / "resources"
        self.storage = root / "storage"
        self._monkeypatch = monkeypatch
        self.connections: dict[str, dict] = {}
        self.connectors: dict[str, dict] = {}
        monkeypatch.setenv(STORAGE_ENV, str(self.storage))

    # Configuration -----------------------------------------------------------------------------------

    def add_connection(self, name: str, entry: dict, env: dict[str, str] | None = None) -> None:
        self.connections[name] = entry
        for key, value in (env or {}).items():
            self._monkeypatch.setenv(key, value)

    def add_database(self, database: TestDatabase, name: str = "db") -> None:
        self.add_connection(name, {"type": "sql", "url": database.url})

    def add_folder(self, name: str = "outbox") -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        self.add_connection(name, {"type": "folder", "path": str(path)})
        return path

    def add_extract(
        self,
        name: str,
        query: str,
        *,
        source: str = "db",
        format: str = "csv",  # noqa: A002 - the YAML key
        destinations: list[dict] | None = None,
        schedule: dict | None = None,
        **extract: Any,
    ) -> None:
        spec: dict[str, Any] = {
            "source": {"connection": source, "query": query},
            "format": format,
            "destinations": destinations or [{"connection": "outbox"}],
            **extract,
        }
        if schedule is not None:
            spec["schedule"] = schedule
        connector: dict[str, Any] = {"kind": "extract", "extract": spec}
        for key in ("description", "owners", "tags", "enabled"):
            if key in extract:
                connector[key] = spec.pop(key)
        self.connectors[name] = connector

    def write(self) -> Path:
        (self.resources / "connectors").mkdir(parents=True, exist_ok=True)
        (self.resources / "connections.yaml").write_text(
            yaml.safe_dump({"connections": self.connections}, sort_keys=False), encoding="utf-8"
        )
        for old in (self.resources / "connectors").glob("*.yaml"):
            old.unlink()
        for name, connector in self.connectors.items():
            (self.resources / "connectors" / f"{name}.yaml").write_text(
                yaml.safe_dump(connector, sort_keys=False, allow_unicode=True), encoding="utf-8"
            )
        return self.resources

    def defs(self) -> dg.Definitions:
        return build_definitions(self.write())

    # Runs --------------------------------------------------------------------------------------------

    def run(
        self,
        name: str,
        instance: dg.DagsterInstance,
        *,
        partition_key: str | None = None,
        tags: dict[str, str] | None = None,
        window: tuple[str, str] | None = None,
        custom: bool = False,
        defs: dg.Definitions | None = None,
    ) -> dg.ExecuteInProcessResult:
        """Execute the extract's job (`custom`: the custom-window job) in process; never raises on failure."""
        defs = defs or self.defs()
        job = defs.resolve_job_def(f"extract_{name}" + ("_custom" if custom else ""))
        run_config = None
        if window is not None:
            part = "custom_file" if custom else "file"
            run_config = {
                "ops": {f"extract__{name}__{part}": {"config": {"window_start": window[0], "window_end": window[1]}}}
            }
        return job.execute_in_process(
            instance=instance, partition_key=partition_key, tags=tags, run_config=run_config, raise_on_error=False
        )

    def materialize(
        self,
        name: str,
        instance: dg.DagsterInstance,
        *,
        part: str = "file",
        partition_key: str | None = None,
        tags: dict[str, str] | None = None,
        run_config: dict | None = None,
        defs: dg.Definitions | None = None,
    ) -> dg.ExecuteInProcessResult:
        """`dg.materialize` of one of the extract's assets, with the project's resources; never raises."""
        defs = defs or self.defs()
        return dg.materialize(
            list(defs.assets or []),
            resources=defs.resources,
            selection=[dg.AssetKey(["extract", name, part])],
            instance=instance,
            partition_key=partition_key,
            tags=tags,
            run_config=run_config,
            raise_on_error=False,
        )

    def staging_files(self) -> list[Path]:
        return [path for path in self.storage.rglob("*") if path.is_file()] if self.storage.exists() else []


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ExtractProject:
    return ExtractProject(tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def instance() -> Iterator[dg.DagsterInstance]:
    """One throwaway instance for the session (creating one costs about half a second); tests tell their runs
    apart by run id, and `fresh_instance` gives a test an instance of its own."""
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def fresh_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


# --------------------------------------------------------------------------------------------------
# Reading a run's outcome


def materialization_metadata(result: dg.ExecuteInProcessResult, key: Sequence[str] | None = None) -> dict:
    """The (last) materialization's metadata as plain values."""
    events = result.get_asset_materialization_events()
    if key is not None:
        events = [e for e in events if e.asset_key == dg.AssetKey(list(key))]
    assert events, "no materialization"
    return {name: value.value for name, value in events[-1].materialization.metadata.items()}


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Everything a failed step reported: the Failure's description and the error chain."""
    parts: list[str] = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            parts.append(data.user_failure_data.description)
        error = data.error
        while error is not None:
            parts.append(error.message)
            error = error.cause
    assert parts, "no step failed"
    return "\n".join(parts)


def files_under(folder: Path) -> list[str]:
    """Every file below `folder` (hidden ones too), relative, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
