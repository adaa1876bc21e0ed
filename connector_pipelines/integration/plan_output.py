"""`plan --output FILE`: every record's planned operation, one row each, as Parquet or CSV.

Rows arrive a source batch at a time (`IntegrationDelivery.plan(sink=...)`) and are written in record batches of
at most `ROWS_PER_BATCH`, so a plan of millions of records holds one batch in memory, not the plan. The file is
written beside its final name and moved there when complete: a plan that stops half way leaves no partial file
that looks whole.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

FORMATS = ("parquet", "csv")
ROWS_PER_BATCH = 50_000
PLAN_SCHEMA = pa.schema(
    [
        ("configuration", pa.string()),
        ("record_key", pa.string()),
        # The decision (integration/decide.py): send, resend, probe, unchanged, skip, fail, duplicate, held,
        # hold_in_doubt, backoff (refused before, waiting for its retry time), dead_letter, not_in_scope, absent
        ("action", pa.string()),
        ("operation", pa.string()),  # create, update or delete
        ("reason", pa.string()),  # why a record fails, is skipped, held, waiting (until when) or a dead letter
        ("method", pa.string()),  # the request a send would make
        ("path", pa.string()),
        ("body", pa.string()),
    ]
)


class PlanFormatError(ValueError):
    pass


def plan_format(path: Path, explicit: str | None) -> str:
    """The format asked for, else the one the file name says (.parquet, .csv)."""
    if explicit:
        return explicit
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("parquet", "pq"):
        return "parquet"
    if suffix == "csv":
        return "csv"
    raise PlanFormatError(
        f"cannot tell the format of {path.name} from its name: end it in .parquet or .csv, or give --format"
    )


class PlanFile:
    """Appends planned rows to `path` (Parquet or CSV); `close()` moves the complete file into place."""

    def __init__(self, path: Path, file_format: str):
        if file_format not in FORMATS:
            raise PlanFormatError(f"unknown plan format '{file_format}'; use {' or '.join(FORMATS)}")
        self.path = path
        self.rows = 0
        self._partial = path.with_name(f".{path.name}.partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        if file_format == "parquet":
            self._writer = pq.ParquetWriter(self._partial, PLAN_SCHEMA)
        else:
            self._writer = pacsv.CSVWriter(self._partial, PLAN_SCHEMA)
        self._buffer: list[dict] = []

    def write(self, configuration: str, rows: list[dict]) -> None:
        for row in rows:
            row["configuration"] = configuration
        self._buffer.extend(rows)
        while len(self._buffer) >= ROWS_PER_BATCH:
            self._flush(ROWS_PER_BATCH)

    def close(self) -> int:
        """Finish the file and move it to `path`; returns the number of rows."""
        self._flush(len(self._buffer))
        self._writer.close()
        os.replace(self._partial, self.path)
        return self.rows

    def abandon(self) -> None:
        self._writer.close()
        self._partial.unlink(missing_ok=True)

    def _flush(self, count: int) -> None:
        """Write the first `count` buffered rows as one record batch (one Parquet row group)."""
        if not count:
            return
        rows, self._buffer = self._buffer[:count], self._buffer[count:]
        self._writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=PLAN_SCHEMA))
        self.rows += len(rows)
