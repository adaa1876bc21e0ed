"""Gates an integration run passes before its first request: too many records failing to map stops it.

A record that fails to map fails alone, and the rest are sent. That is right for a few bad rows, wrong when a
changed source column breaks most of them: the run would send the few that still map and leave the target half
updated. So before sending, the delivery's own mapping is run over what the run covers, and when the share of
records that fail exceeds `checks.max_mapping_failure_share`, nothing is sent.

The pre-pass maps each record a second time (the delivery maps again, batch by batch, so that it never holds the
whole data set); a gate of 1 (off) skips it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa

from connector_pipelines.integration.data_set import record_keys
from connector_pipelines.mapping import CompiledMapping

FIRST_FAILURES = 10


@dataclass(frozen=True)
class MappingGate:
    """How many of the records a run covers fail to map, against the share the spec allows."""

    records: int
    failed: int
    limit: float
    first_failures: list[tuple[str, str]] = field(default_factory=list)  # (record key, reason)

    @property
    def share(self) -> float:
        return self.failed / self.records if self.records else 0.0

    @property
    def passed(self) -> bool:
        return self.share <= self.limit

    def describe(self) -> str:
        """The verdict in words, with the first failing keys and why."""
        verdict = (
            f"{self.failed:,} of {self.records:,} record(s) ({self.share:.1%}) fail to map, over the "
            f"{self.limit:.0%} that checks.max_mapping_failure_share allows"
            if not self.passed
            else f"{self.failed:,} of {self.records:,} record(s) ({self.share:.1%}) fail to map"
        )
        if self.first_failures:
            verdict += "; first: " + "; ".join(f"key {key}: {reason}" for key, reason in self.first_failures)
        return verdict


def mapping_gate(
    mapping: CompiledMapping,
    batches: Iterable[pa.RecordBatch],
    key_columns: list[str],
    limit: float,
    keys: frozenset[str] | None = None,
) -> MappingGate:
    """Map every record of `batches` (only `keys` when a push names them) and count those that fail."""
    if limit >= 1:
        return MappingGate(records=0, failed=0, limit=limit)
    records = failed = 0
    first: list[tuple[str, str]] = []
    for batch in batches:
        if batch.num_rows == 0:
            continue
        row_keys = record_keys(batch, key_columns)
        if keys is not None:
            wanted = [key in keys for key in row_keys]
            if not any(wanted):
                continue
            batch = batch.filter(pa.array(wanted, type=pa.bool_()))
            row_keys = [key for key, keep in zip(row_keys, wanted) if keep]
        errors = mapping.map_batch(batch).errors
        records += len(errors)
        for key, error in zip(row_keys, errors):
            if error is not None:
                failed += 1
                if len(first) < FIRST_FAILURES:
                    first.append((key, error))
    return MappingGate(records=records, failed=failed, limit=limit, first_failures=first)
