#!/usr/bin/env python
"""Import benchmark: rows from a PostgreSQL query, mapped and upserted into a PostgreSQL table, beside COPY + one merge.

ROWS rows (default 2,000,000) are read from `bench.bench_import_source` and upserted into
`bench.bench_import_target`, which starts with the first half of the keys (ROWS / 2 rows): half the rows are
new, half update existing rows. Of those, 90 % are newer than the stored row and overwrite it; 5 % carry the
same `updated_at` and 5 % an older one, which the most-recent rule leaves alone.

- **Ours** (`upsert`): the import's own path. `SqlSource.stream_batches` (PostgreSQL COPY parsed into Arrow
  batches) -> `ArrowMapper.map` with a `CompiledMapping` (renames, a date parsed from 'DD/MM/YYYY' text by
  the mapping engine, an amount to currency, a constant) -> `combine_batches` (100,000 rows) ->
  `TableUpsert.write` with `most_recent_column="updated_at"`: per batch a COPY into a temporary staging table
  and one INSERT ... ON CONFLICT DO UPDATE ... WHERE <newer>, one transaction each. `--mapper engine`
  (case `upsert_engine_mapping`) maps every column through `CompiledMapping.map_batch` + `mapped_to_arrow`.
- **Baseline** (`COPY + merge`): the same rows, `COPY (query) TO STDOUT` piped into `COPY staging FROM STDIN`
  on a second connection (psycopg2 on both ends, through an OS pipe), then ONE `INSERT ... SELECT ... ON
  CONFLICT DO UPDATE ... WHERE t.updated_at < EXCLUDED.updated_at` that does the same renames, date parse and
  constant in SQL, in one transaction. That is PostgreSQL doing the whole load by itself.

Before every run the target is rebuilt to the same starting state (copied from `bench.bench_import_seed`,
primary key, VACUUM ANALYZE, CHECKPOINT). Each run is a fresh subprocess that reports its own peak RSS;
the two sides alternate and each is run twice (ROWS <= 2,000,000), the better time kept. After each run,
outside the timing, the counts are checked and the target's content is compared with the baseline's
(count and a hash sum over every row): both sides must leave the same table.

    python bench/import_upsert.py                 # 2,000,000 rows
    ROWS=200000 python bench/import_upsert.py     # a quick check
    python bench/import_upsert.py --batch-rows 200000 --mapper engine

Prints a table, then (last) one machine-readable line:

    RESULT bench=import case=upsert rows=... rows_per_s=... baseline_rows_per_s=... ratio=... peak_rss_mb=...

Exits non-zero on errors only; a missed target is reported as MISS, not as a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import EXTRACT_LOCK, IMPORT_LOCK, INTEGRATION_LOCK, RunLock, libpq_args, peak_rss_mb, progress
from harness import parse_rows as _parse_any_rows


def log(message: str) -> None:
    progress("import", message)


def parse_rows(text: str) -> int:
    """At least 2 rows: half are new and half are updates."""
    return _parse_any_rows(text, minimum=2)


BENCH = "import"
CASE = "upsert"
CASE_ENGINE_MAPPING = "upsert_engine_mapping"  # --mapper engine: every column through the mapping engine
CASE_NO_SNAPSHOT = "upsert_no_snapshot"  # --mapper arrow: the upsert engine alone, without the run's snapshot
DEFAULT_ROWS = 2_000_000
BEST_OF_TWO_MAX_ROWS = 2_000_000
DEFAULT_BATCH_ROWS = 100_000
SPEED_TARGET = 0.8  # ours / baseline
MEMORY_TARGET_MB = 500.0
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
SCHEMA = "bench"
SOURCE = f"{SCHEMA}.bench_import_source"
SEED = f"{SCHEMA}.bench_import_seed"
TARGET = f"{SCHEMA}.bench_import_target"
# Bump when the generated data changes, so existing tables of the right size are rebuilt anyway.
DATA_VERSION = 1
QUERY = f"SELECT id, account_id, amount, issued_on, updated_at, status, description FROM {SOURCE}"
TARGET_DDL = f"""
    CREATE TABLE {TARGET} (
        invoice_id bigint NOT NULL,
        customer_id integer,
        total numeric(12,2),
        issued_on date,
        updated_at timestamp,
        status text,
        note text,
        source text NOT NULL
    )
"""
TARGET_COLUMNS = ("invoice_id", "customer_id", "total", "issued_on", "updated_at", "status", "note", "source")
CONSTANT = "bench-import"
CHILD_MARKER = "BENCH_CHILD_RESULT "
MIB = 1024 * 1024


def _connect(url: str, autocommit: bool = True):
    import psycopg2

    connection = psycopg2.connect(**libpq_args(url), options="-c TimeZone=UTC")
    connection.autocommit = autocommit
    return connection


# --------------------------------------------------------------------------------------------------
# Tables


def ensure_tables(url: str, rows: int) -> None:
    """Create the source (ROWS rows) and the seed (the target's starting state, ROWS / 2 rows) unless present."""
    tag = f"bench-import rows={rows} v={DATA_VERSION}"
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (SEED,))
            if cursor.fetchone()[0] == tag:
                log(f"{SOURCE} ({rows:,} rows) and {SEED} ({rows // 2:,} rows) are ready; reusing them")
                return
            started = time.perf_counter()
            log(f"creating {SOURCE} with {rows:,} rows and {SEED} with {rows // 2:,} (generate_series)...")
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            cursor.execute(f"DROP TABLE IF EXISTS {SOURCE}, {SEED}, {TARGET}")
            # Deterministic values (from the row number), so every run reads the same data. The source speaks
            # its own language: other column names, dates as 'DD/MM/YYYY' text, amounts as numeric.
            cursor.execute(
                f"""
                CREATE TABLE {SOURCE} (
                    id bigint PRIMARY KEY,
                    account_id integer NOT NULL,
                    amount numeric(12,2) NOT NULL,
                    issued_on text NOT NULL,
                    updated_at timestamp NOT NULL,
                    status text NOT NULL,
                    description text
                )
                """
            )
            cursor.execute(
                f"""
                INSERT INTO {SOURCE}
                SELECT
                    i,
                    (i * 2654435761) %% 100000,
                    ((i * 7919) %% 2000000) / 100.0,
                    to_char(date '2023-01-01' + (i %% 700)::int, 'DD/MM/YYYY'),
                    timestamp '2024-06-01 00:00:00' + make_interval(secs => i),
                    (ARRAY['paid','open','overdue','void','draft'])[1 + (i * 31) %% 5],
                    'Invoice ' || lpad(i::text, 9, '0') || ' ' || substr(md5(i::text), 1, 12)
                        || CASE WHEN i %% 7 = 0 THEN ', late' ELSE '' END
                FROM generate_series(1::bigint, %s::bigint) AS i
                """,
                (rows,),
            )
            # The target's starting state: the first half of the keys, as an earlier import left them.
            # 90 % are older than the source (overwritten), 5 % equal and 5 % newer (both kept by the rule).
            cursor.execute(
                f"""
                CREATE TABLE {SEED} AS
                SELECT
                    id AS invoice_id,
                    account_id AS customer_id,
                    amount - 1 AS total,
                    to_date(issued_on, 'DD/MM/YYYY') AS issued_on,
                    CASE WHEN id %% 20 = 0 THEN updated_at
                         WHEN id %% 20 = 10 THEN updated_at + interval '1 hour'
                         ELSE updated_at - interval '1 day' END AS updated_at,
                    'stale'::text AS status,
                    'earlier import'::text AS note,
                    'seed'::text AS source
                FROM {SOURCE} WHERE id <= %s
                """,
                (rows // 2,),
            )
            cursor.execute(f"VACUUM ANALYZE {SOURCE}")
            cursor.execute(f"VACUUM ANALYZE {SEED}")
            cursor.execute(f"COMMENT ON TABLE {SEED} IS %s", (tag,))
            log(f"tables ready in {time.perf_counter() - started:.1f}s")
    finally:
        connection.close()


def reset_target(url: str) -> None:
    """The target in its starting state, built the same way before every run; then a CHECKPOINT, so no run
    pays for the previous one's dirty pages."""
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {TARGET}")
            cursor.execute(TARGET_DDL)
            cursor.execute(f"INSERT INTO {TARGET} SELECT * FROM {SEED}")
            cursor.execute(f"ALTER TABLE {TARGET} ADD PRIMARY KEY (invoice_id)")
            cursor.execute(f"VACUUM ANALYZE {TARGET}")
            cursor.execute("CHECKPOINT")
    finally:
        connection.close()


def target_digest(url: str) -> tuple[int, int]:
    """(rows, a hash sum over every row's text): equal digests mean equal tables."""
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) FROM {TARGET} t")
            count, digest = cursor.fetchone()
            return int(count), int(digest)
    finally:
        connection.close()


def expected_counts(rows: int) -> dict[str, int]:
    """What the upsert must report: keys 1..ROWS/2 exist; of those, ids ending in 0 or 10 modulo 20 are kept."""
    existing = rows // 2
    kept = existing // 20 + (existing + 10) // 20
    return {"inserted": rows - existing, "updated": existing - kept, "unchanged_or_older": kept, "skipped_new": 0}


# --------------------------------------------------------------------------------------------------
# The two sides, each run in a child process


def run_baseline(request: dict) -> dict:
    """COPY (query) TO STDOUT | COPY staging FROM STDIN, then one INSERT ... ON CONFLICT, in one transaction."""
    url = request["url"]
    reader_fd, writer_fd = os.pipe()
    source = _connect(url)
    target = _connect(url, autocommit=False)
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with open(writer_fd, "wb", buffering=1 << 20) as pipe, source.cursor() as cursor:
                cursor.copy_expert(f"COPY ({QUERY}) TO STDOUT (FORMAT csv)", pipe, size=1 << 20)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            failure.append(exc)

    assignments = ", ".join(f"{name} = EXCLUDED.{name}" for name in TARGET_COLUMNS[1:])
    merge = (
        f"INSERT INTO {TARGET} AS t ({', '.join(TARGET_COLUMNS)}) "
        "SELECT id, account_id, amount, to_date(issued_on, 'DD/MM/YYYY'), updated_at, status, description, "
        f"'{CONSTANT}' FROM staging "
        f"ON CONFLICT (invoice_id) DO UPDATE SET {assignments} WHERE t.updated_at < EXCLUDED.updated_at"
    )
    started = time.perf_counter()
    with target.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE staging ON COMMIT DROP AS {QUERY} WITH NO DATA")
        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        with open(reader_fd, "rb", buffering=1 << 20) as pipe:
            cursor.copy_expert("COPY staging FROM STDIN (FORMAT csv)", pipe, size=1 << 20)
        producer.join()
        if failure:
            raise failure[0]
        staged = cursor.rowcount
        copied = time.perf_counter()
        cursor.execute(merge)
        merged_rows = cursor.rowcount
    target.commit()
    seconds = time.perf_counter() - started
    source.close()
    target.close()
    if staged != request["rows"]:
        raise RuntimeError(f"baseline: COPY staged {staged:,} rows, expected {request['rows']:,}")
    return {
        "seconds": seconds,
        "copy_s": copied - started,
        "merge_s": seconds - (copied - started),
        "written": merged_rows,
    }


def run_import(request: dict) -> dict:
    """A whole import run, as the Dagster asset makes it: run_warehouse_import on an ImportConnector spec."""
    import tempfile

    from connector_pipelines.imports.run import run_warehouse_import
    from connector_pipelines.spec.imports import ImportConnector
    from connector_pipelines.state.import_state import ImportState
    from connector_pipelines.transports.sql import SqlSource

    connector = ImportConnector.model_validate(
        {
            "kind": "import",
            "name": "bench_import",
            "import": {
                "source": {"warehouse": {"connection": "source", "query": QUERY, "updated_at": "updated_at"}},
                "target": {
                    "connection": "target",
                    "table": TARGET,
                    "key": "invoice_id",
                    "resolve_conflicts": "most_recent",
                    "timestamp": "updated_at",
                    "batch_rows": max(1000, request["batch_rows"]),
                },
                "mapping": [
                    {"target": "invoice_id", "source": "id", "type": "integer"},
                    {"target": "customer_id", "source": "account_id", "type": "integer"},
                    {"target": "total", "source": "amount", "type": "currency"},
                    {"target": "issued_on", "source": "issued_on", "type": "date", "parse": "date:%d/%m/%Y"},
                    {"target": "updated_at", "source": "updated_at", "type": "datetime"},
                    {"target": "status", "source": "status"},
                    {"target": "note", "source": "description"},
                    {"target": "source", "constant": CONSTANT},
                ],
            },
        }
    )
    rss_after_imports = peak_rss_mb()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    with tempfile.TemporaryDirectory(prefix="bench-import-") as folder:
        state = ImportState(f"sqlite:///{folder}/state.db")
        source = SqlSource(request["url"], timezone="UTC")
        try:
            report = run_warehouse_import(connector, source, request["url"], state, Path(folder), "bench")
            snapshot_mb = report.snapshot_path.stat().st_size / MIB
        finally:
            source.dispose()
            state.dispose()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    if report.rows_rejected:
        raise RuntimeError(f"ours: {report.rows_rejected:,} rows rejected in the mapping")
    if report.rows_read != request["rows"]:
        raise RuntimeError(f"ours: read {report.rows_read:,} rows, expected {request['rows']:,}")
    counts = {
        "inserted": report.inserted,
        "updated": report.updated,
        "unchanged_or_older": report.unchanged_or_older,
        "skipped_new": report.skipped_new,
    }
    return {
        "seconds": report.seconds,
        "cpu_s": usage.ru_utime + usage.ru_stime - cpu_before,
        "batches": -(-report.rows_read // max(1000, request["batch_rows"])),
        "counts": counts,
        "rss_after_imports_mb": rss_after_imports,
        "snapshot_mb": snapshot_mb,
    }


def run_ours(request: dict) -> dict:
    """The upsert engine alone: SqlSource -> CompiledMapping -> mapped_to_arrow -> combine_batches -> TableUpsert."""
    from connector_pipelines.imports.upsert import (
        ArrowMapper,
        TableUpsert,
        TargetColumn,
        UpsertSettings,
        combine_batches,
        mapped_to_arrow,
    )
    from connector_pipelines.mapping import CompiledMapping, FieldRule, TargetField
    from connector_pipelines.transports.sql import SqlSource

    fields = [
        TargetField("invoice_id", "integer", required=True),
        TargetField("customer_id", "integer"),
        TargetField("total", "currency"),
        TargetField("issued_on", "date"),
        TargetField("updated_at", "datetime"),
        TargetField("status", "text"),
        TargetField("note", "text"),
        TargetField("source", "text"),
    ]
    mapping = CompiledMapping(
        [
            FieldRule("invoice_id", source="id"),
            FieldRule("customer_id", source="account_id"),
            FieldRule("total", source="amount"),
            FieldRule("issued_on", source="issued_on", parse="date:%d/%m/%Y"),
            FieldRule("updated_at", source="updated_at"),
            FieldRule("status", source="status"),
            FieldRule("note", source="description"),
            FieldRule("source", constant=CONSTANT),
        ],
        fields,
    )
    columns = [TargetColumn(f.name, f.type) for f in fields]
    settings = UpsertSettings(table=TARGET, key=("invoice_id",), most_recent_column="updated_at")
    failed_rows = [0]
    mapper = ArrowMapper(mapping, columns)

    def mapped_batches(source: SqlSource):
        for batch in source.stream_batches(QUERY, {}):
            if request["mapper"] == "engine":
                mapped = mapping.map_batch(batch)  # every column through the engine, for comparison
                failed_rows[0] += mapped.failed_count
                yield mapped_to_arrow(mapped, columns)
            else:
                rows, failures = mapper.map(batch)
                failed_rows[0] += len(failures)
                yield rows

    source = SqlSource(request["url"], timezone="UTC")
    rss_after_imports = peak_rss_mb()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    try:
        with TableUpsert(request["url"], settings, columns) as target:
            result = target.write(combine_batches(mapped_batches(source), rows=request["batch_rows"]))
    finally:
        source.dispose()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    if failed_rows[0]:
        raise RuntimeError(f"ours: {failed_rows[0]:,} rows failed in the mapping")
    counts = {
        "inserted": result.inserted,
        "updated": result.updated,
        "unchanged_or_older": result.unchanged_or_older,
        "skipped_new": result.skipped_new,
    }
    if result.rows != request["rows"]:
        raise RuntimeError(f"ours: wrote {result.rows:,} rows, expected {request['rows']:,}")
    return {
        "seconds": result.seconds,
        "cpu_s": usage.ru_utime + usage.ru_stime - cpu_before,
        "batches": result.batches,
        "counts": counts,
        "rss_after_imports_mb": rss_after_imports,
    }


def child_main(request: dict) -> None:
    if request["side"] == "baseline":
        report = run_baseline(request)
    else:
        report = run_import(request) if request["mapper"] == "run" else run_ours(request)
    report["peak_rss_mb"] = peak_rss_mb()
    print(CHILD_MARKER + json.dumps(report), flush=True)


@dataclass
class Side:
    name: str
    rows: int
    attempts: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    reports: list[dict] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return min(self.attempts)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    @property
    def best(self) -> dict:
        return self.reports[self.attempts.index(self.seconds)]


def cpu_busy(seconds: float = 1.0) -> float | None:
    """The share of all CPUs busy over the next `seconds` (Linux /proc/stat), or None elsewhere."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle

    try:
        total_0, idle_0 = sample()
        time.sleep(seconds)
        total_1, idle_1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total_1 - total_0
    return 1.0 - (idle_1 - idle_0) / total if total > 0 else None


def run_side(side: Side, request: dict) -> dict:
    reset_target(request["url"])
    busy = cpu_busy()
    if busy is not None and busy > 0.2:
        # On a 2-CPU machine another busy process changes both sides' figures; say so rather than hide it.
        log(f"warning: the CPUs were {busy:.0%} busy just before this run: something else is running")
    process = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child"],
        input=json.dumps(request),  # stdin, not argv: the URL may hold a password
        capture_output=True,
        text=True,
    )
    report = None
    for line in process.stdout.splitlines():
        if line.startswith(CHILD_MARKER):
            report = json.loads(line[len(CHILD_MARKER) :])
    if process.returncode != 0 or report is None:
        raise RuntimeError(f"{side.name} failed (exit {process.returncode}):\n{process.stderr.strip()[-4000:]}")
    side.attempts.append(report["seconds"])
    side.peak_rss_mb = max(side.peak_rss_mb, report["peak_rss_mb"])
    report["busy_before"] = busy
    side.reports.append(report)
    return report


# --------------------------------------------------------------------------------------------------
# Report


def print_report(rows: int, batch_rows: int, baseline: Side, ours: Side) -> None:
    ratio = ours.rows_per_s / baseline.rows_per_s
    verdict = "PASS" if ratio >= SPEED_TARGET and ours.peak_rss_mb < MEMORY_TARGET_MB else "MISS"
    header = ["case", "rows", "seconds", "rows/s", "baseline rows/s", "ratio", "peak RSS MB", "target", "result"]
    lines = [
        header,
        [
            "COPY + merge (baseline)",
            f"{rows:,}",
            f"{baseline.seconds:.2f}",
            f"{baseline.rows_per_s:,.0f}",
            f"{baseline.rows_per_s:,.0f}",
            "1.00",
            f"{baseline.peak_rss_mb:.0f}",
            "-",
            "-",
        ],
        [
            ours.name,
            f"{rows:,}",
            f"{ours.seconds:.2f}",
            f"{ours.rows_per_s:,.0f}",
            f"{baseline.rows_per_s:,.0f}",
            f"{ratio:.2f}",
            f"{ours.peak_rss_mb:.0f}",
            f">= {SPEED_TARGET:.1f}x, < {MEMORY_TARGET_MB:.0f} MB",
            verdict,
        ],
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {1, 2, 3, 4, 5, 6}
    print()
    print(
        f"Import benchmark: {rows:,} rows from a PostgreSQL query upserted into a PostgreSQL table of "
        f"{rows // 2:,} rows (half new, half updates; most recent wins)"
    )
    for index, line in enumerate(lines):
        print("  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(line)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print()
    print(
        "seconds: best of "
        + f"{len(baseline.attempts)} for the baseline ("
        + " / ".join(f"{t:.2f}" for t in baseline.attempts)
        + f"), {len(ours.attempts)} for ours ("
        + " / ".join(f"{t:.2f}" for t in ours.attempts)
        + ")"
    )
    b, o = baseline.best, ours.best
    print(f"baseline: COPY into staging {b['copy_s']:.2f}s, merge {b['merge_s']:.2f}s ({b['written']:,} rows written)")
    print(
        f"ours: {o['batches']} batch(es) of {batch_rows:,} rows or a little more, one transaction each; process CPU "
        f"{o['cpu_s']:.2f}s; counts {o['counts']}"
    )
    busy = [r["busy_before"] for r in baseline.reports + ours.reports if r["busy_before"] is not None]
    if busy:
        print(f"CPU use by other processes just before each run: {', '.join(f'{x:.0%}' for x in busy)}")
    print(
        f"peak RSS is the whole process (interpreter, pyarrow, SQLAlchemy: ~{o['rss_after_imports_mb']:.0f} MB "
        "before the first row); the baseline's is a psycopg2 process doing the same COPYs"
    )
    print()
    print(
        f"RESULT bench={BENCH} case={ours.name} rows={rows} rows_per_s={ours.rows_per_s:.0f} "
        f"baseline_rows_per_s={baseline.rows_per_s:.0f} ratio={ratio:.3f} peak_rss_mb={ours.peak_rss_mb:.1f}"
    )
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/import_upsert.py",
        description="Import benchmark: a PostgreSQL query mapped and upserted into a PostgreSQL table "
        "(TableUpsert), beside COPY into a staging table plus one INSERT ... ON CONFLICT.",
        epilog="Environment: ROWS (default 2000000; --rows wins), BENCH_PG_URL (default "
        f"{DEFAULT_PG_URL}). Prints a table, then one 'RESULT bench=import case=upsert ...' line.",
    )
    parser.add_argument("--rows", type=parse_rows, default=None, help="rows to import (default: $ROWS or 2000000)")
    parser.add_argument(
        "--batch-rows",
        type=parse_rows,
        default=None,
        help=f"rows per upsert transaction (default {DEFAULT_BATCH_ROWS:,}, or ROWS / 10 when that is smaller, "
        "so that a quick check still has batches to overlap)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
        help="SQLAlchemy URL of the PostgreSQL database (trust or password in the URL)",
    )
    parser.add_argument(
        "--attempts", type=int, default=None, help="runs per side, best kept (default: 2 up to 2,000,000 rows, else 1)"
    )
    parser.add_argument(
        "--mapper",
        choices=("run", "arrow", "engine"),
        default="run",
        help="run (default): a whole import run (delivery.import_run.run_warehouse_import: the source snapshot "
        "Parquet, the mapping, the upsert, the watermark); arrow: the upsert engine alone (ArrowMapper + "
        "TableUpsert, no snapshot); engine: like arrow with every column through CompiledMapping.map_batch",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        child_main(json.loads(sys.stdin.read()))
        return 0

    try:
        rows = args.rows or parse_rows(os.environ.get("ROWS") or str(DEFAULT_ROWS))
    except argparse.ArgumentTypeError as exc:
        parser.error(f"ROWS: {exc}")
    attempts = args.attempts or (2 if rows <= BEST_OF_TWO_MAX_ROWS else 1)
    batch_rows = args.batch_rows or max(1, min(DEFAULT_BATCH_ROWS, rows // 10))
    try:
        lock = RunLock(args.pg_url, BENCH, IMPORT_LOCK, (EXTRACT_LOCK, INTEGRATION_LOCK)).__enter__()
    except Exception as exc:  # noqa: BLE001 - PostgreSQL unreachable: report and exit non-zero
        print(f"error: cannot reach PostgreSQL at {args.pg_url}: {str(exc).strip()}", file=sys.stderr)
        return 1
    try:
        ensure_tables(args.pg_url, rows)
        baseline = Side("baseline", rows)
        ours = Side({"run": CASE, "arrow": CASE_NO_SNAPSHOT, "engine": CASE_ENGINE_MAPPING}[args.mapper], rows)
        expected = expected_counts(rows)
        request = {"url": args.pg_url, "rows": rows, "batch_rows": batch_rows, "mapper": args.mapper}
        reference: tuple[int, int] | None = None
        for attempt in range(attempts):
            report = run_side(baseline, {**request, "side": "baseline"})
            log(
                f"baseline attempt {attempt + 1}: {report['seconds']:.2f}s ({rows / report['seconds']:,.0f} rows/s; "
                f"copy {report['copy_s']:.2f}s, merge {report['merge_s']:.2f}s), "
                f"peak RSS {report['peak_rss_mb']:.0f} MB"
            )
            digest = target_digest(args.pg_url)
            if reference is not None and digest != reference:
                raise RuntimeError("the baseline left a different table on its second run")
            reference = digest
            report = run_side(ours, {**request, "side": "ours"})
            log(
                f"ours attempt {attempt + 1}: {report['seconds']:.2f}s ({rows / report['seconds']:,.0f} rows/s), "
                f"cpu {report['cpu_s']:.2f}s, peak RSS {report['peak_rss_mb']:.0f} MB "
                f"(after imports {report['rss_after_imports_mb']:.0f} MB)"
            )
            if report["counts"] != expected:
                raise RuntimeError(f"ours counted {report['counts']}, expected {expected}")
            if target_digest(args.pg_url) != reference:
                raise RuntimeError("ours left a different table than the baseline (count or content)")
        print_report(rows, batch_rows, baseline, ours)
    except Exception as exc:  # noqa: BLE001 - report and exit non-zero
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        lock.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
