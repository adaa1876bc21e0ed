"""An integration's data-quality expectations, judged on the data set snapshot before any configuration sends.

The vocabulary is the import's (`expect: not_null | unique | in_set | regex | between`, `mostly`), run by the same
Great Expectations code (`imports/expectations.py`), over the data set's own columns. Unlike an import, a failing
row is not dropped: the snapshot as a whole passes or it is not delivered at all.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from connector_pipelines.imports.expectations import ExpectationResult, expectations_from_specs, run_expectations
from connector_pipelines.spec.imports import ExpectationSpec


def check_snapshot(path: Path, specs: list[ExpectationSpec]) -> list[ExpectationResult]:
    """One result per expectation over the whole snapshot (so `unique` and `mostly` see every row).

    Only the columns the expectations name are read; one the snapshot lacks fails its expectation ("no such
    column"), so a renamed source column cannot slip through."""
    if not specs:
        return []
    expectations = expectations_from_specs(specs)
    present = set(pq.read_schema(path).names)
    columns = list(dict.fromkeys(e.column for e in expectations if e.column in present))
    frame = pq.read_table(path, columns=columns).to_pandas()
    return run_expectations(frame, expectations)
