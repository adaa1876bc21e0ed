"""Integrations end to end through Dagster: a SQLite source, the loopback HTTP target, the ledger.

Each test runs the connector's job in process and checks what the target received, what the ledger and the
audit say, and what the materialization shows.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from connector_pipelines_tests.fixtures.integration import BASIC_SYNC, ROLES_SPEC


def _bodies(target, method: str | None = None) -> list[dict]:
    return [r.body for r in target.requests if method is None or r.method == method]


def test_first_run_delivers_every_record_with_typed_json(integration_project, source_db, http_target):
    source_db.add_customers(30)
    project = integration_project(BASIC_SYNC)

    result = project.run()

    assert result.success
    stored = http_target.records("customers")
    assert len(stored) == 30
    assert stored["7"]["name"] == "CUSTOMER 7" and stored["7"]["id"] == 7 and stored["7"]["balance"] == 73.5
    counts = result.metadata["customers"]
    assert (counts["sent"], counts["delivered"], counts["create"], counts["failed"]) == (30, 30, 30, 0)
    assert result.checks == {"no_duplicate_delivery": True, "rejected_rate": True}
    assert len(result.metadata["customers"]["records"].records) == 30
    keys = [r.headers.get("idempotency-key") for r in http_target.requests]
    assert len(set(keys)) == 30 and all(keys)


def test_unchanged_records_are_not_sent_again_and_changes_are(integration_project, source_db, http_target):
    source_db.add_customers(20)
    project = integration_project(BASIC_SYNC)
    assert project.run().success
    http_target.clear()

    unchanged = project.run()
    assert unchanged.metadata["customers"]["unchanged"] == 20
    assert http_target.requests == []

    source_db.execute("UPDATE customers SET name = 'Renamed' WHERE customer_id IN (3, 4)")
    source_db.add_customers(1, start=21)
    changed = project.run()
    counts = changed.metadata["customers"]
    assert (counts["update"], counts["create"], counts["unchanged"]) == (2, 1, 18)
    assert sorted(r.path for r in http_target.requests) == ["/customers/21", "/customers/3", "/customers/4"]
    assert http_target.records("customers")["3"]["name"] == "RENAMED"


def test_full_resync_sends_everything_again(integration_project, source_db, http_target):
    source_db.add_customers(5)
    project = integration_project(BASIC_SYNC)
    assert project.run().success
    http_target.clear()

    result = project.run(full=True)

    assert result.metadata["customers"]["sent"] == 5
    assert len(http_target.requests) == 5
    assert result.checks["no_duplicate_delivery"]


def test_a_record_that_fails_to_map_fails_alone_with_its_reason(integration_project, source_db, http_target):
    source_db.add_customers(10)
    source_db.execute("UPDATE customers SET name = '' WHERE customer_id = 4")  # name is a required target field
    # 1 in 10 fails to map: over the 5% default gate, which would send nothing (test_gates.py); allowed here.
    project = integration_project(BASIC_SYNC + "  checks: {max_mapping_failure_share: 0.2}\n")
    source_db.execute("UPDATE customers SET email = NULL WHERE customer_id = 5")  # optional: still delivered

    result = project.run()

    counts = result.metadata["customers"]
    assert (counts["delivered"], counts["failed"]) == (9, 1)
    assert "4" not in http_target.records("customers")
    ledger = project.ledger()
    record = ledger.record("sync", "customers", "4")
    assert record["status"] == "failed" and "name" in record["last_error"] and "required" in record["last_error"]
    audit = {row["record_key"]: row for row in project.audit_rows(counts)}
    assert audit["4"]["status"] == "failed" and audit["5"]["status"] == "delivered"


def test_rejected_records_fail_alone_and_are_retried_next_run(integration_project, source_db, http_target):
    source_db.add_customers(10)
    http_target.reject_field = ("email", "c3@example.test")
    # No wait between runs (the default waits 5 minutes after a refusal: test_retries_across_runs.py).
    project = integration_project(BASIC_SYNC + "  retry_across_runs: {initial_backoff: 0}\n")

    first = project.run()
    assert first.metadata["customers"]["failed"] == 1 and first.metadata["customers"]["delivered"] == 9
    failure = first.metadata["customers"]["records"].records
    assert any(r.data["key"] == "3" and r.data["http_status"] == "422" for r in failure)
    assert not first.success  # rejected rate 10% is over the 5% default: the blocking check fails the run

    http_target.reject_field = None
    http_target.clear_faults()
    second = project.run()
    assert (second.metadata["customers"]["sent"], second.metadata["customers"]["delivered"]) == (1, 1)
    assert second.success


def test_success_criteria_judge_the_response_body(integration_project, source_db, http_target):
    source_db.add_customers(3)
    spec = BASIC_SYNC + (
        "      success:\n"
        "        - {source: status_code, comparator: equals, value: 200}\n"
        "        - {source: response_body, comparator: not_contains, value: 'refused'}\n"
    )
    project = integration_project(spec)
    http_target.respond_with(200, {"status": "refused by policy"})

    result = project.run()

    assert result.metadata["customers"]["failed"] == 3
    record = project.ledger().record("sync", "customers", "1")
    assert record["last_error"] == "response_body must not contain 'refused'"
    assert record["http_status"] == 200


def test_sync_mode_insert_sends_only_new_keys(integration_project, source_db, http_target):
    source_db.add_customers(3)
    project = integration_project(BASIC_SYNC + "      sync_mode: insert\n")
    assert project.run().success
    source_db.execute("UPDATE customers SET name = 'Changed' WHERE customer_id = 1")
    source_db.add_customers(1, start=4)
    http_target.clear()

    result = project.run()

    assert [r.path for r in http_target.requests] == ["/customers/4"]
    assert result.metadata["customers"]["skipped"] == 1
    assert "insert" in project.ledger().record("sync", "customers", "1")["last_error"]


def test_sync_mode_update_skips_records_the_target_does_not_have(integration_project, source_db, http_target):
    source_db.add_customers(3)
    spec = BASIC_SYNC.replace("method: PUT", "method: PATCH") + "      sync_mode: update\n"
    project = integration_project(spec)
    http_target.control("clear")

    result = project.run()  # PATCH on a record the target lacks answers 404

    assert result.metadata["customers"]["skipped"] == 3
    assert result.metadata["customers"]["failed"] == 0
    assert "not at the target" in project.ledger().record("sync", "customers", "2")["last_error"]


MIRROR = BASIC_SYNC + (
    "      sync_mode: mirror\n      delete:\n        method: DELETE\n        path: /customers/{{target_ref}}\n"
)


def test_sync_mode_mirror_deletes_vanished_records(integration_project, source_db, http_target):
    source_db.add_customers(5)
    project = integration_project(MIRROR)
    assert project.run().success
    source_db.execute("DELETE FROM customers WHERE customer_id IN (2, 5)")

    result = project.run(full_diff=True)  # only a read of the whole data set sees what is gone

    assert result.metadata["customers"]["delete"] == 2
    assert sorted(http_target.records("customers")) == ["1", "3", "4"]
    assert project.ledger().record("sync", "customers", "2")["delivered_fingerprint"] is None
    assert project.run(full_diff=True).metadata["customers"]["sent"] == 0  # deleted once, not again


BATCHED = BASIC_SYNC + (
    '      batch:\n        size: 8\n        path: /customers/batch\n        body: {records: "{{records}}"}\n'
)


def test_batches_carry_many_records_and_a_rejected_batch_is_split(integration_project, source_db, http_target):
    source_db.add_customers(40)
    http_target.reject_field = ("email", "c13@example.test")
    project = integration_project(BATCHED)

    result = project.run()

    counts = result.metadata["customers"]
    assert (counts["delivered"], counts["failed"]) == (39, 1)
    assert sorted(http_target.records("customers"), key=int) == [str(i) for i in range(1, 41) if i != 13]
    assert max(http_target.applied.values()) == 1
    assert project.ledger().record("sync", "customers", "13")["http_status"] == 422


def test_write_back_puts_each_outcome_in_the_source_database(integration_project, source_db, http_target):
    source_db.add_customers(4)
    http_target.reject_field = ("email", "c2@example.test")
    project = integration_project(
        BASIC_SYNC + "  write_back: {table: sync_audit}\n".replace("  write_back", "  write_back")
    )

    project.run()

    rows = source_db.execute("SELECT record_key, status, http_status FROM sync_audit ORDER BY record_key")
    assert rows == [("1", "delivered", 201), ("2", "failed", 422), ("3", "delivered", 201), ("4", "delivered", 201)]


def test_manual_push_sends_chosen_keys_even_when_unchanged(integration_project, source_db, http_target):
    source_db.add_customers(6)
    project = integration_project(BASIC_SYNC)
    assert project.run().success
    http_target.clear()

    result = project.run(keys=["2", "5"])

    assert sorted(r.path for r in http_target.requests) == ["/customers/2", "/customers/5"]
    assert result.metadata["data_set"]["rows"] == 2


def test_an_integration_that_is_off_refuses_manual_pushes(integration_project, source_db, http_target):
    source_db.add_customers(2)
    project = integration_project("enabled: false\n" + BASIC_SYNC)

    result = project.run(keys=["1"])

    assert not result.success
    assert http_target.requests == []
    defs = project.definitions()
    assert defs.resolve_job_def("integration_sync") is not None


def test_roles_let_only_allowed_owners_records_through(integration_project, source_db, http_target):
    source_db.add_customers(9)  # owners 1, 2, 3 in turn
    source_db.execute("INSERT INTO user_roles VALUES (1, 'sales'), (2, 'support'), (3, 'sales'), (3, 'admin')")
    project = integration_project(ROLES_SPEC)

    result = project.run()

    delivered = sorted(http_target.records("customers"), key=int)
    assert delivered == ["2", "3", "5", "6", "8", "9"]  # owner = (id % 3) + 1; owner 2 is support only
    assert result.metadata["customers"]["skipped"] == 3
    assert "holds none of the roles sales" in project.ledger().record("sync", "customers", "1")["last_error"]
    http_target.clear()
    pushed = project.run(keys=["4"])  # pushing by hand is refused the same way
    assert http_target.requests == [] and pushed.metadata["customers"]["skipped"] == 1


def _failures(result) -> str:
    """What the failed steps said (a dg.Failure's description)."""
    return "\n".join(
        event.step_failure_data.user_failure_data.description or event.step_failure_data.error.message
        for event in result.result.get_step_failure_events()
    )


def test_an_owner_column_the_data_set_lacks_stops_the_run(integration_project, source_db, http_target):
    # pyarrow reads an unknown column as index -1, the *last* column: records were judged by updated_at.
    source_db.add_customers(6)
    source_db.execute("INSERT INTO user_roles VALUES (1, 'sales'), (2, 'sales'), (3, 'sales')")
    project = integration_project(ROLES_SPEC.replace("owner: owner_id", "owner: owner_ids"))

    result = project.run()

    assert not result.success
    assert http_target.requests == []
    message = _failures(result)
    assert "data_set.owner 'owner_ids' is not a column of the data set (did you mean 'owner_id'?)" in message


def test_a_key_column_the_data_set_lacks_stops_the_run(integration_project, source_db, http_target):
    source_db.add_customers(3)
    project = integration_project(BASIC_SYNC.replace("key: customer_id", "key: customerid"))

    result = project.run()

    assert not result.success
    assert http_target.requests == []
    assert "data_set.key 'customerid' is not a column of the data set" in _failures(result)


def test_a_record_without_owner_holds_no_role(integration_project, source_db, http_target):
    source_db.add_customers(3)
    source_db.execute("UPDATE customers SET owner_id = NULL WHERE customer_id = 2")
    source_db.execute("INSERT INTO user_roles VALUES (1, 'sales'), (2, 'sales'), (3, 'sales')")
    project = integration_project(ROLES_SPEC)

    result = project.run()

    assert sorted(http_target.records("customers"), key=int) == ["1", "3"]
    assert result.metadata["customers"]["skipped"] == 1
    assert "has no owner" in project.ledger().record("sync", "customers", "2")["last_error"]


ROLES_MIRROR = ROLES_SPEC.replace("  roles:", MIRROR[len(BASIC_SYNC) :] + "  roles:")


def test_a_record_refused_for_its_owner_is_not_deleted_either(integration_project, source_db, http_target):
    source_db.add_customers(3)  # owners 2, 3, 1
    source_db.execute("INSERT INTO user_roles VALUES (1, 'sales'), (2, 'sales'), (3, 'sales')")
    project = integration_project(ROLES_MIRROR)
    assert project.run().success
    assert sorted(http_target.records("customers"), key=int) == ["1", "2", "3"]
    source_db.execute("DELETE FROM user_roles WHERE user_id = 2")  # customer 1's owner loses the role,
    source_db.execute("UPDATE customers SET name = 'Changed' WHERE customer_id = 1")  # and its change is refused
    assert project.run().metadata["customers"]["skipped"] == 1
    source_db.execute("DELETE FROM customers WHERE customer_id IN (1, 2)")
    http_target.clear()

    result = project.run(full_diff=True)

    assert [(r.method, r.path) for r in http_target.requests] == [("DELETE", "/customers/2")]
    assert result.metadata["customers"]["skipped"] == 1
    assert "not deleted" in project.ledger().record("sync", "customers", "1")["last_error"]


LOOKUP = (
    BASIC_SYNC.replace(
        "      - {name: balance, type: currency}\n",
        "      - {name: balance, type: currency}\n      - {name: owner_email, type: text}\n",
    )
    .replace(
        "        - {target: balance, source: balance}\n",
        "        - {target: balance, source: balance}\n"
        "        - {target: owner_email, expression: \"lookup('owners', owner_id)\"}\n"
        "      lookups:\n"
        "        owners: {table: users, key: user_id, value: email}\n",
    )
    .replace('balance: "{{balance}}"}', 'balance: "{{balance}}", owner: "{{owner_email}}"}')
)


def test_a_lookup_resolves_values_through_another_table(integration_project, source_db, http_target):
    source_db.add_customers(3)
    source_db.execute("INSERT INTO users VALUES (1, 'ann@example.test'), (2, 'bob@example.test')")
    project = integration_project(LOOKUP)

    assert project.run().success

    stored = http_target.records("customers")
    assert stored["1"]["owner"] == "bob@example.test"  # owner_id = (1 % 3) + 1 = 2
    assert stored["3"]["owner"] == "ann@example.test"
    assert stored["2"]["owner"] is None  # owner 3 has no user row


def test_a_lookup_sees_the_table_as_it_is_when_the_run_maps(integration_project, source_db, http_target):
    # Read per batch, not loaded once per process: a user added between runs resolves in the next run.
    source_db.add_customers(3)
    source_db.execute("INSERT INTO users VALUES (2, 'bob@example.test')")
    project = integration_project(LOOKUP)
    assert project.run().success
    assert http_target.records("customers")["3"]["owner"] is None  # owner 1 has no user row yet
    source_db.execute("INSERT INTO users VALUES (1, 'ann@example.test')")
    source_db.execute("UPDATE customers SET name = 'Again' WHERE customer_id = 3")

    assert project.run(full_diff=True).success

    assert http_target.records("customers")["3"]["owner"] == "ann@example.test"


def test_a_lookup_table_that_is_not_there_stops_the_run_before_anything_is_sent(
    integration_project, source_db, http_target
):
    source_db.add_customers(3)
    project = integration_project(LOOKUP.replace("table: users, key: user_id", "table: userz, key: user_id"))

    result = project.run()

    assert not result.success
    assert http_target.requests == []
    message = _failures(result)
    assert "lookup 'owners': lookup table userz (user_id -> email) cannot be read in" in message
    assert project.ledger().record("sync", "customers", "1") is None


def test_trace_and_audit_file_tell_each_records_story(integration_project, source_db, http_target):
    source_db.add_customers(2)
    project = integration_project(BASIC_SYNC)
    http_target.fail_next(1, status=503)
    first = project.run()
    source_db.execute("UPDATE customers SET name = 'Again' WHERE customer_id = 1")
    project.run()

    attempts = project.ledger().trace("sync", "1")
    assert [a["operation"] for a in attempts] == ["create", "update"]
    assert all(a["outcome"] == "delivered" for a in attempts)
    assert attempts[0]["idempotency_key"] != attempts[1]["idempotency_key"]
    audit = project.audit_rows(first.metadata["customers"])
    assert {row["record_key"] for row in audit} == {"1", "2"}
    assert sum(row["requests"] for row in audit) == 3  # one 503, retried


def test_json_string_body_template_keeps_types(integration_project, source_db, http_target):
    source_db.add_customers(1)
    spec = BASIC_SYNC.replace(
        'body: {id: "{{id}}", name: "{{name}}", email: "{{email}}", balance: "{{balance}}"}',
        'body: \'{"id": "{{id}}", "label": "Customer: {{name}}", "balance": "{{balance}}"}\'',
    )
    project = integration_project(spec)

    assert project.run().success

    body = http_target.requests[0].body
    assert body == {"id": 1, "label": "Customer: CUSTOMER 1", "balance": 10.5}
    assert json.loads(json.dumps(body)) == body


def test_a_key_twice_in_the_data_set_is_delivered_once(integration_project, source_db, http_target):
    source_db.add_customers(3)
    spec = BASIC_SYNC.replace(
        "    table: customers\n",
        "    query: SELECT * FROM customers UNION ALL SELECT * FROM customers WHERE customer_id = 2\n",
    )
    project = integration_project(spec + "  checks: {max_rejected_rate: 0.5}\n")

    result = project.run()

    assert result.success
    counts = result.metadata["customers"]
    assert (counts["delivered"], counts["failed"]) == (3, 1)
    assert max(http_target.receipts.values()) == 1
    assert "more than once" in next(r.data["error"] for r in counts["records"].records if r.data["status"] == "failed")


def test_the_ledger_can_live_in_postgresql(integration_project, source_db, http_target, pg_database, monkeypatch):
    monkeypatch.setenv("CONNECTOR_PIPELINES_LEDGER_URL", pg_database.url)
    source_db.add_customers(30)
    http_target.fail_next(2, status=503)
    project = integration_project(BASIC_SYNC)

    first = project.run()
    source_db.execute("UPDATE customers SET name = 'Moved' WHERE customer_id = 9")
    second = project.run()

    assert first.success and second.success
    assert (second.metadata["customers"]["update"], second.metadata["customers"]["unchanged"]) == (1, 29)
    with pg_database.engine.connect() as conn:
        statuses = conn.execute(sa.text("SELECT status, count(*) FROM cp_delivery_records GROUP BY status")).all()
        attempts = conn.execute(sa.text("SELECT count(*) FROM cp_delivery_attempts")).scalar()
    assert statuses == [("delivered", 30)] and attempts == 31
    trace = project.ledger().trace("sync", "9")
    assert [a["operation"] for a in trace] == ["create", "update"]
