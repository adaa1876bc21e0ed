"""The demo warehouse seed: counts, determinism, integrity, timestamp format and range, messy values, replacement."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from connector_pipelines.demo.seed import (
    MESSY_ACCOUNT_NAMES,
    TABLES,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    demo_database_url,
    seed_demo_warehouse,
)

SCALE = 0.02
EXPECTED_COUNTS = {"accounts": 40, "contacts": 120, "loans": 60, "invoices": 3000, "usage_events": 5000}
PRIMARY_KEYS = {
    "accounts": "account_id",
    "contacts": "contact_id",
    "loans": "loan_id",
    "invoices": "invoice_id",
    "usage_events": "event_id",
}
TIMESTAMP_COLUMNS = {
    "accounts": ("created_at", "updated_at"),
    "contacts": ("created_at", "updated_at"),
    "loans": ("issued_at", "updated_at"),
    "invoices": ("issued_at", "paid_at", "updated_at"),
    "usage_events": ("occurred_at", "recorded_at"),
}
TIMESTAMP_RE = re.compile(r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01]) ([01]\d|2[0-3]):[0-5]\d:[0-5]\d")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    path = tmp_path_factory.mktemp("demo") / "warehouse.db"
    counts = seed_demo_warehouse(path, scale=SCALE)
    return path, counts


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _dump(path: Path) -> dict[str, list[tuple]]:
    with _connect(path) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY {PRIMARY_KEYS[t]}").fetchall() for t in TABLES}


def test_counts_per_table(seeded: tuple[Path, dict[str, int]]) -> None:
    path, counts = seeded
    assert counts == EXPECTED_COUNTS
    with _connect(path) as conn:
        actual = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    assert actual == EXPECTED_COUNTS


def test_seed_is_deterministic(seeded: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    path, _ = seeded
    other = tmp_path / "again.db"
    seed_demo_warehouse(other, scale=SCALE)
    first, second = _dump(path), _dump(other)
    for table in TABLES:
        assert first[table] == second[table], table


def test_foreign_keys_hold(seeded: tuple[Path, dict[str, int]]) -> None:
    path, _ = seeded
    with _connect(path) as conn:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        for table in ("contacts", "loans", "invoices", "usage_events"):
            fks = conn.execute(f"PRAGMA foreign_key_list({table})").fetchall()
            assert [(fk[2], fk[3], fk[4]) for fk in fks] == [("accounts", "account_id", "account_id")]


def test_timestamps_are_formatted_and_in_range(seeded: tuple[Path, dict[str, int]]) -> None:
    path, _ = seeded
    with _connect(path) as conn:
        for table, columns in TIMESTAMP_COLUMNS.items():
            for column in columns:
                values = [v for (v,) in conn.execute(f"SELECT {column} FROM {table}") if v is not None]
                assert values, (table, column)
                bad = [v for v in values if not (isinstance(v, str) and TIMESTAMP_RE.fullmatch(v))]
                assert bad == [], (table, column, bad[:5])
                assert TIMESTAMP_MIN <= min(values) and max(values) <= TIMESTAMP_MAX, (table, column)
        due_dates = [v for (v,) in conn.execute("SELECT due_date FROM invoices")]
        assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", d) for d in due_dates)
        # Causality: nothing is updated, paid or recorded before it happened.
        assert conn.execute(
            "SELECT count(*) FROM invoices WHERE updated_at < issued_at OR paid_at < issued_at"
        ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM usage_events WHERE recorded_at < occurred_at").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM invoices WHERE due_date < substr(issued_at, 1, 10)").fetchone() == (
            0,
        )


def test_window_query_on_text_timestamps(seeded: tuple[Path, dict[str, int]]) -> None:
    path, _ = seeded
    with _connect(path) as conn:
        total = conn.execute("SELECT count(*) FROM invoices").fetchone()[0]
        by_year = [
            conn.execute(
                "SELECT count(*) FROM invoices WHERE issued_at >= ? AND issued_at < ?",
                (f"{year}-01-01 00:00:00", f"{year + 1}-01-01 00:00:00"),
            ).fetchone()[0]
            for year in (2024, 2025, 2026)
        ]
        assert sum(by_year) == total
        assert by_year[0] < by_year[1]  # growth over time
        plan = " ".join(
            row[-1]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM usage_events WHERE occurred_at >= ? AND occurred_at < ?", ("a", "b")
            )
        )
        assert "ix_usage_events_occurred_at" in plan


def test_messy_values_are_present(seeded: tuple[Path, dict[str, int]]) -> None:
    path, _ = seeded
    with _connect(path) as conn:
        names = {name for (name,) in conn.execute("SELECT name FROM accounts")}
        assert "Müller & Söhne, GmbH" in names
        assert 'O\'Brien "Labs"' in names
        assert {name for name, _ in MESSY_ACCOUNT_NAMES} <= names
        for column, table in (("industry", "accounts"), ("phone", "contacts"), ("paid_at", "invoices")):
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE {column} IS NULL").fetchone()[0] > 0, column
        emails = [e for (e,) in conn.execute("SELECT email FROM contacts")]
        assert len(set(emails)) == len(emails)
        assert all(re.fullmatch(r"[a-z0-9._]+@[a-z0-9.-]+\.[a-z]{2,}", e) for e in emails), emails[:5]


def test_money_has_two_decimals(seeded: tuple[Path, dict[str, int]]) -> None:
    path, _ = seeded
    with _connect(path) as conn:
        for table, column in (("invoices", "amount"), ("invoices", "tax"), ("loans", "principal")):
            rows = conn.execute(f"SELECT {column}, typeof({column}) FROM {table} WHERE {column} IS NOT NULL")
            for value, kind in rows:
                assert kind == "real", (table, column, value)
                assert round(value, 2) == value and len(repr(value).split(".")[1]) <= 2, (table, column, value)
        numbers = [n for (n,) in conn.execute("SELECT invoice_number FROM invoices ORDER BY invoice_id")]
        assert all(re.fullmatch(r"INV-20\d\d-\d{6}", n) for n in numbers)
        assert numbers[0].endswith("-000001")


def test_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "demo.db"
    path.parent.mkdir()
    path.write_bytes(b"not a database")
    counts = seed_demo_warehouse(path, scale=0.005)
    with _connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == counts["accounts"] == 10

    with sqlite3.connect(path) as conn:  # an older warehouse with a table the seed does not make
        conn.execute("CREATE TABLE leftovers (x)")
    conn.close()
    seed_demo_warehouse(path, scale=0.005)
    with _connect(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == set(TABLES)
    assert sorted(p.name for p in path.parent.iterdir()) == ["demo.db"]  # no temporary file left behind


def test_database_url_and_bad_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert demo_database_url(Path("w.db")) == f"sqlite:///{(tmp_path / 'w.db').resolve()}"
    with pytest.raises(ValueError):
        seed_demo_warehouse(tmp_path / "x.db", scale=0)
