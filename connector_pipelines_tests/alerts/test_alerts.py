"""Alerts from resources/notifications.yaml: the alerts sensor ticking against a real instance, after real runs,
delivering to the loopback SMTP server and to a webhook receiver that checks the HMAC signature."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
import yaml

from connector_pipelines.alerts.send import SIGNATURE_HEADER
from connector_pipelines.definitions import definitions_for
from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.factories.alerts import alerts_sensor
from connector_pipelines.factories.naming import ALERTS_SENSOR
from connector_pipelines.factories.translator import connector_names
from connector_pipelines_tests.fixtures.project import ConnectorProject

SECRET = "s3cret-signing-key-0123456789"


@dataclass
class Receiver:
    """A webhook endpoint on loopback: every POST's JSON body, and whether its signature was right."""

    url: str = ""
    received: list[dict] = field(default_factory=list)
    verified: list[bool] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            got.raw.append(body)
            got.verified.append(hmac.compare_digest(self.headers.get(SIGNATURE_HEADER, ""), expected))
            got.received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    try:
        yield got
    finally:
        server.shutdown()


def _project(root, smtp, receiver, monkeypatch) -> ConnectorProject:
    """A warehouse import (with a unique check) and a file import, and notifications for both."""
    monkeypatch.setenv("ALERT_SECRET", SECRET)
    with sqlite3.connect(root / "shop.db") as db:
        db.execute("CREATE TABLE accounts (account_id INTEGER, name TEXT)")
        db.executemany("INSERT INTO accounts VALUES (?, ?)", [(1, "Ann"), (2, "Bob")])
    with sqlite3.connect(root / "app.db") as db:
        db.execute("CREATE TABLE customers (account_id INTEGER PRIMARY KEY, name TEXT)")
    (root / "drop").mkdir()
    project = ConnectorProject(root)
    project.connections = {
        "shop": {"type": "sql", "url": "sqlite:///shop.db"},
        "app": {"type": "sql", "url": "sqlite:///app.db"},
        "drop": {"type": "folder", "path": "drop"},
        "relay": smtp.connection(),
    }
    mapping = [
        {"target": "account_id", "source": "account_id", "type": "integer"},
        {"target": "name", "source": "name", "type": "text"},
    ]
    target = {"connection": "app", "table": "customers", "key": "account_id"}
    project.connectors["accounts_import"] = {
        "kind": "import",
        "import": {
            "source": {"warehouse": {"connection": "shop", "query": "SELECT account_id, name FROM accounts"}},
            "target": target,
            "mapping": mapping,
            "expectations": [{"expect": "unique", "column": "account_id"}],
        },
    }
    project.connectors["partner_files"] = {
        "kind": "import",
        "import": {
            "source": {"files": {"connection": "drop", "pattern": "accounts_*.csv"}},
            "target": target,
            "mapping": mapping,
        },
    }
    project.write()
    (project.resources / "notifications.yaml").write_text(
        yaml.safe_dump(
            {
                "base_url": "http://dagster.test:3000",
                "channels": {
                    "ops_mail": {"type": "email", "connection": "relay", "to": ["ops@acme.example"]},
                    "pager": {"type": "webhook", "url": receiver.url, "secret": "${ALERT_SECRET}"},
                },
                "rules": [
                    {
                        "connectors": ["accounts_import"],
                        "on": ["run_failure", "check_failure", "recovery"],
                        "channels": ["ops_mail", "pager"],
                    },
                    {
                        "connectors": ["partner_files"],
                        "on": ["missing_file", "recovery"],
                        "deadline": {"cron": "0 9 * * 1-5", "timezone": "Europe/Paris"},
                        "channels": ["pager"],
                    },
                ],
            },
            sort_keys=False,
        )
    )
    return project


class Alerts:
    """The alerts sensor's ticks (cursor kept between them, as the daemon stores it) and the runs between."""

    def __init__(self, project: ConnectorProject, instance: dg.DagsterInstance, clock=None):
        self.project, self.instance, self.cursor = project, instance, None
        loaded = project.load()
        self.defs = definitions_for(loaded)
        names = {name: connector_names(c, loaded.connections) for name, c in loaded.connectors.items()}
        self.sensor = (
            alerts_sensor(loaded, names, clock=clock) if clock else self.defs.resolve_sensor_def(ALERTS_SENSOR)
        )

    def tick(self) -> None:
        with dg.build_sensor_context(instance=self.instance, cursor=self.cursor) as context:
            result = self.sensor.evaluate_tick(context)
        self.cursor = result.cursor

    def run(self, name: str) -> dg.ExecuteInProcessResult:
        return self.project.run_job(name, self.instance)


def _subject(message) -> str:
    return " ".join(str(message["Subject"]).split())  # unfolded, as a mail client shows it


def _texts(smtp) -> list[str]:
    return [f"{_subject(m)}\n{m.get_content()}".replace("\r\n", "\n") for m in smtp.messages]


def test_a_failure_alerts_once_on_each_channel_and_a_success_sends_one_recovery(
    tmp_path, smtp_inbox, receiver, monkeypatch
):
    project = _project(tmp_path, smtp_inbox, receiver, monkeypatch)
    with dg.instance_for_test() as instance:
        alerts = Alerts(project, instance)
        alerts.tick()  # the first tick starts from the present
        with sqlite3.connect(tmp_path / "app.db") as db:
            db.execute("ALTER TABLE customers RENAME TO customers_gone")
        failed = alerts.run("accounts_import")
        assert not failed.success
        alerts.tick()

        [mail] = _texts(smtp_inbox)
        assert mail.startswith("[connector-pipelines] accounts_import: run failed\n")
        assert "\ncause: import 'accounts_import': table 'customers' does not exist" in mail
        assert f"open: http://dagster.test:3000/runs/{failed.run_id}" in mail
        [hook] = receiver.received
        assert hook["event"] == "run_failure" and hook["run_id"] == failed.run_id and receiver.verified == [True]

        assert not alerts.run("accounts_import").success  # fails again: still the same state
        alerts.tick()
        alerts.tick()
        assert len(smtp_inbox.messages) == 1 and len(receiver.received) == 1

        with sqlite3.connect(tmp_path / "app.db") as db:
            db.execute("ALTER TABLE customers_gone RENAME TO customers")
        fixed = alerts.run("accounts_import")
        assert fixed.success
        alerts.tick()
        assert [_subject(m) for m in smtp_inbox.messages][1] == (
            "[connector-pipelines] accounts_import: recovered (the last run is fine again)"
        )
        assert [h["event"] for h in receiver.received] == ["run_failure", "recovery"]
        assert receiver.verified == [True, True]
        everything = "\n".join(_texts(smtp_inbox)) + b"".join(receiver.raw).decode()
        assert SECRET not in everything and smtp_inbox.password not in everything


def test_a_failed_blocking_check_alerts_with_the_checks_name(tmp_path, smtp_inbox, receiver, monkeypatch):
    project = _project(tmp_path, smtp_inbox, receiver, monkeypatch)
    with sqlite3.connect(tmp_path / "shop.db") as db:
        db.execute("INSERT INTO accounts VALUES (2, 'Bob again')")  # breaks the unique check: nothing merges
    with dg.instance_for_test() as instance:
        alerts = Alerts(project, instance)
        alerts.tick()
        assert not alerts.run("accounts_import").success
        alerts.tick()
    events = sorted((h["event"], h["condition"]) for h in receiver.received)
    assert events == [("check_failure", "check:expect_unique_account_id_1"), ("run_failure", "run")]
    check = next(h for h in receiver.received if h["event"] == "check_failure")
    assert "account_id" in check["cause"]


def test_a_file_import_that_received_no_file_by_its_deadline_alerts_once_then_recovers(
    tmp_path, smtp_inbox, receiver, monkeypatch
):
    project = _project(tmp_path, smtp_inbox, receiver, monkeypatch)
    paris = dt.timezone(dt.timedelta(hours=1))  # December: CET
    now = [dt.datetime(2026, 11, 30, 8, 0, tzinfo=paris)]  # a Monday, before the 09:00 deadline
    with dg.instance_for_test() as instance:
        alerts = Alerts(project, instance, clock=lambda: now[0])
        alerts.tick()  # notes the last deadline (Friday 09:00)
        now[0] = dt.datetime(2026, 11, 30, 9, 5, tzinfo=paris)
        alerts.tick()
        [missing] = receiver.received
        assert missing["connector"] == "partner_files" and missing["event"] == "missing_file"
        assert missing["cause"] == "no file arrived by the deadline 2026-11-30 09:00 CET"
        now[0] = dt.datetime(2026, 11, 30, 9, 30, tzinfo=paris)
        alerts.tick()
        assert len(receiver.received) == 1  # the same deadline: no second alert

        (tmp_path / "drop" / "accounts_1.csv").write_text("account_id,name\n7,Gus\n")
        assert alerts.run("partner_files").success
        alerts.tick()
        assert [h["event"] for h in receiver.received] == ["missing_file", "recovery"]
        assert receiver.received[1]["cause"] == "1 file(s) arrived"


def test_the_alerts_sensor_is_on_by_default_and_keeps_its_state_in_its_cursor(
    tmp_path, smtp_inbox, receiver, monkeypatch
):
    project = _project(tmp_path, smtp_inbox, receiver, monkeypatch)
    with dg.instance_for_test() as instance:
        alerts = Alerts(project, instance)
        assert alerts.sensor.default_status == dg.DefaultSensorStatus.RUNNING
        alerts.tick()
        with sqlite3.connect(tmp_path / "app.db") as db:
            db.execute("DROP TABLE customers")
        alerts.run("accounts_import")
        alerts.tick()
        restarted = Alerts(project, instance)  # a restarted daemon: new definitions, the stored cursor
        restarted.cursor = alerts.cursor
        alerts.run("accounts_import")
        restarted.tick()
        assert len(receiver.received) == 1


def test_notifications_problems_name_the_file_line_and_field(tmp_path, smtp_inbox, receiver, monkeypatch):
    project = _project(tmp_path, smtp_inbox, receiver, monkeypatch)
    path = project.resources / "notifications.yaml"
    text = (
        path.read_text()
        .replace("connection: relay", "connection: rellay")
        .replace("- accounts_import", "- acounts_import")
    )
    path.write_text(text)
    with pytest.raises(ConnectorConfigError) as raised:
        project.load()
    problems = "\n".join(raised.value.problems)
    assert "notifications.yaml:5 channels.ops_mail.connection: 'rellay' is not an smtp connection" in problems
    assert "(did you mean 'relay'?)" in problems
    assert "rules.0.connectors.0: no connector named 'acounts_import' (did you mean 'accounts_import'?)" in problems


def test_slack_and_teams_get_the_text_at_their_webhook_whose_url_stays_out_of_errors(receiver):
    from connector_pipelines.alerts.decide import Alert
    from connector_pipelines.alerts.message import compose
    from connector_pipelines.alerts.send import AlertNotSent, deliver
    from connector_pipelines.spec.notifications import SlackChannel, TeamsChannel

    alert = Alert(0, ("chat",), "crm_accounts", "run_failure", "run", "HTTP 503 from the CRM", "abc-123")
    message = compose(alert, "http://dagster.test:3000")
    environ = {"CHAT_HOOK": receiver.url}
    for channel in (
        SlackChannel(type="slack", webhook_url="${CHAT_HOOK}"),
        TeamsChannel(type="teams", webhook_url="${CHAT_HOOK}"),
    ):
        deliver(message, "chat", channel, smtp_for=None, environ=environ)
    assert [body["text"] for body in receiver.received] == [message.text, message.text]
    assert "crm_accounts: run failed" in message.text and "open: http://dagster.test:3000/runs/abc-123" in message.text

    dead = {"CHAT_HOOK": "http://127.0.0.1:9/hooks/T000/B000/XXXXSECRETPATH"}
    with pytest.raises(AlertNotSent) as refused:
        deliver(message, "chat", SlackChannel(type="slack", webhook_url="${CHAT_HOOK}"), smtp_for=None, environ=dead)
    assert "channel 'chat': could not be reached" in str(refused.value) and "SECRETPATH" not in str(refused.value)


def test_rejected_rate_alerts_per_rule_threshold_and_held_records_alert_until_none_is_held():
    from connector_pipelines.alerts.decide import Observation, step
    from connector_pipelines.spec.notifications import Rule

    strict = Rule(connectors=["*"], on=["rejected_rate", "recovery"], channels=["a"], rejected_rate_above=0.01)
    loose = Rule(
        connectors=["orders"], on=["rejected_rate", "held_for_review"], channels=["b"], rejected_rate_above=0.2
    )
    rate = lambda value: Observation("orders", "rejected_rate", False, f"{value:.0%}", "r", value)  # noqa: E731
    alerts, states = step({}, [rate(0.05)], [strict, loose])
    assert [(a.rule, a.event) for a in alerts] == [(0, "rejected_rate")]  # above 1%, not above 20%
    alerts, states = step(states, [rate(0.3), rate(0.3)], [strict, loose])
    assert [(a.rule, a.event) for a in alerts] == [(1, "rejected_rate")]  # the strict rule alerted already
    alerts, states = step(states, [rate(0.0)], [strict, loose])
    assert [(a.rule, a.event) for a in alerts] == [(0, "recovery")]  # the loose rule asks for no recovery
    held = [Observation("orders", "held", True, "3 record(s) held for review", "r")]
    alerts, states = step(states, held + held, [strict, loose])
    assert [(a.rule, a.event, a.cause) for a in alerts] == [(1, "held_for_review", "3 record(s) held for review")]


def test_a_channel_that_cannot_send_is_logged_and_the_other_channels_still_get_the_alert(
    tmp_path, smtp_inbox, receiver, monkeypatch
):
    project = _project(tmp_path, smtp_inbox, receiver, monkeypatch)
    project.connections["relay"] |= {"username": "alerts", "password": "${ALERT_SMTP_PASSWORD}"}
    monkeypatch.delenv("ALERT_SMTP_PASSWORD", raising=False)
    project.write()  # connections.yaml again; notifications.yaml stays
    with dg.instance_for_test() as instance:
        alerts = Alerts(project, instance)
        alerts.tick()
        with sqlite3.connect(tmp_path / "app.db") as db:
            db.execute("DROP TABLE customers")
        alerts.run("accounts_import")
        alerts.tick()
    assert smtp_inbox.messages == []  # the email channel's password variable is not set
    assert [h["event"] for h in receiver.received] == ["run_failure"]
