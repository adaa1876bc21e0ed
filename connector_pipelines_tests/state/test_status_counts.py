"""The ledger's records per status, kept by triggers (`state/status_counts.py`), on SQLite and PostgreSQL: after
upserts that insert, change and keep statuses, a `reset`, an operator's own SQL, and on a ledger made before the
counts table existed, `counts()` equals a `GROUP BY status` over the records."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from connector_pipelines.state.ledger import AttemptRow, DeliveryLedger, RecordUpdate

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path, pg_database) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'ledger.db'}" if request.param == "sqlite" else pg_database.url


def _update(key: str, status: str) -> RecordUpdate:
    return RecordUpdate(key, status, "create", "f" * 16, "f" * 16 if status == "delivered" else None, 1, "ik", 1)


def _attempt(key: str, outcome: str) -> AttemptRow:
    return AttemptRow(key, "create", outcome, "ik", 201, 1, None, None, None, NOW, NOW)


def _grouped(ledger: DeliveryLedger, configuration: str) -> dict[str, int]:
    """The counts the slow way: every record of the configuration read."""
    query = sa.text(
        "SELECT status, count(*) FROM cp_delivery_records WHERE connector = 'c' AND configuration = :configuration "
        "GROUP BY status"
    )
    with ledger.engine.connect() as conn:
        return {status: count for status, count in conn.execute(query, {"configuration": configuration})}


def test_counts_follow_inserts_status_changes_and_unchanged_upserts(ledger_url: str) -> None:
    ledger = DeliveryLedger(ledger_url)
    try:
        ledger.write("c", "a", "run-1", [_update(str(i), "delivered") for i in range(5)])
        ledger.write("c", "a", "run-1", [_update(str(i), "failed") for i in range(3)], [_attempt("0", "failed")])
        ledger.write("c", "b", "run-1", [_update("0", "pending")])
        # The same status again, and a status changed back.
        ledger.write("c", "a", "run-2", [_update("4", "delivered"), _update("1", "skipped")])
        ledger.write("c", "a", "run-3", [_update("1", "delivered")])

        assert ledger.counts("c", "a") == _grouped(ledger, "a") == {"delivered": 3, "failed": 2}
        assert ledger.counts("c", "b") == _grouped(ledger, "b") == {"pending": 1}
    finally:
        ledger.dispose()


def test_counts_follow_a_reset_and_an_operators_own_sql(ledger_url: str) -> None:
    ledger = DeliveryLedger(ledger_url)
    try:
        ledger.write("c", "a", "run-1", [_update(str(i), "delivered") for i in range(6)])
        ledger.write("c", "b", "run-1", [_update(str(i), "delivered") for i in range(2)])
        with ledger.engine.begin() as conn:
            conn.execute(sa.text("UPDATE cp_delivery_records SET status = 'pending' WHERE record_key IN ('1', '2')"))
            conn.execute(sa.text("DELETE FROM cp_delivery_records WHERE configuration = 'a' AND record_key = '5'"))

        assert ledger.counts("c", "a") == _grouped(ledger, "a") == {"delivered": 3, "pending": 2}
        assert ledger.counts("c", "b") == {"delivered": 1, "pending": 1}

        assert ledger.reset("c", "a") == 5
        assert ledger.counts("c", "a") == {} == _grouped(ledger, "a")
        assert ledger.counts("c", "b") == {"delivered": 1, "pending": 1}
    finally:
        ledger.dispose()


def test_a_ledger_made_before_the_counts_gets_them_counted_on_open(ledger_url: str) -> None:
    ledger = DeliveryLedger(ledger_url)
    ledger.write("c", "a", "run-1", [_update(str(i), "delivered") for i in range(4)] + [_update("9", "failed")])
    with ledger.engine.begin() as conn:  # as an earlier version left it: records, no counts table, no triggers
        for name in ("cp_records_count_insert", "cp_records_count_update", "cp_records_count_delete"):
            on = "" if ledger.engine.dialect.name == "sqlite" else " ON cp_delivery_records"
            conn.execute(sa.text(f"DROP TRIGGER {name}{on}"))
        conn.execute(sa.text("DROP TABLE cp_delivery_status_counts"))
    ledger.dispose()

    reopened = DeliveryLedger(ledger_url)
    try:
        assert reopened.counts("c", "a") == {"delivered": 4, "failed": 1}
        reopened.write("c", "a", "run-2", [_update("9", "delivered")])
        assert reopened.counts("c", "a") == {"delivered": 5}
    finally:
        reopened.dispose()


def test_records_in_an_open_in_flight_marker_count_as_in_flight(ledger_url: str) -> None:
    ledger = DeliveryLedger(ledger_url)
    try:
        ledger.write("c", "a", "run-1", [_update(str(i), "delivered") for i in range(3)])
        marker = ledger.mark_in_flight("c", "a", "run-2", [_update("0", "in_flight"), _update("7", "in_flight")])

        assert ledger.counts("c", "a") == {"delivered": 2, "in_flight": 2}

        ledger.write("c", "a", "run-2", [_update("0", "delivered"), _update("7", "failed")], settle=[marker])
        assert ledger.counts("c", "a") == _grouped(ledger, "a") == {"delivered": 3, "failed": 1}
    finally:
        ledger.dispose()
