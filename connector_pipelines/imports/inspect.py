"""What the CLI reads or edits for imports without starting a run: preview, validate, automap, duplicate, delete.

Nothing here prints or exits; the CLI (import_cli.py) turns the results and exceptions into output and exit codes:
- `ConnectorConfigError`: the configuration stops the command (a secret's environment variable is unset): exit 2.
- `SourceFailed`: the source could not be read (no connection, a bad query, an unreadable file), with the cause.
  `NoFileToRead` (a subclass) means the folder or inbox holds no file matching the pattern.

`validate(project, loaded) -> list[str]` is the check a run makes before it imports: the mapping against the
source's columns and the target table (one line per problem, empty when the import may run).
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa
import yaml

from connector_pipelines.errors import ConnectorConfigError, TransportError
from connector_pipelines.imports.file_reader import FileReading, FileRejected, read_file
from connector_pipelines.imports.files import FilePattern
from connector_pipelines.imports.source_query import strip_query_end
from connector_pipelines.integration.inspect import sql_source
from connector_pipelines.mapping.automap import Proposal, propose_mapping
from connector_pipelines.mapping.engine import TargetField
from connector_pipelines.mapping.suggest import did_you_mean
from connector_pipelines.spec.common import NAME_PATTERN
from connector_pipelines.spec.imports import ImportConnector, ImportMappingRule, ImportSpec
from connector_pipelines.spec.loader import LoadedConnector, Project
from connector_pipelines.spec.yaml_source import display_path
from connector_pipelines.state.database import default_state_url
from connector_pipelines.state.import_state import ImportState
from connector_pipelines.storage import Storage
from connector_pipelines.transports.base import FileSource, RemoteFile
from connector_pipelines.transports.sql import SqlSource

# Dialects whose SQL takes `LIMIT n`: a preview wraps the query; any other database is streamed and cut short.
_LIMIT_DIALECTS = ("postgresql", "mysql", "mariadb", "sqlite")
_SHOWN_NAMES = 5  # file or column names listed in a message before "..."
_SHOWN_COLUMNS = 30


class SourceFailed(Exception):
    """The source could not be read; the message names the system and the cause (the database's own words)."""


class NoFileToRead(SourceFailed):
    """A file or email source holds no file matching its pattern (yet)."""


class FileUnreadable(SourceFailed):
    """The newest matching file cannot be read (the import would quarantine it); the message gives the reason."""


# --------------------------------------------------------------------------------------------------
# Reading the source


@dataclass(frozen=True)
class SourceSample:
    """The first rows of an import's source, as read for a preview."""

    columns: list[str]
    types: list[str]  # Arrow types, one per column
    rows: list[tuple]
    origin: str  # what was read: "the query on postgresql 127.0.0.1:5432/test", "'a.csv' (...) in folder ..."


def import_of(loaded: LoadedConnector) -> ImportConnector:
    if loaded.kind != "import":
        raise ConnectorConfigError([f"'{loaded.name}' is an {loaded.kind} connector; this command is for imports"])
    return loaded.spec


def preview(project: Project, loaded: LoadedConnector, rows: int = 10) -> SourceSample:
    """The first `rows` source rows: of the query (limited by the database), or of the newest matching file."""
    connector = import_of(loaded)
    if rows < 1:
        raise ConnectorConfigError(["--rows must be at least 1"])
    warehouse = connector.import_.source.warehouse
    if warehouse is not None:
        source = sql_source(project, warehouse.connection)
        try:
            _check_connects(source)
            return _query_sample(source, warehouse.query, rows)
        finally:
            source.dispose()
    if connector.import_.source.api is not None:
        return _sample(*_api_first_page(project, connector, rows))
    with _newest_file(project, connector) as (reading, origin):
        taken: list[pa.RecordBatch] = []
        count = 0
        for batch in reading.batches():
            taken.append(batch.slice(0, rows - count))
            count += taken[-1].num_rows
            if count >= rows:
                break
        return _sample(pa.Table.from_batches(taken), origin)


def _sample(table: pa.Table, origin: str) -> SourceSample:
    columns = [column.to_pylist() for column in table.columns]  # by position: a query may repeat a column name
    return SourceSample(
        columns=list(table.column_names),
        types=[str(f.type) for f in table.schema],
        rows=list(zip(*columns)) if columns else [],
        origin=origin,
    )


def record_preview(project: Project, loaded: LoadedConnector) -> str:
    """Remember that this source (connection + query, or folder + pattern) previewed fine; returns its hash."""
    connector = import_of(loaded)
    source_hash = connector.source_hash(project.connections)
    state = ImportState(default_state_url(Storage.for_project(project.base_dir).root, project.environment))
    try:
        state.record_preview(connector.name, source_hash)
    finally:
        state.dispose()
    return source_hash


def source_columns(project: Project, loaded: LoadedConnector) -> tuple[list[str], str]:
    """(the source's column names, where they were read): the query's result columns (no rows are read), or
    the header of the newest matching file. Raises NoFileToRead when no file is there, SourceFailed otherwise."""
    connector = import_of(loaded)
    warehouse = connector.import_.source.warehouse
    if warehouse is not None:
        source = sql_source(project, warehouse.connection)
        try:
            _check_connects(source)
            return _query_columns(source, warehouse.query), f"the query on {source.display_name}"
        finally:
            source.dispose()
    if connector.import_.source.api is not None:
        table, origin = _api_first_page(project, connector, 100)
        return list(table.column_names), origin
    with _newest_file(project, connector) as (reading, origin):
        return list(reading.columns), origin


def _api_first_page(project: Project, connector: ImportConnector, rows: int) -> tuple[pa.Table, str]:
    """The first records of an API source's first page, and where they were read."""
    from connector_pipelines.imports.api_source import connector_url, first_records, open_api

    api = connector.import_.source.api
    try:
        access = open_api(project.connections[api.connection], project.base_dir)
    except TransportError as exc:  # an unset variable: the configuration stops the command
        raise ConnectorConfigError([f"connection '{api.connection}': {exc}"]) from None
    origin = f"the first page of {connector_url(access, api)}"
    read = {rule.source for rule in connector.import_.mapping if rule.source} | {api.updated_at} - {None}
    try:
        return first_records(api, access, rows, sorted(read)), origin
    except TransportError as exc:
        raise SourceFailed(f"{origin}: {exc}") from None


def _missing_database(source: SqlSource) -> str | None:
    """Why a SQLite database cannot be opened (its file is missing: connecting would create an empty one)."""
    url = source.engine.url
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return None
    if Path(database).exists():
        return None
    return f"cannot connect to {source.display_name}: the database file does not exist"


def _check_connects(source: SqlSource) -> None:
    missing = _missing_database(source)
    if missing:
        raise SourceFailed(missing)
    try:
        with source.engine.connect():
            pass
    except Exception as exc:  # the driver's own error types differ per database
        raise SourceFailed(f"cannot connect to {source.display_name}: {database_message(exc)}") from None


def _query_sample(source: SqlSource, query: str, rows: int) -> SourceSample:
    origin = f"the query on {source.display_name}"
    if source.dialect in _LIMIT_DIALECTS:
        # On its own lines: a trailing `-- comment` in the query must not swallow the closing parenthesis.
        limited = f"SELECT * FROM (\n{strip_query_end(query)}\n) preview_rows LIMIT {int(rows)}"
    else:
        limited, source.batch_rows = query, rows
    taken: list[pa.RecordBatch] = []
    count = 0
    try:
        batches = source.stream_batches(limited, {})
        try:
            for batch in batches:
                taken.append(batch.slice(0, rows - count))  # an empty first batch still gives the columns
                count += taken[-1].num_rows
                if count >= rows:
                    break
        finally:
            batches.close()
    except Exception as exc:
        if _is_database_error(exc):
            raise SourceFailed(f"the query failed on {source.display_name}: {database_message(exc)}") from None
        raise
    if not taken:
        return SourceSample([], [], [], origin)
    return _sample(pa.Table.from_batches(taken), origin)


def _query_columns(source: SqlSource, query: str) -> list[str]:
    try:
        wrapped = f"SELECT * FROM (\n{strip_query_end(query)}\n) q"  # see _query_sample
        if source.is_postgres_copy_capable:
            return list(source.schema(wrapped, {}).names)  # PostgreSQL describes it with LIMIT 0
        with source.engine.connect() as connection:
            # A condition that holds for no row: the database plans the query and names its columns, reads nothing.
            return list(connection.execute(sa.text(f"{wrapped} WHERE 1 = 0")).keys())
    except Exception as exc:
        if _is_database_error(exc):
            raise SourceFailed(f"the query failed on {source.display_name}: {database_message(exc)}") from None
        raise


def _is_database_error(exc: BaseException) -> bool:
    """An error of the database: SQLAlchemy's, or psycopg2's own (PostgreSQL's COPY path uses the driver directly)."""
    import psycopg2

    return isinstance(exc, sa.exc.SQLAlchemyError | psycopg2.Error)


def database_message(exc: BaseException) -> str:
    """The database's own message, first line: `relation "x" does not exist`, `no such table: x`."""
    original = getattr(exc, "orig", None) or exc
    args = getattr(original, "args", ())
    # PyMySQL: (1146, "Table 'test.x' doesn't exist").
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        text = args[1]
    else:
        text = str(original)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


# Files and email attachments ------------------------------------------------------------------------


@dataclass
class _FileSide:
    client: FileSource
    folder: str
    pattern: str
    where: str  # "folder 'in' of sftp 127.0.0.1:2222", "the inbox of leads@x.example (/var/...)"
    format: str | None
    csv_delimiter: str | None
    csv_header: bool


def file_client(project: Project, connection_name: str) -> FileSource:
    """The plain client of a file connection, its secrets read from the environment variables they name."""
    from connector_pipelines.transports.registry import client_for

    # The loader has checked that this is a connection that holds files (sftp, ftp, s3 or folder).
    return client_for(project.connections[connection_name], project.base_dir, connection_name)


def _file_side(project: Project, connector: ImportConnector) -> _FileSide:
    source = connector.import_.source
    if source.files is not None:
        files = source.files
        client = file_client(project, files.connection)
        where = f"folder '{files.folder}' of {client.system}" if files.folder else f"the root of {client.system}"
        return _FileSide(
            client, files.folder, files.pattern, where, files.format, files.csv.delimiter, files.csv.header
        )
    email = source.email
    inbox = Storage.for_project(project.base_dir).import_inbox_dir(connector.name)
    if not inbox.is_dir():
        raise NoFileToRead(
            f"no file has been received at {email.address} yet (its inbox {inbox} does not exist), so there is no "
            f"file matching pattern '{email.pattern}' to read; send one from an allowed sender"
        )
    from connector_pipelines.transports.folder import FolderClient

    return _FileSide(
        FolderClient(inbox),
        "",
        email.pattern,
        f"the inbox of {email.address} ({inbox})",
        email.format,
        email.csv.delimiter,
        email.csv.header,
    )


def newest_matching(files: Sequence[RemoteFile], pattern: str) -> tuple[RemoteFile | None, list[RemoteFile]]:
    """(the newest file matching `pattern` (by modification time, then name), every matching file)."""
    matcher = FilePattern(pattern)
    matching = [f for f in files if matcher.matches(f.name)]
    newest = max(matching, key=lambda f: (f.modified, f.name)) if matching else None
    return newest, matching


def _no_match(side: _FileSide, files: Sequence[RemoteFile]) -> str:
    names = [f.name for f in files]
    if not names:
        others = "no other files there"
    else:
        shown = ", ".join(names[:_SHOWN_NAMES]) + (", ..." if len(names) > _SHOWN_NAMES else "")
        others = f"{len(names)} other file{'s' if len(names) != 1 else ''} there: {shown}"
    return f"no file in {side.where} matches pattern '{side.pattern}' ({others})"


@contextmanager
def _newest_file(project: Project, connector: ImportConnector) -> Iterator[tuple[FileReading, str]]:
    """The newest matching file, downloaded to a temporary folder and opened with read_file (no expected columns:
    this shows the file as it is), with a description of what was read."""
    side = _file_side(project, connector)
    try:
        with tempfile.TemporaryDirectory(prefix="cp-import-preview-") as temporary:
            try:
                files = side.client.list_files(side.folder)
                newest, matching = newest_matching(files, side.pattern)
                if newest is None:
                    raise NoFileToRead(_no_match(side, files))
                local = Path(temporary) / "file"
                local.mkdir()
                local = local / newest.name
                side.client.download(side.folder, newest.name, local)
            except TransportError as exc:
                raise SourceFailed(str(exc)) from None
            count = len(matching)
            origin = (
                f"'{newest.name}' ({newest.size:,} bytes, modified {newest.modified:%Y-%m-%d %H:%M:%S} UTC), the "
                f"newest of {count} file{'s' if count != 1 else ''} matching '{side.pattern}' in {side.where}"
            )
            try:
                reading = read_file(
                    local,
                    format=side.format,
                    csv_delimiter=side.csv_delimiter,
                    csv_header=side.csv_header,
                    batch_rows=1000,
                )
            except FileRejected as rejected:
                raise FileUnreadable(
                    f"cannot read '{newest.name}' (the newest file matching '{side.pattern}' in {side.where}): "
                    f"{rejected.reason}"
                ) from None
            with reading:
                try:
                    yield reading, origin
                except FileRejected as rejected:
                    raise FileUnreadable(f"cannot read '{newest.name}' in {side.where}: {rejected.reason}") from None
    finally:
        side.client.close()


def format_value(value: object, width: int = 40) -> str:
    """A value as a preview cell: one line, at most `width` characters."""
    if value is None:
        text = "NULL"
    elif isinstance(value, dt.datetime):
        text = value.isoformat(sep=" ")
    elif isinstance(value, (bytes, bytearray)):
        text = f"<{len(value)} bytes>"
    elif isinstance(value, decimal.Decimal | dt.date):
        text = str(value)
    else:
        text = str(value)
    text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= width else text[: width - 3] + "..."


# --------------------------------------------------------------------------------------------------
# Validate: the mapping against the source's columns and the target table


@dataclass
class MappingReport:
    """What `check_mapping` found: problems (each stops the import), notes (what could not be checked)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source_columns: list[str] | None = None
    source_origin: str = ""
    target: str = ""  # "table 'orders' on sqlite /x/target.db"


class _Places:
    """`path:line field` prefixes for problem lines, with the line of the field in the spec file."""

    def __init__(self, loaded: LoadedConnector):
        self.where = display_path(loaded.path)
        try:
            from connector_pipelines.spec.yaml_source import read_yaml

            self.doc = read_yaml(loaded.path)
        except Exception:  # the file changed or vanished since it loaded: problems without line numbers
            self.doc = None

    def __call__(self, location: tuple, message: str) -> str:
        steps = ("import", *location)
        shown = ".".join(str(step) for step in steps)
        line = f":{self.doc.line_of(steps)}" if self.doc is not None else ""
        return f"{self.where}{line} {shown}: {message}"


def validate(project: Project, loaded: LoadedConnector, columns: Sequence[str] | None = None) -> list[str]:
    """Problems that stop this import, one line each (empty: it may run); for a run to check before it imports.

    `columns`, when given, are the source columns (e.g. the header of the file about to be imported) and the
    source is not read. A file source without a file to inspect is checked against the target only.
    """
    try:
        return check_mapping(project, loaded, columns).problems
    except ConnectorConfigError as exc:
        return list(exc.problems)


def check_mapping(project: Project, loaded: LoadedConnector, columns: Sequence[str] | None = None) -> MappingReport:
    """The mapping against the source's columns and the target table's schema.

    Raises ConnectorConfigError when a secret's environment variable is unset (nothing could be checked).
    """
    connector = import_of(loaded)
    spec = connector.import_
    place = _Places(loaded)
    report = MappingReport()
    kind = spec.source.kind

    if columns is not None:
        report.source_columns, report.source_origin = list(columns), "the columns given"
    else:
        try:
            report.source_columns, report.source_origin = source_columns(project, loaded)
        except (NoFileToRead, FileUnreadable) as exc:
            # No file yet, or the newest one is unreadable (the import quarantines it): the mapping is not at fault.
            report.notes.append(f"the source columns could not be checked: {exc}")
        except SourceFailed as exc:
            if kind == "warehouse":
                failed_at = ("source", "warehouse", "connection" if str(exc).startswith("cannot connect") else "query")
                report.problems.append(place(failed_at, str(exc)))
            else:
                report.problems.append(place(("source", kind), str(exc)))
    if report.source_columns is not None:
        report.problems += _source_problems(spec, report.source_columns, place)
    report.problems += _target_problems(project, connector, place, report)
    return report


def _source_problems(spec, columns: Sequence[str], place: _Places) -> list[str]:
    from connector_pipelines.mapping.expressions import parse_expression

    available = set(columns)
    listed = ", ".join(columns[:_SHOWN_COLUMNS]) + (", ..." if len(columns) > _SHOWN_COLUMNS else "")
    what = f"the source's columns: {listed}" if columns else "the source has no columns"
    problems: list[str] = []
    for index, rule in enumerate(spec.mapping):
        if rule.source is not None and rule.source not in available:
            problems.append(
                place(
                    ("mapping", index, "source"),
                    f"'{rule.source}' is not a column of the source{did_you_mean(rule.source, columns)}; {what}",
                )
            )
        if rule.expression is not None:
            for name in sorted(parse_expression(rule.expression).columns - available):
                problems.append(
                    place(
                        ("mapping", index, "expression"),
                        f"reads '{name}', which is not a column of the source{did_you_mean(name, columns)}; {what}",
                    )
                )
    warehouse = spec.source.warehouse
    if warehouse is not None and warehouse.updated_at and warehouse.updated_at not in available:
        problems.append(
            place(
                ("source", "warehouse", "updated_at"),
                f"'{warehouse.updated_at}' is not a column of the query's result"
                f"{did_you_mean(warehouse.updated_at, columns)}; incremental runs filter on it; {what}",
            )
        )
    return problems


# Where a problem from TableUpsert.prepare() is fixed in the spec: (pattern, location or None for a mapping rule).
_TARGET_PLACES: tuple[tuple[re.Pattern[str], tuple | None], ...] = (
    (re.compile(r"^table '.*' does not exist"), ("target", "table")),
    (re.compile(r"^cannot read the definition of table"), ("target", "connection")),
    (re.compile(r"^key column '"), ("target", "key")),
    (re.compile(r"has no primary key or unique index"), ("target", "key")),
    (re.compile(r"^column '(?P<column>.+?)' is mapped but"), None),
    (re.compile(r"^column '(?P<column>.+?)' of table .* is generated"), None),
    (re.compile(r"^column '(?P<column>.+?)' \(foreign_key\)"), None),
    (re.compile(r"requires a value in"), ("mapping",)),
)


def _target_problems(project: Project, connector: ImportConnector, place: _Places, report: MappingReport) -> list[str]:
    from connector_pipelines.imports.run import build_upsert
    from connector_pipelines.imports.upsert import UpsertConfigError
    from connector_pipelines.mapping.engine import MappingError

    spec = connector.import_
    source = sql_source(project, spec.target.connection)
    report.target = f"table '{spec.target.table}' on {source.display_name}"
    missing = _missing_database(source)
    if missing:
        return [place(("target", "connection"), missing)]
    try:
        try:
            _, upsert = build_upsert(spec, source.engine)
        except UpsertConfigError as exc:
            return [place(("target",), problem) for problem in exc.problems]
        except MappingError as exc:
            return [place(("mapping",), problem) for problem in exc.problems]
        with upsert:
            return [_place_target_problem(spec.mapping, problem, place) for problem in upsert.prepare()]
    finally:
        source.dispose()


def _place_target_problem(mapping: Sequence[ImportMappingRule], problem: str, place: _Places) -> str:
    for pattern, location in _TARGET_PLACES:
        match = pattern.search(problem)
        if match is None:
            continue
        if location is None:
            column = match.group("column")
            index = next(
                (i for i, rule in enumerate(mapping) if rule.target == column),
                next((i for i, rule in enumerate(mapping) if rule.target.lower() == column.lower()), None),
            )
            location = ("mapping", index, "target") if index is not None else ("mapping",)
        return place(location, problem)
    return place(("target",), problem)


# --------------------------------------------------------------------------------------------------
# Automap: propose source column -> target column by name, write it into the spec


@dataclass(frozen=True)
class AutomapRow:
    target: str
    source: str  # the source column, or how the kept rule fills the target
    score: float | None  # None for a rule that was kept
    action: str  # new | replaced | kept
    key: bool
    proposed: str | None = None  # kept: the source column --replace would use instead (None: none, or the same)


@dataclass
class AutomapPlan:
    source_columns: list[str]
    source_origin: str
    targets_from: str
    rows: list[AutomapRow]
    unmatched_targets: list[str]
    unused_sources: list[str]
    text: str  # the spec file's new text (the same as before when nothing changes)
    original: str

    @property
    def changed(self) -> bool:
        return self.text != self.original

    @property
    def added(self) -> int:
        return sum(1 for row in self.rows if row.action != "kept")


class AutomapRefused(Exception):
    """The proposal cannot be written (a key would be left unmapped); the message says what to do."""


# Reflected SQL types -> the import's column types (written as `type:` of a new rule when not text).
def _import_type(sql_type: sa.types.TypeEngine) -> str:
    if isinstance(sql_type, sa.Boolean):
        return "boolean"
    if isinstance(sql_type, sa.Integer):
        return "integer"
    if isinstance(sql_type, sa.Float):
        return "number"
    if isinstance(sql_type, sa.Numeric):
        return "currency" if getattr(sql_type, "scale", None) == 2 else "number"
    if isinstance(sql_type, sa.DateTime):
        return "datetime"
    if isinstance(sql_type, sa.Date):
        return "date"
    if isinstance(sql_type, sa.JSON):
        return "json"
    return "text"


def target_columns(project: Project, connector: ImportConnector) -> tuple[list[tuple[str, str]] | None, str]:
    """([(column, import type)] of the target table, or None when it does not exist; the table's description)."""
    from connector_pipelines.imports.run import build_upsert
    from connector_pipelines.imports.upsert import UpsertConfigError

    spec = connector.import_
    source = sql_source(project, spec.target.connection)
    label = f"table '{spec.target.table}' on {source.display_name}"
    missing = _missing_database(source)
    if missing:
        raise SourceFailed(missing)
    try:
        try:
            _, upsert = build_upsert(spec, source.engine)
        except UpsertConfigError as exc:
            raise ConnectorConfigError(exc.problems) from None
        try:
            inspector = sa.inspect(upsert.engine)
            if not inspector.has_table(upsert.table, schema=upsert.schema):
                return None, label
            columns = inspector.get_columns(upsert.table, schema=upsert.schema)
        except sa.exc.SQLAlchemyError as exc:
            raise SourceFailed(f"cannot read {label}: {database_message(exc)}") from None
        return [(column["name"], _import_type(column["type"])) for column in columns], label
    finally:
        source.dispose()


def plan_automap(project: Project, loaded: LoadedConnector, *, replace: bool = False) -> AutomapPlan:
    """Propose rules by name similarity (keys first) and the spec's new text; nothing is written here.

    Targets are the target table's columns when it exists, else the existing mapping's targets. A rule already
    in the mapping for a target is kept unless `replace`; rules for other targets stay as they are.
    """
    connector = import_of(loaded)
    spec = connector.import_
    columns, origin = source_columns(project, loaded)
    targets, targets_from = _automap_targets(project, connector)
    names = [name for name, _ in targets]
    keys = [key for key in spec.target.key if key in names]
    proposals = {p.target: p for p in propose_mapping(columns, [TargetField(name) for name in names], keys)}
    order = [*keys, *(name for name in names if name not in keys)]
    edit = _edit_mapping(spec, order, proposals, dict(targets), replace)
    _refuse_unmapped_keys(spec, edit.items, columns)
    used = _used_sources(spec, edit.items)
    original = loaded.path.read_text(encoding="utf-8")
    existing_targets = {rule.target for rule in spec.mapping}
    return AutomapPlan(
        source_columns=columns,
        source_origin=origin,
        targets_from=targets_from,
        rows=edit.rows,
        unmatched_targets=[name for name in order if name not in proposals and name not in existing_targets],
        unused_sources=[column for column in columns if column not in used],
        text=rewrite_mapping(original, edit.items, edit.replaced) if edit.changed else original,
        original=original,
    )


def _automap_targets(project: Project, connector: ImportConnector) -> tuple[list[tuple[str, str]], str]:
    """([(target column, import type)] to propose rules for, where they come from): the target table's columns,
    or the existing mapping's targets while the table does not exist."""
    table_columns, label = target_columns(project, connector)
    if table_columns is not None:
        return table_columns, f"the columns of {label}"
    targets = [(rule.target, rule.type) for rule in connector.import_.mapping]
    return targets, f"the existing mapping ({label} does not exist yet)"


@dataclass
class _MappingEdit:
    """The new mapping list as `rewrite_mapping` takes it, and a row per target for the plan.

    `items`: in order, the index of an existing rule (kept verbatim) or a new rule (a dict); `replaced`: position in
    `items` -> index of the rule it replaces (its comment lines move along).
    """

    items: list[int | dict] = field(default_factory=list)
    rows: list[AutomapRow] = field(default_factory=list)
    replaced: dict[int, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(isinstance(item, dict) for item in self.items)


def _edit_mapping(
    spec: ImportSpec, order: Sequence[str], proposals: dict[str, Proposal], types: dict[str, str], replace: bool
) -> _MappingEdit:
    """Keep, replace or add a rule for each target in `order` (the proposal wins over an existing rule only when
    `replace`); rules for targets not in `order` follow unchanged. `types`: target -> import type."""
    mapping, key = spec.mapping, spec.target.key
    existing = {rule.target: index for index, rule in enumerate(mapping)}
    edit = _MappingEdit()
    for target in order:
        proposal = proposals.get(target)
        index = existing.get(target)
        if index is not None and (proposal is None or not replace):
            edit.items.append(index)
            rule = mapping[index]
            other = proposal.source if proposal is not None and proposal.source != rule.source else None
            edit.rows.append(AutomapRow(target, _origin_of(rule), None, "kept", target in key, other))
        elif proposal is not None:
            if index is not None:
                edit.replaced[len(edit.items)] = index
            edit.items.append(_proposed_rule(proposal, types))
            action = "replaced" if index is not None else "new"
            edit.rows.append(AutomapRow(target, proposal.source, proposal.score, action, target in key))
    listed = set(order)
    edit.items += [index for index, rule in enumerate(mapping) if rule.target not in listed]
    return edit


def _proposed_rule(proposal: Proposal, types: dict[str, str]) -> dict:
    """A new rule as written into the spec: `type:` only when not text, and a note asking for review."""
    rule = {"target": proposal.target, "source": proposal.source}
    if types.get(proposal.target, "text") != "text":
        rule["type"] = types[proposal.target]
    rule["note"] = f"automap: {proposal.source} -> {proposal.target} (score {proposal.score:.2f}); review"
    return rule


def _refuse_unmapped_keys(spec: ImportSpec, items: Sequence[int | dict], columns: Sequence[str]) -> None:
    """Raise AutomapRefused when the edited mapping would leave a key column unmapped."""
    mapped = {spec.mapping[item].target if isinstance(item, int) else item["target"] for item in items}
    unmapped_keys = [key for key in spec.target.key if key not in mapped]
    if unmapped_keys:
        raise AutomapRefused(
            f"no source column is close enough to the key column{'s' if len(unmapped_keys) > 1 else ''} "
            f"{', '.join(unmapped_keys)}; map {'them' if len(unmapped_keys) > 1 else 'it'} by hand first "
            f"(source columns: {', '.join(columns[:_SHOWN_COLUMNS])})"
        )


def _used_sources(spec: ImportSpec, items: Sequence[int | dict]) -> set[str]:
    """The source columns the edited mapping reads (copied, or read by an expression)."""
    from connector_pipelines.mapping.expressions import parse_expression

    used: set[str] = set()
    for item in items:
        rule = spec.mapping[item] if isinstance(item, int) else None
        if rule is None:
            used.add(item["source"])
        elif rule.source is not None:
            used.add(rule.source)
        elif rule.expression is not None:
            used |= parse_expression(rule.expression).columns
    return used


def _origin_of(rule: ImportMappingRule) -> str:
    if rule.source is not None:
        return rule.source
    if rule.expression is not None:
        return f"expression {rule.expression}"
    return f"constant {rule.constant!r}"


# Rewriting the mapping list in the YAML text ----------------------------------------------------------


def _blank_or_comment(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _scalar(value: object) -> str:
    """A scalar as YAML writes it in a flow context (quoted when it has to be)."""
    return yaml.safe_dump([value], default_flow_style=True, width=1 << 20, allow_unicode=True).strip()[1:-1]


def _render_rule(rule: dict, indent: int, key_offset: int, flow: bool) -> str:
    if flow:
        body = ", ".join(f"{_scalar(key)}: {_scalar(value)}" for key, value in rule.items())
        return f"{' ' * indent}- {{{body}}}\n"
    lines = []
    for position, (key, value) in enumerate(rule.items()):
        lead = " " * indent + "-" + " " * (key_offset - 1) if position == 0 else " " * (indent + key_offset)
        lines.append(f"{lead}{_scalar(key)}: {_scalar(value)}\n")
    return "".join(lines)


def rewrite_mapping(text: str, items: Sequence[int | dict], replaced: dict[int, int] | None = None) -> str:
    """`text` with only its `import.mapping` list rewritten: `items` lists, in order, the index of an existing rule
    (kept verbatim, with the comment lines above it) or a new rule (a dict, written in the style of the others).

    Everything outside the list is left byte for byte, comments included. `replaced` maps a position in `items`
    holding a new rule to the index of the rule it replaces, whose comment lines then stay above the new one.
    """
    replaced = replaced or {}
    root = yaml.compose(text)
    mapping_key, sequence = _mapping_nodes(root)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    nodes = sequence.value

    if sequence.flow_style:
        # `mapping: [{...}, {...}]`: written again as a block list, each rule as its flow text or a new flow rule.
        indent = mapping_key.start_mark.column + 2
        pieces = [
            f"{' ' * indent}- {text[nodes[item].start_mark.index : nodes[item].end_mark.index]}\n"
            if isinstance(item, int)
            else _render_rule(item, indent, 2, flow=True)
            for item in items
        ]
        start, end = sequence.start_mark, sequence.end_mark
        before = text[: start.index].rstrip(" ")
        after = text[end.index :]
        return before + "\n" + "".join(pieces) + (after[1:] if after.startswith("\n") else after)

    # Where each rule starts: its dash line (a rule may also be written as "-" alone on a line, then its keys).
    dash_lines = []
    for node in nodes:
        line = node.start_mark.line
        while not lines[line].lstrip().startswith("-"):
            line -= 1
        dash_lines.append(line)
    dash_column = _indent(lines[dash_lines[0]])
    key_offset = nodes[0].start_mark.column - dash_column if nodes[0].start_mark.line == dash_lines[0] else 2
    key_offset = max(key_offset, 2)
    flow_items = [isinstance(node, yaml.MappingNode) and node.flow_style for node in nodes]
    flow = sum(flow_items) > len(flow_items) / 2

    # The comment lines just above a rule belong to it; deeper-indented ones still belong to the rule before.
    lead_starts = []
    for line in dash_lines:
        start = line
        while (
            start - 1 > mapping_key.start_mark.line
            and _blank_or_comment(lines[start - 1])
            and (not lines[start - 1].strip() or _indent(lines[start - 1]) <= dash_column + key_offset)
        ):
            start -= 1
        lead_starts.append(start)
    # The list ends at the first line, after the last rule, written no deeper than the dashes (the next key).
    end = dash_lines[-1] + 1
    while end < len(lines) and (_blank_or_comment(lines[end]) or _indent(lines[end]) > dash_column):
        end += 1
    content_end = end
    while content_end > dash_lines[-1] + 1 and _blank_or_comment(lines[content_end - 1]):
        content_end -= 1
    block_ends = [*lead_starts[1:], content_end]
    blocks = ["".join(lines[s:e]) for s, e in zip(lead_starts, block_ends)]

    def leading_comments(index: int) -> str:
        return "".join(lines[lead_starts[index] : dash_lines[index]])

    pieces = []
    for position, item in enumerate(items):
        if isinstance(item, int):
            pieces.append(blocks[item])
        else:
            lead = leading_comments(replaced[position]) if position in replaced else ""
            pieces.append(lead + _render_rule(item, dash_column, key_offset, flow))
    return "".join(lines[: lead_starts[0]]) + "".join(pieces) + "".join(lines[content_end:])


def _mapping_nodes(root: yaml.Node | None) -> tuple[yaml.Node, yaml.Node]:
    """The `mapping` key node and the list node of `import:` in a composed document."""

    def child(node: yaml.Node | None, key: str) -> tuple[yaml.Node, yaml.Node] | None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                    return key_node, value_node
        return None

    found = child(root, "import")
    found = child(found[1], "mapping") if found else None
    if found is None or not isinstance(found[1], yaml.SequenceNode) or not found[1].value:
        raise ValueError("the file has no `import.mapping` list to rewrite")
    return found


# --------------------------------------------------------------------------------------------------
# Duplicate and delete


def duplicate_text(text: str, new_name: str) -> str:
    """The spec text for a copy: `name:` changed when the file has one, `enabled: false` set; comments kept."""
    root = yaml.compose(text)
    if not isinstance(root, yaml.MappingNode):
        raise ValueError("the file is not a mapping of keys")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    keys = {key.value: (key, value) for key, value in root.value if isinstance(key, yaml.ScalarNode)}

    def set_value(key: str, new: str) -> None:
        key_node, value_node = keys[key]
        start, end = value_node.start_mark, value_node.end_mark
        if start.line != end.line or start.line != key_node.start_mark.line:
            raise ValueError(f"`{key}:` is not a one-line value; edit the copy by hand")
        line = lines[start.line]
        lines[start.line] = line[: start.column] + new + line[end.column :]

    # Both edits are on single lines, so one cannot move the other's line.
    if "name" in keys:
        set_value("name", _scalar(new_name))
    if "enabled" in keys:
        set_value("enabled", "false")
    else:
        anchor = keys.get("name") or keys.get("kind")
        column = anchor[0].start_mark.column if anchor else 0
        at = anchor[1].end_mark.line + (0 if anchor[1].end_mark.column == 0 else 1) if anchor else 0
        lines.insert(at, " " * column + "enabled: false  # a copy starts off; turn it on once reviewed\n")
    return "".join(lines)


def valid_name(name: str) -> bool:
    return re.fullmatch(NAME_PATTERN, name) is not None


def purge_import(storage: Storage, state_url: str, name: str) -> tuple[int, list[str]]:
    """Forget an import's state (watermark, files seen, previews) and remove its storage (here and in the archive)
    and inbox folders.

    Returns (file records forgotten, folders removed, as shown).
    """
    state = ImportState(state_url)
    try:
        forgotten = state.forget(name, previews=True)
    finally:
        state.dispose()
    removed = []
    for folder in (storage.import_dir(name), storage.import_inbox_dir(name)):
        shown = storage.where(folder)
        if storage.remove_folder(folder):
            removed.append(shown)
    return forgotten, removed
