"""Incremental warehouse reads that do not skip late rows, the gate before the merge, and what a partner's
quarantine report may say: on the machine's PostgreSQL and MariaDB and on SQLite, through the import engine
(`imports/run.py`), and through Dagster for the checks' severities."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from connector_pipelines.imports.expectations import Expectation, combine_results, run_expectations
from connector_pipelines.imports.run import ImportReport, import_file, run_warehouse_import
from connector_pipelines.imports.source_query import incremental_query, later_watermark, read_from, split_with
from connector_pipelines.spec.imports import ImportConnector, WarehouseSource
from connector_pipelines.state.import_state import ImportState
from connector_pipelines.transports.folder import FolderClient
from connector_pipelines.transports.sql import SqlSource
from connector_pipelines_tests.fixtures.extract import TestDatabase

DATABASES = ["pg_database", "mariadb_database", "sqlite_database"]
TIME_TYPE = {"postgresql": "TIMESTAMP", "mariadb": "DATETIME(6)", "sqlite": "TEXT"}
T = dt.datetime(2024, 3, 1, 10, 0, 0)

# A query that starts with WITH and ends in a line comment: the import's own filter must survive both.
WITH_QUERY = """WITH changes AS (
    SELECT id, name, status, updated_at FROM src_people -- every version of a person (a change log)
)
SELECT id, name, status, updated_at FROM changes
; -- read incrementally by updated_at"""

MAPPING = [
    {"target": "id", "source": "id", "type": "integer"},
    {"target": "name", "source": "name"},
    {"target": "status", "source": "status"},
    {"target": "changed_at", "source": "updated_at", "type": "datetime", "parse": "datetime"},
]


def at(moment: dt.datetime) -> str:
    return moment.isoformat(sep=" ")


def people_import(*, expectations: list | None = None, lookback: str = "10 minutes", **target) -> ImportConnector:
    spec = people_spec(expectations=expectations, lookback=lookback, **target)
    return ImportConnector.model_validate({"name": "people_import", "kind": "import", "import": spec})


def people_spec(*, expectations: list | None = None, lookback: str = "10 minutes", **target) -> dict:
    return {
        "source": {
            "warehouse": {
                "connection": "dwh",
                "query": WITH_QUERY,
                "updated_at": "updated_at",
                "lookback": lookback,
            }
        },
        "target": {
            "connection": "crm",
            "table": "people",
            "key": "id",
            "resolve_conflicts": "most_recent",
            "timestamp": "changed_at",
            **target,
        },
        "mapping": MAPPING,
        "expectations": expectations or [],
    }


@pytest.fixture(params=DATABASES)
def database(request) -> TestDatabase:
    db = request.getfixturevalue(request.param)
    time_type = TIME_TYPE[db.dialect]
    db.execute(f"CREATE TABLE src_people (id INTEGER, name VARCHAR(40), status VARCHAR(10), updated_at {time_type})")
    target_time = "TIMESTAMP" if db.dialect == "sqlite" else time_type
    db.execute(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL, status VARCHAR(10), "
        f"changed_at {target_time} NULL)"
    )
    return db


@pytest.fixture
def state(tmp_path: Path):
    state = ImportState(f"sqlite:///{tmp_path / 'state.db'}")
    yield state
    state.dispose()


def add_people(db: TestDatabase, rows: list[tuple]) -> None:
    db.execute(
        "INSERT INTO src_people VALUES (:id, :name, :status, :updated_at)",
        [{"id": i, "name": n, "status": s, "updated_at": at(u)} for i, n, s, u in rows],
    )


def run(db: TestDatabase, spec: ImportConnector, state: ImportState, tmp_path: Path, run_id: str) -> ImportReport:
    source = SqlSource(db.url)
    try:
        return run_warehouse_import(spec, source, db.url, state, tmp_path / "storage", run_id)
    finally:
        source.dispose()


def people(db: TestDatabase) -> dict[int, tuple]:
    rows = db.query("SELECT id, name, status, changed_at FROM people ORDER BY id")
    return {row["id"]: (row["name"], row["status"], str(row["changed_at"])[:19]) for row in rows}


# --------------------------------------------------------------------------------------------------
# 14. Late rows


def test_late_rows_equal_to_or_within_the_lookback_of_the_watermark_are_imported_next_run(
    database: TestDatabase, state: ImportState, tmp_path: Path
) -> None:
    # Two versions of person 1, the newer one read first: the newest by updated_at wins, not the last read.
    add_people(
        database,
        [
            (1, "v2", "open", T),
            (1, "v1", "open", T - dt.timedelta(minutes=1)),
            (2, "Bea", "open", T - dt.timedelta(minutes=30)),
        ],
    )
    first = run(database, people_import(), state, tmp_path, "r1")
    assert first.merged and (first.rows_read, first.inserted) == (3, 2)
    assert first.watermark.startswith("2024-03-01 10:00:00")
    assert people(database)[1][0] == "v2"

    # Committed after that read: one with the watermark's own updated_at, one 5 minutes before it (inside the
    # 10-minute lookback), one an hour before it (outside). Meanwhile person 1 got a newer value in the target.
    add_people(
        database,
        [
            (3, "equal", "open", T),
            (4, "within", "open", T - dt.timedelta(minutes=5)),
            (5, "outside", "open", T - dt.timedelta(hours=1)),
        ],
    )
    database.execute(
        "UPDATE people SET name = 'newer', changed_at = :t WHERE id = 1", {"t": at(T + dt.timedelta(hours=1))}
    )

    second = run(database, people_import(), state, tmp_path, "r2")
    # Read from 09:50: both versions of 1 again, 3 and 4. 1 is neither duplicated nor overwritten by v2 or v1.
    assert (second.rows_read, second.inserted, second.updated, second.unchanged_or_older) == (4, 2, 0, 1)
    assert people(database) == {
        1: ("newer", "open", "2024-03-01 11:00:00"),
        2: ("Bea", "open", "2024-03-01 09:30:00"),
        3: ("equal", "open", "2024-03-01 10:00:00"),
        4: ("within", "open", "2024-03-01 09:55:00"),
    }
    assert database.query("SELECT COUNT(*) AS n FROM people")[0]["n"] == 4
    assert second.watermark == first.watermark  # nothing newer than 10:00 was read

    third = run(database, people_import(), state, tmp_path, "r3")
    assert (third.inserted, third.updated, third.unchanged_or_older) == (0, 0, 3)


def test_lookback_zero_still_reads_rows_equal_to_the_watermark(
    database: TestDatabase, state: ImportState, tmp_path: Path
) -> None:
    add_people(database, [(1, "Ann", "open", T)])
    run(database, people_import(lookback="0"), state, tmp_path, "r1")
    add_people(database, [(2, "same second", "open", T), (3, "a second early", "open", T - dt.timedelta(seconds=1))])
    second = run(database, people_import(lookback="0"), state, tmp_path, "r2")
    assert set(people(database)) == {1, 2}
    assert (second.rows_read, second.inserted) == (2, 1)


# --------------------------------------------------------------------------------------------------
# 10. The gate


def test_a_failing_blocking_expectation_merges_nothing_and_keeps_the_watermark(
    database: TestDatabase, state: ImportState, tmp_path: Path
) -> None:
    rules = [{"expect": "in_set", "column": "status", "values": ["open", "closed"]}]
    add_people(database, [(1, "Ann", "open", T)])
    assert run(database, people_import(expectations=rules), state, tmp_path, "r1").merged
    before, watermark = people(database), state.watermark("people_import")

    later = T + dt.timedelta(hours=1)
    add_people(database, [(2, "Bob", "lost", later), (3, "Cy", "open", later)])
    database.execute("UPDATE src_people SET name = 'Ann B', updated_at = :t WHERE id = 1", {"t": at(later)})
    blocked = run(database, people_import(expectations=rules), state, tmp_path, "r2")
    assert not blocked.merged and (blocked.inserted, blocked.updated) == (0, 0)
    assert len(blocked.blocked) == 1 and "status" in blocked.blocked[0] and "'lost'" in blocked.blocked[0]
    assert people(database) == before  # Cy and Ann's change were valid, and were not merged either
    assert state.watermark("people_import") == watermark

    # Fixed at the source (same updated_at): the next run reads it, since the watermark did not move.
    database.execute("UPDATE src_people SET status = 'closed' WHERE id = 2")
    fixed = run(database, people_import(expectations=rules), state, tmp_path, "r3")
    assert fixed.merged and (fixed.inserted, fixed.updated) == (2, 1)
    assert {k: v[:2] for k, v in people(database).items()} == {
        1: ("Ann B", "open"),
        2: ("Bob", "closed"),
        3: ("Cy", "open"),
    }
    assert state.watermark("people_import").startswith("2024-03-01 11:00:00")


def test_a_failing_warn_expectation_still_merges(database: TestDatabase, state: ImportState, tmp_path: Path) -> None:
    rules = [
        {"expect": "in_set", "column": "status", "values": ["open", "closed"], "severity": "warn"},
        {"expect": "unique", "column": "name", "severity": "warn"},
    ]
    add_people(database, [(1, "Ann", "open", T), (2, "Bob", "lost", T), (3, "Ann", "open", T)])
    report = run(database, people_import(expectations=rules), state, tmp_path, "r1")
    assert report.merged and report.blocked == []
    assert [result.success for result in report.expectation_results] == [False, False]
    assert set(people(database)) == {1, 3}  # Bob breaks a row-level rule: rejected alone
    assert report.rows_rejected == 1 and state.watermark("people_import") is not None


def test_unique_and_mostly_are_judged_over_every_batch_together() -> None:
    name_unique = Expectation("unique", "name")
    mostly_named = Expectation("not_null", "name", mostly=0.75)
    first = pd.DataFrame({"name": ["Ann", "Bob", None]})  # 1 of 3 empty: 67% < 75% in this batch alone
    second = pd.DataFrame({"name": ["Ann", "Cy", "Dee", "Eve", "Fay"]})  # Ann again, in another batch
    per_batch = [run_expectations(frame, [name_unique, mostly_named]) for frame in (first, second)]
    assert [result.success for result in per_batch[0]] == [True, False]
    assert [result.success for result in per_batch[1]] == [True, True]

    unique, named = combine_results(
        [name_unique, mostly_named], per_batch, {0: pd.concat([first["name"], second["name"]], ignore_index=True)}
    )
    assert (unique.success, unique.unexpected_count, unique.sample_unexpected) == (False, 2, ["Ann", "Ann"])
    assert (named.success, named.unexpected_count, named.element_count) == (True, 1, 8)  # 7 of 8 = 87.5%


# --------------------------------------------------------------------------------------------------
# 5. What a partner's report says

FORBIDDEN_IN_REPORTS = (
    "ledger_entries",
    "cp_upsert_staging",
    "pg_temp",
    "127.0.0.1",
    "5432",
    "3306",
    "postgresql",
    "mysql",
    "mariadb",
    "psycopg",
    "pymysql",
    "sqlalchemy",
    "Error:",
    "DataError",
    "OperationalError",
    "InvalidTextRepresentation",
    "INSERT",
    "SELECT",
    "COPY",
    "invalid input syntax",
    "Incorrect integer value",
)


def ledger_import(expectations: list | None = None) -> ImportConnector:
    return ImportConnector.model_validate(
        {
            "name": "ledger_import",
            "kind": "import",
            "import": {
                "source": {"files": {"connection": "partner", "pattern": "*.csv"}},
                "target": {"connection": "crm", "table": "ledger_entries", "key": "id"},
                # amount is mapped as text, the table's column is an integer: the database refuses 'abc'.
                "mapping": [
                    {"target": "id", "source": "id", "type": "integer"},
                    {"target": "amount", "source": "amount"},
                ],
                "expectations": expectations or [],
            },
        }
    )


def deliver_and_import(
    db: TestDatabase, spec: ImportConnector, state: ImportState, tmp_path: Path, text: str
) -> tuple[ImportReport, str]:
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    (inbox / "entries.csv").write_text(text)
    report = import_file(spec, FolderClient(inbox), "entries.csv", db.url, state, tmp_path / "storage", "run-7")
    return report, (inbox / "quarantine" / "entries.csv.report.txt").read_text()


@pytest.mark.parametrize("database_fixture", ["pg_database", "mariadb_database"])
def test_a_database_error_reaches_the_operator_but_not_the_partners_report(
    request, database_fixture: str, state: ImportState, tmp_path: Path
) -> None:
    db = request.getfixturevalue(database_fixture)
    db.execute("CREATE TABLE ledger_entries (id INTEGER PRIMARY KEY, amount INTEGER)")
    report, partner = deliver_and_import(db, ledger_import(), state, tmp_path, "id,amount\n1,10\n2,abc\n")
    assert report.file.status == "rejected"
    assert db.query("SELECT COUNT(*) AS n FROM ledger_entries")[0]["n"] == 0
    assert partner.startswith(
        "file: 'entries.csv'\nrun: run-7\nstatus: rejected\nreason: the rows could not be written"
    )
    assert "nothing from it was loaded" in partner
    leaked = [fragment for fragment in FORBIDDEN_IN_REPORTS if fragment.lower() in partner.lower()]
    assert leaked == [], partner
    assert str(tmp_path) not in partner
    # The operator keeps the whole story: in the outcome (the run's log and files table) and the import state.
    operator = report.file.reason
    assert "ledger_entries" in operator and (
        "invalid input syntax" in operator or "Incorrect integer value" in operator
    )
    [record] = state.files("ledger_import")
    assert record.reason == operator


def test_a_file_held_back_by_the_gate_is_quarantined_with_the_expectation_in_its_report(
    sqlite_database: TestDatabase, state: ImportState, tmp_path: Path
) -> None:
    db = sqlite_database
    db.execute("CREATE TABLE ledger_entries (id INTEGER PRIMARY KEY, amount TEXT)")
    rules = [{"expect": "regex", "column": "amount", "pattern": "^[0-9]+$", "mostly": 0.9}]
    report, partner = deliver_and_import(db, ledger_import(rules), state, tmp_path, "id,amount\n1,10\n2,abc\n3,7\n")
    assert report.file.status == "rejected" and not report.merged
    assert db.query("SELECT COUNT(*) AS n FROM ledger_entries")[0]["n"] == 0
    assert "blocking expectation" in partner and "amount matches '^[0-9]+$'" in partner and "'abc'" in partner
    assert [fragment for fragment in FORBIDDEN_IN_REPORTS if fragment.lower() in partner.lower()] == []


# --------------------------------------------------------------------------------------------------
# Through Dagster: a warn check does not block, an error check does


def test_warn_checks_are_not_blocking_and_the_run_merges(import_project, instance, pg_database) -> None:
    db = pg_database
    db.execute("CREATE TABLE src_people (id INTEGER, name VARCHAR(40), status VARCHAR(10), updated_at TIMESTAMP)")
    db.execute(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL, status VARCHAR(10), "
        "changed_at TIMESTAMP)"
    )
    add_people(db, [(1, "Ann", "open", T), (2, "Ann", "open", T)])
    import_project.add_database(db, "dwh")
    import_project.add_database(db, "crm")
    rules = [{"expect": "unique", "column": "name", "severity": "warn"}, {"expect": "not_null", "column": "name"}]
    import_project.add_import("people_import", people_spec(expectations=rules))
    asset = import_project.defs().resolve_assets_def(dg.AssetKey(["import", "people_import", "people"]))
    assert {spec.key.name: spec.blocking for spec in asset.check_specs} == {
        "expect_unique_name_1": False,
        "expect_not_null_name_2": True,
    }
    run = import_project.run_import("people_import", instance)
    assert run.success, run.failure()
    assert run.checks == {"expect_unique_name_1": False, "expect_not_null_name_2": True}
    [warned] = [e for e in run.result.get_asset_check_evaluations() if e.check_name == "expect_unique_name_1"]
    assert warned.severity.value == "WARN"
    assert db.query("SELECT COUNT(*) AS n FROM people")[0]["n"] == 2


# --------------------------------------------------------------------------------------------------
# The incremental query and the watermark, as text


def test_a_with_query_keeps_its_ctes_and_gets_one_of_its_own() -> None:
    sql = incremental_query(WITH_QUERY, '"updated_at"')
    assert sql.startswith("WITH changes AS (")
    assert sql.endswith(
        "SELECT id, name, status, updated_at FROM changes\n)\n"
        'SELECT * FROM cp_import_source WHERE cp_import_source."updated_at" >= :since'
    )
    assert "read incrementally" not in sql and ";" not in sql  # the trailing comment and semicolon are gone
    recursive = (
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < 3), m as (select ')' as p) "
        "select * from n"
    )
    assert split_with(recursive) == (
        "WITH RECURSIVE",
        "n(i) as (select 1 union all select i + 1 from n where i < 3), m as (select ')' as p)",
        "select * from n",
    )
    plain = incremental_query("SELECT * FROM t -- all of it", "`u`")
    assert plain == "SELECT * FROM (\nSELECT * FROM t\n) cp_import_source WHERE cp_import_source.`u` >= :since"


@pytest.mark.parametrize("database_fixture", DATABASES)
def test_a_recursive_with_query_runs_incrementally(request, database_fixture: str) -> None:
    db = request.getfixturevalue(database_fixture)
    query = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) SELECT i AS updated_at FROM n"
    quote = db.engine.dialect.identifier_preparer.quote
    rows = db.query(incremental_query(query, quote("updated_at")), {"since": 4})
    assert sorted(row["updated_at"] for row in rows) == [4, 5]


def test_read_from_moves_the_watermark_back_in_its_own_form() -> None:
    five = dt.timedelta(minutes=5)
    assert read_from("2024-03-01 10:00:00", five) == "2024-03-01 09:55:00"
    assert read_from("2024-03-01T10:00:00.250000", five) == "2024-03-01T09:55:00.250000"
    assert read_from("2024-03-01 10:00:00+00:00", five) == "2024-03-01 09:55:00+00:00"
    assert read_from("2024-03-01", five) == "2024-02-29"  # a date column: the day that holds 23:55 before
    assert read_from("20240301", five) == "20240301"  # a number: read from it, not from a guessed date
    assert read_from("2024-03-01 10:00:00", dt.timedelta(0)) == "2024-03-01 10:00:00"
    assert later_watermark("2024-03-01 10:00:00", "2024-03-01 09:00:00") == "2024-03-01 10:00:00"
    assert later_watermark("9", "10") == "10" and later_watermark(None, "1") == "1"


@pytest.mark.parametrize(
    ("value", "seconds"), [("5 minutes", 300), ("1 hour", 3600), ("2 days", 172800), ("90 seconds", 90), (0, 0)]
)
def test_lookback_durations(value, seconds: int) -> None:
    source = WarehouseSource(connection="dwh", query="SELECT 1", updated_at="u", lookback=value)
    assert source.lookback_delta == dt.timedelta(seconds=seconds)


def test_lookback_default_and_a_bad_value() -> None:
    assert WarehouseSource(connection="dwh", query="SELECT 1").lookback_delta == dt.timedelta(minutes=5)
    with pytest.raises(ValueError, match="lookback 'soon' is not a duration; write 'N seconds'"):
        WarehouseSource(connection="dwh", query="SELECT 1", lookback="soon")
