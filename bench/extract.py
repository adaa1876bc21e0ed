#!/usr/bin/env python
"""Extract benchmark: PostgreSQL -> file -> destination, beside PostgreSQL's own COPY into a file.

An extract of ROWS rows (default 5,000,000; a mix of ints, decimals, timestamps and text, about 110 bytes a row
as CSV) runs through the extract's own code path (`connector_pipelines.extract.run.run_extract`) to a
local-folder destination as CSV, gzip CSV and Parquet, and then as Parquet to a local S3-compatible server
(moto). The baseline, measured in the same run, is `psql -c "COPY (query) TO STDOUT (FORMAT csv)" > file`:
PostgreSQL formatting the rows itself into a file, the practical limit for getting them out.

Each measured case runs in its own subprocess, which reports its own peak RSS (VmHWM, else getrusage), so one
case's memory does not colour the next. The baseline is timed twice and the better run kept; ours too when
ROWS <= 5,000,000 (once above that). A PostgreSQL advisory lock makes concurrent runs wait for each other.

    python bench/extract.py                  # 5,000,000 rows
    ROWS=200000 python bench/extract.py      # a quick check
    python bench/extract.py --rows 20000000 --cases csv,parquet

Prints a table, then (last) one machine-readable line per case:

    RESULT bench=extract case=csv rows=... rows_per_s=... baseline_rows_per_s=... ratio=... peak_rss_mb=...

Exits non-zero on errors only; a missed target is reported as MISS, not as a failure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import EXTRACT_LOCK, RunLock, libpq_args, parse_rows, peak_rss_mb, progress, status_mb


def log(message: str) -> None:
    progress("extract", message)


BENCH = "extract"
DEFAULT_ROWS = 5_000_000
BEST_OF_TWO_MAX_ROWS = 5_000_000
CASES = ("csv", "csv_gzip", "parquet", "parquet_s3")
# Minimum ratio of our rows/s to COPY's; cases not listed are reported without a speed target.
SPEED_TARGETS = {"csv": 0.8, "parquet": 0.8}
MEMORY_TARGET_MB = 500.0
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
SCHEMA = "bench"
TABLE = "bench_extract_rows"
# Bump when the generated data changes, so an existing table of the right size is rebuilt anyway.
DATA_VERSION = 3
TIMEZONE = "UTC"
# A window that covers every generated row (issued_at starts 2024-01-01 and advances a second a row).
WINDOW_START = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
WINDOW_END = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
QUERY = (
    "SELECT id, account_id, amount, tax, issued_at, updated_at, status, description, paid "
    f"FROM {SCHEMA}.{TABLE} WHERE issued_at >= :window_start AND issued_at < :window_end"
)
CASE_FORMATS = {
    "csv": {"format": "csv"},
    "csv_gzip": {"format": "csv", "compression": "gzip"},
    "parquet": {"format": "parquet"},
    "parquet_s3": {"format": "parquet"},
}
CHILD_MARKER = "BENCH_CHILD_RESULT "
MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------------
# The table


def ensure_table(url: str, rows: int) -> float:
    """Create bench.bench_extract_rows with `rows` rows unless it already holds exactly that; returns seconds."""
    import psycopg2

    tag = f"bench-extract rows={rows} v={DATA_VERSION}"
    connection = psycopg2.connect(**libpq_args(url))
    connection.autocommit = True
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (f"{SCHEMA}.{TABLE}",))
            current = cursor.fetchone()[0]
            if current == tag:
                cursor.execute(f"SELECT count(*) FROM {SCHEMA}.{TABLE}")
                if cursor.fetchone()[0] == rows:
                    log(f"table {SCHEMA}.{TABLE} already holds {rows:,} rows; reusing it")
                    return 0.0
            log(f"creating {SCHEMA}.{TABLE} with {rows:,} rows (generate_series)...")
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            cursor.execute(f"DROP TABLE IF EXISTS {SCHEMA}.{TABLE}")
            # Deterministic values (hashes of the row number), so every run reads the same data.
            # Explicit column types: a CASE with a NULL branch would otherwise lose numeric(10,2)'s typmod.
            cursor.execute(
                f"""
                CREATE TABLE {SCHEMA}.{TABLE} (
                    id bigint NOT NULL,
                    account_id int NOT NULL,
                    amount numeric(12,2) NOT NULL,
                    tax numeric(10,2),
                    issued_at timestamp NOT NULL,
                    updated_at timestamptz NOT NULL,
                    status text NOT NULL,
                    description text,
                    paid boolean NOT NULL
                )
                """
            )
            cursor.execute(
                f"""
                INSERT INTO {SCHEMA}.{TABLE}
                SELECT
                    i,
                    (i * 2654435761) %% 100000,
                    ((i * 7919) %% 2000000) / 100.0,
                    CASE WHEN i %% 50 = 0 THEN NULL ELSE round(((i * 7919) %% 2000000) / 100.0 * 0.2, 2) END,
                    timestamp '2024-01-01 00:00:00' + make_interval(secs => i),
                    (timestamp '2024-01-01 00:00:00' + make_interval(secs => i + (i * 37) %% 86400)) AT TIME ZONE 'UTC',
                    (ARRAY['paid','open','overdue','void','draft'])[1 + (i * 31) %% 5],
                    'Invoice ' || lpad(i::text, 9, '0') || ' ' || substr(md5(i::text), 1, 12)
                        || CASE WHEN i %% 7 = 0 THEN ', late' ELSE '' END,
                    (i * 31) %% 5 = 0
                FROM generate_series(1::bigint, %s::bigint) AS i
                """,
                (rows,),
            )
            cursor.execute(f"ALTER TABLE {SCHEMA}.{TABLE} ADD PRIMARY KEY (id)")
            cursor.execute(f"COMMENT ON TABLE {SCHEMA}.{TABLE} IS %s", (tag,))
            # Sets hint bits and the visibility map, so the first COPY does not pay for them.
            cursor.execute(f"VACUUM ANALYZE {SCHEMA}.{TABLE}")
    finally:
        connection.close()
    seconds = time.perf_counter() - started
    log(f"table ready in {seconds:.1f}s")
    return seconds


def literal_query(url: str) -> str:
    """The benchmark query with the window bound exactly as the extract binds it (psycopg2's mogrify)."""
    import psycopg2

    from connector_pipelines.transports import postgres_copy

    connection = psycopg2.connect(**libpq_args(url), options=f"-c TimeZone={TIMEZONE}")
    try:
        return postgres_copy.bind(connection, QUERY, {"window_start": WINDOW_START, "window_end": WINDOW_END})
    finally:
        connection.close()


# --------------------------------------------------------------------------------------------------
# The baseline: psql's COPY into a file


@dataclass
class Measurement:
    case: str
    rows: int
    seconds: float
    peak_rss_mb: float | None
    file_bytes: int
    attempts: list[float] = field(default_factory=list)
    detail: dict = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def run_baseline(url: str, query: str, workdir: Path, rows: int, attempts: int = 2) -> Measurement:
    args = libpq_args(url)
    command = [
        "psql",
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        str(args["host"]),
        "-p",
        str(args["port"]),
        "-U",
        args.get("user", "postgres"),
        "-d",
        args.get("dbname", "postgres"),
        "-c",
        f"COPY ({query}) TO STDOUT (FORMAT csv)",
    ]
    env = dict(os.environ, PGOPTIONS=f"-c TimeZone={TIMEZONE}")
    if "password" in args:
        env["PGPASSWORD"] = args["password"]
    times: list[float] = []
    peak = 0.0
    size = 0
    for attempt in range(attempts):
        target = workdir / f"copy-baseline-{attempt}.csv"
        with open(target, "wb") as out:
            started = time.perf_counter()
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, env=env)
            # psql's own peak RSS, sampled from /proc beside the wait (ru_maxrss would include this process's).
            psql_peak = [0.0]
            done = threading.Event()

            def sample(pid: int = process.pid, peak: list = psql_peak, done: threading.Event = done) -> None:
                while not done.wait(0.02):
                    peak[0] = max(peak[0], status_mb(pid, "VmHWM:") or 0.0)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            process.wait()
            seconds = time.perf_counter() - started
            done.set()
            sampler.join()
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        if process.stderr:
            process.stderr.close()
        if process.returncode != 0:
            raise RuntimeError(f"baseline psql COPY failed (exit {process.returncode}): {stderr.strip()}")
        size = target.stat().st_size
        if attempt == 0:
            lines = _count_lines(target)
            if lines != rows:
                raise RuntimeError(f"baseline COPY wrote {lines:,} lines, expected {rows:,}")
        target.unlink()
        times.append(seconds)
        peak = max(peak, psql_peak[0])
        log(f"baseline COPY attempt {attempt + 1}: {seconds:.2f}s ({rows / seconds:,.0f} rows/s, {size / MIB:,.0f} MB)")
    return Measurement("COPY", rows, min(times), peak, size, times)


def _count_lines(path: Path) -> int:
    count = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(8 * MIB):
            count += chunk.count(b"\n")
    return count


# --------------------------------------------------------------------------------------------------
# Our cases, each in its own subprocess


def run_case(case: str, rows: int, url: str, workdir: Path, attempts: int, s3: dict | None) -> Measurement:
    times: list[float] = []
    peak = 0.0
    reports: list[dict] = []
    for attempt in range(attempts):
        request = {"case": case, "rows": rows, "url": url, "workdir": str(workdir), "attempt": attempt, "s3": s3}
        # The request goes through stdin, not argv: the URL may hold a password.
        process = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
        )
        report = None
        for line in process.stdout.splitlines():
            if line.startswith(CHILD_MARKER):
                report = json.loads(line[len(CHILD_MARKER) :])
        if process.returncode != 0 or report is None:
            raise RuntimeError(f"case {case} failed (exit {process.returncode}):\n{process.stderr.strip()[-4000:]}")
        reports.append(report)
        times.append(report["seconds"])
        peak = max(peak, report["peak_rss_mb"])
        log(
            f"{case} attempt {attempt + 1}: {report['seconds']:.2f}s ({rows / report['seconds']:,.0f} rows/s), "
            f"write {report['write_s']:.2f}s + deliver {report['deliver_s']:.2f}s, cpu {report['cpu_s']:.2f}s, "
            f"peak RSS {report['peak_rss_mb']:.0f} MB (after imports {report['rss_after_imports_mb']:.0f} MB), "
            f"{report['bytes'] / MIB:,.1f} MB"
        )
    best = min(range(len(times)), key=times.__getitem__)
    return Measurement(case, rows, times[best], peak, reports[best]["bytes"], times, reports[best])


def child_main(request: dict) -> None:
    """One extract, in this process: prints a JSON report with its time and this process's peak RSS."""
    import pyarrow as pa

    from connector_pipelines.extract.run import run_extract
    from connector_pipelines.spec.extract import ExtractConnector
    from connector_pipelines.transports.folder import FolderClient
    from connector_pipelines.transports.s3 import S3Client
    from connector_pipelines.transports.sql import SqlSource, Window

    rss_after_imports = peak_rss_mb()
    case, rows, attempt = request["case"], request["rows"], request["attempt"]
    workdir = Path(request["workdir"])
    run_id = f"{case}-{attempt}"
    staging = workdir / f"staging-{run_id}"
    outbox = workdir / f"outbox-{run_id}"
    staging.mkdir()
    outbox.mkdir()
    connector = ExtractConnector.model_validate(
        {
            "name": f"bench_{case}",
            "kind": "extract",
            "extract": {
                "source": {"connection": "warehouse", "query": QUERY},
                **CASE_FORMATS[case],
                "destinations": [{"connection": "outbox", "folder": "bench"}],
            },
        }
    )
    if case == "parquet_s3":
        transport = S3Client(**request["s3"])
    else:
        transport = FolderClient(outbox)
    source = SqlSource(request["url"], timezone=TIMEZONE)
    marks: list[tuple[float, str]] = []
    try:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = usage.ru_utime + usage.ru_stime
        started = time.perf_counter()
        result = run_extract(
            connector,
            source=source,
            transports={"outbox": transport},
            window=Window(WINDOW_START, WINDOW_END),
            run_id=run_id,
            staging_dir=staging,
            log=lambda message: marks.append((time.perf_counter(), message)),
        )
        seconds = time.perf_counter() - started
        peak = peak_rss_mb()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_seconds = usage.ru_utime + usage.ru_stime - cpu_before
        written_at = next((at for at, message in marks if "wrote" in message), started + seconds)
        # Checks, outside the timing: every row arrived, and the delivered file is the one written.
        if result.rows != rows:
            raise RuntimeError(f"{case}: the extract wrote {result.rows:,} rows, expected {rows:,}")
        if case == "parquet_s3":
            key = transport.key_for(result.file_name, connector.extract.destinations[0])
            client = transport._boto_client()
            size = client.head_object(Bucket=transport.bucket, Key=key)["ContentLength"]
            client.delete_object(Bucket=transport.bucket, Key=key)
        else:
            delivered = outbox / "bench" / result.file_name
            size = delivered.stat().st_size
            if case == "parquet":
                import pyarrow.parquet as pq

                metadata = pq.read_metadata(delivered)
                if metadata.num_rows != rows:
                    raise RuntimeError(f"{case}: the Parquet file holds {metadata.num_rows:,} rows, expected {rows:,}")
                row_groups = metadata.num_row_groups
            delivered.unlink()
        if size != result.bytes:
            raise RuntimeError(f"{case}: delivered {size:,} bytes, but {result.bytes:,} were written")
        report = {
            "case": case,
            "rows": result.rows,
            "seconds": seconds,
            "write_s": written_at - started,
            "deliver_s": started + seconds - written_at,
            "bytes": result.bytes,
            "cpu_s": cpu_seconds,
            # Arrow's allocator high-water mark: the part of the peak RSS that is record batches and buffers.
            "arrow_peak_mb": (pa.default_memory_pool().max_memory() or 0) / MIB,
            "peak_rss_mb": peak,
            "rss_after_imports_mb": rss_after_imports,
        }
        if case == "parquet":
            report["row_groups"] = row_groups
        print(CHILD_MARKER + json.dumps(report), flush=True)
    finally:
        transport.close()
        source.dispose()
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(outbox, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# The S3-compatible server


class S3Server:
    """The project's moto-based test server (connector_pipelines_tests/servers/s3.py), or moto directly."""

    def __init__(self):
        self._server = None
        self.kwargs: dict = {}

    def __enter__(self) -> S3Server:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        repo_root = str(Path(__file__).resolve().parent.parent)
        if repo_root not in sys.path:
            sys.path.append(repo_root)  # connector_pipelines_tests is not installed, only checked out
        try:
            from connector_pipelines_tests.servers.s3 import S3TestServer
        except ImportError:
            S3TestServer = None
        if S3TestServer is not None:
            server = S3TestServer(bucket="bench-extract").start()
            self._server = server
            # Parts of 16 MB to a Python server on a loaded machine: allow more than the tests' 10 s.
            self.kwargs = server.client_kwargs(timeout_seconds=300)
            log(f"S3 server (connector_pipelines_tests.servers.s3) at {server.endpoint_url}")
            return self
        import boto3
        from botocore.config import Config
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        self.kwargs = {
            "bucket": "bench-extract",
            "region": "us-east-1",
            "endpoint_url": f"http://{host}:{port}",
            "access_key_id": "AKIABENCHEXTRACT0000",
            "secret_access_key": "bench-secret",
            "timeout_seconds": 300,
        }
        boto3.client(
            "s3",
            endpoint_url=self.kwargs["endpoint_url"],
            region_name="us-east-1",
            aws_access_key_id=self.kwargs["access_key_id"],
            aws_secret_access_key=self.kwargs["secret_access_key"],
            config=Config(s3={"addressing_style": "path"}),
        ).create_bucket(Bucket="bench-extract")
        log(f"S3 server (moto ThreadedMotoServer) at {self.kwargs['endpoint_url']}")
        return self

    def __exit__(self, *exc_info) -> None:
        if self._server is not None:
            self._server.stop()


# --------------------------------------------------------------------------------------------------
# Report


def print_report(rows: int, baseline: Measurement, results: list[Measurement], table_bytes_per_row: float) -> None:
    header = ["case", "rows", "seconds", "rows/s", "COPY rows/s", "ratio", "peak RSS MB", "file MB", "target", "result"]
    lines = [header]
    lines.append(
        [
            "COPY (baseline)",
            f"{rows:,}",
            f"{baseline.seconds:.2f}",
            f"{baseline.rows_per_s:,.0f}",
            f"{baseline.rows_per_s:,.0f}",
            "1.00",
            f"{baseline.peak_rss_mb:.0f} (psql)",
            f"{baseline.file_bytes / MIB:,.1f}",
            "-",
            "-",
        ]
    )
    for result in results:
        ratio = result.rows_per_s / baseline.rows_per_s
        targets, verdicts = [], []
        if result.case in SPEED_TARGETS:
            targets.append(f">= {SPEED_TARGETS[result.case]:.1f}x")
            verdicts.append(ratio >= SPEED_TARGETS[result.case])
        targets.append(f"< {MEMORY_TARGET_MB:.0f} MB")
        verdicts.append(result.peak_rss_mb < MEMORY_TARGET_MB)
        lines.append(
            [
                result.case,
                f"{result.rows:,}",
                f"{result.seconds:.2f}",
                f"{result.rows_per_s:,.0f}",
                f"{baseline.rows_per_s:,.0f}",
                f"{ratio:.2f}",
                f"{result.peak_rss_mb:.0f}",
                f"{result.file_bytes / MIB:,.1f}",
                ", ".join(targets),
                "PASS" if all(verdicts) else "MISS",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {1, 2, 3, 4, 5, 6, 7}
    print()
    print(
        f"Extract benchmark: {rows:,} rows (~{table_bytes_per_row:.0f} bytes a row as CSV), "
        f"PostgreSQL -> local folder / S3 (moto)"
    )
    for index, line in enumerate(lines):
        print("  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(line)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print()
    print(
        "seconds: best of "
        + (f"{len(baseline.attempts)}" if baseline.attempts else "1")
        + " for COPY; "
        + ", ".join(f"{r.case}: " + " / ".join(f"{t:.2f}" for t in r.attempts) for r in results)
    )
    print("phases of the best run (deliver = the upload to the destination, after the file is written):")
    for result in results:
        d = result.detail
        extra = f", {d['row_groups']:,} row groups" if "row_groups" in d else ""
        print(
            f"  {result.case:<11} query+write {d['write_s']:6.2f}s  deliver {d['deliver_s']:5.2f}s  "
            f"cpu {d['cpu_s']:6.2f}s  arrow pool peak {d['arrow_peak_mb']:5.0f} MB{extra}"
        )
    if results:
        print(
            f"peak RSS is the whole extract process, including the interpreter and imports (dagster, pyarrow, "
            f"sqlalchemy): ~{results[0].detail['rss_after_imports_mb']:.0f} MB before the extract starts"
        )
    print()
    for result in results:
        ratio = result.rows_per_s / baseline.rows_per_s
        print(
            f"RESULT bench={BENCH} case={result.case} rows={result.rows} rows_per_s={result.rows_per_s:.0f} "
            f"baseline_rows_per_s={baseline.rows_per_s:.0f} ratio={ratio:.3f} peak_rss_mb={result.peak_rss_mb:.1f}"
        )
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/extract.py",
        description="Extract benchmark: PostgreSQL -> CSV / gzip CSV / Parquet -> local folder and S3 (moto), "
        "beside PostgreSQL's own COPY (query) TO STDOUT (FORMAT csv) into a file.",
        epilog="Environment: ROWS (default 5000000; --rows wins), BENCH_PG_URL (default "
        f"{DEFAULT_PG_URL}). Prints a table, then one 'RESULT bench=extract case=...' line per case.",
    )
    parser.add_argument(
        "--rows",
        type=parse_rows,
        default=None,
        help="rows to extract (default: $ROWS or 5000000); accepts 5_000_000, 5M, 200k",
    )
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated subset of: {', '.join(CASES)} (default: all)"
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
        help="SQLAlchemy URL of the PostgreSQL database (trust or password in the URL)",
    )
    parser.add_argument(
        "--tmp-dir",
        default=None,
        help="where staging files and the destination folder go (default: the system temp dir)",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=None,
        help="runs per case, best kept (default: 2 up to 5,000,000 rows, else 1); COPY always 2",
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
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown or not cases:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    attempts = args.attempts or (2 if rows <= BEST_OF_TWO_MAX_ROWS else 1)
    if shutil.which("psql") is None:
        print("error: psql is not on PATH; it runs the COPY baseline", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="bench-extract-", dir=args.tmp_dir))
    try:
        lock = RunLock(args.pg_url, BENCH, EXTRACT_LOCK).__enter__()
    except Exception as exc:  # noqa: BLE001 - PostgreSQL unreachable: report and exit non-zero
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"error: cannot reach PostgreSQL at {args.pg_url}: {str(exc).strip()}", file=sys.stderr)
        return 1
    try:
        ensure_table(args.pg_url, rows)
        query = literal_query(args.pg_url)
        baseline = run_baseline(args.pg_url, query, workdir, rows)
        results: list[Measurement] = []
        for case in cases:
            if case == "parquet_s3":
                with S3Server() as server:
                    results.append(run_case(case, rows, args.pg_url, workdir, attempts, server.kwargs))
            else:
                results.append(run_case(case, rows, args.pg_url, workdir, attempts, None))
        print_report(rows, baseline, results, baseline.file_bytes / rows)
    except Exception as exc:  # noqa: BLE001 - report and exit non-zero
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        lock.__exit__(None, None, None)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
