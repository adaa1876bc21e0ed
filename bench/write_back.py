"""Micro-benchmark of the integration write-back: `WriteBack.drain()` copying ledger attempts into a write-back
table of the source database, per source dialect (SQLite, PostgreSQL, MariaDB).

Three cases per dialect, each on ROWS attempts (default 50,000) of one configuration:
- `bulk`: one drain of every attempt (a run's first drain after a crash left many pending);
- `per_chunk`: a drain after each `--chunk` attempts the ledger commits, as the delivery calls it;
- `replay`: the cursor put back to the start and drained again: every row is already in the table (a replay
  after a crash between the source commit and the cursor move), nothing may be added.

    python bench/write_back.py                                # 50,000 attempts, every dialect, SQLite ledger
    ROWS=10k python bench/write_back.py --dialects sqlite     # quick check
    python bench/write_back.py --ledger postgresql            # the ledger in PostgreSQL (a schema of its own)

Prints µs per attempt for each case, then one `RESULT` line per (dialect, case).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from harness import parse_rows

from connector_pipelines.integration.write_back import WriteBack
from connector_pipelines.state.ledger import AttemptRow, DeliveryLedger, write_back_cursor_table
from connector_pipelines.transports.sql import SqlSource

BENCH = "write_back"
DEFAULT_ROWS = 50_000
DEFAULT_CHUNK = 500
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
MARIADB_URL = "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4"
SOURCES = {"sqlite": None, "postgresql": PG_URL, "mariadb": MARIADB_URL}
CONNECTOR, CONFIGURATION = "bench", "customers"


def attempts(start: int, count: int) -> list[AttemptRow]:
    """Outcomes shaped like a delivery's: mostly delivered with a target id, some failed with an error."""
    now = dt.datetime.now(dt.UTC)
    rows = []
    for i in range(start, start + count):
        failed = i % 10 == 0
        rows.append(
            AttemptRow(
                record_key=str(i),
                operation="update" if i % 3 else "create",
                outcome="failed" if failed else "delivered",
                idempotency_key=uuid.UUID(int=i).hex,
                http_status=422 if failed else 200,
                requests=1,
                response_excerpt='{"id": "x"}',
                error="HTTP 422: email is not valid" if failed else None,
                target_ref=None if failed else f"cus_{i:012d}",
                started_at=now,
                finished_at=now + dt.timedelta(microseconds=i),
            )
        )
    return rows


def write_attempts(ledger: DeliveryLedger, start: int, count: int) -> None:
    ledger.write(CONNECTOR, CONFIGURATION, "bench-run", [], attempts(start, count))


def table_rows(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()


def run_dialect(dialect: str, rows: int, chunk: int, ledger_url: str, tmp: Path) -> dict[str, float]:
    """µs per attempt of each case on one source dialect, on a fresh ledger and write-back table."""
    url = SOURCES[dialect] or f"sqlite:///{tmp / f'source-{uuid.uuid4().hex[:8]}.db'}"
    table = f"bench_wb_{uuid.uuid4().hex[:10]}"
    ledger = DeliveryLedger(ledger_url)
    source = SqlSource(url)
    results: dict[str, float] = {}
    try:
        writer = WriteBack(source, table, ledger, CONNECTOR, CONFIGURATION)

        write_attempts(ledger, 0, rows)
        started = time.perf_counter()
        added = writer.drain()
        results["bulk"] = (time.perf_counter() - started) / rows * 1e6
        assert added == rows, (added, rows)

        spent = 0.0
        for start in range(rows, 2 * rows, chunk):
            write_attempts(ledger, start, min(chunk, 2 * rows - start))
            started = time.perf_counter()
            writer.drain()
            spent += time.perf_counter() - started
        results["per_chunk"] = spent / rows * 1e6

        with ledger.engine.begin() as conn:  # a crash after the source commit, before the cursor moved
            conn.execute(sa.update(write_back_cursor_table).values(attempt_id=0))
        started = time.perf_counter()
        replayed = writer.drain()
        results["replay"] = (time.perf_counter() - started) / (2 * rows) * 1e6
        assert replayed == 0, replayed
        assert table_rows(source.engine, table) == 2 * rows
    finally:
        with source.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        source.engine.dispose()
        ledger.dispose()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    rows_help = f"attempts per case (default $ROWS or {DEFAULT_ROWS})"
    parser.add_argument("--rows", type=parse_rows, default=None, help=rows_help)
    parser.add_argument("--chunk", type=parse_rows, default=DEFAULT_CHUNK, help="attempts per drain in per_chunk")
    parser.add_argument("--dialects", default="sqlite,postgresql,mariadb", help="source dialects, comma-separated")
    parser.add_argument("--ledger", choices=("sqlite", "postgresql"), default="sqlite", help="where the ledger is")
    args = parser.parse_args(argv)
    rows = args.rows or parse_rows(os.environ.get("ROWS") or str(DEFAULT_ROWS))
    dialects = [d.strip() for d in args.dialects.split(",") if d.strip()]
    unknown = set(dialects) - set(SOURCES)
    if unknown:
        parser.error(f"unknown dialects: {', '.join(sorted(unknown))}")

    lines = []
    with tempfile.TemporaryDirectory(prefix="bench-write-back-") as tmp:
        for dialect in dialects:
            schema = None
            if args.ledger == "postgresql":
                schema = f"bench_wb_ledger_{uuid.uuid4().hex[:8]}"
                admin = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg2://"))
                with admin.begin() as conn:
                    conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
                ledger_url = f"{PG_URL}?options=-csearch_path%3D{schema}"
            else:
                ledger_url = f"sqlite:///{Path(tmp) / f'ledger-{dialect}.db'}"
            try:
                print(f"{dialect}: {rows:,} attempts, ledger on {args.ledger} ...", file=sys.stderr)
                results = run_dialect(dialect, rows, args.chunk, ledger_url, Path(tmp))
            finally:
                if schema is not None:
                    with admin.begin() as conn:
                        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
                    admin.dispose()
            for case, micros in results.items():
                print(f"{dialect:<11} {case:<10} {micros:8.1f} µs/attempt")
                lines.append(
                    f"RESULT bench={BENCH} case={case} dialect={dialect} ledger={args.ledger} rows={rows} "
                    f"us_per_row={micros:.2f} rows_per_s={1e6 / micros:.0f}"
                )
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
