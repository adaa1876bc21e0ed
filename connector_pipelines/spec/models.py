"""The YAML configuration as pydantic models: connections and connectors.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored setting.
Secrets are never literals: a secret field holds an environment reference such as `${SFTP_PASSWORD}`,
resolved at run time through `dg.EnvVar`.
"""

from __future__ import annotations

import datetime as dt
import re
import string
import zoneinfo
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
# The bind-parameter syntax SQLAlchemy's text() understands; `::type` casts are not parameters.
BIND_PARAMETER = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")
WINDOW_PARAMETERS = ("window_start", "window_end")
FILE_NAME_FIELDS = {"name", "window_start", "window_end", "run_id", "partition_key", "now", "ext"}
PRESET_CADENCES = ("hourly", "daily", "weekly", "monthly")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _env_reference(value: str) -> str:
    if not ENV_REFERENCE.match(value):
        # The message never repeats the value: it may be a real secret.
        raise ValueError(
            "a literal secret is not allowed here; write an environment reference such as "
            "${MY_SECRET} and set that variable where the connector runs"
        )
    return value


SecretRef = Annotated[str, AfterValidator(_env_reference)]


def env_var_name(reference: str) -> str:
    """`${SFTP_PASSWORD}` -> `SFTP_PASSWORD`."""
    match = ENV_REFERENCE.match(reference)
    assert match, reference
    return match.group(1)


# --------------------------------------------------------------------------------------------------
# Connections


class SqlConnection(StrictModel):
    """A database reached through SQLAlchemy (PostgreSQL, MariaDB/MySQL, SQLite, ...)."""

    type: Literal["sql"]
    url: str = Field(description="SQLAlchemy URL without a password, e.g. postgresql://app@db:5432/billing")
    password: SecretRef | None = Field(None, description="Environment reference for the password")
    description: str = ""

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, url: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ValueError(
                "not a valid SQLAlchemy URL; write it as dialect://user@host:port/database "
                "(or sqlite:///path/to/file.db)"
            ) from None
        if parsed.password:
            raise ValueError("the URL holds a password; remove it from the URL and set `password: ${DB_PASSWORD}`")
        return url


class S3Connection(StrictModel):
    """An S3 bucket (or any S3-compatible store through `endpoint_url`)."""

    type: Literal["s3"]
    bucket: str
    prefix: str = ""
    region: str = "us-east-1"
    endpoint_url: str | None = None
    access_key_id: SecretRef | None = None
    secret_access_key: SecretRef | None = None
    description: str = ""

    @model_validator(mode="after")
    def _keys_together(self) -> S3Connection:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both access_key_id and secret_access_key, or neither (to use the AWS default chain)")
        return self


class SftpConnection(StrictModel):
    """An SFTP server. The host key is verified against `host_key`; it is never accepted blindly."""

    type: Literal["sftp"]
    host: str
    port: int = Field(22, ge=1, le=65535)
    username: str
    password: SecretRef | None = None
    private_key: SecretRef | None = Field(None, description="Environment reference holding a PEM/OpenSSH private key")
    host_key: str = Field(description="The server's public host key, as in known_hosts: 'ssh-ed25519 AAAA...'")
    timeout_seconds: float = Field(30, gt=0)
    description: str = ""

    @field_validator("host_key")
    @classmethod
    def _host_key_shape(cls, value: str) -> str:
        parts = value.split()
        if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "rsa-")):
            raise ValueError(
                "expected a public key line such as 'ssh-ed25519 AAAAC3...'; "
                "get it with `ssh-keyscan -p PORT HOST` and check it out of band"
            )
        return " ".join(parts[:2])

    @model_validator(mode="after")
    def _some_credential(self) -> SftpConnection:
        if self.password is None and self.private_key is None:
            raise ValueError("set password or private_key (an environment reference)")
        return self


class FtpConnection(StrictModel):
    """An FTP server; `tls: true` uses explicit FTPS (AUTH TLS) with a protected data channel."""

    type: Literal["ftp"]
    host: str
    port: int = Field(21, ge=1, le=65535)
    username: str = "anonymous"
    password: SecretRef | None = None
    tls: bool = False
    ca_file: str | None = Field(None, description="CA bundle to verify the FTPS server certificate with")
    passive: bool = True
    timeout_seconds: float = Field(30, gt=0)
    description: str = ""


class SmtpConnection(StrictModel):
    """An SMTP relay that sends extract files as attachments."""

    type: Literal["smtp"]
    host: str
    port: int = Field(25, ge=1, le=65535)
    username: str | None = None
    password: SecretRef | None = None
    starttls: bool = False
    ssl: bool = False
    ca_file: str | None = None
    from_address: str
    timeout_seconds: float = Field(30, gt=0)
    description: str = ""

    @model_validator(mode="after")
    def _one_tls_mode(self) -> SmtpConnection:
        if self.starttls and self.ssl:
            raise ValueError("choose starttls (upgrade a plain connection) or ssl (TLS from the start), not both")
        return self


class FolderConnection(StrictModel):
    """A folder on this machine (or a mounted share). Relative paths are resolved against the project root."""

    type: Literal["folder"]
    path: str
    description: str = ""


Connection = Annotated[
    SqlConnection | S3Connection | SftpConnection | FtpConnection | SmtpConnection | FolderConnection,
    Field(discriminator="type"),
]
FILE_TRANSPORT_TYPES = ("s3", "sftp", "ftp", "smtp", "folder")


class ConnectionsFile(StrictModel):
    connections: dict[Annotated[str, Field(pattern=NAME_PATTERN)], Connection]


# --------------------------------------------------------------------------------------------------
# Extract connectors


class ExtractSource(StrictModel):
    """Where the rows come from: a SQL query on a `sql` connection, with bound window parameters."""

    connection: str
    query: str = Field(
        description="SQL; a windowed extract filters with the bound parameters :window_start and :window_end"
    )

    @field_validator("query")
    @classmethod
    def _only_window_parameters(cls, query: str) -> str:
        unknown = sorted(set(BIND_PARAMETER.findall(query)) - set(WINDOW_PARAMETERS))
        if unknown:
            raise ValueError(
                f"unknown bind parameter(s) {', '.join(':' + u for u in unknown)}; "
                "only :window_start and :window_end are bound"
            )
        if not query.strip():
            raise ValueError("the query is empty")
        return query

    @property
    def uses_window(self) -> bool:
        return bool(set(BIND_PARAMETER.findall(self.query)) & set(WINDOW_PARAMETERS))


class CsvOptions(StrictModel):
    header: bool = True
    delimiter: str | None = Field(None, description="One character; default ',' for csv and a tab for tsv")

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1:
            raise ValueError("the delimiter must be exactly one character")
        return value


class FileDestination(StrictModel):
    """One place the file goes: a folder on a file connection, or recipients on an smtp connection."""

    connection: str
    folder: str = Field("", description="Folder (or S3 key prefix) under the connection's root")
    to: list[str] = Field(default_factory=list, description="Recipients, for smtp connections")
    cc: list[str] = Field(default_factory=list)
    subject: str | None = None
    body: str | None = None

    @field_validator("folder")
    @classmethod
    def _no_escape(cls, value: str) -> str:
        if ".." in value.replace("\\", "/").split("/"):
            raise ValueError("'..' is not allowed in a destination folder")
        return value


class ExtractSchedule(StrictModel):
    """When the extract runs.

    With `inception_date` the extract is partitioned from that date by `cadence`; each tick runs the latest
    complete window (or the last `rolling` windows in one run). Without it the extract is a full extract
    that runs on `cadence` (a preset or a cron expression).
    """

    cadence: str = Field(description="hourly, daily, weekly, monthly, or a cron expression such as '0 6 * * 1-5'")
    inception_date: dt.date | dt.datetime | None = None
    timezone: str = "UTC"
    rolling: int | None = Field(None, ge=1, le=1000, description="Send the last N windows in each run")
    hour_of_day: int = Field(0, ge=0, le=23, description="When a daily/weekly/monthly schedule fires")
    minute_of_hour: int = Field(0, ge=0, le=59)
    enabled: bool = True

    @field_validator("cadence")
    @classmethod
    def _cadence_shape(cls, value: str) -> str:
        if value in PRESET_CADENCES:
            return value
        from dagster._utils.schedules import is_valid_cron_string

        if not is_valid_cron_string(value):
            raise ValueError(
                f"'{value}' is neither a preset ({', '.join(PRESET_CADENCES)}) nor a valid cron expression"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{value}'; use an IANA name such as 'Europe/Paris' or 'UTC'") from None
        return value

    @model_validator(mode="after")
    def _rolling_needs_partitions(self) -> ExtractSchedule:
        if self.rolling is not None and self.inception_date is None:
            raise ValueError("rolling needs an inception_date: it counts windows from the partitions")
        return self


class ExtractChecks(StrictModel):
    not_empty: bool = Field(False, description="Fail the not_empty asset check when a window has no rows")


class ExtractSpec(StrictModel):
    source: ExtractSource
    format: Literal["csv", "tsv", "parquet", "jsonl"]
    compression: Literal["none", "gzip"] = "none"
    gzip_level: int = Field(6, ge=1, le=9)
    csv: CsvOptions = CsvOptions()
    file_name: str | None = Field(
        None,
        description="Template with {name}, {window_start:%Y%m%d}, {window_end:...}, {run_id}, "
        "{partition_key}, {now:...}, {ext}",
    )
    destinations: list[FileDestination] = Field(min_length=1)
    schedule: ExtractSchedule | None = None
    checks: ExtractChecks = ExtractChecks()

    @field_validator("file_name")
    @classmethod
    def _file_name_template(cls, template: str | None) -> str | None:
        if template is None:
            return None
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        except ValueError as exc:
            raise ValueError(f"not a valid template ({exc}); write fields as {{window_start:%Y%m%d}}") from None
        for field in fields:
            if field not in FILE_NAME_FIELDS:
                raise ValueError(f"unknown field '{{{field}}}'; allowed: {', '.join(sorted(FILE_NAME_FIELDS))}")
        if "/" in template or "\\" in template or template.startswith("."):
            raise ValueError(
                "a file name may not contain '/' or '\\' or start with '.'; set the folder on the destination"
            )
        return template

    @model_validator(mode="after")
    def _csv_options_only_for_text(self) -> ExtractSpec:
        if self.format in ("parquet", "jsonl") and "csv" in self.model_fields_set:
            raise ValueError(f"csv options apply to csv and tsv files, not {self.format}")
        if self.format == "parquet" and self.compression == "gzip":
            raise ValueError("parquet files are compressed inside (snappy); remove compression: gzip")
        return self

    @property
    def extension(self) -> str:
        return self.format + (".gz" if self.compression == "gzip" else "")

    @property
    def partitioned(self) -> bool:
        return self.schedule is not None and self.schedule.inception_date is not None


class ConnectorBase(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    owners: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True


class ExtractConnector(ConnectorBase):
    kind: Literal["extract"]
    extract: ExtractSpec

    @model_validator(mode="after")
    def _window_matches_schedule(self) -> ExtractConnector:
        spec = self.extract
        if spec.partitioned and not spec.source.uses_window:
            raise ValueError(
                "a partitioned extract (schedule.inception_date) must filter its query with "
                ":window_start and :window_end"
            )
        if not spec.partitioned and spec.source.uses_window and spec.schedule is not None:
            raise ValueError(
                "a scheduled full extract has no window to bind; remove :window_start/:window_end from "
                "the query, or set schedule.inception_date to make it a partitioned extract"
            )
        return self


CONNECTOR_KINDS = ("extract", "integration", "import")
AVAILABLE_KINDS = {"extract": ExtractConnector}
Connector = ExtractConnector
