"""The audit file buffers outcomes into large row groups: 500-record chunks would make one footer entry each."""

from __future__ import annotations

import pyarrow.parquet as pq

from connector_pipelines.integration import audit
from connector_pipelines.integration.audit import AuditFile


def _outcomes(start: int, count: int) -> list[dict]:
    return [
        {
            "record_key": f"k{i}",
            "operation": "create",
            "status": "delivered",
            "http_status": 201,
            "error": None,
            "target_ref": None,
            "idempotency_key": f"ik{i}",
            "finished_at": None,
        }
        for i in range(start, start + count)
    ]


def test_audit_file_writes_row_groups_of_row_group_rows_and_keeps_every_outcome(tmp_path, monkeypatch):
    monkeypatch.setattr(audit, "ROW_GROUP", 1_000)
    file = AuditFile(tmp_path / "audit.parquet")
    for start in range(0, 2_750, 250):
        file.append(_outcomes(start, 250), [1] * 250)
    path = file.close()

    parquet = pq.ParquetFile(path)
    assert [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)] == [1_000, 1_000, 750]
    assert parquet.read().column("record_key").to_pylist() == [f"k{i}" for i in range(2_750)]
    assert file.rows == 2_750


def test_audit_file_of_a_run_that_touched_nothing_is_not_written(tmp_path):
    file = AuditFile(tmp_path / "audit.parquet")
    assert file.close() is None
    assert not (tmp_path / "audit.parquet").exists()
