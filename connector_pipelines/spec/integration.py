"""The YAML of `kind: integration` connectors: a data set mapped to request payloads and delivered to an HTTP target."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from connector_pipelines.spec.common import (
    BIND_PARAMETER,
    NAME_PATTERN,
    ConnectorBase,
    Identifier,
    MappingRuleSpec,
    OnceOrRunSchedule,
    StrictModel,
    error_at,
    quoted,
)
from connector_pipelines.spec.connections import CREDENTIAL_HEADER, api_key_auth_example
from connector_pipelines.spec.imports import ExpectationSpec
from connector_pipelines.spec.retention import Retention

# What may stand around {{field}} placeholders in a credential header: an authentication scheme, nothing else.
_AUTH_SCHEME = re.compile(r"\s*(bearer|basic|token|digest)?\s*", re.IGNORECASE)

TargetType = Literal["text", "integer", "number", "currency", "boolean", "date", "datetime", "json"]


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
    overlap: str = Field(
        "5 minutes",
        description="How far before its cursor a scheduled run reads again (rows committed late with an earlier "
        "updated_at): 'N seconds|minutes|hours|days', or 0",
    )

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

    @field_validator("overlap", mode="before")
    @classmethod
    def _overlap(cls, value: object) -> str:
        return duration_text(value, "overlap")

    @property
    def overlap_delta(self) -> dt.timedelta:
        return parse_duration(self.overlap, "overlap")

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


def _no_literal_credentials(headers: dict[str, str]) -> dict[str, str]:
    """Refuse a credential header whose value is written in the file: a literal is a secret in the spec, and an
    `${ENV}` reference would be sent as written (request headers are templates of the record, not of the
    environment). A value made of {{field}} placeholders (after an optional scheme such as `Bearer`) comes from
    the data set, and is allowed."""
    from connector_pipelines.mapping.templates import PLACEHOLDER

    for name, value in headers.items():
        if not CREDENTIAL_HEADER.search(name):
            continue
        if PLACEHOLDER.search(value) and _AUTH_SCHEME.fullmatch(PLACEHOLDER.sub("", value)):
            continue
        raise error_at(
            (name,),
            f"header '{name[:60]}' carries a credential, which a connector file may not hold (request headers are "
            "sent as written: an environment reference is not resolved there); set it on the target connection "
            f"with `auth:`, e.g. {api_key_auth_example(name)}, or take it from a mapped field with {{{{field}}}}",
        )
    return headers


class RequestSpec(StrictModel):
    """One HTTP request; `{{field}}` placeholders take mapped target fields (and {{target_ref}}, {{key}})."""

    method: Literal["POST", "PUT", "PATCH", "GET", "DELETE"] = "POST"
    path: str = Field(description="Appended to the connection's base_url, e.g. /contacts/{{external_id}}")
    headers: dict[str, str] = Field(default_factory=dict)
    body: dict | list | str | None = Field(
        None, description="JSON template: a YAML mapping, or a JSON string; a whole-value placeholder keeps its type"
    )

    _headers_hold_no_secret = field_validator("headers")(_no_literal_credentials)

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
    _headers_hold_no_secret = field_validator("headers")(_no_literal_credentials)


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
                raise ValueError(
                    f"{quoted(self.value)} is not a status; write a status such as 201 or a class such as 2xx"
                )
        return self


class LookupRequestSpec(StrictModel):
    """A read that asks the target whether a record is there: how `recovery` tells, for a record whose delivery
    may or may not have landed (no answer came), whether to send it again.

    The record is there when every `success` criterion holds (default: the status is 2xx); it is not when they do
    not hold and the target answered 2xx or 404; any other answer (5xx, 429, no answer) tells nothing, and the
    record stays in doubt for the next run.
    """

    method: Literal["GET"] = "GET"
    path: str = Field(description="e.g. /contacts?external_id={{external_id}}; {{field}}, {{key}}, {{target_ref}}")
    headers: dict[str, str] = Field(default_factory=dict)
    success: list[SuccessCriterion] | None = Field(
        None, min_length=1, description="What an answer that says the record is there looks like; default: 2xx"
    )
    target_ref: str | None = Field(
        None, description="Dotted path of the record's id in the lookup's answer (e.g. records.0.id), kept"
    )

    _headers_hold_no_secret = field_validator("headers")(_no_literal_credentials)


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
    lookup: LookupRequestSpec | None = Field(
        None,
        description="A read that tells whether a record whose delivery is in doubt landed (used by recovery)",
    )


class IntegrationChecks(StrictModel):
    max_rejected_rate: float = Field(
        0.05, ge=0, le=1, description="Fail the check above this share of rejected records"
    )
    max_mapping_failure_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Send nothing when more than this share of a configuration's records fail to map (checked "
        "before the first request); 1 turns the gate off",
    )


_DURATION = re.compile(r"^(\d{1,6})\s*(second|minute|hour|day)s?\Z")
_DURATION_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MAX_RETRY_BACKOFF = dt.timedelta(days=366)


def parse_duration(value: object, what: str) -> dt.timedelta:
    """'90 seconds', '5 minutes', '2 hours', '1 day', or 0 / '0', as a duration (the grammar of imports'
    `lookback`); ValueError naming `what` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{what} must be a duration such as '5 minutes', got {value!r}")
    text = str(value).strip().lower()
    if text == "0":
        return dt.timedelta(0)
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"{what} {quoted(str(value))} is not a duration; write 'N seconds', 'N minutes', 'N hours' or 'N days' "
            "(or 0)"
        )
    delta = dt.timedelta(seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)])
    if delta > MAX_RETRY_BACKOFF:
        raise ValueError(f"{what} {quoted(str(value))} is longer than 366 days")
    return delta


def duration_text(value: object, what: str) -> str:
    """A duration field's value as it is kept (text), once `parse_duration` has accepted it."""
    parse_duration(value, what)
    return value if isinstance(value, str) else str(value)


class RetryAcrossRuns(StrictModel):
    """How often later runs send a record the target refused, and when they stop (the record is a dead letter).

    A record that failed its n-th run in a row waits `initial_backoff * 2^(n-1)` (at most `max_backoff`) before a
    run sends it again; after `max_attempts` failed runs no run or sensor sends it again until its data changes or
    `push --key` sends it. Only refusals count (a 4xx other than 408/429, or a 2xx failing the success criteria):
    not a 5xx, 429, 408 or no answer (the target is down or busy: retried by the next run), nor a record that
    fails to map, nor one in doubt (it keeps its Idempotency-Key until the target settles it).
    """

    max_attempts: int = Field(
        10, ge=1, le=1000, description="Failed runs after which a record is a dead letter (not sent by any run)"
    )
    initial_backoff: str = Field(
        "5 minutes",
        description="Wait after the first failed run, doubled after each further one: 'N seconds|minutes|hours|"
        "days', or 0 to retry on the next run",
    )
    max_backoff: str = Field("1 day", description="The longest wait between two failed runs")

    @field_validator("initial_backoff", "max_backoff", mode="before")
    @classmethod
    def _duration(cls, value: object, info: ValidationInfo) -> str:
        return duration_text(value, info.field_name)

    @model_validator(mode="after")
    def _ordered(self) -> RetryAcrossRuns:
        if self.max_backoff_delta < self.initial_backoff_delta:
            raise error_at(
                ("max_backoff",),
                f"max_backoff {quoted(self.max_backoff)} is shorter than initial_backoff "
                f"{quoted(self.initial_backoff)}; make it at least as long",
            )
        return self

    @property
    def initial_backoff_delta(self) -> dt.timedelta:
        return parse_duration(self.initial_backoff, "initial_backoff")

    @property
    def max_backoff_delta(self) -> dt.timedelta:
        return parse_duration(self.max_backoff, "max_backoff")


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
    schedule: OnceOrRunSchedule | None = None
    roles: Roles | None = None
    write_back: WriteBack | None = None
    recovery: Literal["auto", "resend", "probe", "hold"] = Field(
        "auto",
        description="What to do with a record that may have landed without an answer (a run died, the last try "
        "timed out or dropped): resend under the same Idempotency-Key, probe with the configuration's `lookup` "
        "first, or hold it for review; auto: resend for PUT/DELETE or a connection with "
        "honours_idempotency_key, else probe when there is a lookup, else hold",
    )
    retry_across_runs: RetryAcrossRuns = Field(
        default_factory=RetryAcrossRuns,
        description="Backoff between runs for records the target refused, and the dead-letter limit",
    )
    full_diff_every: str = Field(
        "1 day",
        description="With data_set.updated_at, a scheduled run reads only rows updated since the last run (less "
        "data_set.overlap); every this often ('N hours|days') it reads the whole data set instead, which is what "
        "finds deletes and rows whose updated_at did not move; 0: every run reads the whole data set",
    )
    retention: Retention = Field(
        default_factory=Retention,
        description="How long data set snapshots, audit files and attempt history are kept (applied after each run, "
        "and by `connector-pipelines prune`)",
    )
    checks: IntegrationChecks = IntegrationChecks()
    expectations: list[ExpectationSpec] = Field(
        default_factory=list,
        description="Data-quality rules on the data set's columns (Great Expectations, as for imports), checks on "
        "the data set asset: when one fails (severity error, the default), no configuration is delivered",
    )

    @field_validator("full_diff_every", mode="before")
    @classmethod
    def _full_diff_every(cls, value: object) -> str:
        return duration_text(value, "full_diff_every")

    @property
    def full_diff_every_delta(self) -> dt.timedelta:
        return parse_duration(self.full_diff_every, "full_diff_every")

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
            if self.recovery == "probe" and configuration.lookup is None:
                raise error_at(
                    ("recovery",),
                    f"recovery: probe needs a `lookup:` request in every configuration, and '{configuration.name}' "
                    "has none; add one (e.g. `lookup: {path: /contacts?external_id={{external_id}}}`), or use "
                    "auto, resend or hold",
                )
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
