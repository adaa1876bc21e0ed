"""The YAML of `kind: extract` connectors: a query over a date window (or everything), written to a file and sent.

With `schedule.inception_date` an extract is partitioned by time window and its query binds :window_start and
:window_end; without one it is a full extract.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from typing import Literal

from pydantic import Field, field_validator, model_validator

from connector_pipelines.spec.common import (
    BIND_PARAMETER,
    ConnectorBase,
    RunSchedule,
    StrictModel,
    quoted,
)

WINDOW_PARAMETERS = ("window_start", "window_end")
# The placeholders of `file_name`: moments (formatted with strftime) and texts.
FILE_NAME_MOMENTS = {"window_start", "window_end", "now"}
FILE_NAME_FIELDS = {"name", "run_id", "partition_key", "ext"} | FILE_NAME_MOMENTS
MAX_FILE_NAME_CHARS = 255  # what common file systems allow for one name
# A moment's format spec: strftime directives (with glibc's `-`, no padding) and literal text; no width, which
# strftime would honour by padding without bound.
_MOMENT_SPEC = re.compile(r"(?:%-?[aAbBcdfGHIjmMpSuUVwWxXyYzZ%]|[^%{}])*\Z")
# A text's format spec: [[fill]align][width][.precision][s], numbers of at most three digits.
_TEXT_SPEC = re.compile(r"(?:[^{}]?[<>^])?\d{0,3}(?:\.\d{1,3})?s?\Z")
# Values to render a template with at load time: the longest a real run passes, so a name too long is seen now.
_SAMPLE_VALUES = {
    "name": "n" * 63,
    "window_start": dt.datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    "window_end": dt.datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    "run_id": "0" * 36,
    "partition_key": "2024-12-31-23:59",
    "now": dt.datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    "ext": "jsonl.gz",
}
# The cadences Dagster has partition definitions of its own for; the others partition on their cron.
PRESET_CADENCES = ("hourly", "daily", "weekly", "monthly")


def check_file_name_template(template: str) -> None:
    """Refuse a `file_name` template that does more than put the documented fields in: the template is run through
    `str.format`, so attribute or index access (`{name.__class__}`), conversions (`{name!r}`) and replacement
    fields nested in a format spec (`{now:{name}}`, which let one field's value become another's format) are
    refused, and every format spec must be a plain one for its field. Raises ValueError saying what to write."""
    allowed = ", ".join(sorted(FILE_NAME_FIELDS))
    for field, spec, conversion in _template_fields(template):
        if "." in field or "[" in field:
            raise ValueError(
                f"attribute or index access in {quoted('{' + field + '}')} is not allowed; write a field alone, "
                f"one of {allowed}"
            )
        if field not in FILE_NAME_FIELDS:
            raise ValueError(f"unknown field {quoted('{' + field + '}')}; allowed: {allowed}")
        if conversion is not None:
            raise ValueError(f"a conversion (!{conversion[:1]}) on {{{field}}} is not allowed; remove it")
        if "{" in spec or "}" in spec:
            raise ValueError(
                f"a replacement field inside the format of {{{field}}} is not allowed; write the format out, "
                "e.g. {window_start:%Y%m%d}"
            )
        if field in FILE_NAME_MOMENTS and not _MOMENT_SPEC.match(spec):
            raise ValueError(
                f"{quoted(spec)} is not a date format for {{{field}}}; use strftime directives without a width, "
                f"e.g. {{{field}:%Y%m%dT%H%M}}"
            )
        if field not in FILE_NAME_MOMENTS and not _TEXT_SPEC.match(spec):
            raise ValueError(
                f"{quoted(spec)} is not a text format for {{{field}}}; use [[fill]align][width][.precision] with "
                f"numbers up to 999, e.g. {{{field}:.20}}, or no format"
            )


def _template_fields(template: str) -> list[tuple[str, str, str | None]]:
    """(field, format spec, conversion) of every replacement field, those nested in format specs included (which
    `string.Formatter().parse` leaves inside the spec text)."""
    found: list[tuple[str, str, str | None]] = []
    try:
        for _, field, spec, conversion in string.Formatter().parse(template):
            if field is None:
                continue
            found.append((field, spec or "", conversion))
            if spec and ("{" in spec or "}" in spec):
                found.extend(_template_fields(spec))
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}); write fields as {{window_start:%Y%m%d}}") from None
    return found


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


class ExtractSchedule(RunSchedule):
    """When the extract runs.

    With `inception_date` the extract is partitioned from that date by `cadence`; each tick runs the latest
    complete window (or the last `rolling` windows in one run). Without it the extract is a full extract
    that runs on `cadence`. The cadences are every kind's: hourly, daily, workdays, weekly, monthly,
    `every N minutes`, or a cron expression (a partition then runs from one firing to the next, so a workdays
    window opened on Friday closes on Monday).
    """

    inception_date: dt.date | dt.datetime | None = None
    rolling: int | None = Field(None, ge=1, le=1000, description="Send the last N windows in each run")
    enabled: bool = True

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
        check_file_name_template(template)
        if "/" in template or "\\" in template or template.startswith("."):
            raise ValueError(
                "a file name may not contain '/' or '\\' or start with '.'; set the folder on the destination"
            )
        rendered = template.format(**_SAMPLE_VALUES)
        if len(rendered) > MAX_FILE_NAME_CHARS:
            raise ValueError(
                f"the file name can be {len(rendered)} characters long, more than the {MAX_FILE_NAME_CHARS} a file "
                "system allows; shorten the template"
            )
        if "/" in rendered or "\\" in rendered or ".." in rendered:
            raise ValueError(
                "a field's format puts '/', '\\' or '..' into the file name (%x writes dates with slashes); "
                "use directives such as %Y%m%d"
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
