"""Records whose delivery may have landed without an answer saying so (in doubt): they keep their idempotency key
(and batch) across runs until the target answers for it; a target that ignores the key gets them probed or held.

Every test runs the connector's Dagster job against `DoubtTarget`, the loopback `RecordingTarget` with two more
ways to misbehave: it can ignore `Idempotency-Key`, and it can apply a request and then drop the connection or
answer too late. A record applied twice (counted per record id from what the target applied) is a failure.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from aiohttp import web
from click.testing import CliRunner

from connector_pipelines.cli import main
from connector_pipelines.integration.recovery import recovery_rules
from connector_pipelines.spec.integration import Configuration
from connector_pipelines.state.database import LEDGER_URL_ENV
from connector_pipelines.storage import STORAGE_ENV
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC
from connector_pipelines_tests.servers.http_target import RecordingTarget

CLI = Path(sys.executable).with_name("connector-pipelines")


class DoubtTarget(RecordingTarget):
    """A RecordingTarget that may ignore Idempotency-Key and may apply a request but answer it late or never."""

    def _reset_locked(self) -> None:
        super()._reset_locked()
        self.honours_keys = True
        self._chaos: tuple[random.Random, float, float, float, float] | None = None

    def ignore_keys(self) -> None:
        with self._lock:
            self.honours_keys = False

    def chaos(self, seed: int, *, drop_after: float, slow: float, rate_limited: float, seconds: float) -> None:
        """Per data request: applied then dropped, applied after `seconds` (later than the client waits), or
        answered 429 (not applied), with these probabilities."""
        with self._lock:
            self._chaos = (random.Random(seed), drop_after, slow, rate_limited, seconds)

    def calm(self) -> None:
        with self._lock:
            self._chaos = None
        self.clear_faults()

    def _commit_locked(self, request, key, *args, **kwargs):
        return super()._commit_locked(request, key if self.honours_keys else None, *args, **kwargs)

    async def _data(self, request: web.Request) -> web.StreamResponse:
        chaos = self._chaos
        if chaos is None:
            return await super()._data(request)
        rng, drop_after, slow, rate_limited, seconds = chaos
        with self._lock:
            draw = rng.random()
        if draw < rate_limited:
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "0"})
        if draw < rate_limited + slow:
            await asyncio.sleep(seconds)  # then applied, whether anyone still listens or not
        response = await super()._data(request)
        if rate_limited + slow <= draw < rate_limited + slow + drop_after and request.transport is not None:
            request.transport.close()  # applied, and the answer never leaves
        return response

    def applied_per_record(self) -> Counter:
        """How many times each record id was applied, whatever key it came under."""
        applied: Counter = Counter()
        for r in self.requests:
            if r.outcome != "applied" or not isinstance(r.body, dict):
                continue
            for record in r.body.get("records", [r.body]):
                applied[str(record["id"])] += 1
        return applied


@pytest.fixture(scope="module")
def _doubt_target() -> Iterator[DoubtTarget]:
    target = DoubtTarget().start()
    try:
        yield target
    finally:
        target.stop()


@pytest.fixture
def http_target(_doubt_target: DoubtTarget) -> DoubtTarget:
    """This module's target, cleared for each test (the project fixture points the connection at it)."""
    _doubt_target.clear()
    return _doubt_target


@pytest.fixture(scope="module")
def _shared_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def fresh_instance(_shared_instance: dg.DagsterInstance) -> dg.DagsterInstance:
    return _shared_instance


POST_SYNC = BASIC_SYNC.replace("method: PUT\n        path: /customers/{{id}}", "method: POST\n        path: /customers")
# A 200 whose body says error is not a delivery.
JUDGED = POST_SYNC.replace(
    "      target_ref: id\n",
    "      target_ref: id\n"
    "      success:\n"
    "        - {source: status_code, comparator: equals, value: 2xx}\n"
    "        - {source: response_body, comparator: not_contains, value: '\"error\"'}\n",
)
BATCH = '      batch:\n        size: 5\n        path: /customers/batch\n        body: {records: "{{records}}"}\n'
LOOKUP = "      lookup:\n        path: /customers/{{id}}\n"
HONOURS = "honours_idempotency_key: true"


def _set_retry(project, max_attempts: int) -> None:
    path = project.root / "resources" / "connections.yaml"
    text = path.read_text()
    assert "max_attempts: 4," in text
    path.write_text(text.replace("max_attempts: 4,", f"max_attempts: {max_attempts},"))


def _assert_each_applied_once(target: DoubtTarget, count: int) -> None:
    applied = target.applied_per_record()
    assert len(applied) == count
    twice = sorted((key for key, n in applied.items() if n > 1), key=int)
    assert twice == [], f"{len(twice)} record(s) applied more than once: {twice[:10]}"


# ---- item 11: an unknown outcome keeps its key, across runs ------------------------------------------------------


def test_a_record_whose_last_try_timed_out_is_resent_next_run_under_the_same_key(
    integration_project, source_db, http_target
):
    source_db.add_customers(1)
    project = integration_project(POST_SYNC, http_extra=f"timeout_seconds: 0.3\n{HONOURS}")
    _set_retry(project, 2)
    http_target.delay_next(2, seconds=0.6)  # both tries outlast the client; the first is applied all the same

    first = project.run()
    assert http_target.wait_idle(5)

    assert first.metadata["customers"]["failed"] == 1
    ledger = project.ledger()
    record = ledger.record("sync", "customers", "1")
    assert record["status"] == "in_flight"
    assert record["last_error"].startswith("outcome unknown (gave up after 2 attempts: timed out after 0.3s)")
    assert "the next run sends it again under the same Idempotency-Key" in record["last_error"]
    assert ledger.trace("sync", "1")[-1]["outcome"] == "in_doubt"
    mark = len(http_target.requests)

    second = project.run()

    assert second.metadata["customers"]["delivered"] == 1
    again = http_target.requests[mark:]
    assert [(r.idempotency_key, r.outcome) for r in again] == [(record["idempotency_key"], "replayed")]
    assert ledger.record("sync", "customers", "1")["status"] == "delivered"
    _assert_each_applied_once(http_target, 1)


def test_a_batch_in_doubt_is_sent_again_whole_under_its_key(integration_project, source_db, http_target):
    source_db.add_customers(10)
    project = integration_project(POST_SYNC + BATCH, http_extra=f"timeout_seconds: 0.3\nmax_concurrency: 1\n{HONOURS}")
    _set_retry(project, 1)
    http_target.delay_next(1, seconds=0.6)  # the first batch is applied, its answer comes too late

    project.run()
    assert http_target.wait_idle(5)
    ledger = project.ledger()
    doubted = {k: e for k, e in ledger.state("sync", "customers").items() if e.status == "in_flight"}
    assert len(doubted) == 5 and len({e.batch_key for e in doubted.values()}) == 1
    (batch_key,) = {e.batch_key for e in doubted.values()}
    mark = len(http_target.requests)

    project.run()

    again = http_target.requests[mark:]
    assert [(r.idempotency_key, r.outcome) for r in again] == [(batch_key, "replayed")]
    assert ledger.counts("sync", "customers") == {"delivered": 10}
    _assert_each_applied_once(http_target, 10)


def test_a_batch_in_doubt_that_cannot_be_formed_again_is_held(integration_project, source_db, http_target):
    source_db.add_customers(10)
    project = integration_project(POST_SYNC + BATCH, http_extra=f"timeout_seconds: 0.3\nmax_concurrency: 1\n{HONOURS}")
    _set_retry(project, 1)
    http_target.delay_next(1, seconds=0.6)
    project.run()
    assert http_target.wait_idle(5)
    ledger = project.ledger()
    doubted = sorted((k for k, e in ledger.state("sync", "customers").items() if e.status == "in_flight"), key=int)
    source_db.execute("UPDATE customers SET name = 'Changed' WHERE customer_id = ?", (int(doubted[0]),))
    mark = len(http_target.requests)

    held = project.run()

    assert http_target.requests[mark:] == []  # a smaller batch would need a new key for records that landed
    assert held.metadata["customers"]["held"] == 5
    assert "has changed since" in ledger.record("sync", "customers", doubted[0])["last_error"]
    assert "that batch cannot be sent again as it was" in ledger.record("sync", "customers", doubted[1])["last_error"]
    _assert_each_applied_once(http_target, 10)


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dagster_home")


def _start_cli_run(project, home: Path) -> subprocess.Popen:
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


def _kill_when_applied(process: subprocess.Popen, target: DoubtTarget, at_least: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    try:
        while sum(target.applied_per_record().values()) < at_least:
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    assert process.returncode == -signal.SIGKILL


def _restart_target_later(target: DoubtTarget, after: float) -> threading.Thread:
    """Stop the target mid-run (what it was answering is lost), and start it again on the same port."""

    def restart() -> None:
        time.sleep(after)
        target.stop()
        for _ in range(100):  # until the old socket has let go of the port
            time.sleep(0.2)
            try:
                target.app = target._make_app()  # an aiohttp application serves on one event loop only
                target.start()
                return
            except OSError as exc:
                thread.failure = exc

    thread = threading.Thread(target=restart, name="restart-target")
    thread.start()
    return thread


CHAOS = 400


@pytest.mark.parametrize("batched", [False, True], ids=["single", "batched"])
def test_kills_and_faults_never_apply_a_record_twice(integration_project, source_db, http_target, cli_home, batched):
    source_db.add_customers(CHAOS)
    spec = JUDGED + (BATCH if batched else "")
    project = integration_project(spec, http_extra=f"timeout_seconds: 0.25\nmax_concurrency: 4\n{HONOURS}")
    _set_retry(project, 2)

    def faults(seed: int) -> None:
        http_target.failure_rate(0.08, seed=seed, drop_fraction=0.3)  # 500s and drops before applying
        http_target.respond_with(200, {"error": "not today"}, times=15)  # 200 with an error body, not applied
        http_target.chaos(seed, drop_after=0.05, slow=0.05, rate_limited=0.03, seconds=0.4)

    faults(1)
    _kill_when_applied(_start_cli_run(project, cli_home), http_target, CHAOS // 3)  # kill -9 of a run
    faults(2)
    restart = _restart_target_later(http_target, 1.0)  # and of the target, during the next run
    runs = [project.run()]
    restart.join(30)
    assert http_target.base_url.endswith(f":{http_target.port}") and http_target._thread is not None, getattr(
        restart, "failure", None
    )
    faults(3)
    runs.append(project.run())
    http_target.calm()
    ledger = project.ledger()
    while ledger.counts("sync", "customers") != {"delivered": CHAOS} and len(runs) < 10:
        runs.append(project.run())
    time.sleep(0.5)  # requests answered late land before counting
    assert http_target.wait_idle(5)

    assert ledger.counts("sync", "customers") == {"delivered": CHAOS}, (
        f"after {len(runs)} runs: {ledger.record('sync', 'customers', '1')['last_error']}"
    )
    assert http_target.stats()["dropped"] > 0 and http_target.stats()["replays"] > 0  # faults and replays happened
    assert sum(r.metadata["customers"].get("in_doubt", 0) for r in runs) > 0
    _assert_each_applied_once(http_target, CHAOS)


# ---- item 12: recovery that is safe for a target that ignores Idempotency-Key ------------------------------------


def test_a_post_in_doubt_at_a_target_that_ignores_keys_is_held_not_resent(integration_project, source_db, http_target):
    source_db.add_customers(1)
    http_target.ignore_keys()
    project = integration_project(POST_SYNC, http_extra="timeout_seconds: 0.3")
    http_target.delay_next(1, seconds=0.6)

    first = project.run()
    assert http_target.wait_idle(5)

    assert len(http_target.requests) == 1  # no retry of a POST that may have landed
    assert first.metadata["customers"]["failed"] == 1
    ledger = project.ledger()
    assert "the next run holds it for review" in ledger.record("sync", "customers", "1")["last_error"]

    second = project.run()

    assert len(http_target.requests) == 1 and second.metadata["customers"]["held"] == 1
    record = ledger.record("sync", "customers", "1")
    assert record["status"] == "pending"
    assert (
        "POST is not idempotent, the target is not known to honour Idempotency-Key and there is no lookup"
        in (record["last_error"])
    )
    _assert_each_applied_once(http_target, 1)


def test_a_lookup_tells_what_landed_before_anything_is_sent_again(integration_project, source_db, http_target):
    source_db.add_customers(2)
    http_target.ignore_keys()
    project = integration_project(POST_SYNC + LOOKUP, http_extra="timeout_seconds: 0.3\nmax_concurrency: 1")
    http_target.delay_next(1, seconds=0.6)  # record 1: applied, answered too late
    http_target.drop_next(1)  # record 2: the connection drops before it is applied

    first = project.run()
    assert http_target.wait_idle(5)
    assert [r.outcome for r in http_target.requests] == ["applied", "dropped"]
    assert first.metadata["customers"]["in_doubt"] == 2
    mark = len(http_target.requests)

    second = project.run()

    again = [(r.method, r.path, r.outcome) for r in http_target.requests[mark:]]
    assert sorted(again[:2]) == [("GET", "/customers/1", "read"), ("GET", "/customers/2", "rejected")]
    assert again[2:] == [("POST", "/customers", "applied")]
    assert second.metadata["customers"]["delivered"] == 2
    ledger = project.ledger()
    assert (
        ledger.record("sync", "customers", "1")["last_error"] == "the lookup found that it had landed: not sent again"
    )
    assert ledger.counts("sync", "customers") == {"delivered": 2}
    _assert_each_applied_once(http_target, 2)


@pytest.mark.parametrize(
    ("method", "honours", "lookup", "mode"),
    [
        ("PUT", False, False, "resend"),
        ("POST", True, False, "resend"),
        ("POST", False, True, "probe"),
        ("POST", False, False, "hold"),
        ("PATCH", False, False, "hold"),
    ],
)
def test_the_recovery_rule_follows_method_and_target(method: str, honours: bool, lookup: bool, mode: str) -> None:
    data: dict = {
        "name": "c",
        "mapping": [{"target": "id", "source": "id"}],
        "request": {"method": method, "path": "/x"},
    }
    data["delete"] = {"method": "DELETE", "path": "/x/{{target_ref}}"}
    if lookup:
        data["lookup"] = {"path": "/x?id={{id}}"}
    rules = recovery_rules(Configuration.model_validate(data), "auto", honours)
    assert rules["create"].mode == rules["update"].mode == mode
    assert rules["delete"].mode == "resend"  # DELETE is idempotent


def test_an_explicit_recovery_applies_to_every_operation() -> None:
    data = {"name": "c", "mapping": [{"target": "id", "source": "id"}], "request": {"method": "PUT", "path": "/x"}}
    rules = recovery_rules(Configuration.model_validate(data), "hold", True)
    assert {rule.mode for rule in rules.values()} == {"hold"}


def test_plan_says_which_recovery_applies(integration_project, source_db, tmp_path, monkeypatch):
    source_db.add_customers(1)
    integration_project(POST_SYNC + LOOKUP)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))

    result = CliRunner().invoke(main, ["plan", "sync", "--resources", str(tmp_path / "resources")])

    assert result.exit_code == 0, result.output
    assert "  recovery of create (POST): probe: POST is not idempotent" in result.output
    assert "  recovery of update (POST): probe:" in result.output
