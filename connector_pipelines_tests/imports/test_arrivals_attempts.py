"""`decide_arrivals` gives up on a file that runs keep leaving in the folder, and starts again when it changes."""

from __future__ import annotations

from connector_pipelines.imports.arrivals import DEFAULT_MAX_FAILED_ATTEMPTS, decide_arrivals, given_up_message
from connector_pipelines_tests.imports.test_arrivals import NOW, always_finished, remote


def test_an_unchanged_file_is_asked_for_max_failed_attempts_times_then_given_up():
    cursor: dict = {}
    for attempt in range(1, DEFAULT_MAX_FAILED_ATTEMPTS + 1):
        decided = decide_arrivals([remote("a.csv")], cursor, NOW, always_finished)
        assert decided.files == ["a.csv"] and decided.given_up == []
        assert decided.cursor["requested"]["a.csv"]["attempt"] == attempt
        cursor = decided.cursor
    given_up = decide_arrivals([remote("a.csv"), remote("b.csv")], cursor, NOW, always_finished)
    assert given_up.files == ["b.csv"] and given_up.given_up == ["a.csv"]  # the others are still taken
    assert given_up.cursor["requested"]["a.csv"]["attempt"] == DEFAULT_MAX_FAILED_ATTEMPTS  # remembered, not reset


def test_the_limit_is_the_callers_and_a_changed_file_starts_again_at_attempt_one():
    first = decide_arrivals([remote("a.csv")], {}, NOW, always_finished, max_failed_attempts=1)
    assert decide_arrivals([remote("a.csv")], first.cursor, NOW, always_finished, 1).given_up == ["a.csv"]
    changed = decide_arrivals([remote("a.csv", size=11)], first.cursor, NOW, always_finished, 1)
    assert changed.files == ["a.csv"] and changed.cursor["requested"]["a.csv"]["attempt"] == 1
    assert changed.run_key != first.run_key


def test_the_message_names_the_files_and_what_to_do():
    assert given_up_message([], 3) == ""
    assert given_up_message(["a.csv", "b.csv"], 3) == (
        "2 file(s) not asked for again: 3 run(s) ended without importing or quarantining them (see those runs' "
        "errors); replace the file to try again, or remove it: a.csv, b.csv"
    )
    many = given_up_message([f"{n:02}.csv" for n in range(12)], 3)
    assert many.endswith("00.csv, 01.csv, 02.csv, 03.csv, 04.csv, 05.csv, 06.csv, 07.csv, 08.csv, 09.csv and 2 more")
