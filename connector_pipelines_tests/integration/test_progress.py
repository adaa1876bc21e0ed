"""A long delivery logs its progress at a steady pace: lines in the run's event log, as the UI's run page shows."""

from __future__ import annotations

import re

from connector_pipelines import progress
from connector_pipelines.integration.progress import Progress, describe
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC


def test_progress_lines_of_a_long_delivery_are_in_the_runs_event_log(integration_project, source_db, monkeypatch):
    monkeypatch.setattr(progress, "PROGRESS_EVERY_SECONDS", 0.0)  # a line after every chunk sent
    source_db.add_customers(5_000)  # three chunks of SEND_CHUNK (2,000)
    project = integration_project(BASIC_SYNC)

    run = project.run()

    assert run.success
    messages = [record.user_message for record in project.instance.all_logs(run.run_id) if record.user_message]
    lines = [m for m in messages if re.match(r"customers: [\d,]+ of 5,000 records done", m)]
    assert len(lines) >= 3, messages
    done = [int(re.match(r"customers: ([\d,]+) of", line).group(1).replace(",", "")) for line in lines]
    assert done == sorted(done) and done[0] < 5_000 and done[-1] == 5_000
    assert lines[-1].startswith(
        "customers: 5,000 of 5,000 records done (100%): 5,000 delivered, 0 failed, 0 unchanged, 0 skipped; 5,000 read"
    )


def test_progress_says_nothing_until_a_line_is_due_then_the_share_rate_and_time_left():
    now = [100.0]
    pacer = Progress("profiles", total=200_000, clock=lambda: now[0], every=10.0)
    counts = {"read": 70_000, "sent": 50_000, "delivered": 49_500, "failed": 500, "unchanged": 10_000}
    now[0] = 109.0
    assert pacer.line(counts) is None
    now[0] = 112.0
    assert pacer.line(counts) == (
        "profiles: 60,000 of 200,000 records done (30%): 49,500 delivered, 500 failed, 10,000 unchanged, "
        "0 skipped; 70,000 read; 5,000 records/s, about 28 s left"
    )
    assert pacer.line(counts) is None  # the next one is due 10 s later
    assert describe("x", {"read": 5}, None, 0.0) == (
        "x: 0 records done: 0 delivered, 0 failed, 0 unchanged, 0 skipped; 5 read; 0 records/s"
    )
