"""How long an integration keeps what grows with every run: data set snapshots, audit files, attempt history.

Each setting is an age ('90 days'), a count of runs ('30 runs') or `keep` (never removed). The ledger's current
state (one row per record) is never subject to retention: it is what makes delivery exactly-once.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from pydantic import Field, ValidationInfo, field_validator

from connector_pipelines.spec.common import StrictModel, quoted

_KEEP_FOR = re.compile(r"^(\d{1,6})\s*(day|run)s?\Z")


@dataclass(frozen=True)
class KeepFor:
    """One retention setting, parsed: an age, a number of runs, or neither (keep everything)."""

    age: dt.timedelta | None = None
    runs: int | None = None

    @property
    def keeps_everything(self) -> bool:
        return self.age is None and self.runs is None


def parse_keep_for(value: object, what: str) -> KeepFor:
    """'90 days', '30 runs' or 'keep'; ValueError naming `what` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{what} must be 'N days', 'N runs' or keep, got {value!r}")
    text = str(value).strip().lower()
    if text == "keep":
        return KeepFor()
    if (
        text.isascii() and text.isdigit() and int(text) > 0
    ):  # `snapshots: 90`: days or runs? Guessing would remove the wrong files
        raise ValueError(
            f"{what} {quoted(str(value))} has no unit; write '{int(text)} days' or '{int(text)} runs', or keep"
        )
    match = _KEEP_FOR.match(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"{what} {quoted(str(value))} is not a retention; write 'N days' or 'N runs' (N at least 1), or keep"
        )
    number = int(match.group(1))
    return KeepFor(age=dt.timedelta(days=number)) if match.group(2) == "day" else KeepFor(runs=number)


class Retention(StrictModel):
    """What each run's step at the end (and `connector-pipelines prune`) removes."""

    snapshots: str = Field("90 days", description="Data set snapshots: 'N days', 'N runs' or keep")
    audit_files: str = Field("90 days", description="Per-run audit files: 'N days', 'N runs' or keep")
    attempts: str = Field(
        "keep",
        description="Attempt history in the ledger: 'N days', 'N runs' or keep (attempts still to be written back "
        "are always kept)",
    )

    @field_validator("snapshots", "audit_files", "attempts", mode="before")
    @classmethod
    def _keep_for(cls, value: object, info: ValidationInfo) -> str:
        parse_keep_for(value, info.field_name)
        return value if isinstance(value, str) else str(value)

    def keep_for(self, what: str) -> KeepFor:
        return parse_keep_for(getattr(self, what), what)
