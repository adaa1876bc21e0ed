"""Import runs (delivery/import_run.py) end to end: real SQLite (and one PostgreSQL) source and target databases,
a local folder as the file source. Tables are seeded and read back with plain SQL."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from connector_pipelines.imports.run import ImportReport, build_upsert, import_file, run_warehouse_import
from connector_pipelines.imports.upsert import UpsertError
from connector_pipelines.spec.imports import ImportConnector
from connector_pipelines.state.import_state import ImportState
from connector_pipelines.transports.folder import FolderClient
from connector_pipelines.transports.sql import SqlSource
from connector_pipelines_tests.fixtures.extract import TestDatabase

TARGET_DDL = (
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(12,2), "
    "ordered DATE, updated_at TIMESTAMP)"
)
MAPPING = [
    {"target": "id", "source": "id", "type": "integer", "parse": "integer"},
    {"target": "name", "source": "name"},
    {"target": "amount", "source": "amount", "type": "currency", "parse": "currency"},
    {"target": "ordered", "source": "ordered", "type": "date", "parse": "date:%d/%m/%Y"},
    {"target": "updated_at", "source": "updated_at", "type": "datetime", "parse": "datetime"},
]


def connector(source: dict, *, target: dict | None = None, expectations: list | None = None) -> ImportConnector:
    return ImportConnector.model_validate(
        {
            "name": "orders_import",
            "kind": "import",
            "import": {
                "source": source,
                "target": {"connection": "crm", "table": "orders", "key": "id", **(target or {})},
                "mapping": MAPPING,
                "expectations": expectations or [],
            },
        }
    )


def warehouse(**target) -> ImportConnector:
    return connector(
        {"warehouse": {"connection": "dwh", "query": "SELECT * FROM src_orders", "updated_at": "updated_at"}},
        target=target,
    )


def files(expectations: list | None = None) -> ImportConnector:
    return connector({"files": {"connection": "partner", "pattern": "*.csv"}}, expectations=expectations)


def sqlite_db(path: Path) -> TestDatabase:
    return TestDatabase("sqlite", f"sqlite:///{path}", sa.create_engine(f"sqlite:///{path}"))


@pytest.fixture
def env(tmp_path: Path) -> dict:
    source = sqlite_db(tmp_path / "source.db")
    source.execute("CREATE TABLE src_orders (id INTEGER, name TEXT, amount TEXT, ordered TEXT, updated_at TEXT)")
    target = sqlite_db(tmp_path / "target.db")
    target.execute(TARGET_DDL)
    state = ImportState(f"sqlite:///{tmp_path / 'state.db'}")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    yield {
        "source": source,
        "target": target,
        "state": state,
        "storage": tmp_path / "storage",
        "inbox": inbox,
        "client": FolderClient(inbox),
    }
    state.dispose()
    source.engine.dispose()
    target.engine.dispose()


def add_source(env: dict, rows: list[tuple]) -> None:
    env["source"].execute(
        "INSERT INTO src_orders VALUES (:id, :name, :amount, :ordered, :updated_at)",
        [dict(zip(("id", "name", "amount", "ordered", "updated_at"), row, strict=True)) for row in rows],
    )


def run(env: dict, spec: ImportConnector, run_id: str, full: bool = False) -> ImportReport:
    source = SqlSource(env["source"].url)
    try:
        return run_warehouse_import(spec, source, env["target"].url, env["state"], env["storage"], run_id, full=full)
    finally:
        source.dispose()


def target_rows(env: dict) -> dict[int, dict]:
    return {row["id"]: row for row in env["target"].query("SELECT * FROM orders ORDER BY id")}


# --------------------------------------------------------------------------------------------------
# build_upsert


def test_build_upsert_types_and_settings(tmp_path: Path) -> None:
    spec = warehouse(resolve_conflicts="most_recent", timestamp="updated_at", allow_new_records=False).import_
    mapping, upsert = build_upsert(spec, f"sqlite:///{tmp_path / 't.db'}")
    with upsert:
        assert [(c.name, c.type) for c in upsert.columns][2] == ("amount", "currency")
        assert upsert.settings.most_recent_column == "updated_at"
        assert upsert.settings.allow_new_records is False
        assert {f.name for f in mapping.target_fields if f.required} == {"id"}


# --------------------------------------------------------------------------------------------------
# Warehouse


def test_warehouse_full_then_incremental(env: dict) -> None:
    add_source(
        env,
        [
            (1, "Ann", "$1,234.50", "31/03/2024", "2024-03-01 10:00:00"),
            (2, "Bob", "12", "01/04/2024", "2024-03-02 10:00:00"),
        ],
    )
    first = run(env, warehouse(), "r1")
    assert (first.rows_read, first.inserted, first.rows_rejected) == (2, 2, 0)
    assert first.watermark == "2024-03-02 10:00:00"
    assert env["state"].watermark("orders_import") == "2024-03-02 10:00:00"
    assert pq.read_table(first.snapshot_path).num_rows == 2
    assert first.rejections_path is None
    rows = target_rows(env)
    assert Decimal(str(rows[1]["amount"])) == Decimal("1234.50")
    assert str(rows[1]["ordered"]).startswith("2024-03-31")

    # Only the newer row (and the changed one) are read next time.
    add_source(env, [(3, "Cy", "5", "02/04/2024", "2024-03-03 09:00:00")])
    env["source"].execute("UPDATE src_orders SET name = 'Bobby', updated_at = '2024-03-04 08:00:00' WHERE id = 2")
    second = run(env, warehouse(), "r2")
    assert (second.rows_read, second.inserted, second.updated) == (2, 1, 1)
    assert second.watermark == "2024-03-04 08:00:00"
    assert target_rows(env)[2]["name"] == "Bobby"

    # full reads everything again; nothing changed.
    third = run(env, warehouse(), "r3", full=True)
    assert third.rows_read == 3
    assert third.unchanged_or_older == 3


def test_watermark_not_saved_when_the_write_fails(env: dict) -> None:
    add_source(env, [(1, "Ann", "1", "01/01/2024", "2024-03-01 10:00:00")])
    run(env, warehouse(), "r1")
    add_source(env, [(2, None, "1", "01/01/2024", "2024-03-05 10:00:00")])  # name NOT NULL in the target
    with pytest.raises(UpsertError):
        run(env, warehouse(), "r2")
    assert env["state"].watermark("orders_import") == "2024-03-01 10:00:00"
    assert set(target_rows(env)) == {1}


def test_most_recent_keeps_newer_stored_rows(env: dict) -> None:
    env["target"].execute(
        "INSERT INTO orders VALUES (1, 'old', 1, '2024-01-01', '2024-03-01 10:00:00.000000'), "
        "(2, 'old', 1, '2024-01-01', '2024-03-01 10:00:00.000000'), "
        "(3, 'old', 1, '2024-01-01', '2024-03-01 10:00:00.000000')"
    )
    add_source(
        env,
        [
            (1, "equal", "1", "01/01/2024", "2024-03-01 10:00:00"),
            (2, "older", "1", "01/01/2024", "2024-02-01 10:00:00"),
            (3, "newer", "1", "01/01/2024", "2024-04-01 10:00:00"),
        ],
    )
    report = run(env, warehouse(resolve_conflicts="most_recent", timestamp="updated_at"), "r1")
    assert (report.updated, report.unchanged_or_older) == (1, 2)
    assert {k: v["name"] for k, v in target_rows(env).items()} == {1: "old", 2: "old", 3: "newer"}


def test_allow_new_records_off_skips_new_keys(env: dict) -> None:
    env["target"].execute("INSERT INTO orders VALUES (1, 'old', 1, '2024-01-01', NULL)")
    add_source(
        env,
        [
            (1, "new", "1", "01/01/2024", "2024-03-01 10:00:00"),
            (2, "new", "1", "01/01/2024", "2024-03-01 10:00:00"),
        ],
    )
    report = run(env, warehouse(allow_new_records=False), "r1")
    assert (report.updated, report.skipped_new, report.inserted) == (1, 1, 0)
    assert set(target_rows(env)) == {1}


def test_bad_date_rejects_only_that_row(env: dict) -> None:
    add_source(
        env,
        [
            (1, "Ann", "1", "31/03/2024", "2024-03-01 10:00:00"),
            (2, "Bob", "1", "2024-03-31", "2024-03-01 10:00:00"),
            (3, "Cy", "€ 7.25", "01/04/2024", "2024-03-01 10:00:00"),
        ],
    )
    report = run(env, warehouse(), "r1")
    assert (report.rows_read, report.rows_rejected, report.inserted) == (3, 1, 2)
    rejected = pq.read_table(report.rejections_path).to_pylist()
    assert len(rejected) == 1
    assert rejected[0]["row"] == 2 and rejected[0]["key"] == "2"
    assert "ordered" in rejected[0]["reason"]
    assert set(target_rows(env)) == {1, 3}
    assert Decimal(str(target_rows(env)[3]["amount"])) == Decimal("7.25")


def test_warehouse_on_postgresql(pg_database: TestDatabase, tmp_path: Path) -> None:
    db = pg_database
    db.execute("CREATE TABLE src_orders (id integer, name text, amount text, ordered text, updated_at timestamp)")
    db.execute(
        "CREATE TABLE orders (id integer PRIMARY KEY, name text NOT NULL, amount numeric(12,2), "
        "ordered date, updated_at timestamp)"
    )
    db.execute(
        "INSERT INTO src_orders VALUES (1, 'Ann', '1.50', '01/02/2024', '2024-03-01 10:00:00.250'), "
        "(2, 'Bob', '2', '02/02/2024', '2024-03-01 09:00:00')"
    )
    state = ImportState(f"sqlite:///{tmp_path / 'state.db'}")
    source = SqlSource(db.url)
    try:
        first = run_warehouse_import(warehouse(), source, db.url, state, tmp_path, "r1")
        assert (first.inserted, first.watermark) == (2, "2024-03-01 10:00:00.250000")
        db.execute("INSERT INTO src_orders VALUES (3, 'Cy', '3', '03/02/2024', '2024-03-01 10:00:00.500')")
        second = run_warehouse_import(warehouse(), source, db.url, state, tmp_path, "r2")
        # The row at the watermark is read again (>=) and left unchanged; the new one is inserted.
        assert (second.rows_read, second.inserted, second.unchanged_or_older) == (2, 1, 1)
        assert db.query("SELECT count(*) AS n FROM orders")[0]["n"] == 3
    finally:
        source.dispose()
        state.dispose()


# --------------------------------------------------------------------------------------------------
# Files

GOOD_CSV = (
    "id,name,amount,ordered,updated_at\n"
    '1,Ann,"$1,000.00",31/03/2024,2024-03-01 10:00:00\n'
    "2,Bob,5,01/04/2024,2024-03-01 10:00:00\n"
)


def deliver(env: dict, name: str, text: str) -> None:
    (env["inbox"] / name).write_text(text)


def do_import(env: dict, spec: ImportConnector, name: str, run_id: str = "r1") -> ImportReport:
    return import_file(spec, env["client"], name, env["target"].url, env["state"], env["storage"], run_id)


def test_file_import_archives_and_records(env: dict) -> None:
    deliver(env, "a.csv", GOOD_CSV)
    report = do_import(env, files(), "a.csv")
    assert report.file.status == "imported"
    assert (report.rows_read, report.inserted) == (2, 2)
    assert (env["inbox"] / "archive" / "a.csv").exists() and not (env["inbox"] / "a.csv").exists()
    [record] = env["state"].files("orders_import")
    assert (record.name, record.status, record.rows) == ("a.csv", "imported", 2)
    assert pq.read_table(report.snapshot_path).num_rows == 2

    # The same bytes under another name: a duplicate, archived, not loaded.
    deliver(env, "b.csv", GOOD_CSV)
    again = do_import(env, files(), "b.csv", "r2")
    assert again.file.status == "duplicate" and "a.csv" in again.file.reason
    assert again.inserted == 0 and again.rows_read == 0
    assert (env["inbox"] / "archive" / "b.csv").exists()
    assert {r.name: r.status for r in env["state"].files("orders_import")} == {
        "a.csv": "imported",
        "b.csv": "duplicate",
    }


def quarantined(env: dict, name: str, text: str) -> str:
    deliver(env, name, text)
    report = do_import(env, files(), name)
    assert report.file.status == "rejected"
    assert (env["inbox"] / "quarantine" / name).exists()
    assert target_rows(env) == {}
    assert env["state"].files("orders_import")[0].status == "rejected"
    return (env["inbox"] / "quarantine" / f"{name}.report.txt").read_text()


def test_malformed_csv_quarantined_with_row(env: dict) -> None:
    text = GOOD_CSV + "3,Cy,1,01/04/2024\n"  # a short row after good ones: nothing may load
    report = quarantined(env, "bad.csv", text)
    assert "row" in report.lower() and "3" in report


def test_wrong_header_quarantined(env: dict) -> None:
    report = quarantined(env, "hdr.csv", GOOD_CSV.replace("ordered", "order_date", 1))
    assert "ordered" in report


def test_empty_file_quarantined(env: dict) -> None:
    assert "empty" in quarantined(env, "empty.csv", "")


def test_unsafe_name_refused_and_left_in_place(env: dict) -> None:
    (env["inbox"].parent / "x.csv").write_text(GOOD_CSV)
    report = do_import(env, files(), "../x.csv")
    assert report.file.status == "rejected" and "left in place" in report.file.reason
    assert (env["inbox"].parent / "x.csv").exists()
    [written] = list((env["inbox"] / "quarantine").iterdir())
    assert written.name.endswith(".report.txt") and "../x.csv" in written.read_text()
    assert target_rows(env) == {}


def test_warn_expectations_reject_rows_and_fail_unique_while_the_rest_loads(env: dict) -> None:
    text = (
        "id,name,amount,ordered,updated_at\n"
        "1,Ann,1,01/01/2024,2024-03-01 10:00:00\n"
        "2,Bob,1,01/01/2024,\n"  # updated_at empty -> null -> rejected by not_null
        "3,Bob,1,01/01/2024,2024-03-01 10:00:00\n"  # name repeats -> unique fails (no row rejected)
    )
    deliver(env, "e.csv", text)
    spec = files(
        [
            {"expect": "not_null", "column": "updated_at", "severity": "warn"},
            {"expect": "unique", "column": "name", "severity": "warn"},
        ]
    )
    report = do_import(env, spec, "e.csv")
    assert report.file.status == "imported"
    assert (report.rows_rejected, report.inserted) == (1, 2)
    rejected = pq.read_table(report.rejections_path).to_pylist()
    assert rejected == [{"row": 2, "key": "2", "reason": rejected[0]["reason"]}]
    assert "not_null" in rejected[0]["reason"]
    by_kind = {r.expectation.kind: r for r in report.expectation_results}
    assert by_kind["unique"].success is False
    assert by_kind["not_null"].success is False and by_kind["not_null"].unexpected_count == 1
    assert set(target_rows(env)) == {1, 3}


def big_csv(rows: int, bad_row: int | None = None, short_row: int | None = None) -> str:
    lines = ["id,name,amount,ordered,updated_at"]
    for n in range(1, rows + 1):
        ordered = "31-12-2024" if n == bad_row else "31/12/2024"
        line = f"{n},n{n},1,{ordered},2024-03-01 10:00:00"
        lines.append(line.rsplit(",", 1)[0] if n == short_row else line)
    return "\n".join(lines) + "\n"


def test_file_in_several_batches_numbers_rows_across_batches(env: dict) -> None:
    deliver(env, "big.csv", big_csv(2500, bad_row=1700))
    spec = connector(
        {"files": {"connection": "partner", "pattern": "*.csv"}},
        target={"batch_rows": 1000},
        expectations=[{"expect": "not_null", "column": "name"}],
    )
    report = do_import(env, spec, "big.csv")
    assert (report.rows_read, report.inserted, report.rows_rejected) == (2500, 2499, 1)
    assert pq.read_table(report.rejections_path).column("row").to_pylist() == [1700]
    [result] = report.expectation_results
    assert result.success and result.element_count == 2499  # three batches aggregated (mapped rows)


def test_malformed_row_late_in_a_large_file_loads_nothing(env: dict) -> None:
    # With batch_rows 1000, a streaming load would have committed two batches before reaching row 2400.
    deliver(env, "late.csv", big_csv(2500, short_row=2400))
    spec = connector({"files": {"connection": "partner", "pattern": "*.csv"}}, target={"batch_rows": 1000})
    report = do_import(env, spec, "late.csv")
    assert report.file.status == "rejected"
    assert target_rows(env) == {}
    assert (env["inbox"] / "quarantine" / "late.csv.report.txt").exists()


def test_a_file_whose_rows_the_target_refuses_is_quarantined_with_the_rows_read(env: dict) -> None:
    # Bob's name is taken by another row of the target, so the database refuses the batch.
    env["target"].execute("CREATE UNIQUE INDEX orders_name ON orders (name)")
    env["target"].execute("INSERT INTO orders (id, name) VALUES (9, 'Bob')")
    deliver(env, "taken.csv", GOOD_CSV)
    report = do_import(env, files(), "taken.csv")
    assert report.file.status == "rejected"
    assert report.file.reason.startswith("the target refused the rows: ")
    assert report.rows_read == 2 and pq.read_table(report.snapshot_path).num_rows == 2
    assert (env["inbox"] / "quarantine" / "taken.csv").exists()
    # The partner's report says what happened to the file, not what the database said (that is the operator's).
    partner = (env["inbox"] / "quarantine" / "taken.csv.report.txt").read_text()
    assert "could not be written to the destination" in partner and "orders" not in partner
    [record] = env["state"].files("orders_import")
    assert (record.status, record.rows, record.reason) == ("rejected", 2, report.file.reason)
