"""Retention: which snapshots, audit files and attempts go (pure decisions), what `apply_retention` removes from
real files and a real ledger (SQLite, and PostgreSQL for the attempts), and `connector-pipelines prune`."""

from __future__ import annotations

import datetime as dt
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from connector_pipelines.factories.naming import DATA_SET
from connector_pipelines.integration import retention as retention_module
from connector_pipelines.integration.retention import (
    ATTEMPTS,
    AUDIT_FILES,
    SNAPSHOT_PART,
    SNAPSHOTS,
    apply_retention,
    attempts_floor,
    files_to_remove,
)
from connector_pipelines.spec.integration import IntegrationConnector
from connector_pipelines.spec.retention import KeepFor
from connector_pipelines.state.database import default_state_url
from connector_pipelines.state.ledger import AttemptRow, DeliveryLedger, RecordUpdate, attempts_table, records_table
from connector_pipelines.state.outbox import advance_outbox, open_outbox
from connector_pipelines.storage import Storage, StoredFile
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def _days_ago(days: float) -> dt.datetime:
    return NOW - days * DAY


# ---- 1. decisions ---------------------------------------------------------------------------------------------


def _files(*ages_in_days: float) -> list[StoredFile]:
    return [StoredFile(Path(f"/s/run{i}.parquet"), 0, _days_ago(age)) for i, age in enumerate(ages_in_days)]


def test_an_age_removes_files_older_than_it_oldest_first():
    files = _files(100, 91, 89, 1, 200)

    removed = files_to_remove(files, KeepFor(age=90 * DAY), now=NOW)

    assert removed == [Path("/s/run4.parquet"), Path("/s/run0.parquet"), Path("/s/run1.parquet")]


def test_a_number_of_runs_keeps_that_many_newest_files():
    files = _files(5, 1, 4, 2, 3)

    removed = files_to_remove(files, KeepFor(runs=2), now=NOW)

    assert removed == [Path("/s/run0.parquet"), Path("/s/run2.parquet"), Path("/s/run4.parquet")]


def test_the_newest_file_stays_when_every_file_is_older_than_the_age():
    files = _files(300, 200, 100)

    removed = files_to_remove(files, KeepFor(age=30 * DAY), now=NOW)

    assert removed == [Path("/s/run0.parquet"), Path("/s/run1.parquet")]


def test_files_named_to_keep_stay_whatever_their_age_or_rank():
    files = _files(300, 200, 1)

    assert files_to_remove(files, KeepFor(age=30 * DAY), now=NOW, keep={Path("/s/run0.parquet")}) == [
        Path("/s/run1.parquet")
    ]
    assert files_to_remove(files, KeepFor(runs=1), now=NOW, keep={Path("/s/run1.parquet")}) == [Path("/s/run0.parquet")]


def test_keep_and_an_empty_folder_remove_nothing():
    assert files_to_remove(_files(1000, 2000), KeepFor(), now=NOW) == []
    assert files_to_remove([], KeepFor(runs=1), now=NOW) == []


def test_the_attempts_floor_stays_at_or_below_the_write_back_cursor_and_the_newest_attempt():
    assert attempts_floor(None, 50, None) is None
    assert attempts_floor(40, None, None) is None
    assert attempts_floor(40, 50, None) == 40
    assert attempts_floor(40, 50, 9) == 10  # attempt 10 onwards is still to be written back
    assert attempts_floor(40, 50, 45) == 40
    assert attempts_floor(60, 50, None) == 50  # every attempt is old: the latest one stays


def test_the_snapshot_folder_is_the_data_set_part_the_dagster_layer_writes_to():
    assert SNAPSHOT_PART == DATA_SET


# ---- 2. apply_retention on real files and a real ledger ---------------------------------------------------------


def _connector(retention: str, configurations: tuple[str, ...] = ("customers",)) -> IntegrationConnector:
    document = yaml.safe_load(BASIC_SYNC)
    first = document["integration"]["configurations"][0]
    document["integration"]["configurations"] = [{**first, "name": name} for name in configurations]
    document["integration"]["retention"] = yaml.safe_load(retention)
    return IntegrationConnector.model_validate({"name": "sync", **document})


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(tmp_path / "storage")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[DeliveryLedger]:
    ledger = DeliveryLedger(default_state_url(tmp_path / "state"))
    yield ledger
    ledger.dispose()


def _write_file(folder: Path, name: str, age_days: float, size: int = 100) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"x" * size)
    stamp = _days_ago(age_days).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def _snapshot(storage: Storage, run_id: str, age_days: float, size: int = 100) -> Path:
    folder = storage.integration_dir("sync", SNAPSHOT_PART)
    _write_file(folder, f"{run_id}.json", age_days, size=10)
    return _write_file(folder, f"{run_id}.parquet", age_days, size=size)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_old_snapshots_go_with_their_sidecars_and_the_latest_and_the_current_run_stay(storage, ledger):
    folder = storage.integration_dir("sync", SNAPSHOT_PART)
    _snapshot(storage, "old1", 120, size=1000)
    _snapshot(storage, "old2", 95, size=500)
    current = _snapshot(storage, "current", 100)  # a re-executed delivery's run: its files are old, but it is this run
    _snapshot(storage, "recent", 10)
    (folder / "notes.txt").write_text("not a snapshot")

    report = apply_retention(_connector("{snapshots: 90 days}"), storage, ledger, now=NOW, keep={current})

    assert _names(folder) == ["current.json", "current.parquet", "notes.txt", "recent.json", "recent.parquet"]
    assert report.count(SNAPSHOTS) == 2 and report.bytes(SNAPSHOTS) == 1000 + 500 + 2 * 10
    assert not report.dry_run


def test_the_latest_snapshot_stays_when_the_connector_has_not_run_for_longer_than_the_age(storage, ledger):
    for index, age in enumerate((400, 300, 200)):
        _snapshot(storage, f"run{index}", age)

    report = apply_retention(_connector("{snapshots: 90 days}"), storage, ledger, now=NOW)

    assert _names(storage.integration_dir("sync", SNAPSHOT_PART)) == ["run2.json", "run2.parquet"]
    assert report.count(SNAPSHOTS) == 2


def test_audit_files_keep_the_last_n_runs_of_each_configuration(storage, ledger):
    for configuration in ("customers", "leads"):
        for index in range(5):
            _write_file(storage.integration_dir("sync", configuration), f"run{index}.parquet", 10 - index)

    report = apply_retention(
        _connector("{audit_files: 2 runs, snapshots: keep}", ("customers", "leads")), storage, ledger, now=NOW
    )

    for configuration in ("customers", "leads"):
        assert _names(storage.integration_dir("sync", configuration)) == ["run3.parquet", "run4.parquet"]
    assert [(r.kind, r.part, r.count) for r in report.removals] == [
        (AUDIT_FILES, "customers", 3),
        (AUDIT_FILES, "leads", 3),
    ]


def test_keep_removes_no_file(storage, ledger):
    _snapshot(storage, "ancient", 5000)
    _snapshot(storage, "recent", 1)
    _write_file(storage.integration_dir("sync", "customers"), "ancient.parquet", 5000)
    _write_file(storage.integration_dir("sync", "customers"), "recent.parquet", 1)

    report = apply_retention(_connector("{snapshots: keep, audit_files: keep}"), storage, ledger, now=NOW)

    assert report.nothing_removed and report.removals == []
    assert len(_names(storage.integration_dir("sync", SNAPSHOT_PART))) == 4


# Attempts -------------------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def any_ledger(request, tmp_path: Path) -> Iterator[DeliveryLedger]:
    if request.param == "sqlite":
        url = default_state_url(tmp_path / "state")
        ledger = DeliveryLedger(url)
        yield ledger
        ledger.dispose()
    else:
        database = request.getfixturevalue("pg_database")
        ledger = DeliveryLedger(database.url)
        yield ledger
        ledger.dispose()


def _attempts(ledger: DeliveryLedger, run_id: str, age_days: float, count: int, configuration: str = "customers"):
    """One run's attempts (and its records' states), all finished `age_days` ago."""
    finished = _days_ago(age_days)
    keys = [f"{run_id}-{i}" for i in range(count)]
    updates = [RecordUpdate(k, "delivered", "create", "f", "f", 1, "idem", 1, delivered_at=finished) for k in keys]
    attempts = [
        AttemptRow(k, "create", "delivered", f"{run_id}:{k}", 201, 1, None, None, None, finished, finished)
        for k in keys
    ]
    ledger.write("sync", configuration, run_id, updates, attempts)


def _attempt_runs(ledger: DeliveryLedger, configuration: str = "customers") -> dict[str, int]:
    a = attempts_table
    query = (
        sa.select(a.c.run_id, sa.func.count())
        .where(a.c.connector == "sync", a.c.configuration == configuration)
        .group_by(a.c.run_id)
    )
    with ledger.engine.connect() as conn:
        return dict(conn.execute(query).all())


def _record_count(ledger: DeliveryLedger) -> int:
    with ledger.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(records_table)).scalar_one()


def test_attempts_older_than_the_age_go_and_the_record_states_stay(any_ledger, storage):
    _attempts(any_ledger, "r1", 200, 3)
    _attempts(any_ledger, "r2", 100, 2)
    _attempts(any_ledger, "r3", 10, 4)
    records = _record_count(any_ledger)

    report = apply_retention(_connector("{attempts: 90 days}"), storage, any_ledger, now=NOW)

    assert _attempt_runs(any_ledger) == {"r3": 4}
    assert report.attempts_deleted == 5 and report.count(ATTEMPTS) == 5
    assert _record_count(any_ledger) == records == 9


def test_attempts_still_to_be_written_back_stay_however_old(any_ledger, storage):
    _attempts(any_ledger, "written", 200, 3)
    open_outbox(any_ledger, "sync", "customers")  # cursor at the last attempt of 'written'
    _attempts(any_ledger, "pending", 150, 2)
    _attempts(any_ledger, "recent", 1, 1)

    report = apply_retention(_connector("{attempts: 90 days}"), storage, any_ledger, now=NOW)

    assert _attempt_runs(any_ledger) == {"pending": 2, "recent": 1}
    assert report.attempts_deleted == 3


def test_a_moved_write_back_cursor_lets_the_written_attempts_go(any_ledger, storage):
    _attempts(any_ledger, "first", 200, 3)
    open_outbox(any_ledger, "sync", "customers")
    _attempts(any_ledger, "second", 150, 2)
    _attempts(any_ledger, "third", 1, 1)
    with any_ledger.engine.connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(attempts_table.c.id))).scalar_one()
    advance_outbox(any_ledger, "sync", "customers", newest)

    apply_retention(_connector("{attempts: 90 days}"), storage, any_ledger, now=NOW)

    assert _attempt_runs(any_ledger) == {"third": 1}


def test_the_latest_attempt_stays_when_every_attempt_is_older_than_the_age(any_ledger, storage):
    _attempts(any_ledger, "r1", 400, 2)
    _attempts(any_ledger, "r2", 300, 3)

    report = apply_retention(_connector("{attempts: 30 days}"), storage, any_ledger, now=NOW)

    assert _attempt_runs(any_ledger) == {"r2": 1}
    assert report.attempts_deleted == 4


@pytest.mark.parametrize("run_index", [False, True], ids=["id_walk", "run_index"])
def test_attempts_keep_the_last_n_runs_of_each_configuration(any_ledger, storage, run_index):
    if run_index:  # the index the report asks the ledger for: a run's first attempt in one seek (DDL as text, so
        # the ledger's own table definition does not gain it)
        with any_ledger.engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE INDEX ix_test_attempts_run ON cp_delivery_attempts (connector, configuration, run_id, id)"
            )
    for configuration in ("customers", "leads"):
        for index in range(5):
            _attempts(any_ledger, f"run{index}", 1, index + 1, configuration)
    assert retention_module._has_run_index(any_ledger) is run_index

    report = apply_retention(_connector("{attempts: 2 runs}", ("customers", "leads")), storage, any_ledger, now=NOW)

    for configuration in ("customers", "leads"):
        assert _attempt_runs(any_ledger, configuration) == {"run3": 4, "run4": 5}
    assert [(r.part, r.count) for r in report.removals] == [("customers", 6), ("leads", 6)]


def test_fewer_runs_than_kept_remove_no_attempt(any_ledger, storage):
    _attempts(any_ledger, "run1", 500, 2)
    _attempts(any_ledger, "run2", 400, 2)

    report = apply_retention(_connector("{attempts: 2 runs}"), storage, any_ledger, now=NOW)

    assert report.nothing_removed and _attempt_runs(any_ledger) == {"run1": 2, "run2": 2}


def test_a_big_prune_deletes_in_chunks_and_walks_in_pages(ledger, storage, monkeypatch):
    monkeypatch.setattr(retention_module, "DELETE_CHUNK", 10)
    monkeypatch.setattr(retention_module, "_PAGE", 4)
    _attempts(ledger, "old", 200, 37)
    _attempts(ledger, "new", 1, 5)
    chunks: list[int] = []

    @sa.event.listens_for(ledger.engine, "commit")
    def _count_commit(_conn) -> None:
        chunks.append(1)

    report = apply_retention(_connector("{attempts: 90 days}"), storage, ledger, now=NOW)

    assert report.attempts_deleted == 37 and _attempt_runs(ledger) == {"new": 5}
    assert len(chunks) == 4  # 10 + 10 + 10 + 7


def test_a_dry_run_removes_nothing_and_counts_what_a_real_run_removes(any_ledger, storage):
    _snapshot(storage, "old", 200, size=300)
    _snapshot(storage, "new", 1)
    _write_file(storage.integration_dir("sync", "customers"), "old.parquet", 200, size=70)
    _write_file(storage.integration_dir("sync", "customers"), "new.parquet", 1)
    _attempts(any_ledger, "old", 200, 3)
    _attempts(any_ledger, "new", 1, 1)
    connector = _connector("{snapshots: 90 days, audit_files: 1 runs, attempts: 90 days}")

    dry = apply_retention(connector, storage, any_ledger, now=NOW, dry_run=True)

    assert len(_names(storage.integration_dir("sync", SNAPSHOT_PART))) == 4
    assert len(_names(storage.integration_dir("sync", "customers"))) == 2
    assert _attempt_runs(any_ledger) == {"old": 3, "new": 1}
    real = apply_retention(connector, storage, any_ledger, now=NOW)
    assert dry.dry_run and dry.removals == real.removals
    assert [(r.kind, r.count, r.bytes) for r in real.removals] == [
        (SNAPSHOTS, 1, 310),
        (AUDIT_FILES, 1, 70),
        (ATTEMPTS, 3, 0),
    ]


# ---- 3. connector-pipelines prune ------------------------------------------------------------------------------


RETAINED = BASIC_SYNC + "  retention: {snapshots: 1 runs, audit_files: 1 runs, attempts: 1 runs}\n"


def _two_runs(project, source_db):
    """A first run of three records, then one with a record changed: the runs' results."""
    first = project.run()
    assert first.success
    source_db.execute("UPDATE customers SET name = 'Renamed' WHERE customer_id = 2")
    second = project.run()
    assert second.success
    return first, second


def _assert_ledger_keeps(project, run_id: str) -> None:
    """Only this run's attempt is left, and every record's state."""
    ledger = project.ledger()
    try:
        assert _attempt_runs(ledger) == {run_id: 1}
        assert len(ledger.state("sync", "customers")) == 3
    finally:
        ledger.dispose()


def test_each_run_applies_the_retention_at_its_end(integration_project, source_db, tmp_path):
    source_db.add_customers(3)
    project = integration_project(RETAINED)
    first, second = _two_runs(project, source_db)
    storage = Storage(tmp_path / "storage")
    snapshots = storage.integration_dir("sync", SNAPSHOT_PART)
    audits = storage.integration_dir("sync", "customers")
    assert _names(snapshots) == [f"{second.run_id}.json", f"{second.run_id}.parquet"]
    assert _names(audits) == [f"{second.run_id}.parquet"]
    _assert_ledger_keeps(project, second.run_id)


def test_prune_removes_what_real_runs_left_beyond_the_retention(integration_project, source_db, cli, tmp_path):
    source_db.add_customers(3)
    # The runs keep everything; the retention is tightened afterwards, as a team would before a first prune.
    project = integration_project(RETAINED.replace("1 runs", "keep"))
    first, second = _two_runs(project, source_db)
    integration_project(RETAINED)
    storage = Storage(tmp_path / "storage")
    snapshots = storage.integration_dir("sync", SNAPSHOT_PART)
    audits = storage.integration_dir("sync", "customers")
    assert f"{first.run_id}.parquet" in _names(snapshots) and f"{first.run_id}.parquet" in _names(audits)

    dry = cli("prune", "--dry-run")

    assert dry.exit_code == 0, dry.output
    assert f"{first.run_id}.parquet" in _names(snapshots)
    assert "WOULD REMOVE" in dry.output and "dry run: nothing was removed" in dry.output
    assert "3 attempt(s)" in dry.output

    result = cli("prune", "sync")

    assert result.exit_code == 0, result.output
    assert f"{first.run_id}.parquet" not in _names(snapshots) and f"{first.run_id}.json" not in _names(snapshots)
    assert f"{second.run_id}.parquet" in _names(snapshots)
    assert _names(audits) == [f"{second.run_id}.parquet"]
    _assert_ledger_keeps(project, second.run_id)
    lines = result.output.splitlines()
    assert lines[0].split() == ["CONNECTOR", "KIND", "PART", "REMOVED", "SIZE"]
    assert any(line.split()[:5] == ["sync", "snapshots", "data_set", "1", "file(s)"] for line in lines)
    assert any(line.split()[:5] == ["sync", "audit", "files", "customers", "1"] for line in lines)
    assert any(line.split()[:5] == ["sync", "attempts", "customers", "3", "attempt(s)"] for line in lines)
    assert lines[-1].startswith("total: removed 2 file(s) (") and lines[-1].endswith(
        "and 3 attempt(s) across 1 connector(s)"
    )

    again = cli("prune")

    assert again.exit_code == 0
    assert "nothing" in again.output and "total: removed 0 file(s) (0 B) and 0 attempt(s)" in again.output


def test_prune_refuses_an_unknown_connector_with_exit_code_2(integration_project, cli):
    integration_project(RETAINED)

    result = cli("prune", "snyc")

    assert result.exit_code == 2
    assert "no connector named 'snyc'" in result.output and "did you mean 'sync'" in result.output


def test_prune_refuses_a_connector_of_another_kind_with_exit_code_2(integration_project, cli, tmp_path):
    integration_project(RETAINED)
    resources = tmp_path / "resources"
    with (resources / "connections.yaml").open("a") as connections:
        connections.write("  out:\n    type: folder\n    path: out\n")
    (resources / "connectors" / "nightly.yaml").write_text(
        textwrap.dedent(
            """
            kind: extract
            extract:
              source: {connection: source, query: SELECT 1 AS one}
              format: csv
              destinations:
                - connection: out
            """
        )
    )

    result = cli("prune", "nightly")

    assert result.exit_code == 2, result.output
    assert "this command is for integrations" in result.output


def test_prune_help_says_what_it_keeps(cli):
    result = cli("prune", "--help")

    assert result.exit_code == 0
    assert "--dry-run" in result.output and "attempts not yet written back" in result.output
