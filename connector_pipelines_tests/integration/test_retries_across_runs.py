"""Retries across runs, end to end against the loopback HTTP target: a record the target refuses (422) waits for
its backoff, becomes a dead letter after `retry_across_runs.max_attempts` failed runs, shows as such in the
metadata, `trace` and `plan`, and `push --key` sends it again.

The engine tests run `IntegrationDelivery` with the clock they choose (the engine's `clock`), so an hour passes in
no time; the Dagster and CLI tests use a zero backoff and count runs instead.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pyarrow.csv as pacsv
import sqlalchemy as sa

from connector_pipelines.integration.data_set import DataSetReader
from connector_pipelines.integration.delivery import DeliveryReport, IntegrationDelivery
from connector_pipelines.integration.inspect import sql_source
from connector_pipelines.state.ledger import DeliveryLedger, RecordUpdate
from connector_pipelines.transports.http import HttpDeliveryClient
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC

T0 = dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC)
REFUSED = ("email", "c3@example.test")  # the target answers 422 for customer 3


def _minutes(n: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


class Engine:
    """Runs one configuration's delivery in process at a chosen time, as the delivery asset would."""

    def __init__(self, project):
        self.project = project

    def run_at(self, moment: dt.datetime) -> DeliveryReport:
        loaded = self.project.load()
        connector = loaded.connector(self.project.name).spec
        source = sql_source(loaded, "source")
        ledger = self.project.ledger()
        try:
            reader = DataSetReader(source, connector.integration.data_set)
            delivery = IntegrationDelivery(
                connector,
                connector.integration.configurations[0],
                ledger,
                run_id=uuid.uuid4().hex,
                client_factory=lambda: HttpDeliveryClient(loaded.connections["target"]),
                clock=lambda: moment,
            )
            return delivery.run(reader.read())
        finally:
            ledger.dispose()
            source.dispose()

    def record(self, key: str) -> dict:
        ledger = self.project.ledger()
        try:
            return ledger.record("sync", "customers", key)
        finally:
            ledger.dispose()


def _sent_to(target, key: str) -> int:
    return sum(1 for r in target.requests if r.path == f"/customers/{key}")


def _row(report: DeliveryReport, key: str) -> dict:
    return next(row for row in report.rows if row["key"] == key)


SCHEDULED = BASIC_SYNC + "  retry_across_runs: {max_attempts: 3, initial_backoff: 5 minutes, max_backoff: 1 hour}\n"


def test_a_refused_record_waits_out_its_backoff_then_becomes_a_dead_letter(integration_project, source_db, http_target):
    source_db.add_customers(5)
    http_target.reject_field = REFUSED
    engine = Engine(integration_project(SCHEDULED))

    first = engine.run_at(T0)
    assert (first.counts["delivered"], first.counts["failed"]) == (4, 1)
    record = engine.record("3")
    assert (record["status"], record["failed_runs"], record["http_status"]) == ("failed", 1, 422)
    assert record["retry_after"].replace(tzinfo=dt.UTC) == _minutes(5)

    sent = len(http_target.requests)
    waiting = engine.run_at(_minutes(4))  # within the first backoff (5 minutes)
    assert len(http_target.requests) == sent
    assert (waiting.counts["backoff"], waiting.counts["failed"], waiting.counts["unchanged"]) == (1, 0, 4)
    assert _row(waiting, "3")["status"] == "backoff"
    assert "retry after 2026-12-03 08:05:00 UTC" in _row(waiting, "3")["error"]
    assert engine.record("3")["failed_runs"] == 1  # waiting is not failing again

    second = engine.run_at(_minutes(6))  # after it: sent, refused again, and the wait doubles
    assert _sent_to(http_target, "3") == 2 and second.counts["failed"] == 1
    record = engine.record("3")
    assert (record["status"], record["failed_runs"]) == ("failed", 2)
    assert record["retry_after"].replace(tzinfo=dt.UTC) == _minutes(16)

    engine.run_at(_minutes(15))
    assert _sent_to(http_target, "3") == 2

    third = engine.run_at(_minutes(17))  # the third failed run of max_attempts 3
    assert _sent_to(http_target, "3") == 3
    assert (third.counts["failed"], third.counts["new_dead_letter"], third.counts["dead_letter"]) == (1, 1, 1)
    assert third.ledger_counts == {"delivered": 4, "dead_letter": 1}
    record = engine.record("3")
    assert (record["status"], record["failed_runs"], record["retry_after"]) == ("dead_letter", 3, None)
    assert "dead letter after 3 failed run(s)" in record["last_error"]

    http_target.reject_field = None  # fixed at the target: a dead letter still waits for a person
    later = engine.run_at(T0 + dt.timedelta(days=30))
    assert _sent_to(http_target, "3") == 3
    assert (later.counts["dead_letter"], later.counts["new_dead_letter"], later.counts["failed"]) == (1, 0, 0)
    assert _row(later, "3")["status"] == "dead_letter"
    assert "push" in _row(later, "3")["error"]


def test_a_dead_letter_whose_data_changes_is_sent_as_a_new_version_from_attempt_1(
    integration_project, source_db, http_target
):
    source_db.add_customers(3)
    http_target.reject_field = REFUSED
    engine = Engine(integration_project(SCHEDULED.replace("max_attempts: 3", "max_attempts: 1")))
    engine.run_at(T0)
    assert engine.record("3")["status"] == "dead_letter"
    engine.run_at(_minutes(1))
    assert _sent_to(http_target, "3") == 1

    source_db.execute("UPDATE customers SET balance = 99 WHERE customer_id = 3")  # still refused by email
    engine.run_at(_minutes(2))

    assert _sent_to(http_target, "3") == 2
    record = engine.record("3")
    assert (record["status"], record["failed_runs"]) == ("dead_letter", 1)  # one failed run of this version


def test_an_unreachable_target_is_not_counted_as_a_failed_run(integration_project, source_db, http_target):
    source_db.add_customers(2)
    engine = Engine(integration_project(SCHEDULED))
    http_target.fail_next(100, status=500)  # every try of the run (the connection retries 4 times)

    failed = engine.run_at(T0)

    assert failed.counts["failed"] == 2
    record = engine.record("1")
    assert (record["status"], record["failed_runs"], record["retry_after"]) == ("failed", 0, None)
    http_target.clear_faults()
    assert engine.run_at(_minutes(1)).counts["delivered"] == 2  # tried again on the next run, no wait


# ---- through Dagster and the CLI ------------------------------------------------------------------------------

NO_WAIT = BASIC_SYNC + "  retry_across_runs: {max_attempts: 2, initial_backoff: 0}\n"


def test_a_dead_letter_shows_in_metadata_trace_and_plan_and_a_push_revives_it(
    integration_project, source_db, http_target, cli, tmp_path
):
    source_db.add_customers(5)
    http_target.reject_field = REFUSED
    project = integration_project(NO_WAIT)

    first = project.run().metadata["customers"]
    assert (first["failed"], first["new_dead_letter"], first["dead_letter"]) == (1, 0, 0)
    second = project.run().metadata["customers"]
    assert (second["failed"], second["new_dead_letter"], second["dead_letter"]) == (1, 1, 1)
    assert _sent_to(http_target, "3") == 2

    http_target.reject_field = None
    third = project.run().metadata["customers"]
    assert _sent_to(http_target, "3") == 2  # never sent by a later run
    assert (third["failed"], third["new_dead_letter"], third["dead_letter"], third["backoff"]) == (0, 0, 1, 0)
    rows = {r.data["key"]: r.data for r in third["records"].records}
    assert rows["3"]["status"] == "dead_letter" and "retry_across_runs.max_attempts: 2" in rows["3"]["error"]

    trace = cli("trace", "sync", "3")
    assert trace.exit_code == 0, trace.output
    assert trace.output.startswith(
        "customers: dead letter: the target refused it in 2 runs (retry_across_runs.max_attempts: 2); no run sends "
        "it again until its data changes or the key is pushed; last error (HTTP 422): "
    )
    outcomes = [line.split()[4] for line in trace.output.splitlines()[2:]]  # after the state and the header
    assert outcomes == ["failed", "dead_letter"], trace.output

    plan = cli("plan", "sync", "--output", str(tmp_path / "plan.csv"))
    assert plan.exit_code == 0, plan.output
    assert "0 waiting for their retry time, 1 dead letter" in plan.output
    assert "  dead letter: key 3: dead letter: the target refused it in 2 runs" in plan.output
    planned = {str(row["record_key"]): row for row in pacsv.read_csv(tmp_path / "plan.csv").to_pylist()}
    assert planned["3"]["action"] == "dead_letter" and "max_attempts: 2" in planned["3"]["reason"]
    assert planned["1"]["action"] == "unchanged"

    push = cli("push", "sync", "--key", "3")
    assert push.exit_code == 0, push.output
    assert "key 3 (customers) was a dead letter after 2 failed run(s): sent now, and counted from attempt 1" in (
        push.output
    )
    assert "customers: key 3: delivered" in push.output
    assert _sent_to(http_target, "3") == 3  # once more
    record = project.ledger().record("sync", "customers", "3")
    assert (record["status"], record["failed_runs"], record["retry_after"]) == ("delivered", 0, None)


def test_a_run_within_the_backoff_does_not_send_and_says_until_when(integration_project, source_db, http_target, cli):
    source_db.add_customers(3)
    http_target.reject_field = REFUSED
    project = integration_project(BASIC_SYNC + "  retry_across_runs: {initial_backoff: 1 hour}\n")
    assert project.run().metadata["customers"]["failed"] == 1

    second = project.run().metadata["customers"]

    assert _sent_to(http_target, "3") == 1
    assert (second["backoff"], second["failed"], second["dead_letter"]) == (1, 0, 0)
    row = next(r.data for r in second["records"].records if r.data["key"] == "3")
    assert row["status"] == "backoff" and "failed 1 of at most 10 runs: retry after " in row["error"]
    trace = cli("trace", "sync", "3")
    assert trace.output.startswith("customers: failed 1 of at most 10 runs: retry after ")
    plan = cli("plan", "sync")
    assert "1 waiting for their retry time, 0 dead letter" in plan.output and "  waits: key 3: failed 1" in plan.output


# POST, and the target is not known to honour Idempotency-Key: a record in doubt is held (integration/recovery.py).
HELD_IN_DOUBT = NO_WAIT.replace(
    "method: PUT\n        path: /customers/{{id}}", "method: POST\n        path: /customers"
)


def test_a_pushed_record_in_doubt_keeps_its_key_whatever_its_failed_runs(
    integration_project, source_db, http_target, cli
):
    source_db.add_customers(3)
    http_target.reject_field = REFUSED
    project = integration_project(HELD_IN_DOUBT)
    project.run()  # refused: one failed run
    http_target.reject_field = None
    http_target.drop_next(1)
    project.run()  # sent again, no answer: in doubt under the key of that send
    doubted = project.ledger().record("sync", "customers", "3")
    assert (doubted["status"], doubted["failed_runs"]) == ("in_flight", 1)
    held = project.run().metadata["customers"]
    assert held["held"] == 1

    push = cli("push", "sync", "--key", "3")

    assert push.exit_code == 0, push.output
    assert "was a dead letter" not in push.output and "was waiting" not in push.output
    assert http_target.requests[-1].idempotency_key == doubted["idempotency_key"]
    record = project.ledger().record("sync", "customers", "3")
    assert (record["status"], record["failed_runs"], record["idempotency_key"]) == (
        "delivered",
        0,
        doubted["idempotency_key"],
    )


# ---- a ledger made before these columns ------------------------------------------------------------------------

OLD_RECORDS_TABLE = """
CREATE TABLE cp_delivery_records (
    connector VARCHAR(64) NOT NULL, configuration VARCHAR(64) NOT NULL, record_key VARCHAR(512) NOT NULL,
    status VARCHAR(16) NOT NULL, operation VARCHAR(16) NOT NULL, fingerprint VARCHAR(32),
    delivered_fingerprint VARCHAR(32), version INTEGER NOT NULL, idempotency_key VARCHAR(64), batch_key VARCHAR(64),
    attempts INTEGER NOT NULL, last_error TEXT, http_status INTEGER, target_ref VARCHAR(256), run_id VARCHAR(64),
    updated_at TIMESTAMP NOT NULL, delivered_at TIMESTAMP,
    PRIMARY KEY (connector, configuration, record_key)
)
"""
OLD_ROW = (
    "INSERT INTO cp_delivery_records (connector, configuration, record_key, status, operation, fingerprint, version, "
    "attempts, updated_at) VALUES ('sync', 'customers', '7', 'failed', 'create', 'fp', 1, 3, '2026-01-01 00:00:00')"
)


def _old_ledger_gets_the_new_columns(url: str, engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(OLD_RECORDS_TABLE)
        conn.exec_driver_sql(OLD_ROW)

    ledger = DeliveryLedger(url)
    try:
        entry = ledger.state("sync", "customers")["7"]
        assert (entry.status, entry.attempts, entry.failed_runs, entry.retry_after) == ("failed", 3, 0, None)
        columns = {c["name"] for c in sa.inspect(ledger.engine).get_columns("cp_delivery_records")}
        assert {"failed_runs", "retry_after"} <= columns
        update = RecordUpdate("7", "failed", "create", "fp", None, 2, "k", 4, failed_runs=2, retry_after=_minutes(5))
        ledger.write("sync", "customers", "run", [update])
        entry = ledger.state("sync", "customers")["7"]
        assert (entry.failed_runs, entry.retry_after) == (2, _minutes(5))  # aware UTC, from either driver
    finally:
        ledger.dispose()
    DeliveryLedger(url).dispose()  # opening it again finds nothing to add


def test_a_sqlite_ledger_made_before_retries_across_runs_gets_their_columns(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = sa.create_engine(url)
    try:
        _old_ledger_gets_the_new_columns(url, engine)
    finally:
        engine.dispose()


def test_a_postgresql_ledger_made_before_retries_across_runs_gets_their_columns():
    schema = f"cp_ledger_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        _old_ledger_gets_the_new_columns(url, engine)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
