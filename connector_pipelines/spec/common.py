"""What the YAML of every connector kind shares: strict models, environment references, names, schedules, mapping rules.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored setting.
Secrets are never literals: a secret field holds an environment reference such as `${SFTP_PASSWORD}`,
resolved at run time through `dg.EnvVar`.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from connector_pipelines.spec.cron import is_valid_cron

# In Python's `re`, `$` also matches before a final newline, so `^orders$` accepts 'orders\n' (what a YAML block
# scalar `table: |` gives): every pattern Python applies here ends with `\Z`. NAME_PATTERN is the exception: it is
# for pydantic's `Field(pattern=...)`, whose Rust engine reads `$` as the end of the text and knows no `\Z`; Python
# code matches it with `re.fullmatch`.
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
# Dagster resource keys of the platform's own state (factories/naming.py): no connection may be named so.
PLATFORM_RESOURCE_PREFIX = "connector_pipelines_"
CONNECTOR_KINDS = ("extract", "integration", "import")
ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}\Z")
# The bind-parameter syntax SQLAlchemy's text() understands; `::type` casts are not parameters.
BIND_PARAMETER = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z")
RUN_PRESETS = ("hourly", "daily", "workdays", "weekly", "monthly")
EVERY_MINUTES = re.compile(r"^every (\d{1,4}) minutes?\Z")


class StrictModel(BaseModel):
    """A spec model: unknown keys are errors, and a loaded spec cannot be changed by accident."""

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


def quoted(value: object, limit: int = 60) -> str:
    """`value` in quotes for a problem line: control characters escaped (a newline must not split the line) and
    cut to about `limit` characters (the text comes from the file, and may be long)."""
    text = re.sub(r"[\x00-\x1f\x7f]", lambda found: repr(found.group())[1:-1], str(value))
    return f"'{text}'" if len(text) <= limit else f"'{text[: limit - 3]}...'"


def _identifier(value: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(
            f"{quoted(value)} is not a table or column name; use letters, digits and underscores (schema.table allowed)"
        )
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]


def known_timezone(value: str) -> str:
    """`value` when it is an IANA time zone name this machine knows; a ValueError that says how to write one."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{value}'; use an IANA name such as 'Europe/Paris' or 'UTC'") from None
    return value


ASSET_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*\Z")


class Upstream(StrictModel):
    """Something a connector reads that another asset produces: a connector of this project, or any Dagster asset
    (a dbt model, a table another team's job writes), by its key with `/` between the parts."""

    connector: str | None = Field(None, pattern=NAME_PATTERN, description="Another connector, by name")
    asset: str | None = Field(None, description="An asset key with / between its parts, e.g. marts/customers")

    @model_validator(mode="before")
    @classmethod
    def _bare_key(cls, value):
        return {"asset": value} if isinstance(value, str) else value

    @field_validator("asset")
    @classmethod
    def _key_shape(cls, value: str | None) -> str | None:
        if value is not None and not ASSET_KEY_PATTERN.match(value):
            raise ValueError(
                f"{quoted(value)} is not an asset key; write its parts with / between them, such as marts/customers"
            )
        return value

    @model_validator(mode="after")
    def _one_of(self) -> Upstream:
        if (self.connector is None) == (self.asset is None):
            raise ValueError("name one upstream: `connector: NAME` or `asset: path/to/key`")
        return self


class ConnectorBase(StrictModel):
    """The keys every connector has, whatever its kind."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    owners: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True
    depends_on: list[Upstream] = Field(
        default_factory=list, description="Assets this connector reads: real dependencies in the asset graph"
    )
    automation: Literal["none", "on_upstream_update", "on_cron"] = Field(
        "none",
        description="on_upstream_update: run when every upstream has been updated since the last run; on_cron: "
        "run on the schedule's cadence once the upstreams have updated (Dagster's declarative automation, instead "
        "of the schedule); none: the schedule and sensors only",
    )

    @model_validator(mode="after")
    def _automation_needs(self) -> ConnectorBase:
        if self.automation == "on_upstream_update" and not self.depends_on:
            raise ValueError("automation: on_upstream_update needs `depends_on:` (the upstream assets to wait for)")
        if any(upstream.connector == self.name for upstream in self.depends_on):
            raise ValueError(f"depends_on names this connector itself ({self.name}); it cannot wait for itself")
        return self


ONCE = "once"


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
        if not is_valid_cron(value):
            raise ValueError(
                f"{quoted(value)} is neither a preset ({', '.join(RUN_PRESETS)}), 'every N minutes', nor a valid cron "
                "expression"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return known_timezone(value)

    def cron(self) -> str:
        """The cadence as a cron expression, presets and `every N minutes` included."""
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


class OnceOrRunSchedule(RunSchedule):
    """A RunSchedule, or `once`: a single run (at the first tick after the connector loads, when it is on)."""

    @field_validator("cadence")
    @classmethod
    def _cadence_shape(cls, value: str) -> str:
        if value == ONCE:
            return value
        try:
            return RunSchedule._cadence_shape.__func__(cls, value)
        except ValueError as exc:
            # A malformed `every N minutes` keeps its own message; an unknown word learns of `once` too.
            raise ValueError(str(exc).replace("is neither a preset (", "is neither once, a preset (")) from None

    @property
    def once(self) -> bool:
        return self.cadence == ONCE

    def cron(self) -> str:
        if self.once:
            raise ValueError("a `once` schedule has no cron: it is a sensor that asks for one run")
        return super().cron()


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
