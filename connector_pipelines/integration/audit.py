"""A run's audit file: one Parquet row per record the run touched, with its outcome.

Dagster's event log is no place for 200,000 per-record entries; the materialization links this file instead
(and shows the first rows as a table). Written in row groups as outcomes arrive, so memory stays flat; outcomes
come 500 at a time, and are buffered into row groups of ROW_GROUP rows, since every row group adds footer metadata
the writer holds until it closes (and small row groups make the file slow to read).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

AUDIT_SCHEMA = pa.schema(
    [
        ("record_key", pa.string()),
        ("operation", pa.string()),
        ("status", pa.string()),
        ("http_status", pa.int32()),
        ("requests", pa.int32()),
        ("error", pa.string()),
        ("target_ref", pa.string()),
        ("idempotency_key", pa.string()),
        ("finished_at", pa.timestamp("us", tz="UTC")),
    ]
)

ROW_GROUP = 50_000


class AuditFile:
    """Appends outcome rows to `path`; `close()` returns the path, or None when the run touched nothing."""

    def __init__(self, path: Path):
        self.path = path
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0

    def append(self, rows: list[dict], requests: list[int]) -> None:
        if not rows:
            return
        columns = {name: [row[name] for row in rows] for name in AUDIT_SCHEMA.names if name != "requests"}
        columns["requests"] = requests
        self._buffer.append(pa.table(columns, schema=AUDIT_SCHEMA))
        self._buffered += len(rows)
        self.rows += len(rows)
        if self._buffered >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, AUDIT_SCHEMA)
        self._writer.write_table(pa.concat_tables(self._buffer), row_group_size=max(self._buffered, 1))
        self._buffer, self._buffered = [], 0

    def close(self) -> str | None:
        self._flush()
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        return str(self.path)
