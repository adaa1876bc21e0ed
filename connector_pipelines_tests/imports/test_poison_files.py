"""Bad input loses nothing and blocks nothing: poison files through the real import path into PostgreSQL.

Each poison file (a CSV value beyond 64 bits, a JSON Lines number of 5,000 digits, deeply nested JSON, a huge
single line in a small gzip file, a decompression bomb, too many rows) is delivered before a good file: the bad
file is quarantined with its reason (or only its row is rejected, with the reason in rejections.parquet) and the
good file loads in the same run. The file sensor stops asking for a file after `limits.max_failed_attempts` failed
runs and says why. `ingest` never removes the drop box, and never repeats the run config's value.

The limits are set low per import (`limits:`), so the files stay small and the tests fast.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connector_pipelines.imports.orchestrate import FilesFailed, ImportScope, run_import
from connector_pipelines.storage import Storage
from connector_pipelines.transports.folder import FolderClient
from connector_pipelines.transports.sql import SqlSource
from connector_pipelines_tests.imports.test_files import (
    NAME,
    OLD,
    TARGET_DDL,
    csv_text,
    deliver,
    files_import,
    launch,
    names,
    requested,
    row,
    table,
    tick,
)

pytestmark = pytest.mark.timeout(60)

JSONL_MAPPING = [
    {"target": "conversion_id", "source": "id", "type": "integer", "parse": "integer"},
    {"target": "campaign", "source": "campaign"},
]


def jsonl_import(import_project, database, **limits) -> Path:
    """The `conversions` import reading `Conversions_202?_*.jsonl*` (plain or gzip) from a local folder."""
    inbox = import_project.add_folder("partner")
    database.execute(TARGET_DDL)
    import_project.add_database(database, "crm")
    files = {"connection": "partner", "pattern": "Conversions_202?_*.jsonl*", "format": "jsonl"}
    if limits:
        files["limits"] = limits
    import_project.add_import(
        NAME,
        {
            "source": {"files": files},
            "target": {"connection": "crm", "table": "conversions", "key": "conversion_id"},
            "mapping": JSONL_MAPPING,
        },
    )
    return inbox


def jsonl(*records: dict | str) -> str:
    return "".join((record if isinstance(record, str) else json.dumps(record)) + "\n" for record in records)


def assert_quarantined(run, inbox: Path, name: str, reason: str) -> None:
    """`name` rejected with `reason` (in the run's files table and in the import state), in the quarantine with
    its report beside it, and no longer in the folder."""
    assert run.success, run.failure()
    assert run.files[name]["status"] == "rejected"
    assert run.files[name]["reason"] == reason
    assert names(inbox / "quarantine") == [name, f"{name}.report.txt"]
    assert name not in names(inbox)


def state_reason(import_project, name: str) -> tuple[str, str]:
    state = import_project.state()
    try:
        record = next(r for r in state.files(NAME) if r.name == name)
    finally:
        state.dispose()
    return record.status, record.reason


# ---- per-row rejection -----------------------------------------------------------------------------------------


def test_a_csv_integer_beyond_64_bits_rejects_its_row_and_the_rest_of_the_file_loads(
    import_project, instance, pg_database
):
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database)
    name = "Conversions_2024_a.csv"
    deliver(inbox, name, csv_text(row(1), row(99999999999999999999), row(-9223372036854775809), row(3)))
    deliver(inbox, "Conversions_2024_b.csv", csv_text(row(4)))

    run = import_project.run_import(NAME, instance)
    assert run.success, run.failure()
    assert {file: outcome["status"] for file, outcome in run.files.items()} == {
        name: "imported",
        "Conversions_2024_b.csv": "imported",
    }
    assert sorted(table(pg_database)) == [1, 3, 4]
    rejections = pq.read_table(run.metadata["rejections_path"]).to_pylist()
    assert [(r["row"], r["key"]) for r in rejections] == [(2, "99999999999999999999"), (3, "-9223372036854775809")]
    assert all("beyond the 64-bit integer range" in r["reason"] for r in rejections)
    assert names(inbox / "archive") == [name, "Conversions_2024_b.csv"]


# ---- files quarantined with the reason, the next file still loads -----------------------------------------------


def test_a_json_lines_number_of_5000_digits_quarantines_the_file_and_the_next_one_loads(
    import_project, instance, pg_database
):
    inbox = jsonl_import(import_project, pg_database)
    bad = "Conversions_2024_a.jsonl"
    deliver(inbox, bad, jsonl({"id": 1, "campaign": "x"}, '{"id": 2, "campaign": ' + "7" * 5000 + "}"))
    deliver(inbox, "Conversions_2024_b.jsonl", jsonl({"id": 3, "campaign": "spring"}))

    run = import_project.run_import(NAME, instance)
    reason = "line 2 has a number of 5,000 digits; at most 4,300 are read"
    assert_quarantined(run, inbox, bad, reason)
    assert state_reason(import_project, bad) == ("rejected", reason)
    assert run.files["Conversions_2024_b.jsonl"]["status"] == "imported"
    assert sorted(table(pg_database)) == [3]


@pytest.mark.parametrize("depth", [65, 100_000], ids=["past the limit", "past Python's recursion limit"])
def test_deeply_nested_json_quarantines_the_file_and_the_next_one_loads(import_project, instance, pg_database, depth):
    inbox = jsonl_import(import_project, pg_database)
    bad = "Conversions_2024_a.jsonl"
    nested = "[" * (depth - 1) + "]" * (depth - 1)  # the record itself is level 1
    deliver(inbox, bad, jsonl({"id": 1, "campaign": "x"}, '{"id": 2, "campaign": "y", "extra": ' + nested + "}"))
    deliver(inbox, "Conversions_2024_b.jsonl", jsonl({"id": 3, "campaign": "spring", "extra": [[1]]}))

    run = import_project.run_import(NAME, instance)
    assert_quarantined(run, inbox, bad, "line 2 nests objects or arrays more than 64 deep")
    assert run.files["Conversions_2024_b.jsonl"]["status"] == "imported"
    assert sorted(table(pg_database)) == [3]


def test_a_huge_single_line_in_a_small_gzip_file_is_refused_fast(import_project, instance, pg_database):
    """The issue's case: a small gzip file holding one line of tens of megabytes. With the default limit (1 MB a
    line) the reader stops after about a megabyte instead of holding the line whole."""
    inbox = jsonl_import(import_project, pg_database)
    bad = "Conversions_2024_a.jsonl.gz"
    line = b'{"id": 1, "campaign": "' + b"a" * (32 << 20) + b'"}\n'
    deliver(inbox, bad, gzip.compress(line, compresslevel=1))
    assert (inbox / bad).stat().st_size < 300_000
    deliver(inbox, "Conversions_2024_b.jsonl", jsonl({"id": 3, "campaign": "spring"}))

    started = time.perf_counter()
    run = import_project.run_import(NAME, instance)
    assert time.perf_counter() - started < 15
    assert_quarantined(run, inbox, bad, "line 1 is longer than 1 MB (limits.max_row_bytes)")
    assert sorted(table(pg_database)) == [3]


@pytest.mark.parametrize(
    "content",
    [
        csv_text(*(row(key) for key in range(1, 20_001))),  # ~760 KB of rows
        csv_text(row(1)) + "\n" * 2_000_000,  # blank lines: no row to count, the bytes still are
    ],
    ids=["rows", "blank lines"],
)
def test_a_decompression_bomb_is_quarantined_at_the_limit_and_nothing_of_it_loads(
    import_project, instance, pg_database, content
):
    inbox = import_project.add_folder("partner")
    files_import(
        import_project,
        pg_database,
        files={"pattern": "Conversions_202?_*.csv*", "limits": {"max_decompressed_bytes": 256 << 10}},
    )
    bad = "Conversions_2024_a.csv.gz"
    deliver(inbox, bad, gzip.compress(content.encode()))
    deliver(inbox, "Conversions_2024_b.csv", csv_text(row(30_000)))

    run = import_project.run_import(NAME, instance)
    reason = (
        "the file unpacks to more than 256 KB (limits.max_decompressed_bytes); a compressed file this large is refused"
    )
    assert_quarantined(run, inbox, bad, reason)
    assert sorted(table(pg_database)) == [30_000]


def test_a_json_lines_bomb_and_a_gzip_parquet_bomb_are_quarantined(import_project, instance, pg_database):
    inbox = jsonl_import(import_project, pg_database, max_decompressed_bytes=64 << 10)
    bad = "Conversions_2024_a.jsonl.gz"
    deliver(inbox, bad, gzip.compress(jsonl(*({"id": key, "campaign": "x"} for key in range(1, 5_001))).encode()))
    deliver(inbox, "Conversions_2024_b.jsonl", jsonl({"id": 3, "campaign": "spring"}))

    run = import_project.run_import(NAME, instance)
    assert_quarantined(
        run,
        inbox,
        bad,
        "the file unpacks to more than 64 KB (limits.max_decompressed_bytes); a compressed file this large is refused",
    )
    assert sorted(table(pg_database)) == [3]


def test_a_file_with_more_rows_than_allowed_is_quarantined_and_nothing_of_it_loads(
    import_project, instance, pg_database
):
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database, files={"limits": {"max_rows_per_file": 5}})
    bad = "Conversions_2024_a.csv"
    deliver(inbox, bad, csv_text(*(row(key) for key in range(1, 7))))
    deliver(inbox, "Conversions_2024_b.csv", csv_text(*(row(key) for key in range(10, 15))))  # exactly 5

    run = import_project.run_import(NAME, instance)
    reason = "the file has more than 5 rows (limits.max_rows_per_file); split it into smaller files or raise the limit"
    assert_quarantined(run, inbox, bad, reason)
    assert run.files["Conversions_2024_b.csv"]["status"] == "imported"
    assert sorted(table(pg_database)) == [10, 11, 12, 13, 14]


def test_a_value_that_fails_the_mapping_as_a_whole_quarantines_the_file_and_the_next_one_loads(
    import_project, instance, pg_database
):
    """A failure while mapping that is not one row's (here pyarrow cannot turn a Parquet date of year 10,000+
    into a Python value) is the file's: it is quarantined, nothing of it merged, and the next file loads."""
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database, files={"pattern": "Conversions_202?_*", "format": None})
    bad = "Conversions_2024_a.parquet"
    columns = {"id": ["1"], "campaign": ["x"], "amount": ["1,00"], "updated_at": ["2025-01-01 09:00:00"]}
    inbox.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({**columns, "date": pa.array([3_000_000], pa.date32())}), inbox / bad)
    deliver(inbox, "Conversions_2024_b.csv", csv_text(row(2)))

    run = import_project.run_import(NAME, instance)
    assert_quarantined(
        run, inbox, bad, "nothing was loaded: mapping the rows failed: OverflowError: date value out of range"
    )
    assert run.files["Conversions_2024_b.csv"]["status"] == "imported"
    assert sorted(table(pg_database)) == [2]


# ---- a file that fails without being the file's fault --------------------------------------------------------


def test_a_file_failing_for_the_environment_stays_and_the_files_after_it_still_load(import_project, pg_database):
    """A failure that is no rejection (here: its run folder cannot be made, an OSError of the disk) leaves that
    file in the folder for a later run; the files after it are imported in the same run, which then fails
    naming the file and carrying the handled files' reports."""
    inbox = import_project.add_folder("partner")
    files_import(import_project, pg_database)
    deliver(inbox, "Conversions_2024_a.csv", csv_text(row(1)))
    deliver(inbox, "Conversions_2024_b.csv", csv_text(row(2)))
    storage = Storage.for_project(import_project.root)
    blocked = storage.import_dir(NAME) / "run-1" / "files" / "Conversions_2024_a.csv"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the run's folder for this file should go")

    connector = import_project.connector(NAME)
    target = SqlSource(pg_database.url)
    state = import_project.state()
    try:
        with pytest.raises(FilesFailed) as failed:
            run_import(
                connector,
                ImportScope(),
                target_engine=target.engine,
                state=state,
                storage=storage,
                run_id="run-1",
                open_files=lambda: FolderClient(inbox),
            )
        records = {record.name: record.status for record in state.files(NAME)}
    finally:
        state.dispose()
        target.dispose()
    message = str(failed.value)
    assert message.startswith("1 file(s) could not be processed and were left in the folder: Conversions_2024_a.csv")
    assert message.endswith("the other 1 file(s) were handled and recorded")
    # The handled files' reports travel with the failure (a partner is sent those as after any run).
    assert [(report.file.name, report.file.status) for report in failed.value.handled] == [
        ("Conversions_2024_b.csv", "imported")
    ]
    assert names(inbox) == ["Conversions_2024_a.csv"] and names(inbox / "archive") == ["Conversions_2024_b.csv"]
    assert records == {"Conversions_2024_b.csv": "imported"}
    assert sorted(table(pg_database)) == [2]


# ---- the sensor gives up on a file after N failed runs -----------------------------------------------------------


def test_the_sensor_stops_asking_after_the_failed_attempts_and_says_why(import_project, fresh_instance, pg_database):
    inbox = import_project.add_folder("partner")
    # The target table does not exist: every run fails, and leaves the file where it is.
    files_import(import_project, pg_database, ddl=None, files={"limits": {"max_failed_attempts": 2}})
    import_project.record_preview(NAME)
    name = "Conversions_2024_a.csv"
    deliver(inbox, name, csv_text(row(1)))

    cursor = None
    for _attempt in (1, 2):
        result = tick(import_project, fresh_instance, cursor)
        assert requested(result) == [[name]]
        assert not launch(import_project, fresh_instance, result.run_requests[0]).success
        cursor = result.cursor
    given_up = tick(import_project, fresh_instance, cursor)
    assert given_up.run_requests == []
    assert given_up.skip_message == (
        "no new matching files; 1 file(s) not asked for again: 2 run(s) ended without importing or quarantining "
        f"them (see those runs' errors); replace the file to try again, or remove it: {name}"
    )
    assert tick(import_project, fresh_instance, given_up.cursor).run_requests == []  # and it stays so
    assert len(fresh_instance.get_runs()) == 2

    # A new version of the file is a new start: asked for again, and this time it loads.
    deliver(inbox, name, csv_text(row(1), row(2)), age=OLD)
    pg_database.execute(TARGET_DDL)
    fixed = tick(import_project, fresh_instance, given_up.cursor)
    assert requested(fixed) == [[name]]
    assert json.loads(fixed.cursor)["requested"][name]["attempt"] == 1
    assert launch(import_project, fresh_instance, fixed.run_requests[0]).success
    assert sorted(table(pg_database)) == [1, 2]


# ---- ingest ----------------------------------------------------------------------------------------------------


def test_ingest_of_a_file_at_the_drop_box_root_keeps_the_drop_box_and_its_other_files(
    import_project, instance, pg_database
):
    import_project.add_folder("partner")
    files_import(import_project, pg_database)
    dropbox = Storage.for_project(import_project.root).ingest_dropbox(NAME)
    placed = deliver(dropbox, "march.csv", csv_text(row(1)))
    waiting = deliver(dropbox / "call-2", "april.csv", csv_text(row(2)))  # another `ingest` call's file

    run = import_project.run_import(NAME, instance, local_file=str(placed))
    assert run.success, run.failure()
    assert run.files["march.csv"]["status"] == "imported"
    assert sorted(table(pg_database)) == [1]
    assert dropbox.is_dir() and waiting.read_text() == csv_text(row(2)) and not placed.exists()

    # A per-call folder is removed once its file is taken.
    second = import_project.run_import(NAME, instance, local_file=str(waiting))
    assert second.success, second.failure()
    assert dropbox.is_dir() and not waiting.parent.exists()


def test_a_refused_local_file_is_not_echoed_in_the_failure(import_project, instance, pg_database, tmp_path):
    import_project.add_folder("partner")
    files_import(import_project, pg_database)
    typed = str(tmp_path / "s3cr3t-value-typed-in-the-launchpad.csv")
    deliver(tmp_path, "s3cr3t-value-typed-in-the-launchpad.csv", csv_text(row(1)))
    dropbox = Storage.for_project(import_project.root).ingest_dropbox(NAME)
    dropbox.mkdir(parents=True, exist_ok=True)

    for value in (typed, str(dropbox)):  # outside the drop box; the drop box itself
        refused = import_project.run_import(NAME, instance, local_file=value)
        assert not refused.success
        failure = refused.failure()
        assert "local_file is not a file in the import's drop box" in failure
        assert "s3cr3t" not in failure
    assert dropbox.is_dir()
