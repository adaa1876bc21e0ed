"""Data-quality expectations on an import's rows: checked with Great Expectations, and used to reject bad rows.

An import declares expectations in YAML; each becomes an `Expectation`. Two things are done with them:

- `run_expectations` validates a pandas frame with Great Expectations (GX) 1.x and returns one `ExpectationResult`
  per expectation. These results back blocking Dagster asset checks (wired elsewhere; this module does not import
  Dagster).
- `row_rejections` says, per row, which row-level expectations the row breaks, so that those rows are rejected
  with a reason while the rest load. It is plain vectorized pandas (GX reports only a sample of the offending
  rows, not all of them), written to give the same verdicts as GX:

  ======== ================================================= ==========================================
  kind     a row breaks it when the value ...                 nulls
  ======== ================================================= ==========================================
  not_null is null (None, NaN, NaT, pd.NA)                      are what it catches
  in_set   is not in `values` (`Series.isin`, so 1 != "1")     ignored (pass), as GX does
  regex    as text does not contain a match of `pattern`       ignored (pass), as GX does
           (`str(value)` searched with `re.search`, not a
           full match: anchor with ^...$ to match it all)
  between  is below `min` or above `max` (both inclusive),     ignored (pass), as GX does
           or is not a number / not a date at all
  unique   set-level: never rejects a row, only fails the check (nulls ignored, as GX does)
  ======== ================================================= ==========================================

  A row breaking a rule is rejected even when `mostly` lets the check pass: `mostly` decides whether the batch as
  a whole is acceptable (the blocking check), not whether a bad row loads.

`between` compares numbers when the bounds are numbers, and dates when they are ISO strings (or `date` /
`datetime` values, which YAML produces for unquoted dates). Column values are converted first, the same way for GX
and for `row_rejections`: numbers with `pandas.to_numeric`, dates with `pandas.to_datetime` (ISO 8601, `date` and
`datetime` objects). Instants are compared in UTC, naive ones taken as UTC. When every bound given is a plain date
("2024-12-31"), values are compared by their UTC calendar day, so `max: 2024-12-31` keeps 2024-12-31T23:00. A value
that cannot be converted ("abc" against numeric bounds) breaks the rule; GX is handed an out-of-range stand-in for
it (-inf / +inf, or a day beyond the bound), so GX's `details` show the stand-in while `sample_unexpected` shows the
value in the frame.

An expectation on a column the frame does not have fails its check (GX's error is in `details["error"]`) and
rejects every row ("email: no such column (not_null)"), so a changed source schema cannot load silently.

Cost, measured with GX 1.24.1 and pandas 3.1 for five expectations (not_null, unique, in_set, regex, between):
importing GX takes 2.5-4 s, so it is imported on the first `run_expectations` call, not with this module. After
that a call costs about 0.05 s of fixed overhead, 0.16 s for 100k rows and 1.5 s for 1M rows; `row_rejections`
takes 0.05 s and 0.5-0.9 s (parsing ISO date strings is its largest cost). About half of GX's time on large frames
is its batch fingerprint (a hash of every column handed to it, done twice per validation by `Batch.validate`),
which is why only the columns the expectations read are handed over. Checks describe the frame they are given:
a caller that loads in batches passes each batch (or a sample) and gets results for that frame only.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from great_expectations.core.batch_definition import BatchDefinition

    from connector_pipelines.spec.imports import ExpectationSpec

KINDS = ("not_null", "unique", "in_set", "regex", "between")
ROW_LEVEL_KINDS = frozenset({"not_null", "in_set", "regex", "between"})
SAMPLE_SIZE = 10
# Rejection reasons quote the offending value; a multi-kilobyte text field should not bloat the reject output.
MAX_SHOWN_CHARS = 60

# GX's "SUMMARY" reports counts plus a bounded sample of unexpected values and their row indexes. "COMPLETE" would
# list every unexpected value and index (a million-entry list in the check's metadata), and per-row verdicts come
# from `row_rejections` anyway. The pandas query string GX can add is useless to callers, so it is left out.
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": SAMPLE_SIZE,
    "return_unexpected_index_query": False,
}


def _is_number(value: object) -> bool:
    # bool is an int subclass, but `min: true` is a mistake, not the number 1.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_instant(text: str) -> datetime:
    """An ISO date or date-time as an aware UTC datetime (naive values are taken as UTC)."""
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _is_plain_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Expectation:
    """One declared data-quality rule on one column. Invalid declarations raise ValueError at construction.

    `values` is for in_set, `pattern` (Python `re` syntax) for regex, `min` / `max` (inclusive; at least one) for
    between: both numbers, or both ISO dates / date-times. `mostly` is GX's: the share of rows (of non-null rows,
    except for not_null) that must pass for the expectation to succeed.
    """

    kind: str
    column: str
    values: tuple = ()
    pattern: str | None = None
    min: float | str | None = None
    max: float | str | None = None
    mostly: float = 1.0
    description: str = ""
    blocking: bool = True  # a failure keeps the data from being merged (severity error); False: a warning only

    def __post_init__(self) -> None:
        where = f"expectation {self.kind!r} on column {self.column!r}"
        if self.kind not in KINDS:
            raise ValueError(f"{where}: unknown kind; expected one of {', '.join(KINDS)}")
        if not isinstance(self.column, str) or not self.column:
            raise ValueError(f"{where}: column must be a non-empty string")
        if not _is_number(self.mostly) or not 0.0 <= self.mostly <= 1.0:
            raise ValueError(f"{where}: mostly must be a number from 0 to 1, got {self.mostly!r}")
        if self.values is None or (isinstance(self.values, list) and not self.values):
            object.__setattr__(self, "values", ())  # YAML `values:` or `values: []`, same as not given
        # Parameters of another kind are most likely a YAML mistake (say `values:` under a regex): say so rather
        # than ignore them.
        given = {
            "values": self.values != (),
            "pattern": self.pattern is not None,
            "min/max": self.min is not None or self.max is not None,
        }
        allowed = {"in_set": "values", "regex": "pattern", "between": "min/max"}.get(self.kind)
        stray = [name for name, present in given.items() if present and name != allowed]
        if stray:
            raise ValueError(f"{where}: {' and '.join(stray)} do not apply to {self.kind}")
        if self.kind == "in_set":
            self._check_values(where)
        elif self.kind == "regex":
            self._check_pattern(where)
        elif self.kind == "between":
            self._check_bounds(where)

    def _check_values(self, where: str) -> None:
        values = self.values
        if isinstance(values, str | bytes) or not isinstance(values, Sequence | set | frozenset):
            raise ValueError(f"{where}: values must be a list of values, got {values!r}")
        if not values:
            raise ValueError(f"{where}: values must not be empty (no value could pass)")
        # Frozen and hashable: a YAML list becomes a tuple.
        object.__setattr__(self, "values", tuple(values))

    def _check_pattern(self, where: str) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ValueError(f"{where}: regex needs a pattern")
        try:
            re.compile(self.pattern)
        except re.error as error:
            raise ValueError(f"{where}: invalid regex {self.pattern!r}: {error}") from None

    def _check_bounds(self, where: str) -> None:
        if self.min is None and self.max is None:
            raise ValueError(f"{where}: between needs min, max or both")
        kinds = set()
        for name in ("min", "max"):
            bound = getattr(self, name)
            if bound is None:
                continue
            # YAML reads an unquoted 2024-01-01 as a date: keep the ISO text so every bound is a number or a string.
            if isinstance(bound, date):
                bound = bound.isoformat()
                object.__setattr__(self, name, bound)
            if _is_number(bound):
                if math.isnan(bound):
                    raise ValueError(f"{where}: {name} must not be NaN")
                kinds.add("number")
            elif isinstance(bound, str):
                try:
                    _parse_instant(bound)
                except ValueError:
                    raise ValueError(
                        f"{where}: {name} {bound!r} is neither a number nor an ISO date (YYYY-MM-DD) or date-time"
                    ) from None
                kinds.add("date")
            else:
                raise ValueError(f"{where}: {name} must be a number or an ISO date, got {bound!r}")
        if len(kinds) > 1:
            raise ValueError(f"{where}: min and max must both be numbers or both be dates")
        if self.min is not None and self.max is not None and self._bound(self.min) > self._bound(self.max):
            raise ValueError(f"{where}: min {self.min!r} is greater than max {self.max!r}")

    @property
    def row_level(self) -> bool:
        """Whether a row breaking this expectation is rejected (unique is a property of the set, not of a row)."""
        return self.kind in ROW_LEVEL_KINDS

    @property
    def compares_dates(self) -> bool:
        """For between: whether the bounds are dates (else numbers)."""
        return isinstance(self.min, str) or isinstance(self.max, str)

    @property
    def compares_days(self) -> bool:
        """For between on dates: whether every bound is a plain date, so values are compared by calendar day."""
        bounds = [bound for bound in (self.min, self.max) if bound is not None]
        return self.compares_dates and all(_is_plain_date(bound) for bound in bounds)

    def _bound(self, bound: float | str) -> float | datetime:
        return _parse_instant(bound) if isinstance(bound, str) else bound


@dataclass
class ExpectationResult:
    """GX's verdict on one expectation for one frame.

    `unexpected_percent` is GX's: of the non-null values, except for not_null where it is of all rows (0.0 when
    there was nothing to count). `sample_unexpected` holds up to ten offending values as found in the frame.
    `details` is JSON-serializable: GX's expectation type, its arguments and its result, plus `error` when GX could
    not evaluate the expectation (a missing column, for one).
    """

    expectation: Expectation
    success: bool
    unexpected_count: int
    element_count: int
    unexpected_percent: float
    sample_unexpected: list = field(default_factory=list)
    details: dict = field(default_factory=dict)


# --- conversions shared by GX and row_rejections -----------------------------------------------------------------


@dataclass
class _Prepared:
    """A between column converted for comparison: `values` (with stand-ins where `bad`), `bad` values unconvertible."""

    values: pd.Series
    bad: np.ndarray
    converted: bool


def _prepare_between(column: pd.Series, expectation: Expectation) -> _Prepared:
    """The column as numbers or UTC dates, unconvertible non-null values replaced with an out-of-range stand-in."""
    present = column.notna().to_numpy()
    if expectation.compares_dates:
        values = _as_utc_datetimes(column)
        if expectation.compares_days:
            values = values.dt.floor("D")
        # A day beyond the bound fails it whatever the column's resolution; Timestamp.min might not fit.
        if expectation.min is not None:
            stand_in: Any = pd.Timestamp(_parse_instant(expectation.min)) - timedelta(days=1)
        else:
            stand_in = pd.Timestamp(_parse_instant(expectation.max)) + timedelta(days=1)
        converted = True
    else:
        if column.dtype in (np.dtype("int64"), np.dtype("float64")):
            # GX compares these natively and quickly; nothing to convert, nothing unconvertible.
            return _Prepared(column, np.zeros(len(column), dtype=bool), converted=False)
        numbers = column if pd.api.types.is_numeric_dtype(column) else pd.to_numeric(column, errors="coerce")
        # float64 whatever came in (Int64 with pd.NA, bool, Decimal objects): GX's fast path handles it.
        values = pd.Series(numbers.to_numpy(dtype="float64", na_value=np.nan), index=column.index, name=column.name)
        stand_in = -math.inf if expectation.min is not None else math.inf
        converted = True
    bad = present & values.isna().to_numpy()
    if bad.any():
        values = values.copy()
        values[bad] = stand_in
    return _Prepared(values, bad, converted)


def _as_utc_datetimes(column: pd.Series) -> pd.Series:
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(column):
        return column.dt.tz_localize("UTC")
    # Numbers are not dates here: pandas would read 20240101 as a date today and as an epoch in a later version.
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return pd.Series(pd.NaT, index=column.index, dtype="datetime64[us, UTC]")
    if column.dtype == object:
        texts_or_dates = np.fromiter(
            (isinstance(value, str | date) for value in column.to_numpy()), dtype=bool, count=len(column)
        )
        column = column.where(texts_or_dates)
    return pd.to_datetime(column, errors="coerce", utc=True, format="ISO8601")


def _regex_misses(values: pd.Series, pattern: str) -> np.ndarray:
    """Which non-null values do not match, computed as GX's pandas engine does (`astype(str).str.contains`)."""
    with warnings.catch_warnings():
        # pandas warns that a pattern with groups does not extract them; matching is all that is wanted here.
        warnings.filterwarnings("ignore", message="This pattern is interpreted as a regular expression")
        return ~values.astype(str).str.contains(pattern).to_numpy(dtype=bool)


# --- row rejections ------------------------------------------------------------------------------------------------


def _show(value: object) -> str:
    """A value as quoted in a rejection reason: strings quoted, long ones cut."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        text = value if len(value) <= MAX_SHOWN_CHARS else value[:MAX_SHOWN_CHARS] + "..."
        return repr(text)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, int | float | bool):
        return repr(value)
    text = str(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "..."


def _messages(values: pd.Series, before: str, after: str) -> np.ndarray:
    """`before + value + after` for each value, formatting each distinct value once (bad rows repeat a lot).

    Concatenation, not str.format: patterns and column names may contain braces.
    """
    try:
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
    except TypeError:  # unhashable values (lists, dicts): format each one
        return np.array([before + _show(value) + after for value in values], dtype=object)
    shown = np.array([before + _show(value) + after for value in uniques], dtype=object)
    return shown[codes]


def _row_failures(frame: pd.DataFrame, expectation: Expectation) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the rows breaking a row-level expectation, and the reason for each."""
    name, kind = expectation.column, expectation.kind
    suffix = f" ({kind})"
    if name not in frame.columns:
        return np.arange(len(frame)), np.full(len(frame), f"{name}: no such column{suffix}", dtype=object)
    column = frame[name]
    present = column.notna().to_numpy()
    if kind == "not_null":
        positions = np.flatnonzero(~present)
        return positions, np.full(len(positions), f"{name}: null{suffix}", dtype=object)
    if kind == "in_set":
        positions = np.flatnonzero(present & ~column.isin(list(expectation.values)).to_numpy())
        return positions, _messages(column.iloc[positions], f"{name}: ", f" not in set{suffix}")
    if kind == "regex":
        candidates = np.flatnonzero(present)
        positions = candidates[_regex_misses(column.iloc[candidates], expectation.pattern or "")]
        after = f" does not match pattern '{expectation.pattern}'{suffix}"
        return positions, _messages(column.iloc[positions], f"{name}: ", after)
    # between
    prepared = _prepare_between(column, expectation)
    values = prepared.values
    what = "a date" if expectation.compares_dates else "a number"
    parts: list[tuple[np.ndarray, str]] = [(prepared.bad, f" not {what}{suffix}")]
    valid = present & ~prepared.bad
    for bound, below, word in ((expectation.min, True, "below min"), (expectation.max, False, "above max")):
        if bound is None:
            continue
        limit = pd.Timestamp(_parse_instant(bound)) if isinstance(bound, str) else bound
        outside = (values < limit) if below else (values > limit)
        parts.append((valid & outside.to_numpy(dtype=bool), f" {word} {bound}{suffix}"))
    position_parts, message_parts = [], []
    for mask, after in parts:
        positions = np.flatnonzero(mask)
        position_parts.append(positions)
        message_parts.append(_messages(column.iloc[positions], f"{name}: ", after))
    return np.concatenate(position_parts), np.concatenate(message_parts)


def row_rejections(frame: pd.DataFrame, expectations: Sequence[Expectation]) -> list[str | None]:
    """Per row of `frame` (by position), None if the row keeps every row-level expectation, else why not.

    Reasons read "column: what (kind)", e.g. "email: null (not_null)" or "country: 'XX' not in set (in_set)",
    several joined with "; " in the order the expectations are given. Set-level expectations (unique) are skipped.
    """
    count = len(frame)
    reasons = np.full(count, None, dtype=object)
    has_reason = np.zeros(count, dtype=bool)
    for expectation in expectations:
        if not expectation.row_level:
            continue
        positions, messages = _row_failures(frame, expectation)
        if not len(positions):
            continue
        first = ~has_reason[positions]
        reasons[positions[first]] = messages[first]
        more = positions[~first]
        if len(more):
            reasons[more] = reasons[more] + "; " + messages[~first]
        has_reason[positions] = True
    return reasons.tolist()


# --- Great Expectations --------------------------------------------------------------------------------------------

_gx_lock = threading.Lock()
_gx_batch_definition: BatchDefinition | None = None


def _batch_definition() -> BatchDefinition:
    """The whole-dataframe batch definition of a process-wide ephemeral GX context, created on first use.

    Reused because each ephemeral context creates a temporary directory (its docs site) that is never removed, and
    the data source and asset hold nothing per call: the frame comes in as a batch parameter.
    """
    global _gx_batch_definition
    with _gx_lock:
        if _gx_batch_definition is None:
            # GX logs its context and store setup at INFO and DEBUG; keep that out of run logs unless asked for.
            gx_logger = logging.getLogger("great_expectations")
            if gx_logger.level == logging.NOTSET:
                gx_logger.setLevel(logging.WARNING)
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context = gx.get_context(mode="ephemeral")
            # tqdm "Calculating Metrics" bars would otherwise be written to stderr on every validation.
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            source = context.data_sources.add_pandas("connector_pipelines_expectations")
            asset = source.add_dataframe_asset("frame")
            _gx_batch_definition = asset.add_batch_definition_whole_dataframe("whole_frame")
        return _gx_batch_definition


def _gx_expectation(expectation: Expectation, column: str) -> Any:
    import great_expectations.expectations as gxe

    common: dict[str, Any] = {
        "column": column,
        "mostly": expectation.mostly,
        # Report a GX failure (a missing column) as that expectation's failed result rather than abort the suite.
        "catch_exceptions": True,
    }
    if expectation.description:
        common["description"] = expectation.description
    kind = expectation.kind
    if kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(**common)
    if kind == "unique":
        return gxe.ExpectColumnValuesToBeUnique(**common)
    if kind == "in_set":
        return gxe.ExpectColumnValuesToBeInSet(value_set=list(expectation.values), **common)
    if kind == "regex":
        return gxe.ExpectColumnValuesToMatchRegex(regex=expectation.pattern, **common)
    bounds = {}
    for name, bound in (("min_value", expectation.min), ("max_value", expectation.max)):
        if bound is not None:
            bounds[name] = pd.Timestamp(_parse_instant(bound)) if isinstance(bound, str) else bound
    return gxe.ExpectColumnValuesToBeBetween(**bounds, **common)


def _synthetic_name(column: str, index: int, taken: pd.Index) -> str:
    name = f"{column} [between #{index}]"
    while name in taken:
        name += "'"
    return name


def _json_safe(value: object) -> Any:
    """A plain JSON value: NaN/NaT/NA become null, infinities and other objects text, numpy scalars Python ones."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset | np.ndarray):
        return [_json_safe(item) for item in value]
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def _gx_error(exception_info: dict | None) -> str | None:
    """GX's error message, from either of its shapes: flat, or keyed by the metric that failed."""
    if not exception_info:
        return None
    if "raised_exception" in exception_info:
        return exception_info.get("exception_message") if exception_info.get("raised_exception") else None
    messages = [
        info.get("exception_message") or "error"
        for info in exception_info.values()
        if isinstance(info, dict) and info.get("raised_exception")
    ]
    return "; ".join(dict.fromkeys(messages)) or None


def expectations_from_specs(specs: Sequence[ExpectationSpec]) -> list[Expectation]:
    """The `expectations:` of a spec (an import's or an integration's) as the engine's Expectation values."""
    return [
        Expectation(
            kind=item.expect,
            column=item.column,
            values=tuple(item.values),
            pattern=item.pattern,
            min=item.min,
            max=item.max,
            mostly=item.mostly,
            blocking=item.blocking,
        )
        for item in specs
    ]


def run_expectations(frame: pd.DataFrame, expectations: Sequence[Expectation]) -> list[ExpectationResult]:
    """Validate `frame` against `expectations` with Great Expectations; one result per expectation, in order.

    All expectations run as one GX suite on one batch, so GX computes shared metrics (row count, null counts) once.
    """
    if not expectations:
        return []
    import great_expectations as gx

    # Only the columns GX reads: GX fingerprints (hashes) every column of the frame it is given, twice per call.
    # A between column GX reads as converted is added under its own name below, so its original stays out.
    prepared: dict[int, _Prepared] = {
        position: _prepare_between(frame[expectation.column], expectation)
        for position, expectation in enumerate(expectations)
        if expectation.kind == "between" and expectation.column in frame.columns
    }
    columns = [
        expectation.column
        for position, expectation in enumerate(expectations)
        if expectation.column in frame.columns and (position not in prepared or not prepared[position].converted)
    ]
    # Positions as the index: GX reports offending rows by index label, and samples are read back by position.
    gx_frame = frame[list(dict.fromkeys(columns))].reset_index(drop=True)

    gx_expectations = []
    sources: list[str | None] = []  # per expectation, the frame column its sample is read from
    for position, expectation in enumerate(expectations):
        column = expectation.column
        if position in prepared and prepared[position].converted:
            # Each conversion is the expectation's own (days or instants, its stand-in), so it gets a column.
            column = _synthetic_name(column, position, frame.columns.union(gx_frame.columns))
            # `.array`, not `.to_numpy()`: that would turn tz-aware dates into a million Timestamp objects.
            gx_frame[column] = prepared[position].values.array
        gx_expectation = _gx_expectation(expectation, column)
        # GX returns results in its own order (grouped by metric); the position maps each one back.
        gx_expectation.meta = {"position": position}
        gx_expectations.append(gx_expectation)
        sources.append(expectation.column if expectation.column in frame.columns else None)

    batch_definition = _batch_definition()
    # Built with its expectations rather than through add_expectation, which looks the suite up in the current
    # context's store (to save into it) and drops "equal-ish" duplicates; this suite is never stored.
    suite = gx.ExpectationSuite(name="connector_pipelines_expectations", expectations=gx_expectations)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": gx_frame})
    with warnings.catch_warnings():
        # pandas warnings raised inside GX's metric code (a regex with groups) say nothing about the data.
        warnings.simplefilter("ignore", UserWarning)
        validation = batch.validate(suite, result_format=RESULT_FORMAT)

    by_position: dict[int, ExpectationResult] = {}
    for gx_result in validation.results:
        position = gx_result.expectation_config.meta["position"]
        by_position[position] = _result(expectations[position], gx_result, frame, sources[position])
    return [by_position[position] for position in range(len(expectations))]


def _result(expectation: Expectation, gx_result: Any, frame: pd.DataFrame, source: str | None) -> ExpectationResult:
    result = dict(gx_result.result or {})
    config = gx_result.expectation_config
    kwargs = {key: value for key, value in config.kwargs.items() if key != "batch_id"}
    kwargs["column"] = expectation.column
    details: dict[str, Any] = {"expectation_type": config.type, "kwargs": kwargs, "result": result}
    error = _gx_error(gx_result.exception_info)
    if error:
        details["error"] = error

    sample: list = []
    indexes = result.get("partial_unexpected_index_list")
    if source is not None and indexes is not None:
        # The frame's own values: GX saw converted ones for between (UTC dates, stand-ins for non-numbers).
        sample = frame[source].iloc[[int(index) for index in indexes[:SAMPLE_SIZE]]].tolist()
    else:
        sample = list(result.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]

    percent = result.get("unexpected_percent")
    return ExpectationResult(
        expectation=expectation,
        success=bool(gx_result.success) and not error,
        unexpected_count=int(result.get("unexpected_count") or 0),
        element_count=int(result.get("element_count", len(frame)) or 0),
        unexpected_percent=float(percent) if percent is not None else 0.0,
        sample_unexpected=_json_safe(sample),
        details=_ensure_json(_json_safe(details)),
    )


def _ensure_json(details: dict) -> dict:
    # Fails loudly here rather than later in Dagster's metadata if GX ever returns something _json_safe missed.
    json.dumps(details, allow_nan=False)
    return details


# --- results over several batches ----------------------------------------------------------------------------------


def combine_results(
    expectations: Sequence[Expectation],
    per_batch: Sequence[Sequence[ExpectationResult]],
    unique_values: dict[int, pd.Series] | None = None,
) -> list[ExpectationResult]:
    """One result per expectation over every batch of a run, judged as GX would judge the whole data at once.

    Counts are summed and `mostly` is applied to the sums (a batch may fall below it while the whole passes, and
    the other way round). `unique_values` holds, per position of a unique expectation, the column's values over
    all batches: a value repeated in two batches is a duplicate though each batch alone is unique. An
    expectation GX could not evaluate in some batch (a missing column) fails. A single batch keeps GX's verdict.
    """
    if not per_batch:
        return []
    unique_values = unique_values or {}
    results: list[ExpectationResult] = []
    for position, expectation in enumerate(expectations):
        items = [batch[position] for batch in per_batch]
        if position in unique_values and len(items) > 1:
            results.append(_unique_result(expectation, unique_values[position], items))
            continue
        if len(items) == 1:
            results.append(items[0])
            continue
        unexpected = sum(item.unexpected_count for item in items)
        elements = sum(item.element_count for item in items)
        judged = elements if expectation.kind == "not_null" else elements - sum(_missing(item) for item in items)
        sample: list = []
        for item in items:
            sample.extend(item.sample_unexpected[: SAMPLE_SIZE - len(sample)])
        errored = next((item for item in items if "error" in item.details), None)
        failing = errored or next((item for item in items if not item.success), None)
        results.append(
            ExpectationResult(
                expectation=expectation,
                success=errored is None and _mostly_holds(unexpected, judged, expectation.mostly),
                unexpected_count=unexpected,
                element_count=elements,
                unexpected_percent=100.0 * unexpected / judged if judged else 0.0,
                sample_unexpected=sample,
                details=(failing or items[-1]).details,
            )
        )
    return results


def _missing(result: ExpectationResult) -> int:
    found = (result.details.get("result") or {}).get("missing_count")
    return int(found) if isinstance(found, int | float) else 0


def _mostly_holds(unexpected: int, judged: int, mostly: float) -> bool:
    """GX's rule: the share of judged values that pass is at least `mostly` (nothing judged passes)."""
    return judged == 0 or (1 - unexpected / judged) >= mostly


def _unique_result(
    expectation: Expectation, values: pd.Series, items: Sequence[ExpectationResult]
) -> ExpectationResult:
    present = values.dropna()
    repeated = present[present.duplicated(keep=False)]  # every row of a repeated value, as GX counts them
    unexpected = len(repeated)
    errored = next((item for item in items if "error" in item.details), None)
    details = dict((errored or items[-1]).details)
    details["scope"] = f"all {len(items)} batches"
    return ExpectationResult(
        expectation=expectation,
        success=errored is None and _mostly_holds(unexpected, len(present), expectation.mostly),
        unexpected_count=unexpected,
        element_count=len(values),
        unexpected_percent=100.0 * unexpected / len(present) if len(present) else 0.0,
        sample_unexpected=_json_safe(repeated.head(SAMPLE_SIZE).tolist()),
        details=_ensure_json(_json_safe(details)),
    )


def blocking_failures(results: Sequence[ExpectationResult]) -> list[ExpectationResult]:
    """The failed results of blocking expectations: any of them keeps the data from being merged."""
    return [result for result in results if not result.success and result.expectation.blocking]


def describe_failure(result: ExpectationResult) -> str:
    """A failed expectation in words, for the run's log and for a partner's report (values, never internals)."""
    expectation = result.expectation
    what = {
        "not_null": "is never empty",
        "unique": "holds no value twice",
        "in_set": "is one of " + ", ".join(_show(value) for value in expectation.values),
        "regex": f"matches {expectation.pattern!r}",
        "between": "is "
        + " and ".join(
            part
            for part in (
                f"at least {_bound_text(expectation.min)}" if expectation.min is not None else "",
                f"at most {_bound_text(expectation.max)}" if expectation.max is not None else "",
            )
            if part
        ),
    }[expectation.kind]
    if "error" in result.details:
        return f"{expectation.column} {what} ({expectation.kind}): could not be checked ({result.details['error']})"
    allowed = "" if expectation.mostly == 1 else f", more than the {1 - expectation.mostly:.0%} allowed"
    sample = ", ".join(_show(value) for value in result.sample_unexpected[:5])
    return (
        f"{expectation.column} {what} ({expectation.kind}): {result.unexpected_count:,} of "
        f"{result.element_count:,} value(s) ({result.unexpected_percent:.1f}%) do not{allowed}"
        + (f"; e.g. {sample}" if sample else "")
    )


def _bound_text(bound: float | str) -> str:
    """A between bound as written: `min: 5` reads back as 5.0 from the spec's float field."""
    return str(int(bound)) if isinstance(bound, float) and bound.is_integer() else str(bound)
