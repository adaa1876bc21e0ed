"""File imports end to end through Dagster: files a partner drops into a folder (local, SFTP, FTP, S3) picked up by a
wildcard, upserted into PostgreSQL, archived or quarantined with a report; the file sensor's cursor across ticks,
restarts and failed runs; duplicates by checksum; conversions; new attributes; most-recent-wins; `ingest`.

Everything is real: the Dagster job (`execute_in_process`), the sensor (evaluated with the Definitions' resources
on a real instance, and its requests run with their run key so the sensor sees them finish), the loopback
servers and the database. Files are seeded and checked straight on disk (or in moto's bucket).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from connector_pipelines.factories.naming import job_name

pytestmark = pytest.mark.timeout(60)

NAME = "conversions"
SENSOR = f"import_{NAME}_files"
PATTERN = "Conversions_202?_*.csv"
HEADER = "id;campaign;amount;date;updated_at"
TARGET_DDL = (
    "CREATE TABLE conversions (conversion_id INTEGER PRIMARY KEY, campaign VARCHAR(80), amount NUMERIC(12,2), "
    "converted_on DATE, updated_at TIMESTAMP)"
)
MAPPING = [
    {"target": "conversion_id", "source": "id", "type": "integer", "parse": "integer"},
    {"target": "campaign", "source": "campaign"},
    {"target": "amount", "source": "amount", "type": "currency", "parse": "currency:eu"},
    {"target": "converted_on", "source": "date", "type": "date", "parse": "date:%d/%m/%Y"},
    {"target": "updated_at", "source": "updated_at", "type": "datetime", "parse": "datetime"},
]
OLD = dt.timedelta(minutes=5)  # a file last modified this long ago is taken at once by the sensor


def csv_text(*rows: str, header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def row(
    key: int,
    campaign: str = "spring",
    amount: str = "1.234,50 €",
    date: str = "31/12/2024",
    updated_at: str = "2025-01-01 09:00:00",
) -> str:
    return ";".join([str(key), campaign, amount, date, updated_at])


def deliver(folder: Path, name: str, content: str | bytes, age: dt.timedelta | None = OLD) -> Path:
    """A file as a partner leaves it, last modified `age` ago (None: just now)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    if age is not None:
        when = time.time() - age.total_seconds()
        os.utime(path, (when, when))
    return path


def files_import(
    import_project,
    database,
    *,
    connection: str = "partner",
    files: dict | None = None,
    target: dict | None = None,
    mapping: list | None = None,
    ddl: str | None = TARGET_DDL,
) -> None:
    """The `conversions` import: `Conversions_202?_*.csv` (`;`-separated) from `connection` into PostgreSQL."""
    if ddl:
        database.execute(ddl)
    import_project.add_database(database, "crm")
    import_project.add_import(
        NAME,
        {
            "source": {
                "files": {"connection": connection, "pattern": PATTERN, "csv": {"delimiter": ";"}, **(files or {})}
            },
            "target": {"connection": "crm", "table": "conversions", "key": "conversion_id", **(target or {})},
            "mapping": mapping or MAPPING,
        },
    )


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.is_file()) if folder.exists() else []


def table(database, order: str = "conversion_id") -> dict:
    return {r[order]: r for r in database.query(f"SELECT * FROM conversions ORDER BY {order}")}


# ---- the sensor ------------------------------------------------------------------------------------------------


def tick(import_project, instance, cursor: str | None, defs: dg.Definitions | None = None):
    return import_project.sensor_tick(SENSOR, instance, cursor, defs)


def requested(result) -> list[list[str]]:
    return [
        request.run_config["ops"][f"import__{NAME}__conversions"]["config"]["files"] for request in result.run_requests
    ]


def launch(import_project, instance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    return import_project.launch_request(NAME, instance, request)


# ---- picking files up ------------------------------------------------------------------------------------------


def test_the_wildcard_imports_matching_files_and_leaves_the_others(import_project, instance, pg_database):
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database)
    deliver(inbox, "Conversions_2024_a.csv", csv_text(row(1)))
    deliver(inbox, "Conversions_2025_b.csv", csv_text(row(2), row(3)))
    others = [
        "Conversions_2019_c.csv",
        "conversions_2024_d.csv",
        "Conversions_2024_e.txt",
        "Conversions_20245.csv",
        "other.csv",
    ]
    for index, other in enumerate(others, start=10):
        deliver(inbox, other, csv_text(row(index)))

    run = import_project.run_import(NAME, instance)
    assert run.success, run.failure()
    assert {name: f["status"] for name, f in run.files.items()} == {
        "Conversions_2024_a.csv": "imported",
        "Conversions_2025_b.csv": "imported",
    }
    assert (run.metadata["files_imported"], run.metadata["rows_read"], run.metadata["inserted"]) == (2, 3, 3)
    assert sorted(table(pg_database)) == [1, 2, 3]
    assert names(inbox / "archive") == ["Conversions_2024_a.csv", "Conversions_2025_b.csv"]
    assert names(inbox) == sorted(others)  # left alone, not archived, not quarantined
    assert not (inbox / "quarantine").exists()
    state = import_project.state()
    try:
        records = {record.name: record for record in state.files(NAME)}
    finally:
        state.dispose()
    assert {name: (r.status, r.rows) for name, r in records.items()} == {
        "Conversions_2024_a.csv": ("imported", 1),
        "Conversions_2025_b.csv": ("imported", 2),
    }
    assert records["Conversions_2025_b.csv"].sha256 == hashlib.sha256(csv_text(row(2), row(3)).encode()).hexdigest()


def test_the_sensor_takes_each_file_once_across_ticks_and_restarts(import_project, fresh_instance, pg_database):
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database)
    import_project.record_preview(NAME)
    deliver(inbox, "Conversions_2024_a.csv", csv_text(row(1)), age=OLD)

    # Tick 1: a file last modified minutes ago is taken at once.
    first = tick(import_project, fresh_instance, None)
    assert requested(first) == [["Conversions_2024_a.csv"]]
    # A restart before the run started (the cursor as stored): the file is not asked for twice.
    again = tick(import_project, fresh_instance, first.cursor, defs=import_project.defs())
    assert again.run_requests == [] and again.skip_message == "no new matching files"
    assert launch(import_project, fresh_instance, first.run_requests[0]).success
    assert names(inbox) == [] and names(inbox / "archive") == ["Conversions_2024_a.csv"]

    # Tick 2: nothing new.
    second = tick(import_project, fresh_instance, again.cursor)
    assert second.run_requests == [] and second.skip_message == "no new matching files"

    # A file still being written (modified just now) waits until it is unchanged for a tick.
    deliver(inbox, "Conversions_2024_b.csv", csv_text(row(2)), age=None)
    waiting = tick(import_project, fresh_instance, second.cursor)
    assert waiting.run_requests == [] and waiting.skip_message == "1 file(s) waiting to settle"
    deliver(inbox, "Conversions_2024_b.csv", csv_text(row(2), row(3)), age=None)  # it grew since
    still = tick(import_project, fresh_instance, waiting.cursor)
    assert still.run_requests == [] and still.skip_message == "1 file(s) waiting to settle"
    settled = tick(import_project, fresh_instance, still.cursor)
    assert requested(settled) == [["Conversions_2024_b.csv"]]  # only the new file
    restarted = tick(import_project, fresh_instance, settled.cursor, defs=import_project.defs())
    assert restarted.run_requests == []
    assert launch(import_project, fresh_instance, settled.run_requests[0]).success
    after = tick(import_project, fresh_instance, restarted.cursor)
    assert after.run_requests == [] and json.loads(after.cursor) == {"pending": {}, "requested": {}}

    assert sorted(table(pg_database)) == [1, 2, 3]
    state = import_project.state()
    try:
        records = [(r.name, r.status, r.rows) for r in state.files(NAME)]
    finally:
        state.dispose()
    assert records == [("Conversions_2024_a.csv", "imported", 1), ("Conversions_2024_b.csv", "imported", 2)]
    runs = fresh_instance.get_runs()
    assert len(runs) == 2 and all(r.tags["connector_pipelines/trigger"] == "files" for r in runs)


def test_a_failed_run_leaves_the_file_and_the_sensor_asks_again_once_that_run_finished(
    import_project, fresh_instance, pg_database
):
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database, ddl=None)  # the target table does not exist yet
    import_project.record_preview(NAME)
    deliver(inbox, "Conversions_2024_a.csv", csv_text(row(1)))

    first = tick(import_project, fresh_instance, None)
    assert requested(first) == [["Conversions_2024_a.csv"]]
    failed = launch(import_project, fresh_instance, first.run_requests[0])
    assert not failed.success
    assert names(inbox) == ["Conversions_2024_a.csv"]  # not the file's fault: neither archived nor quarantined
    assert not (inbox / "quarantine").exists()

    second = tick(import_project, fresh_instance, first.cursor)
    assert requested(second) == [["Conversions_2024_a.csv"]]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key  # a new run, not the failed one's key
    pg_database.execute(TARGET_DDL)
    assert launch(import_project, fresh_instance, second.run_requests[0]).success
    assert names(inbox / "archive") == ["Conversions_2024_a.csv"]
    assert tick(import_project, fresh_instance, second.cursor).run_requests == []
    assert sorted(table(pg_database)) == [1]


def test_a_run_not_finished_yet_is_not_asked_for_again(import_project, fresh_instance, pg_database):
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database)
    import_project.record_preview(NAME)
    deliver(inbox, "Conversions_2024_a.csv", csv_text(row(1)))
    first = tick(import_project, fresh_instance, None)
    request = first.run_requests[0]
    # The daemon created the run but it has not started: the file is still the run's to take.
    job = import_project.defs().resolve_job_def(job_name("import", NAME))
    fresh_instance.create_run_for_job(
        job, run_config=request.run_config, tags={**request.tags, "dagster/run_key": request.run_key}
    )
    assert tick(import_project, fresh_instance, first.cursor).run_requests == []


def test_the_sensor_waits_for_a_preview(import_project, fresh_instance, pg_database):
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database)
    deliver(inbox, "Conversions_2024_a.csv", csv_text(row(1)))
    result = tick(import_project, fresh_instance, None)
    assert result.run_requests == [] and "preview" in result.skip_message


def test_the_same_bytes_under_another_name_are_a_duplicate_archived_and_not_loaded_again(
    import_project, instance, pg_database
):
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database)
    content = csv_text(row(1, campaign="spring"))
    deliver(inbox, "Conversions_2024_a.csv", content)
    first = import_project.run_import(NAME, instance)
    assert first.files["Conversions_2024_a.csv"]["status"] == "imported"
    pg_database.execute("UPDATE conversions SET campaign = 'edited in the CRM' WHERE conversion_id = 1")

    deliver(inbox, "Conversions_2024_resent.csv", content)
    second = import_project.run_import(NAME, instance)
    assert second.success, second.failure()
    outcome = second.files["Conversions_2024_resent.csv"]
    assert outcome["status"] == "duplicate"
    assert outcome["reason"] == f"same content as 'Conversions_2024_a.csv', imported in run {first.run_id}"
    assert (second.metadata["files_duplicate"], second.metadata["rows_read"]) == (1, 0)
    assert table(pg_database)[1]["campaign"] == "edited in the CRM"  # not loaded again
    assert names(inbox / "archive") == ["Conversions_2024_a.csv", "Conversions_2024_resent.csv"]
    state = import_project.state()
    try:
        records = [(r.name, r.status) for r in state.files(NAME)]
    finally:
        state.dispose()
    assert records == [("Conversions_2024_a.csv", "imported"), ("Conversions_2024_resent.csv", "duplicate")]


def test_a_file_redelivered_under_the_same_name_is_never_loaded_twice(import_project, instance, pg_database):
    """Partners often upload the same file again under the same name. The second delivery is a duplicate; so must
    be the third: the record of the import may not be lost when the duplicate is recorded."""
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database)
    content = csv_text(row(1, campaign="spring"))
    name = "Conversions_2024_a.csv"
    deliver(inbox, name, content)
    first = import_project.run_import(NAME, instance)
    assert first.files[name]["status"] == "imported"
    pg_database.execute("UPDATE conversions SET campaign = 'edited in the CRM' WHERE conversion_id = 1")

    deliver(inbox, name, content)
    second = import_project.run_import(NAME, instance)
    assert second.files[name]["status"] == "duplicate"
    state = import_project.state()
    try:
        statuses = sorted(r.status for r in state.files(NAME))
    finally:
        state.dispose()
    deliver(inbox, name, content)
    third = import_project.run_import(NAME, instance)
    assert (third.files[name]["status"], table(pg_database)[1]["campaign"], statuses) == (
        "duplicate",
        "edited in the CRM",
        ["duplicate", "imported"],
    ), "the duplicate's record replaced the import's record (same name, same checksum), so the file loaded again"


def test_a_run_with_no_file_to_import_succeeds(import_project, instance, pg_database):
    """A run started by hand on an empty folder, or a sensor's request whose files an earlier run already took
    ('no longer in the folder'), has nothing to do: that is not a failure."""
    import_project.add_folder("partner")
    files_import(import_project, pg_database)
    run = import_project.run_import(NAME, instance)
    assert run.success, run.failure()
    assert (run.metadata["rows_read"], run.files) == (0, {})
    gone = import_project.run_import(NAME, instance, files=["Conversions_2024_taken.csv"])
    assert gone.success, gone.failure()


# ---- quarantine ------------------------------------------------------------------------------------------------


QUARANTINED = [
    pytest.param(
        csv_text(row(1), row(2) + ";one too many"),
        "malformed CSV: row 3 has 6 fields where the header has 5: '2;spring;1.234,50 €;31/12/2024;2025-01-01 "
        "09:00:00;one too m...'",
        id="too-many-fields",
    ),
    pytest.param(
        csv_text(row(1), header="id;campain;amount;date;updated_at"),
        "wrong header: missing column 'campaign' (did you mean 'campain'?); unexpected: 'campain'",
        id="wrong-header",
    ),
    pytest.param("", "the file is empty (0 bytes)", id="empty"),
    pytest.param(HEADER + "\n", "the file has a header but no rows", id="header-only"),
]


@pytest.mark.parametrize("content, reason", QUARANTINED)
def test_a_bad_file_is_quarantined_with_a_report_and_nothing_loaded(
    import_project, instance, pg_database, content, reason
):
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database)
    name = "Conversions_2024_bad.csv"
    deliver(inbox, name, content)
    deliver(inbox, "Conversions_2024_good.csv", csv_text(row(7)))

    run = import_project.run_import(NAME, instance)
    assert run.success, run.failure()  # a rejected file is an outcome of the run, not a failure of it
    assert run.files[name] == {"file": name, "status": "rejected", "rows": "", "reason": reason}
    assert run.files["Conversions_2024_good.csv"]["status"] == "imported"
    assert names(inbox / "quarantine") == [name, f"{name}.report.txt"]
    assert (inbox / "quarantine" / name).read_bytes() == (content.encode())
    report = (inbox / "quarantine" / f"{name}.report.txt").read_text()
    assert report == f"file: {name!r}\nrun: {run.run_id}\nstatus: rejected\nreason: {reason}\n"
    assert sorted(table(pg_database)) == [7]  # nothing of the bad file, even its good first row
    assert names(inbox) == []
    state = import_project.state()
    try:
        record = next(r for r in state.files(NAME) if r.name == name)
    finally:
        state.dispose()
    assert (record.status, record.reason) == ("rejected", reason)


def test_a_bad_date_rejects_its_row_and_the_file_imports(import_project, instance, pg_database):
    """A value that fails the mapping is a row-level failure: that row is rejected (rejections.parquet, with the
    value in the reason) and the file's other rows load; the file is archived, not quarantined."""
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database)
    name = "Conversions_2024_dates.csv"
    deliver(inbox, name, csv_text(row(1), row(2, date="31/02/2025"), row(3, date="2025-03-01")))

    run = import_project.run_import(NAME, instance)
    assert run.success, run.failure()
    assert run.files[name]["status"] == "imported" and run.files[name]["rows"] == "3"
    assert (run.metadata["rows_read"], run.metadata["inserted"], run.metadata["rows_rejected"]) == (3, 1, 2)
    assert sorted(table(pg_database)) == [1]
    rejections = pq.read_table(run.metadata["rejections_path"]).to_pylist()
    assert [(r["row"], r["key"]) for r in rejections] == [(2, "2"), (3, "3")]
    assert "'31/02/2025'" in rejections[0]["reason"] and "'2025-03-01'" in rejections[1]["reason"]
    assert names(inbox / "archive") == [name]
    assert not (inbox / "quarantine").exists()


@pytest.mark.parametrize("name", ["..\\evil.csv", "..evil.csv"])
def test_a_name_with_a_path_in_it_is_refused_with_a_report_and_left_in_place(
    import_project, instance, pg_database, name
):
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database, files={"pattern": "*.csv"})
    deliver(inbox, name, csv_text(row(1)))

    run = import_project.run_import(NAME, instance)
    assert run.success, run.failure()
    outcome = run.files[name]
    assert outcome["status"] == "rejected"
    assert outcome["reason"].startswith("file name refused: ")
    assert "left in place" in outcome["reason"]
    report_name = f"refused-name-{hashlib.sha256(name.encode()).hexdigest()[:16]}.report.txt"
    assert names(inbox / "quarantine") == [report_name]
    assert f"file: {name!r}\n" in (inbox / "quarantine" / report_name).read_text()
    assert names(inbox) == [name]  # its name is unsafe to move: left where it is
    assert table(pg_database) == {}
    # Nothing was written outside the folders (no archive/quarantine beside the connection's root).
    assert sorted(p.name for p in import_project.root.iterdir()) == sorted(["partner", "resources", "storage"])


def test_the_sensor_does_not_ask_again_and_again_for_a_file_refused_for_its_name(
    import_project, fresh_instance, pg_database
):
    """A file refused for its name stays in the folder (it cannot be moved); the run that refused it succeeded
    and recorded it. The sensor must not ask for a new run for it at every tick from then on."""
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database, files={"pattern": "*.csv"})
    import_project.record_preview(NAME)
    deliver(inbox, "..\\evil.csv", csv_text(row(1)))
    first = tick(import_project, fresh_instance, None)
    assert requested(first) == [["..\\evil.csv"]]
    assert launch(import_project, fresh_instance, first.run_requests[0]).success
    second = tick(import_project, fresh_instance, first.cursor)
    assert second.run_requests == [], "a run is asked for the same refused file at every tick"


# ---- values ----------------------------------------------------------------------------------------------------


def test_dates_and_currencies_land_as_date_and_numeric_values(import_project, instance, pg_database):
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database)
    deliver(
        inbox,
        "Conversions_2024_money.csv",
        csv_text(
            row(1, amount="1.234,50 €", date="31/12/2024"),
            row(2, amount="EUR -12,50", date="01/02/2025"),
            row(3, amount="0,99", date="29/02/2024"),
            row(4, amount="€ 1.000.000", date="5/6/2025"),
        ),
    )
    run = import_project.run_import(NAME, instance)
    assert run.success, run.failure()
    assert run.metadata["rows_rejected"] == 0
    types = {
        r["column_name"]: r["data_type"]
        for r in pg_database.query(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'conversions'"
        )
    }
    assert (types["amount"], types["converted_on"]) == ("numeric", "date")
    rows = table(pg_database)
    assert {key: (r["amount"], r["converted_on"]) for key, r in rows.items()} == {
        1: (Decimal("1234.50"), dt.date(2024, 12, 31)),
        2: (Decimal("-12.50"), dt.date(2025, 2, 1)),
        3: (Decimal("0.99"), dt.date(2024, 2, 29)),
        4: (Decimal("1000000.00"), dt.date(2025, 6, 5)),
    }
    assert rows[1]["updated_at"] == dt.datetime(2025, 1, 1, 9, 0)


NEW_ATTRIBUTES = [
    {"target": "note", "source": "note"},
    {"target": "qty", "source": "qty", "type": "integer", "parse": "integer"},
    {"target": "weight", "source": "weight", "type": "number", "parse": "number:eu"},
    {"target": "price", "source": "price", "type": "currency", "parse": "currency:eu"},
    {"target": "due", "source": "due", "type": "date", "parse": "date:%d/%m/%Y"},
    {"target": "parent_id", "source": "parent", "type": "foreign_key"},
    {"target": "active", "source": "active", "type": "boolean", "parse": "boolean"},
    {"target": "seen_at", "source": "seen_at", "type": "datetime", "parse": "datetime"},
]
NEW_HEADER = "id;campaign;note;qty;weight;price;due;parent;active;seen_at"
NEW_ROW = "1;spring;hello;1,234;1,5;9,99 €;31/05/2024;0007;yes;2024-05-01T12:30:00+00:00"
BASE_MAPPING = [MAPPING[0], MAPPING[1]]
BASE_DDL = "CREATE TABLE conversions (conversion_id INTEGER PRIMARY KEY, campaign VARCHAR(80))"


def test_new_attributes_of_each_type_are_added_when_allowed(import_project, instance, pg_database):
    inbox = import_project.add_folder("partner")
    files_import(
        import_project,
        pg_database,
        ddl=BASE_DDL,
        mapping=BASE_MAPPING + NEW_ATTRIBUTES,
        target={"allow_new_attributes": True},
    )
    deliver(inbox, "Conversions_2024_new.csv", csv_text(NEW_ROW, header=NEW_HEADER))
    run = import_project.run_import(NAME, instance)
    assert run.success, run.failure()
    assert run.metadata["added_columns"] == "active, due, note, parent_id, price, qty, seen_at, weight"
    columns = {
        r["column_name"]: (r["data_type"], r["numeric_precision"], r["numeric_scale"])
        for r in pg_database.query(
            "SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'conversions'"
        )
    }
    assert columns == {
        "conversion_id": ("integer", 32, 0),
        "campaign": ("character varying", None, None),
        "note": ("text", None, None),
        "qty": ("bigint", 64, 0),
        "weight": ("double precision", 53, None),
        "price": ("numeric", 18, 2),
        "due": ("date", None, None),
        "parent_id": ("integer", 32, 0),  # a foreign key takes the key column's type
        "active": ("boolean", None, None),
        "seen_at": ("timestamp with time zone", None, None),
    }
    stored = table(pg_database)[1]
    assert (stored["note"], stored["qty"], stored["weight"], stored["price"]) == ("hello", 1234, 1.5, Decimal("9.99"))
    assert (stored["due"], stored["parent_id"], stored["active"]) == (dt.date(2024, 5, 31), 7, True)
    assert stored["seen_at"] == dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)


def test_new_attributes_are_refused_with_a_clear_failure_when_not_allowed(import_project, instance, pg_database):
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database, ddl=BASE_DDL, mapping=BASE_MAPPING + NEW_ATTRIBUTES[:2])
    deliver(inbox, "Conversions_2024_new.csv", csv_text(NEW_ROW, header=NEW_HEADER))
    run = import_project.run_import(NAME, instance)
    assert not run.success
    failure = run.failure()
    assert f"import '{NAME}': " in failure
    assert "column 'note' is mapped but table 'conversions' has no such column" in failure
    assert "column 'qty' is mapped but table 'conversions' has no such column" in failure
    assert "allow new attributes" in failure
    assert {
        r["column_name"]
        for r in pg_database.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'conversions'"
        )
    } == {"conversion_id", "campaign"}
    assert names(inbox) == ["Conversions_2024_new.csv"]  # the spec's fault, not the file's: left to retry


def test_most_recent_wins_keeps_rows_with_an_equal_or_older_timestamp(import_project, instance, pg_database):
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database, target={"resolve_conflicts": "most_recent", "timestamp": "updated_at"})
    pg_database.execute(
        "INSERT INTO conversions VALUES (:id, 'stored', 1.00, '2024-01-01', '2025-01-01 09:00:00')",
        [{"id": 1}, {"id": 2}, {"id": 3}],
    )
    deliver(
        inbox,
        "Conversions_2025_updates.csv",
        csv_text(
            row(1, campaign="equal", updated_at="2025-01-01 09:00:00"),
            row(2, campaign="older", updated_at="2024-12-31 23:59:59"),
            row(3, campaign="newer", updated_at="2025-01-01 09:00:01"),
        ),
    )
    run = import_project.run_import(NAME, instance)
    assert run.success, run.failure()
    assert (run.metadata["updated"], run.metadata["unchanged_or_older"], run.metadata["inserted"]) == (1, 2, 0)
    rows = table(pg_database)
    assert [rows[key]["campaign"] for key in (1, 2, 3)] == ["stored", "stored", "newer"]
    assert rows[1]["amount"] == Decimal("1.00") and rows[2]["updated_at"] == dt.datetime(2025, 1, 1, 9, 0)
    assert rows[3]["updated_at"] == dt.datetime(2025, 1, 1, 9, 0, 1) and rows[3]["amount"] == Decimal("1234.50")


# ---- every file transport --------------------------------------------------------------------------------------


def _pull(import_project, instance, pg_database, connection: dict, env: dict, folder: str):
    import_project.add_connection("partner", connection, env)
    files_import(
        import_project,
        pg_database,
        files={"folder": f"{folder}/in", "archive_folder": f"{folder}/archive", "quarantine_folder": f"{folder}/q"},
    )
    run = import_project.run_import(NAME, instance)
    assert run.success, run.failure()
    assert run.files == {
        "Conversions_2024_bad.csv": {
            "file": "Conversions_2024_bad.csv",
            "status": "rejected",
            "rows": "",
            "reason": "the file is empty (0 bytes)",
        },
        "Conversions_2024_x.csv": {"file": "Conversions_2024_x.csv", "status": "imported", "rows": "2", "reason": ""},
    }
    assert sorted(table(pg_database)) == [1, 2]
    return run


DELIVERED = csv_text(row(1), row(2))


def test_pull_from_sftp(import_project, instance, pg_database, sftp_server, unique_folder):
    root = sftp_server.root / unique_folder
    deliver(root / "in", "Conversions_2024_x.csv", DELIVERED)
    deliver(root / "in", "Conversions_2024_bad.csv", "")
    deliver(root / "in", "notes.txt", "not for us")
    run = _pull(import_project, instance, pg_database, sftp_server.connection(), sftp_server.env(), unique_folder)
    assert names(root / "in") == ["notes.txt"]
    assert (root / "archive" / "Conversions_2024_x.csv").read_text() == DELIVERED
    assert names(root / "q") == ["Conversions_2024_bad.csv", "Conversions_2024_bad.csv.report.txt"]
    assert f"run: {run.run_id}\n" in (root / "q" / "Conversions_2024_bad.csv.report.txt").read_text()
    # The sensor lists the server too, its password resolved from the environment like the run's.
    deliver(root / "in", "Conversions_2024_y.csv", csv_text(row(3)))
    import_project.record_preview(NAME)
    assert requested(tick(import_project, instance, None)) == [["Conversions_2024_y.csv"]]


def test_pull_from_ftp(import_project, instance, pg_database, ftp_server, unique_folder):
    root = ftp_server.root / unique_folder
    deliver(root / "in", "Conversions_2024_x.csv", DELIVERED)
    deliver(root / "in", "Conversions_2024_bad.csv", "")
    deliver(root / "in", "notes.txt", "not for us")
    run = _pull(import_project, instance, pg_database, ftp_server.connection(), ftp_server.env(), unique_folder)
    assert names(root / "in") == ["notes.txt"]
    assert (root / "archive" / "Conversions_2024_x.csv").read_text() == DELIVERED
    assert names(root / "q") == ["Conversions_2024_bad.csv", "Conversions_2024_bad.csv.report.txt"]
    assert f"run: {run.run_id}\n" in (root / "q" / "Conversions_2024_bad.csv.report.txt").read_text()


def test_pull_from_s3(import_project, instance, pg_database, s3_server, unique_folder):
    client = s3_server.client()
    delivered = (("Conversions_2024_x.csv", DELIVERED), ("Conversions_2024_bad.csv", ""), ("notes.txt", "not for us"))
    for name, body in delivered:
        client.put_object(Bucket=s3_server.bucket, Key=f"{unique_folder}/in/{name}", Body=body.encode())
    run = _pull(import_project, instance, pg_database, s3_server.connection(), s3_server.env(), unique_folder)
    listed = client.list_objects_v2(Bucket=s3_server.bucket, Prefix=f"{unique_folder}/")
    assert sorted(item["Key"] for item in listed.get("Contents", [])) == [
        f"{unique_folder}/archive/Conversions_2024_x.csv",
        f"{unique_folder}/in/notes.txt",
        f"{unique_folder}/q/Conversions_2024_bad.csv",
        f"{unique_folder}/q/Conversions_2024_bad.csv.report.txt",
    ]
    report = client.get_object(Bucket=s3_server.bucket, Key=f"{unique_folder}/q/Conversions_2024_bad.csv.report.txt")
    assert f"run: {run.run_id}\n" in report["Body"].read().decode()
    archived = client.get_object(Bucket=s3_server.bucket, Key=f"{unique_folder}/archive/Conversions_2024_x.csv")
    assert archived["Body"].read().decode() == DELIVERED


# ---- ingest ----------------------------------------------------------------------------------------------------


def test_ingest_loads_one_local_file_and_leaves_the_original_in_place(import_project, instance, pg_database, tmp_path):
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database)
    deliver(inbox, "Conversions_2024_waiting.csv", csv_text(row(9)))  # in the folder: not this run's business
    local = tmp_path / "downloads" / "march.csv"  # any name: ingest does not apply the pattern
    deliver(local.parent, local.name, csv_text(row(1), row(2)))
    before = local.stat()

    # Run config (the UI, the GraphQL API) cannot make a run read any file: only ones `ingest` placed.
    refused = import_project.run_import(NAME, instance, local_file=str(local))
    assert not refused.success
    assert "local_file is not a file in the import's drop box" in refused.failure()
    assert str(local) not in refused.failure()  # a run config value is never repeated
    assert f"connector-pipelines ingest {NAME} FILE" in refused.failure()

    from connector_pipelines.runs import launch_import

    project = import_project.project()
    outcome = launch_import(project, project.connector(NAME), local_file=str(local), instance=instance)
    assert outcome.success
    files = {r.data["file"]: dict(r.data) for r in outcome.metadata["files"].records}
    assert files == {"march.csv": {"file": "march.csv", "status": "imported", "rows": "2", "reason": ""}}
    assert sorted(table(pg_database)) == [1, 2]
    assert local.read_text() == csv_text(row(1), row(2)) and local.stat().st_mtime == before.st_mtime
    assert names(inbox) == ["Conversions_2024_waiting.csv"] and not (inbox / "archive").exists()
    state = import_project.state()
    try:
        assert [(r.name, r.status, r.rows) for r in state.files(NAME)] == [("march.csv", "imported", 2)]
    finally:
        state.dispose()
