"""The ledger's lock (`state.locks`) on PostgreSQL, MariaDB and SQLite: a second holder waits until the
first lets go, gives up with a clear error after its wait, and a holder that was killed leaves no lock behind. And
two deliveries of one configuration started at once in one process, on one PostgreSQL ledger, against a slow
target: each record reaches the target once, and the second delivery says it waited."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from connector_pipelines.integration.data_set import DataSetReader
from connector_pipelines.integration.delivery import IntegrationDelivery
from connector_pipelines.integration.inspect import sql_source
from connector_pipelines.state.ledger import DeliveryLedger
from connector_pipelines.state.locks import DeliveryLocked, delivery_lock
from connector_pipelines.transports.http import HttpDeliveryClient
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC
from connector_pipelines_tests.fixtures.postgres import PG_SERVER
from connector_pipelines_tests.fixtures.source_databases import MARIADB_SERVER_URL


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def lock_engine(request, tmp_path, fresh_pg_database):
    url = {
        "postgresql": f"{PG_SERVER}/{fresh_pg_database}",
        "mariadb": MARIADB_SERVER_URL,
        "sqlite": f"sqlite:///{tmp_path / 'ledger.db'}",
    }[request.param]
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


def _connector() -> str:
    return f"sync_{uuid.uuid4().hex[:8]}"  # MariaDB's locks are server-wide: a name no other test uses


def test_a_second_holder_waits_until_the_first_lets_go(lock_engine):
    connector = _connector()
    held, released, waits = threading.Event(), [], []

    def first() -> None:
        with delivery_lock(lock_engine, connector, "customers"):
            held.set()
            time.sleep(1.0)
            released.append(time.monotonic())

    thread = threading.Thread(target=first)
    thread.start()
    assert held.wait(10)
    with delivery_lock(lock_engine, connector, "customers", on_wait=waits.append):
        taken = time.monotonic()
    thread.join()
    assert waits and waits[0] == pytest.approx(0, abs=0.5)  # said at once that it waits
    assert released and taken >= released[0]
    # Another configuration of the same connector is not held up.
    with delivery_lock(lock_engine, connector, "other", wait_seconds=0):
        pass


def test_a_holder_that_waited_too_long_gives_up_saying_so(lock_engine):
    connector = _connector()
    with delivery_lock(lock_engine, connector, "customers"):
        started = time.monotonic()
        with pytest.raises(DeliveryLocked, match=f"another run has been delivering {connector}/customers"):
            with delivery_lock(lock_engine, connector, "customers", wait_seconds=0.3):
                pytest.fail("the lock was taken twice")
        assert time.monotonic() - started < 5


HOLD_AND_WAIT = """
import sys, time
import sqlalchemy as sa
from connector_pipelines.state.locks import delivery_lock
engine = sa.create_engine(sys.argv[1])
with delivery_lock(engine, sys.argv[2], "customers"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_holder_that_was_killed_leaves_no_lock_behind(lock_engine):
    connector = _connector()
    url = lock_engine.url.render_as_string(hide_password=False)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_WAIT, url, connector], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DeliveryLocked):
            with delivery_lock(lock_engine, connector, "customers", wait_seconds=0.3):
                pass
    finally:
        holder.kill()  # SIGKILL: no `finally` of the holder runs
        holder.wait()
    started = time.monotonic()
    with delivery_lock(lock_engine, connector, "customers", wait_seconds=10):
        assert time.monotonic() - started < 5


def test_two_deliveries_of_one_configuration_at_once_send_each_record_once(
    integration_project, source_db, http_target, fresh_pg_database
):
    source_db.add_customers(6)
    project = integration_project(BASIC_SYNC)
    loaded = project.load()
    connector = loaded.connector("sync").spec
    ledger_url = f"{PG_SERVER}/{fresh_pg_database}"
    http_target.delay_next(3, seconds=1.0)  # the first delivery is slow: the second one starts while it sends
    reports, logs, started = {}, [], threading.Barrier(2)

    class Log:
        def info(self, message: str) -> None:
            logs.append(message)

        warning = error = debug = info

    def deliver(name: str) -> None:
        source, ledger = sql_source(loaded, "source"), DeliveryLedger(ledger_url)
        try:
            delivery = IntegrationDelivery(
                connector,
                connector.integration.configurations[0],
                ledger,
                run_id=name,
                client_factory=lambda: HttpDeliveryClient(loaded.connections["target"]),
                logger=Log(),
            )
            batches = DataSetReader(source, connector.integration.data_set).read()
            started.wait(10)
            reports[name] = delivery.run(batches)
        finally:
            ledger.dispose()
            source.dispose()

    threads = [threading.Thread(target=deliver, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(http_target.records("customers"), key=int) == [str(i) for i in range(1, 7)]
    assert max(http_target.applied.values()) == 1 and len(http_target.applied) == 6
    delivered = sorted(report.counts["delivered"] for report in reports.values())
    unchanged = sorted(report.counts["unchanged"] for report in reports.values())
    assert delivered == [0, 6] and unchanged == [0, 6]  # the second decided from what the first recorded
    assert any("another run is delivering this configuration" in line for line in logs), logs
