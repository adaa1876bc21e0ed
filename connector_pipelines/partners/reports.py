"""Processing reports for partners: after an import of a partner's files, what became of each file, for the
partner: rows read, imported and rejected (with each row's reason), or why the file was quarantined.

The words come from what the import already says to partners (`FileOutcome.report_reason`: never the database's
message, SQL or table names) and the row rejections (mapping failures and row-level expectations, about the
file's own values). One text file per delivered file goes into the partner's outbox (`<file>.<run>.report.txt`,
the rejected rows as CSV inside it, at most `MAX_REJECTED_ROWS`), and the same text is what is emailed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from connector_pipelines.imports.run import ImportReport

MAX_REJECTED_ROWS = 1000
OUTBOX = "outbox"


def report_file_name(file_name: str, run_id: str) -> str:
    """The report's name in the outbox: the file's name, the run, `.report.txt` (a later run never replaces it)."""
    return f"{file_name}.{run_id[:8]}.report.txt"


def rejected_rows(path: Path | None, limit: int = MAX_REJECTED_ROWS) -> tuple[list[tuple[int, str, str]], int]:
    """(row, key, reason) of the first `limit` rejected rows, and how many there were in all."""
    if path is None or not Path(path).exists():
        return [], 0
    table = pq.read_table(path)
    rows = [
        (row["row"], row["key"] or "", row["reason"])
        for row in table.slice(0, limit).to_pylist()  # sorted by row when written
    ]
    return rows, table.num_rows


def report_text(import_name: str, run_id: str, report: ImportReport) -> str:
    """The report of one delivered file (`report.file` is set)."""
    outcome = report.file
    lines = [
        f"file: {outcome.name}",
        f"import: {import_name}",
        f"run: {run_id}",
        f"status: {_status_words(outcome.status)}",
    ]
    if outcome.status == "rejected":
        lines.append(f"reason: {outcome.report_reason or 'not given'}")
        lines.append("nothing from this file was loaded, unless the reason says otherwise; send a corrected file")
    elif outcome.status == "duplicate":
        lines.append(f"reason: {outcome.report_reason}")
    if outcome.status == "imported" or report.rows_read:  # a file refused before its rows were read has none
        loaded = report.inserted + report.updated + report.unchanged_or_older
        lines += [
            f"rows read: {report.rows_read}",
            f"rows imported: {loaded if outcome.status == 'imported' else 0}",
            f"rows rejected: {report.rows_rejected}",
        ]
    rows, total = rejected_rows(report.rejections_path)
    if rows:
        shown = f" (the first {len(rows)} of {total})" if total > len(rows) else ""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["row", "key", "reason"])
        writer.writerows(rows)
        lines += ["", f"rejected rows{shown}, as CSV (row 1 is the first data row):", buffer.getvalue().rstrip("\n")]
    return "\n".join(lines) + "\n"


def _status_words(status: str) -> str:
    return {
        "imported": "imported",
        "rejected": "quarantined (not imported)",
        "duplicate": "not imported again (same content as an earlier file)",
    }.get(status, status)


def email_subject(import_name: str, reports: Sequence[ImportReport]) -> str:
    statuses = [report.file.status for report in reports]
    counted = ", ".join(f"{statuses.count(s)} {s}" for s in ("imported", "rejected", "duplicate") if s in statuses)
    return f"Processing report: {import_name}: {len(reports)} file(s) ({counted})"
