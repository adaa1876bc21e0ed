"""The demo's side of imports: the platform's own database (its objects) and a partner's file drops.

`app.db` holds the tables imports upsert into: `customers` (fed from the warehouse, gaining columns the spec
adds) and `conversions` (fed from partner files). The partner drop folder receives three CSV files as a
partner would send them: two weeks of conversions (European dates and amounts), the first one again under
another name (recognised by checksum, not loaded twice), and a broken one (quarantined with a report).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

APP_SCHEMA = """
DROP TABLE IF EXISTS customers;
DROP TABLE IF EXISTS conversions;
CREATE TABLE customers (account_id INTEGER PRIMARY KEY, name TEXT NOT NULL, synced_at TEXT);
CREATE TABLE conversions (
    partner TEXT NOT NULL,
    conversion_id TEXT NOT NULL,
    account_id INTEGER,
    converted_on DATE,
    amount NUMERIC,
    PRIMARY KEY (partner, conversion_id)
);
"""


def prepare_app_database(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as connection:
        connection.executescript(APP_SCHEMA)


def _conversions(week: int, rows: int) -> str:
    lines = ["id;account;date;amount"]
    for i in range(rows):
        day = 1 + (i % 7) + 7 * week
        cents = (i * 7919 + week * 104729) % 500_000
        euros = f"{cents // 100:,}".replace(",", ".") + f",{cents % 100:02d}"
        lines.append(f"W{week}-{i:04d};{1 + (i * 37) % 2000};{day:02d}/06/2026;{euros}")
    return "\n".join(lines) + "\n"


def drop_partner_files(folder: Path) -> list[str]:
    """What a partner delivers; returns the file names, in the order they arrive."""
    for sub in ("", "archive", "quarantine"):
        target = folder / sub
        target.mkdir(parents=True, exist_ok=True)
        for old in target.iterdir():
            if old.is_file():
                old.unlink()
    files = {
        "Conversions_2026_w0.csv": "id;account;date;amount\nW0-0001;12;15/06/2026;10,00;unexpected\n",
        "readme.txt": "Not a conversions file: the pattern leaves it alone.\n",
        "Conversions_2026_w1.csv": _conversions(0, 400),
        "Conversions_2026_w2.csv": _conversions(1, 350),
        "Conversions_2026_w1_resent.csv": _conversions(0, 400),  # the same bytes again
    }
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return list(files)
