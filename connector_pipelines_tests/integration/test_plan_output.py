"""`connector-pipelines plan`: its exit code, and `--output FILE` with every record's planned operation."""

from __future__ import annotations

import json

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from connector_pipelines.integration import plan_output
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC

MIRROR = BASIC_SYNC + (
    "      sync_mode: mirror\n      delete:\n        method: DELETE\n        path: /customers/{{target_ref}}\n"
)


def test_plan_exits_1_when_a_record_fails_to_map_and_0_when_none_does(integration_project, source_db, http_target, cli):
    source_db.add_customers(4)
    integration_project(BASIC_SYNC)
    assert cli("plan", "sync").exit_code == 0
    source_db.execute("UPDATE customers SET name = '' WHERE customer_id = 3")  # name is required

    result = cli("plan", "sync")

    assert result.exit_code == 1, result.output
    assert "3 create, 0 update, 0 delete, 0 unchanged, 0 skipped, 1 failing to map" in result.output
    assert "fails: key 3:" in result.output and "1 record(s) would fail before any request" in result.output
    assert http_target.requests == []


def test_plan_help_documents_its_exit_codes(cli):
    text = cli("plan", "--help").output
    assert "Exit codes:" in text
    assert "0  every record would go out" in text and "1  some records would fail" in text
    assert "2  bad usage or configuration" in text


def test_plan_output_parquet_has_every_record_with_its_operation_and_request(
    integration_project, source_db, http_target, cli, tmp_path
):
    source_db.add_customers(8)
    integration_project(MIRROR)
    assert cli("run", "sync").exit_code == 0
    source_db.execute("UPDATE customers SET name = 'Other' WHERE customer_id = 2")
    source_db.execute("UPDATE customers SET name = '' WHERE customer_id = 5")
    source_db.execute("DELETE FROM customers WHERE customer_id = 7")
    source_db.add_customers(2, start=9)
    http_target.clear()
    path = tmp_path / "out" / "plan.parquet"

    result = cli("plan", "sync", "--output", str(path))

    assert result.exit_code == 1, result.output  # customer 5 fails to map
    assert f"wrote 10 planned record(s) to {path}" in result.output
    rows = {row["record_key"]: row for row in pq.read_table(path).to_pylist()}
    assert sorted(rows, key=int) == [str(i) for i in range(1, 11)]
    planned = {key: (row["action"], row["operation"]) for key, row in rows.items()}
    assert planned == {
        "1": ("unchanged", "update"),
        "2": ("send", "update"),
        "3": ("unchanged", "update"),
        "4": ("unchanged", "update"),
        "5": ("fail", "update"),
        "6": ("unchanged", "update"),
        "7": ("send", "delete"),
        "8": ("unchanged", "update"),
        "9": ("send", "create"),
        "10": ("send", "create"),
    }
    assert (rows["2"]["method"], rows["2"]["path"]) == ("PUT", "/customers/2")
    assert json.loads(rows["2"]["body"])["name"] == "OTHER"
    assert (rows["7"]["method"], rows["7"]["path"], rows["7"]["body"]) == ("DELETE", "/customers/7", None)
    assert "name" in rows["5"]["reason"] and rows["5"]["method"] is None
    assert rows["1"]["method"] is None and {row["configuration"] for row in rows.values()} == {"customers"}
    assert http_target.requests == []


def test_plan_output_csv_by_name_or_by_format(integration_project, source_db, http_target, cli, tmp_path):
    source_db.add_customers(6)
    integration_project(BASIC_SYNC)

    by_name = cli("plan", "sync", "-o", str(tmp_path / "plan.csv"))
    by_format = cli("plan", "sync", "-o", str(tmp_path / "plan.txt"), "--format", "csv")

    assert by_name.exit_code == 0 and by_format.exit_code == 0, by_name.output + by_format.output
    for name in ("plan.csv", "plan.txt"):
        table = pacsv.read_csv(tmp_path / name)
        assert table.column_names == plan_output.PLAN_SCHEMA.names
        assert sorted(table.column("record_key").to_pylist()) == [1, 2, 3, 4, 5, 6]
        assert set(table.column("action").to_pylist()) == {"send"}


def test_plan_output_is_written_in_batches(integration_project, source_db, http_target, cli, tmp_path, monkeypatch):
    monkeypatch.setattr(plan_output, "ROWS_PER_BATCH", 10)
    source_db.add_customers(35)
    integration_project(BASIC_SYNC)
    path = tmp_path / "plan.parquet"

    assert cli("plan", "sync", "-o", str(path)).exit_code == 0

    file = pq.ParquetFile(path)
    assert file.metadata.num_rows == 35
    assert file.num_row_groups == 4  # 10 + 10 + 10 + 5: never the whole plan in one piece


def test_plan_output_with_an_unknown_format_or_a_failed_plan_leaves_no_file(
    integration_project, source_db, http_target, cli, tmp_path
):
    source_db.add_customers(2)
    integration_project(BASIC_SYNC)

    unknown = cli("plan", "sync", "-o", str(tmp_path / "plan.json"))
    assert unknown.exit_code == 2
    assert "end it in .parquet or .csv, or give --format" in unknown.output

    integration_project(BASIC_SYNC.replace("key: customer_id", "key: customerid"))
    broken = cli("plan", "sync", "-o", str(tmp_path / "plan.parquet"))
    assert broken.exit_code == 2, broken.output
    assert sorted(p.name for p in tmp_path.glob("*plan*")) == []
