"""The integration engine on each source dialect: SQLite, PostgreSQL and MariaDB (`source_database` is
parametrized over the three; each test has its own tables).

The same core as the SQLite-only tests (delivery once, then only changes, deletes; the record-change sensors; roles;
write-back), with the types a real source has: integer and text keys, exact decimal balances, time-zone-aware
timestamps with microseconds. What the loopback target received is compared with what the rows hold: a decimal keeps
its digits, a timestamp names the same instant (PostgreSQL's seeding session runs in America/New_York, the engine's
in UTC, so a value shifted by a zone on the way would show).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal

import dagster as dg
import pytest

from connector_pipelines_tests.fixtures.integration import RunResult

UTC = dt.UTC


@pytest.fixture(scope="module")
def _shared_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:  # one per module: building one takes ~2 s
        yield instance


@pytest.fixture
def fresh_instance(_shared_instance: dg.DagsterInstance) -> dg.DagsterInstance:
    """This module's tests share one instance (they tell their runs apart), overriding the per-test one."""
    return _shared_instance


def _at(text: str) -> dt.datetime:
    """An aware datetime from ISO text with its offset."""
    value = dt.datetime.fromisoformat(text)
    assert value.tzinfo is not None
    return value


# Four customers whose values a dialect could bend: balances with up to 14 significant digits and a trailing zero,
# timestamps written with offsets, with microseconds, and one whose year differs between its zone and UTC.
CUSTOMERS = [
    {"customer_id": 1, "code": "C-001", "name": "Ann", "balance": "12345678.91", "owner_id": 1,
     "updated_at": _at("2026-01-02T10:15:30.123456+02:00")},
    {"customer_id": 2, "code": "C-002", "name": "Bob", "balance": "0.10", "owner_id": 2,
     "updated_at": _at("2026-03-29T01:30:00.000001+00:00")},
    {"customer_id": 3, "code": "C-003", "name": "Cem", "balance": "-42.05", "owner_id": 3,
     "updated_at": _at("2025-12-31T23:59:59.999999-05:00")},
    {"customer_id": 4, "code": "C-004", "name": "Dee", "balance": "999999999999.99", "owner_id": None,
     "updated_at": _at("2026-02-28T12:00:00+00:00")},
]  # fmt: skip
LATEST = max(c["updated_at"] for c in CUSTOMERS)


def _seed(db, rows=CUSTOMERS) -> None:
    db.add_customers([{**row, "balance": db.balance(row["balance"])} for row in rows])


def _spec(key: str, extra: str = "", triggers: str = "[on_create, on_update, on_delete]") -> str:
    """Customers pushed as PUT /customers/{code}, keyed in the ledger by `key` (customer_id or code)."""
    return f"""
kind: integration
integration:
  data_set:
    connection: source
    table: {{customers}}
    key: {key}
    updated_at: updated_at
{extra}  triggers: {triggers}
  target:
    connection: target
    fields:
      - {{name: id, type: text, required: true}}
      - {{name: customer_id, type: integer, required: true}}
      - {{name: name, type: text, required: true}}
      - {{name: balance, type: currency}}
      - {{name: updated_at, type: datetime}}
  configurations:
    - name: customers
      mapping:
        - {{target: id, source: code}}
        - {{target: customer_id, source: customer_id}}
        - {{target: name, source: name}}
        - {{target: balance, source: balance}}
        - {{target: updated_at, source: updated_at}}
      request:
        method: PUT
        path: /customers/{{{{id}}}}
        body: {{id: "{{{{id}}}}", customer_id: "{{{{customer_id}}}}", name: "{{{{name}}}}", balance: "{{{{balance}}}}",
               updated_at: "{{{{updated_at}}}}"}}
      target_ref: id
      delete:
        method: DELETE
        path: /customers/{{{{target_ref}}}}
"""


def _received_instant(text: str, dialect: str) -> dt.datetime:
    """The instant a timestamp the target received names. PostgreSQL's timestamptz must arrive with its offset (without
    one the receiver could not tell the instant); MariaDB's DATETIME and SQLite's text hold UTC wall-clock time."""
    value = dt.datetime.fromisoformat(text)
    if dialect == "postgresql":
        assert value.tzinfo is not None, f"a timestamptz arrived without its offset: {text}"
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _assert_received(body: dict, customer: dict, dialect: str) -> None:
    assert body["id"] == customer["code"]
    assert body["customer_id"] == customer["customer_id"] and isinstance(body["customer_id"], int)
    assert body["name"] == customer["name"]
    # JSON carries the amount as a number: its shortest text must be the decimal's own digits.
    assert Decimal(repr(body["balance"])) == Decimal(customer["balance"]), (body["balance"], customer["balance"])
    received = _received_instant(body["updated_at"], dialect)
    # Instants compare to the microsecond: a shift by a zone or a lost fraction both fail here.
    assert received == customer["updated_at"], f"{body['updated_at']} is not {customer['updated_at'].isoformat()}"


def _puts(target, since: int = 0) -> dict[str, dict]:
    """Path -> body of the PUTs the target received, from the `since`-th request on."""
    return {r.path: r.body for r in target.requests[since:] if r.method == "PUT"}


def _sent(target, since: int = 0) -> list[tuple[str, str]]:
    return sorted((r.method, r.path) for r in target.requests[since:])


def _failures(result: RunResult) -> str:
    """What the failed steps said, for an assertion's message."""
    return "\n".join(
        event.step_failure_data.user_failure_data.description
        if event.step_failure_data.user_failure_data
        else event.step_failure_data.error.message
        for event in result.result.get_step_failure_events()
    )


def _op_config(request: dg.RunRequest) -> dict:
    configs = [op["config"] for op in request.run_config["ops"].values()]
    assert all(c == configs[0] for c in configs), "every asset of the job must read the same scope"
    return configs[0]


# ---- delivery --------------------------------------------------------------------------------------------------


def test_first_run_delivers_every_record_then_only_the_changed_one_then_the_delete(
    dialect_project, source_database, http_target
):
    db = source_database
    _seed(db)
    project = dialect_project(_spec(key="code"))

    first = project.run()

    assert first.success, _failures(first)
    counts = first.metadata["customers"]
    assert (counts["sent"], counts["delivered"], counts["create"], counts["failed"]) == (4, 4, 4, 0)
    bodies = _puts(http_target)
    assert sorted(bodies) == [f"/customers/C-00{i}" for i in range(1, 5)]
    for customer in CUSTOMERS:
        _assert_received(bodies[f"/customers/{customer['code']}"], customer, db.dialect)
    assert project.ledger().record("sync", "customers", "C-001")["status"] == "delivered"

    changed = {**CUSTOMERS[1], "balance": "1234.56", "updated_at": _at("2026-04-01T09:00:00.5+09:00")}
    db.update_customer(2, balance=db.balance(changed["balance"]), updated_at=changed["updated_at"])
    mark = len(http_target.requests)
    second = project.run()

    counts = second.metadata["customers"]  # a scheduled run reads what was updated since the first: C-002
    assert (counts["sent"], counts["update"], counts["unchanged"]) == (1, 1, 0)
    assert second.metadata["data_set"]["scope"].startswith("updated_at >= ")
    assert _sent(http_target, mark) == [("PUT", "/customers/C-002")]
    _assert_received(_puts(http_target, mark)["/customers/C-002"], changed, db.dialect)

    # on_delete without a change log: the sensor learns the key set, then asks for a delete run when it changes.
    learned = project.tick(None)
    db.execute("DELETE FROM {customers} WHERE code = 'C-003'")
    gone = project.tick(learned.cursor)
    assert len(gone.run_requests) == 1
    assert _op_config(gone.run_requests[0]) == {"detect_deletes": True, "operations": ["delete"]}
    mark = len(http_target.requests)
    third = project.execute(gone.run_requests[0])

    assert third.success, _failures(third)
    assert _sent(http_target, mark) == [("DELETE", "/customers/C-003")]
    assert sorted(http_target.records("customers")) == ["C-001", "C-002", "C-004"]
    assert project.ledger().record("sync", "customers", "C-003")["delivered_fingerprint"] is None


# ---- the change sensors ----------------------------------------------------------------------------------------


CHANGE_LOG = "    change_log: {table: {changes}, operation: operation, sequence: sequence_id}\n"


def test_change_log_sensor_asks_for_a_run_only_when_a_row_changed(dialect_project, source_database, http_target):
    db = source_database
    _seed(db)  # the database's triggers log four creates: sequences 1-4
    project = dialect_project(_spec(key="customer_id", extra=CHANGE_LOG))

    first = project.tick(None)
    assert len(first.run_requests) == 1
    assert _op_config(first.run_requests[0]) == {"changes_until": "4", "operations": ["create", "delete", "update"]}
    created = project.execute(first.run_requests[0])
    assert created.success, _failures(created)
    assert sorted(http_target.records("customers")) == ["C-001", "C-002", "C-003", "C-004"]

    idle = project.tick(first.cursor)
    assert idle.run_requests == [] and idle.cursor == first.cursor

    db.update_customer(3, name="Cemal")  # sequence 5
    changed = project.tick(idle.cursor)
    assert len(changed.run_requests) == 1
    config = _op_config(changed.run_requests[0])
    assert (config["changes_after"], config["changes_until"]) == ("4", "5")
    mark = len(http_target.requests)
    result = project.execute(changed.run_requests[0])
    assert result.success, _failures(result)
    assert result.metadata["data_set"]["rows"] == 1  # the other three are not even read
    assert _sent(http_target, mark) == [("PUT", "/customers/C-003")]
    assert http_target.records("customers")["C-003"]["name"] == "Cemal"

    assert project.tick(changed.cursor).run_requests == []

    db.execute("DELETE FROM {customers} WHERE customer_id = 1")  # sequence 6
    deleted = project.tick(changed.cursor)
    assert len(deleted.run_requests) == 1
    mark = len(http_target.requests)
    removed = project.execute(deleted.run_requests[0])
    assert removed.success, _failures(removed)
    assert _sent(http_target, mark) == [("DELETE", "/customers/C-001")]
    assert json.loads(deleted.cursor) == {"sequence": "6"}
    assert project.tick(deleted.cursor).run_requests == []


def test_updated_at_sensor_keeps_microseconds_and_asks_only_for_newer_rows(
    dialect_project, source_database, http_target
):
    db = source_database
    _seed(db)
    project = dialect_project(_spec(key="code", triggers="[on_create, on_update]"))

    first = project.tick(None)
    assert len(first.run_requests) == 1
    cursor = json.loads(first.cursor)["updated_at"]
    assert _received_instant(cursor.replace(" ", "T"), db.dialect) == LATEST  # to the microsecond
    everything = project.execute(first.run_requests[0])
    assert everything.success, _failures(everything)
    assert len(http_target.records("customers")) == 4

    # A cursor that lost its microseconds would see the newest row as newer than itself on every tick.
    idle = project.tick(first.cursor)
    assert idle.run_requests == [] and idle.cursor == first.cursor

    newer = {**CUSTOMERS[0], "name": "Annika", "updated_at": LATEST + dt.timedelta(microseconds=1)}
    db.update_customer(1, name=newer["name"], updated_at=newer["updated_at"])
    changed = project.tick(first.cursor)
    assert len(changed.run_requests) == 1
    assert _op_config(changed.run_requests[0]) == {"updated_after": cursor, "operations": ["create", "update"]}
    mark = len(http_target.requests)
    result = project.execute(changed.run_requests[0])

    assert result.success, _failures(result)
    # C-002 sits on the old cursor (read again, inclusive) but is unchanged: only C-001 is sent.
    assert result.metadata["data_set"]["rows"] == 2
    assert _sent(http_target, mark) == [("PUT", "/customers/C-001")]
    _assert_received(_puts(http_target, mark)["/customers/C-001"], newer, db.dialect)
    assert project.tick(changed.cursor).run_requests == []


# ---- roles -----------------------------------------------------------------------------------------------------


ROLES = "  roles: {allowed: [sales], table: {roles}, user_column: user_id, role_column: role}\n"


def test_roles_refuse_owners_without_the_role_and_a_null_owner(dialect_project, source_database, http_target):
    db = source_database
    _seed(db)  # owners 1, 2, 3 and NULL
    db.add_customers(
        [{"customer_id": 5, "code": "C-005", "name": "Eve", "balance": db.balance("5.00"), "owner_id": 9,
          "updated_at": _at("2026-01-01T00:00:00+00:00")}]
    )  # fmt: skip
    db.execute("INSERT INTO {roles} (user_id, role) VALUES (1, 'sales'), (2, 'support'), (3, 'sales'), (3, 'admin')")
    project = dialect_project(_spec(key="customer_id", extra="    owner: owner_id\n" + ROLES))

    result = project.run()

    assert sorted(http_target.records("customers")) == ["C-001", "C-003"]
    assert result.metadata["customers"]["skipped"] == 3
    ledger = project.ledger()
    assert ledger.record("sync", "customers", "2")["last_error"] == "owner 2 holds none of the roles sales"
    assert ledger.record("sync", "customers", "5")["last_error"] == "owner 9 holds none of the roles sales"
    assert "has no owner" in ledger.record("sync", "customers", "4")["last_error"]
    assert ledger.record("sync", "customers", "4")["status"] == "skipped"


# ---- write-back ------------------------------------------------------------------------------------------------


def test_write_back_lands_in_the_source_with_each_records_status(dialect_project, source_database, http_target):
    db = source_database
    _seed(db)
    http_target.reject_field = ("name", "Bob")  # C-002 is refused by the target with 422
    # No wait between runs for the refused record (the default waits 5 minutes: test_retries_across_runs.py).
    project = dialect_project(
        _spec(key="code") + "  write_back: {table: {audit}}\n  retry_across_runs: {initial_backoff: 0}\n"
    )
    before = dt.datetime.now(UTC)

    first = project.run()
    http_target.reject_field = None
    second = project.run()  # C-002 is retried and delivered; the others are unchanged and not written again

    after = dt.datetime.now(UTC)
    runs = [first.run_id, second.run_id]
    rows = sorted(
        db.query(
            "SELECT record_key, operation, status, http_status, run_id, idempotency_key, finished_at FROM {audit}"
        ),
        key=lambda row: (row[0], runs.index(row[4])),  # finished_at may tie: MariaDB's DATETIME has whole seconds
    )
    assert [row[:5] for row in rows] == [
        ("C-001", "create", "delivered", 201, first.run_id),
        ("C-002", "create", "failed", 422, first.run_id),
        ("C-002", "create", "delivered", 201, second.run_id),
        ("C-003", "create", "delivered", 201, first.run_id),
        ("C-004", "create", "delivered", 201, first.run_id),
    ]
    applied = {r.path.rsplit("/", 1)[1]: r.idempotency_key for r in http_target.requests if r.outcome == "applied"}
    assert {row[0]: row[5] for row in rows if row[2] == "delivered"} == applied
    for row in rows:
        finished = _stored_instant(row[6], db.dialect)
        # MariaDB's DATETIME keeps whole seconds: allow the cut.
        assert before - dt.timedelta(seconds=1) <= finished <= after, (row[6], before, after)


def _stored_instant(value, dialect: str) -> dt.datetime:
    """A write-back `finished_at` as read back: aware on PostgreSQL, UTC wall-clock time elsewhere."""
    if isinstance(value, str):  # SQLite keeps it as text
        value = dt.datetime.fromisoformat(value)
    if dialect == "postgresql":
        assert value.tzinfo is not None
        return value
    assert value.tzinfo is None
    return value.replace(tzinfo=UTC)
