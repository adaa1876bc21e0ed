"""Integrations against a target that misbehaves: random failures, 429s, timeouts, dropped connections, a run
killed with SIGKILL half way, and credentials that must never show up in what a run leaves behind.

Every test runs the connector's Dagster job for real against the loopback `RecordingTarget`, whose per-key
`applied` counts say whether anything reached the store twice.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import serialize_value

from connector_pipelines.state.database import LEDGER_URL_ENV
from connector_pipelines.state.ledger import attempts_table, records_table
from connector_pipelines.storage import STORAGE_ENV
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC

CLI = Path(sys.executable).with_name("connector-pipelines")


@pytest.fixture(scope="module")
def _shared_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:  # one per module: building one takes ~2 s
        yield instance


@pytest.fixture
def fresh_instance(_shared_instance: dg.DagsterInstance) -> dg.DagsterInstance:
    """This module's tests share one instance (they tell their runs apart), overriding the per-test one."""
    return _shared_instance


def _set_retry(project, max_attempts: int) -> None:
    """The fixture writes `retry: {max_attempts: 4, ...}`; a second `retry:` key would be refused as a duplicate."""
    path = project.root / "resources" / "connections.yaml"
    text = path.read_text()
    assert "max_attempts: 4," in text
    path.write_text(text.replace("max_attempts: 4,", f"max_attempts: {max_attempts},"))


def _applied_once_each(target, ledger, count: int) -> None:
    """The target holds `count` records, each applied exactly once, under the key the ledger says delivered it."""
    assert len(target.records("customers")) == count
    applied = target.applied
    assert max(applied.values()) == 1, [k for k, n in applied.items() if n > 1][:5]
    state = ledger.state("sync", "customers")
    assert len(state) == count and {e.status for e in state.values()} == {"delivered"}
    assert all(applied.get(entry.idempotency_key) == 1 for entry in state.values())
    applied_per_path = Counter(r.path for r in target.requests if r.outcome == "applied")
    assert max(applied_per_path.values()) == 1, applied_per_path.most_common(3)


# ---- transient failures ----------------------------------------------------------------------------------------


def test_a_flaky_target_gets_every_record_exactly_once(integration_project, source_db, http_target):
    source_db.add_customers(300)
    project = integration_project(BASIC_SYNC)
    _set_retry(project, 3)
    http_target.failure_rate(0.2, seed=7, drop_fraction=0.25)

    runs = []
    while len(runs) < 4:
        result = project.run()
        runs.append(result)
        assert result.checks["no_duplicate_delivery"]
        if project.ledger().counts("sync", "customers") == {"delivered": 300}:
            break

    stats = http_target.stats()
    assert stats["dropped"] > 10 and stats["statuses"].get("500", 0) > 30  # the faults really happened
    assert runs[0].metadata["customers"]["http_retries"] > 40
    assert sum(r.metadata["customers"]["delivered"] for r in runs) == 300
    _applied_once_each(http_target, project.ledger(), 300)
    assert stats["duplicates"] == 0


def test_429_retry_after_is_honoured(integration_project, source_db, http_target):
    source_db.add_customers(10)
    project = integration_project(BASIC_SYNC)
    http_target.rate_limit_next(1, retry_after=0.6)

    started = time.monotonic()
    result = project.run()
    elapsed = time.monotonic() - started

    assert result.success and elapsed >= 0.6
    assert result.metadata["customers"]["http_throttled_429"] == 1
    requests = http_target.requests
    limited = next(r for r in requests if r.fault == "rate_limit")
    again = [r for r in requests if r.idempotency_key == limited.idempotency_key and r.fault is None]
    assert len(again) == 1 and again[0].outcome == "applied"
    # The backoff alone is at most 0.05 s here: the gap is the target's Retry-After.
    assert again[0].time - limited.time >= 0.55
    _applied_once_each(http_target, project.ledger(), 10)


def test_timeouts_and_dropped_connections_are_retried_without_applying_twice(
    integration_project, source_db, http_target
):
    source_db.add_customers(20)
    project = integration_project(BASIC_SYNC, http_extra="timeout_seconds: 0.5")
    http_target.delay_next(1, seconds=1.2)  # longer than the client waits: it retries, and that retry lands first
    http_target.drop_next(3)

    result = project.run()
    assert http_target.wait_idle(5)

    assert result.success
    counts = result.metadata["customers"]
    assert (counts["delivered"], counts["failed"]) == (20, 0)
    assert counts["http_timeouts"] == 1
    slow = next(r for r in http_target.requests if r.fault == "delay:1.2")
    assert slow.outcome == "replayed"  # woke up after the retry was applied: answered from the stored response
    assert http_target.receipts[slow.idempotency_key] == 2
    assert sum(1 for r in http_target.requests if r.outcome == "dropped") == 3
    _applied_once_each(http_target, project.ledger(), 20)


def test_a_timed_out_request_that_was_applied_is_replayed_to_the_retry(integration_project, source_db, http_target):
    """One request at a time, the first two outlasting the client's 0.5 s. The first record's retry waits behind
    the second's slow request, so by the time it arrives the first request has been applied (while nobody
    listened): the retry carrying the same key must be answered from the stored response, not applied again."""
    source_db.add_customers(5)
    project = integration_project(BASIC_SYNC, http_extra="timeout_seconds: 0.5\nmax_concurrency: 1")
    http_target.delay_next(2, seconds=0.7)

    result = project.run()
    assert http_target.wait_idle(5)

    assert result.success
    assert result.metadata["customers"]["http_timeouts"] == 2
    requests = http_target.requests
    slow = [r for r in requests if r.fault == "delay:0.7"]
    assert len(slow) == 2 and slow[0].idempotency_key != slow[1].idempotency_key
    first = [r.outcome for r in requests if r.idempotency_key == slow[0].idempotency_key]
    assert first == ["applied", "replayed"]
    second = [r.outcome for r in requests if r.idempotency_key == slow[1].idempotency_key]
    assert sorted(second) == ["applied", "replayed"]  # whichever got there first
    _applied_once_each(http_target, project.ledger(), 5)


# ---- a run killed half way -------------------------------------------------------------------------------------

PROJECT_DAGSTER_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory) -> Path:
    """One DAGSTER_HOME for the CLI runs of this module (a new one costs seconds of SQLite set-up per run). These
    projects have no dagster.yaml, so no pools: a dead run's claimed slot cannot hold up the next test (the pools
    of the project's own dagster.yaml are the subject of the last test of this section)."""
    return tmp_path_factory.mktemp("dagster_home")


def _start_cli_run(project, home: Path) -> subprocess.Popen:
    """`connector-pipelines run sync` in its own process group, the way an operator starts it."""
    env = dict(os.environ)
    env.pop(LEDGER_URL_ENV, None)
    env.update(
        CONNECTOR_PIPELINES_RESOURCES=str(project.root / "resources"),
        CONNECTOR_PIPELINES_STORAGE=os.environ[STORAGE_ENV],
        DAGSTER_HOME=str(home),
    )
    with open(project.root / "cli-run.log", "ab") as log:
        return subprocess.Popen(
            [str(CLI), "run", "sync"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _cli_output(project) -> str:
    return (project.root / "cli-run.log").read_text(errors="replace")[-3000:]


def _kill_when_applied(process: subprocess.Popen, target, at_least: int, project, timeout: float = 60) -> int:
    """SIGKILL the run's whole process group once the target has applied `at_least` records; returns how many
    records had landed once the requests it left behind were answered."""
    deadline = time.monotonic() + timeout
    try:
        while len(target.applied) < at_least:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"the run ended (or stalled) before it could be killed; its output:\n{_cli_output(project)}"
                )
            time.sleep(0.005)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    assert process.returncode == -signal.SIGKILL
    target.clear_faults()  # the target is healthy again...
    assert target.wait_idle(10)  # ...and the requests the dead run left behind have landed
    return len(target.applied)


def _slow_target(target) -> None:
    target.delay_next(100_000, seconds=0.01)  # every request a little slow, so the kill finds it half way


CRASH = 2000


def test_a_run_killed_mid_delivery_resends_in_flight_records_with_their_keys(
    integration_project, source_db, http_target, cli_home
):
    source_db.add_customers(CRASH)
    project = integration_project(BASIC_SYNC, http_extra="max_concurrency: 4")
    _slow_target(http_target)

    landed = _kill_when_applied(_start_cli_run(project, cli_home), http_target, 300, project)

    assert 300 <= landed < CRASH
    ledger = project.ledger()
    assert ledger.counts("sync", "customers") == {"in_flight": CRASH}  # marked before sending, nothing judged yet
    in_flight_keys = {key: entry.idempotency_key for key, entry in ledger.state("sync", "customers").items()}
    landed_keys = set(http_target.applied)
    assert landed_keys <= set(in_flight_keys.values())
    mark = len(http_target.requests)

    result = project.run()

    assert result.success and result.checks["no_duplicate_delivery"]
    resent = {r.path.rsplit("/", 1)[1]: r.idempotency_key for r in http_target.requests[mark:]}
    assert resent == in_flight_keys  # every in-flight record, under the key it first left with
    receipts = http_target.receipts
    assert {key for key, n in receipts.items() if n > 1} == landed_keys  # what had landed was replayed...
    assert sum(1 for r in http_target.requests[mark:] if r.outcome == "replayed") == landed
    assert result.metadata["customers"]["delivered"] == CRASH
    _applied_once_each(http_target, ledger, CRASH)  # ...and nothing is lost or applied twice


def test_recovery_hold_keeps_in_flight_records_for_review_until_pushed(
    integration_project, source_db, http_target, cli_home
):
    total = 600
    source_db.add_customers(total)
    spec = BASIC_SYNC.replace("  configurations:", "  recovery: hold\n  configurations:")
    project = integration_project(spec, http_extra="max_concurrency: 4")
    _slow_target(http_target)

    landed = _kill_when_applied(_start_cli_run(project, cli_home), http_target, 150, project)
    assert 150 <= landed < total
    ledger = project.ledger()
    assert ledger.counts("sync", "customers") == {"in_flight": total}
    mark = len(http_target.requests)

    held = project.run()

    assert http_target.requests[mark:] == []  # nothing resent by itself
    assert held.metadata["customers"]["held"] == total
    assert ledger.counts("sync", "customers") == {"pending": total}
    record = ledger.record("sync", "customers", "1")
    assert "held for review" in record["last_error"]
    assert project.run().metadata["customers"]["held"] == total  # and not on the next run either
    assert http_target.requests[mark:] == []

    # The operator checks the target and pushes what did not arrive.
    missing = sorted(set(map(str, range(1, total + 1))) - set(http_target.records("customers")), key=int)
    assert len(missing) == total - landed
    pushed = project.run(keys=missing)

    assert pushed.success
    assert sorted(r.path.rsplit("/", 1)[1] for r in http_target.requests[mark:]) == sorted(missing)
    assert pushed.metadata["customers"]["delivered"] == len(missing)
    assert len(http_target.records("customers")) == total
    assert max(http_target.applied.values()) == 1
    assert ledger.counts("sync", "customers") == {"delivered": len(missing), "pending": landed}


def _stuck_behind_a_dead_run(home: Path, dead_run_id: str, pool: str) -> str | None:
    """Why the live run waits for a pool slot the killed run still claims, if it does."""
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        info = instance.event_log_storage.get_concurrency_info(pool)
    claimed = {slot.run_id for slot in info.claimed_slots}
    waiting = [step for step in info.pending_steps if step.run_id != dead_run_id and step.assigned_timestamp is None]
    if waiting and claimed == {dead_run_id}:
        return (
            f"step {waiting[0].step_key} of the new run waits for pool '{pool}' (limit {info.slot_count}), whose slot "
            f"the SIGKILLed run {dead_run_id} still claims"
        )
    return None


def test_the_next_cli_run_after_a_kill_is_not_blocked_by_the_dead_run(
    integration_project, source_db, http_target, tmp_path
):
    """With the project's own dagster.yaml (a pool per target, limit 1), the dead run must not hold the pool."""
    source_db.add_customers(200)
    project = integration_project(BASIC_SYNC, http_extra="max_concurrency: 2")
    (project.root / "dagster.yaml").write_text(PROJECT_DAGSTER_YAML.read_text())
    home = tmp_path / "dagster_home"
    http_target.delay_next(100_000, seconds=0.05)
    _kill_when_applied(_start_cli_run(project, home), http_target, 10, project)
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        (dead,) = instance.get_runs()
    process = _start_cli_run(project, home)
    stuck_since, reason = None, None
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            reason = _stuck_behind_a_dead_run(home, dead.run_id, "target_target")
            stuck_since = (stuck_since or time.monotonic()) if reason else None
            if stuck_since is not None and time.monotonic() - stuck_since > 3:
                break
            time.sleep(0.5)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    assert process.returncode == 0, reason or f"the run failed or hung; its output:\n{_cli_output(project)}"
    _applied_once_each(http_target, project.ledger(), 200)


# ---- secrets ---------------------------------------------------------------------------------------------------

SECRET = "Sup3r-Secret-Pw-4b1d"
BASIC_AUTH = """
auth:
  type: basic
  username: pipelines
  password: ${TARGET_PASSWORD}
"""
TOKEN_AUTH = """
auth:
  type: token
  token_url: /oauth/token
  body:
    username: pipelines
    password: ${TARGET_PASSWORD}
"""
AUDITED = BASIC_SYNC + "  write_back: {table: sync_audit}\n"


def _everything_a_run_left(project, result, source_db, capfd) -> str:
    """Logs (the instance's event log and the console), metadata, ledger, audit file and write-back, as text."""
    parts = [serialize_value(entry) for entry in project.instance.all_logs(result.run_id)]
    parts += [serialize_value(event) for event in result.result.all_events]
    parts.append(repr(result.metadata))
    captured = capfd.readouterr()
    parts += [captured.out, captured.err]
    ledger = project.ledger()
    with ledger.engine.connect() as conn:
        for table in (records_table, attempts_table):
            parts += [repr(tuple(row)) for row in conn.execute(sa.select(table))]
    audit = result.metadata["customers"].get("audit_path")
    assert audit, "the run must have written an audit file"
    parts.append(repr(pq.read_table(audit).to_pylist()))
    parts += [repr(row) for row in source_db.execute("SELECT * FROM sync_audit")]
    return "\n".join(parts)


def _assert_hidden(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret leaked: ...{text[max(0, text.find(secret) - 200) :][:400]}..."


def test_a_wrong_basic_password_is_never_written_anywhere(
    integration_project, source_db, http_target, monkeypatch, capfd
):
    monkeypatch.setenv("TARGET_PASSWORD", SECRET)
    source_db.add_customers(3)
    project = integration_project(AUDITED, http_extra=BASIC_AUTH)
    http_target.require_basic(password="the-right-password")

    result = project.run()

    assert not result.success
    assert result.metadata["customers"]["failed"] == 3
    assert all(r.status == 401 for r in http_target.requests)
    text = _everything_a_run_left(project, result, source_db, capfd)
    assert "401" in text and "unauthorized" in text
    encoded = base64.b64encode(f"pipelines:{SECRET}".encode()).decode()
    _assert_hidden(text, SECRET, encoded)


def test_a_target_that_echoes_the_credential_gets_it_redacted(
    integration_project, source_db, http_target, monkeypatch, capfd
):
    monkeypatch.setenv("TARGET_PASSWORD", SECRET)
    source_db.add_customers(3)
    project = integration_project(AUDITED, http_extra=BASIC_AUTH)
    encoded = base64.b64encode(f"pipelines:{SECRET}".encode()).decode()
    http_target.respond_with(401, {"error": f"refused password {SECRET}", "authorization": f"Basic {encoded}"})

    result = project.run()

    assert result.metadata["customers"]["failed"] == 3
    text = _everything_a_run_left(project, result, source_db, capfd)
    assert "refused password ***" in text  # the answer was kept, with the secret masked
    _assert_hidden(text, SECRET, encoded)


def test_a_failing_token_endpoint_never_reveals_the_login(
    integration_project, source_db, http_target, monkeypatch, capfd
):
    monkeypatch.setenv("TARGET_PASSWORD", SECRET)
    source_db.add_customers(3)
    project = integration_project(AUDITED, http_extra=TOKEN_AUTH)
    http_target.require_bearer(password="the-right-password")

    result = project.run()

    assert not result.success
    assert result.metadata["customers"]["failed"] == 3
    assert http_target.tokens_issued == 0
    assert [r.path for r in http_target.requests if r.path != "/oauth/token"] == []
    token_requests = [r for r in http_target.requests if r.path == "/oauth/token"]
    assert token_requests and token_requests[0].body == {"username": "pipelines", "password": SECRET}
    text = _everything_a_run_left(project, result, source_db, capfd)
    assert "token request to" in text and "invalid_grant" in text
    _assert_hidden(text, SECRET)
