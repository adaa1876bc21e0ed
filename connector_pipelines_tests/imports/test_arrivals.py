"""`decide_arrivals`: which files a file sensor asks for, tick by tick (pure: listings and cursors built here)."""

from __future__ import annotations

import datetime as dt

from connector_pipelines.imports.arrivals import SETTLED_AFTER, decide_arrivals
from connector_pipelines.transports.base import RemoteFile

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
OLD = NOW - SETTLED_AFTER - dt.timedelta(seconds=1)


def remote(name: str, size: int = 10, modified: dt.datetime = OLD) -> RemoteFile:
    return RemoteFile(name, size, modified)


def never_finished(run_key: str) -> bool:
    return False


def always_finished(run_key: str) -> bool:
    return True


def test_settled_files_are_asked_for_in_one_run_and_not_again_while_it_runs():
    first = decide_arrivals([remote("b.csv"), remote("a.csv")], {}, NOW, never_finished)
    assert first.files == ["a.csv", "b.csv"] and first.run_key.startswith("files:")
    again = decide_arrivals([remote("b.csv"), remote("a.csv")], first.cursor, NOW, never_finished)
    assert again.files == [] and again.run_key is None


def test_a_file_just_written_waits_a_tick_then_is_taken_if_unchanged():
    fresh = remote("a.csv", modified=NOW - dt.timedelta(seconds=5))
    waiting = decide_arrivals([fresh], {}, NOW, never_finished)
    assert (waiting.files, waiting.settling) == ([], 1)
    settled = decide_arrivals([fresh], waiting.cursor, NOW, never_finished)
    assert settled.files == ["a.csv"] and settled.settling == 0
    grown = remote("a.csv", size=20, modified=NOW - dt.timedelta(seconds=1))
    assert decide_arrivals([grown], waiting.cursor, NOW, never_finished).files == []


def test_a_file_still_there_after_its_run_finished_is_asked_for_again_under_a_new_key():
    first = decide_arrivals([remote("a.csv")], {}, NOW, never_finished)
    retry = decide_arrivals([remote("a.csv")], first.cursor, NOW, always_finished)
    assert retry.files == ["a.csv"] and retry.run_key != first.run_key
    assert retry.cursor["requested"]["a.csv"]["attempt"] == 2


def test_a_changed_file_is_asked_for_even_while_the_earlier_run_is_going():
    first = decide_arrivals([remote("a.csv")], {}, NOW, never_finished)
    changed = decide_arrivals([remote("a.csv", size=99)], first.cursor, NOW, never_finished)
    assert changed.files == ["a.csv"]


def test_an_unsafe_name_is_asked_for_once_and_files_gone_are_forgotten():
    first = decide_arrivals([remote("..evil.csv"), remote("a.csv")], {}, NOW, never_finished)
    assert first.files == ["..evil.csv", "a.csv"]
    later = decide_arrivals([remote("..evil.csv")], first.cursor, NOW, always_finished)
    assert later.files == [] and set(later.cursor["requested"]) == {"..evil.csv"}
