"""The YAML of `kind: import` connectors: a warehouse query or arriving files, mapped and upserted into a table."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from connector_pipelines.spec.api_source import ApiSource
from connector_pipelines.spec.common import (
    BIND_PARAMETER,
    NAME_PATTERN,
    ConnectorBase,
    Identifier,
    MappingRuleSpec,
    OnceOrRunSchedule,
    StrictModel,
    quoted,
)
from connector_pipelines.spec.extract import CsvOptions
from connector_pipelines.spec.lookback import DEFAULT_LOOKBACK, LookbackText, parse_lookback

ImportType = Literal["text", "integer", "number", "currency", "boolean", "date", "datetime", "json", "foreign_key"]
FILE_FORMATS = ("csv", "tsv", "parquet", "jsonl")
EMAIL_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+\Z")


class WarehouseSource(StrictModel):
    """Rows from a SQL query on a `sql` connection; incremental by an `updated_at` watermark."""

    connection: str
    query: str = Field(description="SQL returning one row per target record; may start with WITH")
    updated_at: str | None = Field(
        None, description="Column of the query's result holding each row's change time (incremental runs)"
    )
    lookback: LookbackText = Field(
        DEFAULT_LOOKBACK,
        description="How far before the watermark an incremental run reads again, for rows committed late with an "
        "earlier updated_at: 'N seconds|minutes|hours|days' or '0'; default 5 minutes",
    )

    @property
    def lookback_delta(self) -> dt.timedelta:
        """The lookback as a duration."""
        return parse_lookback(self.lookback)

    @field_validator("query")
    @classmethod
    def _plain_query(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("the query is empty")
        found = sorted(set(BIND_PARAMETER.findall(query)))
        if found:
            raise ValueError(
                f"an import query takes no bind parameters ({', '.join(':' + p for p in found)}); "
                "the import filters by updated_at itself"
            )
        return query


class FileLimits(StrictModel):
    """What one delivered file may cost to read. A file past a limit is quarantined with the limit in its reason;
    the defaults fit real deliveries and stop a few bytes from buying minutes of CPU or gigabytes of memory."""

    max_row_bytes: int = Field(
        1 << 20,
        ge=1 << 10,
        le=16 << 20,
        description="Longest CSV/TSV row or JSON Lines line, in bytes (decompressed); default 1 MiB",
    )
    max_decompressed_bytes: int = Field(
        10 << 30, ge=1 << 10, description="Most bytes a gzip-compressed file may unpack to; default 10 GiB"
    )
    max_rows_per_file: int = Field(100_000_000, ge=1, description="Most data rows in one file; default 100 million")
    max_failed_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="Failed runs after which the file sensor stops asking for an unchanged file; default 3",
    )


class FileSourceSpec(StrictModel):
    """Files that arrive in a folder of a connection (sftp, ftp, s3, folder), picked up by a wildcard pattern."""

    connection: str
    folder: str = Field("", description="Folder (or S3 prefix) under the connection's root")
    pattern: str = Field(description="File names to import: * is any run of characters, ? one character")
    format: Literal["csv", "tsv", "parquet", "jsonl"] | None = Field(None, description="Default: from the extension")
    csv: CsvOptions = CsvOptions()
    archive_folder: str = Field("archive", description="Where processed files are moved")
    quarantine_folder: str = Field("quarantine", description="Where rejected files go, with a report beside them")
    poll_interval_seconds: int = Field(60, ge=5, le=86400, description="How often the file sensor looks")
    limits: FileLimits = FileLimits()

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        from connector_pipelines.imports.files import FilePattern

        FilePattern(value)
        return value

    @field_validator("folder", "archive_folder", "quarantine_folder")
    @classmethod
    def _no_escape(cls, value: str) -> str:
        if ".." in value.replace("\\", "/").split("/"):
            raise ValueError("'..' is not allowed in a folder; give a folder inside the connection's root")
        return value


class EmailSourceSpec(StrictModel):
    """Files sent by email to a connector address; only attachments matching `pattern` from allowed senders."""

    address: str = Field(description="The connector's address, e.g. conversions@imports.example.com")
    allowed_senders: list[str] = Field(
        min_length=1, description="Sender addresses, or @domain.example for a whole domain"
    )
    pattern: str = Field(description="Attachment names to keep: * is any run of characters, ? one character")
    format: Literal["csv", "tsv", "parquet", "jsonl"] | None = None
    csv: CsvOptions = CsvOptions()
    limits: FileLimits = FileLimits()

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not EMAIL_ADDRESS.match(value):
            raise ValueError(f"{quoted(value)} is not an email address")
        return value.lower()

    @field_validator("allowed_senders")
    @classmethod
    def _senders(cls, values: list[str]) -> list[str]:
        for value in values:
            if not (EMAIL_ADDRESS.match(value) or re.match(r"^@[^@\s]+\.[^@\s]+\Z", value)):
                raise ValueError(f"{quoted(value)} is neither an address nor @domain.example")
        return [value.lower() for value in values]

    _pattern = field_validator("pattern")(FileSourceSpec._pattern.__func__)


class ImportSource(StrictModel):
    """Exactly one of: a warehouse query, files in a folder, email attachments, or an HTTP API."""

    warehouse: WarehouseSource | None = None
    files: FileSourceSpec | None = None
    email: EmailSourceSpec | None = None
    api: ApiSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ImportSource:
        given = [name for name in ("warehouse", "files", "email", "api") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "set exactly one source: warehouse (a query), files (a folder and a pattern), email or api (an "
                "HTTP API)" + (f"; got {', '.join(given)}" if given else "")
            )
        return self

    @property
    def kind(self) -> str:
        return "warehouse" if self.warehouse else "files" if self.files else "api" if self.api else "email"


class References(StrictModel):
    """What a `foreign_key` attribute refers to: a value that is not in `table.column` rejects its row."""

    table: Identifier
    column: Identifier
    connection: str | None = Field(None, description="A sql connection; default: the target's database")


class ImportLookup(StrictModel):
    """A compound mapping: `lookup('name', value)` finds `value` in `table.key` and returns `table.value` (a
    partner's CRM account number -> our account id). Read per batch, never loaded whole."""

    table: Identifier
    key: Identifier = Field(description="Column matched against the looked-up value")
    value: Identifier = Field(description="Column returned")
    connection: str | None = Field(None, description="A sql connection; default: the target's database")
    on_missing: Literal["reject", "default"] = Field(
        "reject", description="A value not in the table rejects its row (with the reason), or gives `default`"
    )
    default: str | int | float | bool | None = Field(None, description="With on_missing: default")

    @model_validator(mode="after")
    def _default_with_on_missing(self) -> ImportLookup:
        if "default" in self.model_fields_set and self.on_missing != "default":
            raise ValueError("default is used only with `on_missing: default`; add it, or remove default")
        return self


class ImportMappingRule(MappingRuleSpec):
    """A mapping rule of an import: also the type of the target attribute (used when it is a new attribute)."""

    type: ImportType = Field("text", description="Text, Number, Currency, Date, Foreign Key, ...")
    references: References | None = Field(
        None, description="foreign_key only: the table and column the value must exist in, or the row is rejected"
    )

    @model_validator(mode="after")
    def _references_need_a_foreign_key(self) -> ImportMappingRule:
        if self.references is not None and self.type != "foreign_key":
            raise ValueError(f"references is for `type: foreign_key` attributes, not {self.type}; set the type")
        return self


class ImportTarget(StrictModel):
    """The table records are upserted into."""

    connection: str
    table: Identifier
    key: list[Identifier] = Field(min_length=1)
    allow_new_records: bool = Field(True, description="Off: only existing records are updated; new keys are skipped")
    allow_new_attributes: bool = Field(False, description="A mapping to a column the table lacks adds it")
    resolve_conflicts: Literal["source_wins", "most_recent"] = "source_wins"
    timestamp: Identifier | None = Field(
        None, description="most_recent: the target column compared (the row with the newer value wins)"
    )
    batch_rows: int = Field(200_000, ge=1000, le=5_000_000, description="Rows per transaction")

    @field_validator("key", mode="before")
    @classmethod
    def _one_key_as_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _timestamp_for_most_recent(self) -> ImportTarget:
        if self.resolve_conflicts == "most_recent" and self.timestamp is None:
            raise ValueError("resolve_conflicts: most_recent needs `timestamp:` (the column compared)")
        return self


class ExpectationSpec(StrictModel):
    """A data-quality rule, run with Great Expectations as an asset check (blocking unless `severity: warn`);
    row-level rules reject rows."""

    expect: Literal["not_null", "unique", "in_set", "regex", "between"]
    column: str
    values: list[str | int | float] = Field(default_factory=list, description="in_set")
    pattern: str | None = Field(None, description="regex")
    min: float | str | None = None
    max: float | str | None = None
    mostly: float = Field(1.0, gt=0, le=1)
    severity: Literal["error", "warn"] = Field(
        "error",
        description="error: a blocking check, nothing is merged when it fails; warn: reported, the rows still merge",
    )

    @property
    def blocking(self) -> bool:
        """Whether a failure stops the data from being merged (or delivered)."""
        return self.severity == "error"

    @model_validator(mode="after")
    def _arguments(self) -> ExpectationSpec:
        if self.expect == "in_set" and not self.values:
            raise ValueError("in_set needs `values:`")
        if self.expect == "regex":
            if not self.pattern:
                raise ValueError("regex needs `pattern:`")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"the pattern is not a valid regular expression: {exc}") from None
        if self.expect == "between" and self.min is None and self.max is None:
            raise ValueError("between needs `min:`, `max:` or both")
        return self


# `once` runs a single time (at the first tick after it loads); otherwise a preset or cron as elsewhere.
ImportSchedule = OnceOrRunSchedule


class ImportSpec(StrictModel):
    source: ImportSource
    target: ImportTarget
    mapping: list[ImportMappingRule] = Field(min_length=1)
    lookups: dict[Annotated[str, Field(pattern=NAME_PATTERN)], ImportLookup] = Field(default_factory=dict)
    expectations: list[ExpectationSpec] = Field(default_factory=list)
    schedule: ImportSchedule | None = None
    sync_on_save: bool = Field(False, description="Run once as soon as the spec first loads or changes")

    @model_validator(mode="after")
    def _mapped_key(self) -> ImportSpec:
        targets = [rule.target for rule in self.mapping]
        missing = [key for key in self.target.key if key not in targets]
        if missing:
            raise ValueError(f"the target key {', '.join(missing)} has no mapping; map it from a source column")
        if self.target.timestamp and self.target.timestamp not in targets:
            raise ValueError(f"target.timestamp '{self.target.timestamp}' has no mapping; map it from a source column")
        return self


class ImportConnector(ConnectorBase):
    kind: Literal["import"]
    import_: Annotated[ImportSpec, Field(alias="import")]

    def source_hash(self, connections: Mapping[str, StrictModel]) -> str:
        """A hash of what a preview tests (the source and its connection): a changed one needs a new preview."""
        source = self.import_.source
        origin = source.warehouse or source.files or source.api
        connection_name = origin.connection if origin is not None else None  # an email import has none
        connection = connections.get(connection_name) if connection_name else None
        # Limits say what a file may cost, not where it comes from: changing them needs no new preview.
        # So is the lookback (how much an incremental run reads again), and so are an API's bounds.
        tested = source.model_dump(
            mode="json",
            exclude={
                "files": {"limits"},
                "email": {"limits"},
                "warehouse": {"lookback"},
                "api": {"lookback", "max_pages", "max_response_bytes"},
            },
        )
        normalized = json.dumps(
            [tested, connection.model_dump(mode="json") if connection else None],
            sort_keys=True,
        )
        return hashlib.sha256(normalized.encode()).hexdigest()[:16]
