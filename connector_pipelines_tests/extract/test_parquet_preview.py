"""The preview of a Parquet extract: its first rows as the text the file's own values print as.

The preview renders zoned timestamps without pyarrow's `as_py` (which imports pandas on every extract); these
tests hold it to the values `to_pylist` gives.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq

from connector_pipelines.extract.file_output import PREVIEW_ROWS, _preview, _text
from connector_pipelines_tests.fixtures.extract import (
    SAMPLE_QUERY,
    create_sample_table,
    failure_text,
    files_under,
    materialization_metadata,
)


def _expected_preview(batch: pa.RecordBatch) -> list[dict[str, str]]:
    return [{name: _text(value) for name, value in row.items()} for row in batch.slice(0, PREVIEW_ROWS).to_pylist()]


def test_postgres_parquet_preview_prints_the_files_first_rows(project, instance, pg_database):
    create_sample_table(pg_database)
    project.add_database(pg_database)
    outbox = project.add_folder()
    project.add_extract(
        "sample_extract",
        SAMPLE_QUERY,
        format="parquet",
        schedule={"cadence": "monthly", "inception_date": "2024-01-01"},
    )
    result = project.run("sample_extract", instance, partition_key="2024-01-01")
    assert result.success, failure_text(result)
    [name] = files_under(outbox)
    written = pq.read_table(outbox / name).to_batches()[0]
    assert written.schema.field("happened_tz").type.tz  # the zoned path is the one under test

    preview = materialization_metadata(result)["preview"]
    assert [record.data for record in preview.records] == _expected_preview(written)
    assert preview.records[1].data["happened_tz"] == "2024-01-05 08:30:00+00:00"


def test_zoned_timestamps_preview_as_to_pylist_prints_them_across_a_dst_change():
    # 2024-10-27 in Europe/Paris: 02:30 happens twice (fold), once at +02:00 and once at +01:00.
    instants = [
        dt.datetime(2024, 10, 27, 0, 30, tzinfo=dt.UTC),
        dt.datetime(2024, 10, 27, 1, 30, tzinfo=dt.UTC),
        None,
        dt.datetime(2024, 3, 31, 1, 0, 0, 1, tzinfo=dt.UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    ]
    micros = [None if value is None else int(value.timestamp() * 1_000_000) for value in instants]
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(micros, pa.int64()).view(pa.timestamp("us", tz="Europe/Paris")),
            pa.array(micros, pa.int64()).view(pa.timestamp("us", tz="+05:30")),
            pa.array([None if m is None else m // 1000 for m in micros], pa.int64()).view(pa.timestamp("ms", tz="UTC")),
            pa.array(micros, pa.int64()).view(pa.timestamp("us")),
        ],
        names=["paris", "offset", "utc_ms", "naive"],
    ).slice(1)  # an offset into the buffers, as a batch sliced from a larger one has

    preview = _preview(batch)

    assert preview == _expected_preview(batch)
    assert preview[0]["paris"] == "2024-10-27 02:30:00+01:00"
    assert preview[1]["paris"] == ""
