"""Gates before the data leaves: a failing data set expectation, or too many records failing to map, means no
request reaches the target; the verdicts are recorded (blocking checks on the data set, the step's failure)."""

from __future__ import annotations

import dagster as dg

from connector_pipelines_tests.fixtures.extract import failure_text
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC

EXPECTING = BASIC_SYNC + (
    "  expectations:\n"
    "    - {expect: not_null, column: email}\n"
    "    - {expect: regex, column: email, pattern: '@example[.]test$', mostly: 0.5}\n"
)


def test_a_failing_expectation_sends_nothing_and_a_delivery_alone_refuses_that_snapshot(
    integration_project, source_db, http_target
):
    source_db.add_customers(5)
    source_db.execute("UPDATE customers SET email = NULL WHERE customer_id = 3")
    project = integration_project(EXPECTING)

    result = project.run()

    assert not result.success
    assert result.checks == {"expect_not_null_email_1": False, "expect_regex_email_2": True}
    assert http_target.requests == []
    assert "customers" not in result.metadata  # no delivery asset ran
    data_set = result.metadata["data_set"]
    assert data_set["expectations_failed"] == "expect_not_null_email_1"
    [failed] = [e for e in result.result.get_asset_check_evaluations() if not e.passed]
    assert failed.metadata["unexpected_count"].value == 1

    defs = project.defs()
    alone = dg.materialize(
        list(defs.assets or []),
        resources=defs.resources,
        selection=[project.names("sync").key("customers")],
        instance=project.instance,
        raise_on_error=False,
    )
    assert not alone.success
    assert "failed its expectations (expect_not_null_email_1), so it is not delivered" in failure_text(alone)
    assert http_target.requests == []

    source_db.execute("UPDATE customers SET email = 'c3@example.test' WHERE customer_id = 3")
    fixed = project.run()
    assert fixed.success
    assert fixed.metadata["customers"]["delivered"] == 5


def test_an_expectation_on_a_column_the_data_set_lacks_fails_and_sends_nothing(
    integration_project, source_db, http_target
):
    source_db.add_customers(2)
    project = integration_project(BASIC_SYNC + "  expectations:\n    - {expect: not_null, column: e_mail}\n")

    result = project.run()

    assert not result.success
    assert result.checks == {"expect_not_null_e_mail_1": False}
    assert http_target.requests == []


def test_too_many_records_failing_to_map_send_nothing(integration_project, source_db, http_target):
    source_db.add_customers(10)
    source_db.execute("UPDATE customers SET name = '' WHERE customer_id IN (4, 7)")  # name is required

    result = integration_project(BASIC_SYNC).run()  # default gate: 5%

    assert not result.success
    assert http_target.requests == []
    text = failure_text(result.result)
    assert "nothing was sent: 2 of 10 record(s) (20.0%) fail to map, over the 5% that" in text
    assert "key 4: " in text and "key 7: " in text


def test_a_share_at_the_gate_sends_the_records_that_map(integration_project, source_db, http_target):
    source_db.add_customers(10)
    source_db.execute("UPDATE customers SET name = '' WHERE customer_id IN (4, 7)")
    project = integration_project(BASIC_SYNC + "  checks: {max_mapping_failure_share: 0.2, max_rejected_rate: 0.2}\n")

    result = project.run()

    assert result.success
    assert (result.metadata["customers"]["delivered"], result.metadata["customers"]["failed"]) == (8, 2)
    assert len(http_target.requests) == 8


def test_a_push_is_gated_on_the_pushed_records_only(integration_project, source_db, http_target):
    source_db.add_customers(10)
    source_db.execute("UPDATE customers SET name = '' WHERE customer_id IN (4, 7)")
    project = integration_project(BASIC_SYNC)

    pushed = project.run(keys=["2"])
    assert pushed.success
    assert [r.path for r in http_target.requests] == ["/customers/2"]

    http_target.clear()
    refused = project.run(keys=["2", "4"])
    assert not refused.success
    assert "1 of 2 record(s) (50.0%) fail to map" in failure_text(refused.result)
    assert http_target.requests == []


def test_a_warn_expectation_is_reported_and_does_not_stop_delivery(integration_project, source_db, http_target):
    source_db.add_customers(3)
    source_db.execute("UPDATE customers SET email = NULL WHERE customer_id = 2")
    project = integration_project(
        BASIC_SYNC + "  expectations:\n    - {expect: not_null, column: email, severity: warn}\n"
    )

    result = project.run()

    assert result.success
    [evaluation] = [e for e in result.result.get_asset_check_evaluations() if e.check_name == "expect_not_null_email_1"]
    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert "expectations_failed" not in result.metadata["data_set"]
    assert result.metadata["customers"]["delivered"] == 3
