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
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
# The bind-parameter syntax SQLAlchemy's text() understands; `::type` casts are not parameters.
BIND_PARAMETER = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")
WINDOW_PARAMETERS = ("window_start", "window_end")
FILE_NAME_FIELDS = {"name", "window_start", "window_end", "run_id", "partition_key", "now", "ext"}
PRESET_CADENCES = ("hourly", "daily", "weekly", "monthly")
SECRET_KEY_WORDS = re.compile(r"(password|secret|token|api[-_]?key)", re.IGNORECASE)


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


def error_at(location: tuple[str | int, ...], message: str) -> ValidationError:
    """A validator's error placed on one entry below the field or model being validated (pydantic prefixes
    the outer location), so the loader names the line to change rather than the whole mapping or list."""
    error = InitErrorDetails(type=PydanticCustomError("value_error", message), loc=location, input=None)
    return ValidationError.from_exception_data("ValidationError", [error])


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


class HttpAuthNone(StrictModel):
    type: Literal["none"]


class HttpAuthBasic(StrictModel):
    """HTTP basic authentication."""

    type: Literal["basic"]
    username: str
    password: SecretRef


class HttpAuthApiKey(StrictModel):
    """A fixed key sent in a header on every request."""

    type: Literal["api_key"]
    header: str = "X-API-Key"
    value: SecretRef


class HttpAuthToken(StrictModel):
    """A token fetched from `token_url` with a request body, cached until it expires or the target answers 401."""

    type: Literal["token"]
    token_url: str = Field(description="Absolute URL, or a path under the connection's base_url")
    body: dict[str, str] = Field(
        default_factory=dict, description="Fields of the token request; values may be environment references"
    )
    body_format: Literal["json", "form"] = "json"
    token_field: str = Field("access_token", description="Dotted path of the token in the JSON response")
    expiry_seconds: int = Field(1800, ge=1, description="How long a token is reused before a new one is fetched")
    header: str = "Authorization"
    prefix: str = "Bearer"

    @field_validator("body")
    @classmethod
    def _secret_values_are_references(cls, body: dict[str, str]) -> dict[str, str]:
        for key, value in body.items():
            if SECRET_KEY_WORDS.search(key) and not ENV_REFERENCE.match(value):
                raise error_at(
                    (key,),
                    f"'{key}' looks like a secret; write an environment reference such as ${{MY_SECRET}} instead "
                    "of the value",
                )
        return body


class HttpAuthOAuth2(StrictModel):
    """OAuth2 client credentials: a bearer token from `token_url`, reused for its `expires_in`."""

    type: Literal["oauth2"]
    token_url: str = Field(description="Absolute URL, or a path under the connection's base_url")
    client_id: str
    client_secret: SecretRef
    scope: str | None = None
    audience: str | None = None
    client_auth: Literal["body", "basic"] = Field(
        "body", description="Send the client credentials in the body or as basic auth"
    )
    expiry_seconds: int = Field(1800, ge=1, description="Used when the token response has no expires_in")


HttpAuth = Annotated[
    HttpAuthNone | HttpAuthBasic | HttpAuthApiKey | HttpAuthToken | HttpAuthOAuth2, Field(discriminator="type")
]


class RetryPolicy(StrictModel):
    """How 429, 5xx, timeouts and dropped connections are retried within one run."""

    max_attempts: int = Field(5, ge=1, le=20, description="Attempts per request, the first one included")
    initial_backoff_seconds: float = Field(0.5, ge=0, le=60)
    max_backoff_seconds: float = Field(30, ge=0, le=3600)
    max_retry_after_seconds: float = Field(120, ge=0, le=3600, description="Longest Retry-After the run waits for")


class HttpConnection(StrictModel):
    """An HTTP API or webhook receiver that integrations deliver records to."""

    type: Literal["http"]
    base_url: str = Field(description="http(s)://host[:port][/path]; request paths are appended to it")
    auth: HttpAuth = HttpAuthNone(type="none")
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every request")
    timeout_seconds: float = Field(30, gt=0, le=3600)
    max_concurrency: int = Field(16, ge=1, le=512, description="Requests in flight at once")
    rate_limit_per_second: float | None = Field(None, gt=0, description="Requests started per second, at most")
    retry: RetryPolicy = RetryPolicy()
    verify_tls: bool = True
    ca_file: str | None = None
    description: str = ""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected an http:// or https:// URL such as https://api.example.com/v1")
        if "@" in value.split("/")[2]:
            raise ValueError("the URL holds credentials (user:password@); remove them and set them with `auth:`")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _no_literal_credentials(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if name.lower() in ("authorization", "proxy-authorization") or SECRET_KEY_WORDS.search(name):
                raise error_at((name,), f"header '{name}' carries a credential; set it with `auth:` instead")
        return headers


class FolderConnection(StrictModel):
    """A folder on this machine (or a mounted share). Relative paths are resolved against the project root."""

    type: Literal["folder"]
    path: str
    description: str = ""


Connection = Annotated[
    SqlConnection | S3Connection | SftpConnection | FtpConnection | SmtpConnection | FolderConnection | HttpConnection,
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


# --------------------------------------------------------------------------------------------------
# Shared by integrations and imports

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
RUN_PRESETS = ("hourly", "daily", "workdays", "weekly", "monthly")
EVERY_MINUTES = re.compile(r"^every (\d{1,4}) minutes?$")
TargetType = Literal["text", "integer", "number", "currency", "boolean", "date", "datetime", "json"]


def _identifier(value: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(
            f"'{value}' is not a table or column name; use letters, digits and underscores (schema.table allowed)"
        )
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]


class RunSchedule(StrictModel):
    """When an unpartitioned connector runs: a preset, `every N minutes`, or a cron expression."""

    cadence: str = Field(
        description="hourly, daily, workdays (Monday to Friday), weekly, monthly, 'every 15 minutes', or a cron "
        "expression"
    )
    timezone: str = "UTC"
    hour_of_day: int = Field(0, ge=0, le=23, description="When a daily/workdays/weekly/monthly schedule fires")
    minute_of_hour: int = Field(0, ge=0, le=59)

    @field_validator("cadence")
    @classmethod
    def _cadence_shape(cls, value: str) -> str:
        if value in RUN_PRESETS:
            return value
        every = EVERY_MINUTES.match(value)
        if every:
            minutes = int(every.group(1))
            if (
                minutes < 1
                or (minutes < 60 and 60 % minutes)
                or (minutes >= 60 and (minutes % 60 or 24 % (minutes // 60)))
            ):
                raise ValueError(
                    "every N minutes needs N dividing 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) or whole hours "
                    "dividing a day (60, 120, 180, 240, 360, 480, 720, 1440)"
                )
            return value
        from dagster._utils.schedules import is_valid_cron_string

        if not is_valid_cron_string(value):
            raise ValueError(
                f"'{value}' is neither a preset ({', '.join(RUN_PRESETS)}), 'every N minutes', nor a valid cron "
                "expression"
            )
        return value

    _known_timezone = field_validator("timezone")(ExtractSchedule._known_timezone.__func__)

    def cron(self) -> str:
        minute, hour = self.minute_of_hour, self.hour_of_day
        presets = {
            "hourly": f"{minute} * * * *",
            "daily": f"{minute} {hour} * * *",
            "workdays": f"{minute} {hour} * * 1-5",
            "weekly": f"{minute} {hour} * * 1",
            "monthly": f"{minute} {hour} 1 * *",
        }
        if self.cadence in presets:
            return presets[self.cadence]
        every = EVERY_MINUTES.match(self.cadence)
        if every:
            minutes = int(every.group(1))
            if minutes < 60:
                return f"*/{minutes} * * * *"
            return f"{minute} {hour} * * *" if minutes == 1440 else f"{minute} */{minutes // 60} * * *"
        return self.cadence


class MappingRuleSpec(StrictModel):
    """One target field: copied from a source column, computed by a safe expression, or a constant."""

    target: str
    source: str | None = Field(None, description="A column of the data set")
    expression: str | None = Field(None, description="A safe expression such as upper(trim(name))")
    constant: str | int | float | bool | None = None
    parse: str | None = Field(None, description="How to read the source text: date:%d/%m/%Y, number, currency, ...")
    default: str | int | float | bool | None = Field(None, description="Used when the value is empty")
    note: str = ""

    @model_validator(mode="after")
    def _one_origin(self) -> MappingRuleSpec:
        given = [name for name in ("source", "expression", "constant") if name in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of source (a column), expression (a function of columns) or constant"
                + (f"; got {', '.join(given)}" if given else "")
            )
        return self

    @field_validator("expression")
    @classmethod
    def _safe_expression(cls, value: str | None) -> str | None:
        if value is not None:
            from connector_pipelines.mapping.expressions import parse_expression

            parse_expression(value)  # ExpressionError is a ValueError: its message says what and where
        return value

    @field_validator("parse")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is not None:
            from connector_pipelines.mapping.conversions import parse_format

            parse_format(value)
        return value


# --------------------------------------------------------------------------------------------------
# Integration connectors


class ChangeLog(StrictModel):
    """A table the source system appends to on every change: record key, operation and a growing sequence id."""

    table: Identifier
    key: list[Identifier] = Field(
        default_factory=list, description="Columns holding the record key; default: the data set's key names"
    )
    operation: Identifier = Field("operation", description="Column holding create, update or delete")
    sequence: Identifier = Field("sequence_id", description="Column whose value grows with every change")


class DataSet(StrictModel):
    """The records an integration covers."""

    connection: str
    query: str | None = Field(None, description="SQL returning one row per record (may start with WITH)")
    table: Identifier | None = None
    key: list[Identifier] = Field(min_length=1, description="Column(s) that identify a record")
    updated_at: Identifier | None = Field(None, description="Column with the record's last change time")
    change_log: ChangeLog | None = None
    owner: Identifier | None = Field(None, description="Column with the user id that owns the record (for roles)")

    @field_validator("key", mode="before")
    @classmethod
    def _one_key_as_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("query")
    @classmethod
    def _no_parameters(cls, query: str | None) -> str | None:
        if query is not None:
            if not query.strip():
                raise ValueError("the query is empty")
            found = sorted(set(BIND_PARAMETER.findall(query)))
            if found:
                raise ValueError(
                    f"a data set query takes no bind parameters ({', '.join(':' + p for p in found)}); "
                    "the integration filters by key and updated_at itself"
                )
        return query

    @model_validator(mode="after")
    def _query_or_table(self) -> DataSet:
        if self.query is not None and self.table is not None:
            raise ValueError("set either query or table, not both")
        if self.query is None and self.table is None:
            raise ValueError(
                "set either query or table: query for SQL returning one row per record, table for a table or view"
            )
        return self


class TargetFieldSpec(StrictModel):
    name: str
    type: TargetType = "text"
    required: bool = False
    description: str = ""


class TargetSpec(StrictModel):
    """The external system and the fields it takes."""

    connection: str
    fields: list[TargetFieldSpec] = Field(min_length=1)


class LookupSpec(StrictModel):
    """A compound mapping: resolve a value through another table, e.g. owner_id -> users.email."""

    table: Identifier
    key: Identifier = Field(description="Column matched against the looked-up value")
    value: Identifier = Field(description="Column returned")
    connection: str | None = Field(None, description="Default: the data set's connection")


class RequestSpec(StrictModel):
    """One HTTP request; `{{field}}` placeholders take mapped target fields (and {{target_ref}}, {{key}})."""

    method: Literal["POST", "PUT", "PATCH", "GET", "DELETE"] = "POST"
    path: str = Field(description="Appended to the connection's base_url, e.g. /contacts/{{external_id}}")
    headers: dict[str, str] = Field(default_factory=dict)
    body: dict | list | str | None = Field(
        None, description="JSON template: a YAML mapping, or a JSON string; a whole-value placeholder keeps its type"
    )

    @field_validator("body")
    @classmethod
    def _valid_json(cls, body: object) -> object:
        if isinstance(body, str):
            import json

            try:
                return json.loads(body)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"the body template is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
                ) from None
        return body


class BatchSpec(StrictModel):
    """Send records in batches: one request carries up to `size` records as a list in `{{records}}`."""

    size: int = Field(ge=2, le=10000)
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    path: str
    headers: dict[str, str] = Field(default_factory=dict)
    body: dict | str = Field(description='JSON template with a whole-value "{{records}}" placeholder')

    _valid_json = field_validator("body")(RequestSpec._valid_json.__func__)


class SuccessCriterion(StrictModel):
    """A condition on the response; every criterion of a configuration must hold for a delivery to count."""

    source: Literal["status_code", "response_body"]
    comparator: Literal["equals", "not_equals", "contains", "not_contains"]
    value: str | int

    @model_validator(mode="after")
    def _status_value(self) -> SuccessCriterion:
        if self.source == "status_code" and self.comparator in ("equals", "not_equals"):
            text = str(self.value).strip()
            if not (re.fullmatch(r"[1-5]\d\d", text) or re.fullmatch(r"[1-5]xx", text, re.IGNORECASE)):
                raise ValueError(f"'{self.value}' is not a status; write a status such as 201 or a class such as 2xx")
        return self


class Configuration(StrictModel):
    """One mapping of the data set to the target, delivered as its own Dagster asset."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    mapping: list[MappingRuleSpec] = Field(min_length=1)
    lookups: dict[Annotated[str, Field(pattern=NAME_PATTERN)], LookupSpec] = Field(default_factory=dict)
    request: RequestSpec = Field(description="Creates (and updates, unless `update` is set)")
    update: RequestSpec | None = None
    delete: RequestSpec | None = Field(None, description="Needed for mirror mode and on_delete")
    batch: BatchSpec | None = None
    target_ref: str | None = Field(
        None, description="Dotted path of the target's id in the response, kept in the ledger"
    )
    success: list[SuccessCriterion] | None = Field(None, min_length=1, description="Default: the status is 2xx")
    sync_mode: Literal["upsert", "insert", "update", "mirror"] = "upsert"


class IntegrationChecks(StrictModel):
    max_rejected_rate: float = Field(
        0.05, ge=0, le=1, description="Fail the check above this share of rejected records"
    )


class Roles(StrictModel):
    """Only records whose owner holds one of `allowed` (through a users/roles table) are pushed."""

    allowed: list[str] = Field(min_length=1)
    table: Identifier
    user_column: Identifier = "user_id"
    role_column: Identifier = "role"


class WriteBack(StrictModel):
    """Write each attempt's outcome to a table in the source database (created if missing)."""

    table: Identifier = "integration_audit"


Trigger = Literal["on_create", "on_update", "on_delete"]


class IntegrationSpec(StrictModel):
    data_set: DataSet
    target: TargetSpec
    configurations: list[Configuration] = Field(min_length=1)
    triggers: list[Trigger] = Field(default_factory=list, description="Record-change events that start a run")
    sensor_interval_seconds: int = Field(30, ge=5, le=86400)
    schedule: RunSchedule | None = None
    roles: Roles | None = None
    write_back: WriteBack | None = None
    recovery: Literal["resend", "hold"] = Field(
        "resend",
        description="What to do with records a dead run left in flight: resend with the same Idempotency-Key, "
        "or hold them as failed for review",
    )
    checks: IntegrationChecks = IntegrationChecks()

    @model_validator(mode="after")
    def _consistent(self) -> IntegrationSpec:
        names = [c.name for c in self.configurations]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise error_at(
                    ("configurations", index, "name"),
                    f"'{name}' is already the name of an earlier configuration; configuration names must be unique "
                    "(each one is its own asset)",
                )
        if self.roles is not None and self.data_set.owner is None:
            raise ValueError("roles need data_set.owner: the column naming each record's owner")
        if "on_delete" in self.triggers and not any(c.delete for c in self.configurations):
            raise ValueError("on_delete needs a `delete:` request in at least one configuration")
        if ("on_create" in self.triggers or "on_update" in self.triggers) and not (
            self.data_set.change_log or self.data_set.updated_at
        ):
            raise ValueError("on_create/on_update sensors need data_set.updated_at or data_set.change_log to watch")
        for index, configuration in enumerate(self.configurations):
            if configuration.sync_mode == "mirror" and configuration.delete is None:
                raise error_at(
                    ("configurations", index, "sync_mode"),
                    "mirror mode needs a `delete:` request (records gone from the data set are deleted in the "
                    "target); add one, or use upsert",
                )
        return self


class IntegrationConnector(ConnectorBase):
    kind: Literal["integration"]
    integration: IntegrationSpec


CONNECTOR_KINDS = ("extract", "integration", "import")
