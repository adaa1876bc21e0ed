#!/usr/bin/env python
"""Integration benchmark: PostgreSQL rows -> the real connector, run through Dagster -> a loopback HTTP target,
beside a plain loop of `requests.post` over the same records.

ROWS records (default 200,000; id, name, email, country, amount numeric(12,2), created_at, updated_at, status)
are read from a PostgreSQL table and delivered by an integration connector declared in YAML (a realistic mapping:
upper/lower/trim/concat/date_format/number_format expressions, typed fields, a nested body template, target_ref,
write-back to the source database, the default SQLite ledger), run as the Dagster job `integration_<name>` with
`execute_in_process` on an ephemeral instance. The timed span is the whole job: reading the source into the data
set snapshot, mapping, fingerprints, the ledger writes before and after every chunk, the requests, the audit file
and the write-back.

Cases, each in its own subprocess (which reports its own peak RSS):

- `single`: one request per record (POST /customers, max_concurrency 64), with the ledger on.
- `unchanged_rerun`: the same job again with nothing changed: every record read, mapped, fingerprinted and found
  unchanged in the ledger; nothing is sent. Reported in seconds, with how much of it is Dagster's own overhead.
- `batched`: batches of 500 records per request (POST /customers/batch), fresh ledger.

The baseline, measured in the same run against the same target: `requests.post(url, json=payload)` per record,
no session, no threads: what a hand-written script does. The payloads are built from the same rows beforehand;
only the loop of posts is timed. The same baseline is used for both ratios.

The target is the demo CRM's aiohttp REST store under the tests' recording layer
(`connector_pipelines_tests.servers.http_target --fast`, uvloop when installed) in its own process. Its ceiling
is measured first with a tight aiohttp client (256 requests in flight, and batches of 500) so that the figures
can be read against what the target itself can answer. After each case the target's `/_stats` must show every
record applied exactly once.

    python bench/integration.py                  # 200,000 records
    ROWS=20000 python bench/integration.py       # a quick check
    python bench/integration.py --cases single,unchanged_rerun --ledger postgres

Prints a table, then (last) one machine-readable line per case:

    RESULT bench=integration case=single rows=... rows_per_s=... baseline_rows_per_s=... ratio=... peak_rss_mb=...

Exits non-zero on errors only (a server unreachable, a failed run, a record not applied exactly once); a missed
target is reported as MISS, not as a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import INTEGRATION_LOCK, RunLock, libpq_args, parse_rows, peak_rss_mb, progress, status_mb


def log(message: str) -> None:
    progress("integration", message)


BENCH = "integration"
DEFAULT_ROWS = 200_000
CASES = ("single", "unchanged_rerun", "batched")
BATCH_SIZE = 500
MAX_CONCURRENCY = 64
SINGLE_RATIO_TARGET = 5.0  # x the plain loop
BATCHED_ROWS_PER_S_TARGET = 50_000
RERUN_SECONDS_TARGET = 3.0  # for 200,000 records
MEMORY_TARGET_MB = 500.0
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
SCHEMA = "bench"
TABLE = "bench_integration_records"
WRITE_BACK_TABLE = "bench_integration_outcomes"
LEDGER_SCHEMA = "bench_integration_ledger"  # --ledger postgres: the ledger's tables live in this schema
DATA_VERSION = 1  # bump when the generated data changes, so an existing table of the right size is rebuilt
COLLECTION = "customers"
CEILING_CONCURRENCY = 256
CEILING_BATCH_CONCURRENCY = 8
CHILD_MARKER = "BENCH_CHILD_RESULT "
MIB = 1024 * 1024


def rss_mb() -> float:
    return status_mb("self", "VmRSS:") or 0.0


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of another process (the target), from /proc; None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _connect(url: str):
    import psycopg2

    connection = psycopg2.connect(**libpq_args(url))
    connection.autocommit = True
    return connection


# --------------------------------------------------------------------------------------------------
# The source table


def ensure_table(url: str, rows: int) -> float:
    """Create bench.bench_integration_records with `rows` rows unless it already holds exactly that."""
    tag = f"bench-integration rows={rows} v={DATA_VERSION}"
    connection = _connect(url)
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (f"{SCHEMA}.{TABLE}",))
            if cursor.fetchone()[0] == tag:
                cursor.execute(f"SELECT count(*) FROM {SCHEMA}.{TABLE}")
                if cursor.fetchone()[0] == rows:
                    log(f"table {SCHEMA}.{TABLE} already holds {rows:,} rows; reusing it")
                    return 0.0
            log(f"creating {SCHEMA}.{TABLE} with {rows:,} rows (generate_series)...")
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            cursor.execute(f"DROP TABLE IF EXISTS {SCHEMA}.{TABLE}")
            cursor.execute(
                f"""
                CREATE TABLE {SCHEMA}.{TABLE} (
                    id bigint NOT NULL,
                    name text NOT NULL,
                    email text NOT NULL,
                    country text NOT NULL,
                    amount numeric(12,2) NOT NULL,
                    created_at timestamp NOT NULL,
                    updated_at timestamp NOT NULL,
                    status text NOT NULL
                )
                """
            )
            # Deterministic values (functions of the row number). Names and emails carry stray spaces and mixed
            # case, so trim/upper/lower have work to do.
            cursor.execute(
                f"""
                INSERT INTO {SCHEMA}.{TABLE}
                SELECT
                    i,
                    (ARRAY['  Ada','Grace ','Alan','Edsger','Barbara  ','Donald','Frances','Ken'])[1 + i %% 8]
                        || ' ' || (ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Knuth','Allen',
                                         'Thompson','Ritchie','Hamilton'])[1 + (i * 7) %% 10] || ' ' || i,
                    ' User.' || i || '@Example.TEST ',
                    (ARRAY['fr','de','us','gb','es','it','nl','se'])[1 + (i * 13) %% 8],
                    ((i * 7919) %% 2000000) / 100.0,
                    timestamp '2015-01-01 00:00:00' + make_interval(secs => i * 1500),
                    timestamp '2024-01-01 00:00:00' + make_interval(secs => i),
                    (ARRAY['active','trial','churned','paused'])[1 + (i * 31) %% 4]
                FROM generate_series(1::bigint, %s::bigint) AS i
                """,
                (rows,),
            )
            cursor.execute(f"ALTER TABLE {SCHEMA}.{TABLE} ADD PRIMARY KEY (id)")
            cursor.execute(f"COMMENT ON TABLE {SCHEMA}.{TABLE} IS %s", (tag,))
            cursor.execute(f"VACUUM ANALYZE {SCHEMA}.{TABLE}")
    finally:
        connection.close()
    seconds = time.perf_counter() - started
    log(f"table ready in {seconds:.1f}s")
    return seconds


def drop_write_back(url: str) -> None:
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {SCHEMA}.{WRITE_BACK_TABLE}")
    finally:
        connection.close()


def write_back_rows(url: str) -> int:
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.{WRITE_BACK_TABLE}",))
            if cursor.fetchone()[0] is None:
                return 0
            cursor.execute(f"SELECT count(*) FROM {SCHEMA}.{WRITE_BACK_TABLE}")
            return cursor.fetchone()[0]
    finally:
        connection.close()


def postgres_ledger_url(url: str) -> str:
    """The benchmark database with the ledger's tables in their own schema (search_path)."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{LEDGER_SCHEMA}"


def reset_postgres_ledger(url: str) -> None:
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {LEDGER_SCHEMA} CASCADE")
            cursor.execute(f"CREATE SCHEMA {LEDGER_SCHEMA}")
    finally:
        connection.close()


# --------------------------------------------------------------------------------------------------
# The project folder: connections.yaml and one connector per case

CONNECTIONS_YAML = """\
connections:
  warehouse:
    type: sql
    url: {pg_url}
  target:
    type: http
    base_url: {target_url}
    timeout_seconds: 60
    max_concurrency: {max_concurrency}
    retry: {{max_attempts: 5, initial_backoff_seconds: 0.2, max_backoff_seconds: 5}}
"""

# The mapping every case uses: typed fields, expressions, a nested body. `label` and `name` read the raw columns.
CONNECTOR_YAML = """\
kind: integration
description: bench/integration.py - {description}
integration:
  data_set:
    connection: warehouse
    table: {schema}.{table}
    key: id
    updated_at: updated_at
  target:
    connection: target
    fields:
      - {{name: id, type: integer, required: true}}
      - {{name: name, type: text, required: true}}
      - {{name: email, type: text, required: true}}
      - {{name: country, type: text}}
      - {{name: amount, type: currency}}
      - {{name: amount_text, type: text}}
      - {{name: customer_since, type: text}}
      - {{name: updated_at, type: datetime}}
      - {{name: status, type: text}}
      - {{name: label, type: text}}
  configurations:
    - name: customers
      mapping:
        - {{target: id, source: id}}
        - {{target: name, expression: "upper(trim(name))"}}
        - {{target: email, expression: "lower(trim(email))"}}
        - {{target: country, expression: "upper(country)"}}
        - {{target: amount, source: amount}}
        - {{target: amount_text, expression: "number_format(amount, 2)"}}
        - {{target: customer_since, expression: "date_format(created_at, '%d/%m/%Y')"}}
        - {{target: updated_at, source: updated_at}}
        - {{target: status, source: status}}
        - {{target: label, expression: "concat(trim(name), ' <', lower(trim(email)), '>')"}}
      request:
        method: POST
        path: /{collection}
        body:
          id: "{{{{id}}}}"
          name: "{{{{name}}}}"
          contact: {{email: "{{{{email}}}}", label: "{{{{label}}}}"}}
          billing: {{amount: "{{{{amount}}}}", amount_text: "{{{{amount_text}}}}", country: "{{{{country}}}}"}}
          customer_since: "{{{{customer_since}}}}"
          updated_at: "{{{{updated_at}}}}"
          status: "{{{{status}}}}"
{extra}  write_back: {{table: {schema}.{write_back}}}
"""

SINGLE_EXTRA = "      target_ref: id\n"
BATCHED_EXTRA = f"""\
      batch:
        size: {BATCH_SIZE}
        path: /{COLLECTION}/batch
        body: {{records: "{{{{records}}}}"}}
"""


def connector_name(case: str) -> str:
    return "bench_batched" if case == "batched" else "bench_single"


def write_project(root: Path, case: str, pg_url: str, target_url: str) -> Path:
    """A project folder (resources/connections.yaml and resources/connectors/<name>.yaml) for one case."""
    connectors = root / "resources" / "connectors"
    connectors.mkdir(parents=True, exist_ok=True)
    (root / "resources" / "connections.yaml").write_text(
        CONNECTIONS_YAML.format(pg_url=pg_url, target_url=target_url, max_concurrency=MAX_CONCURRENCY)
    )
    name = connector_name(case)
    batched = case == "batched"
    (connectors / f"{name}.yaml").write_text(
        CONNECTOR_YAML.format(
            description=f"batches of {BATCH_SIZE}" if batched else "one request per record",
            schema=SCHEMA,
            table=TABLE,
            collection=COLLECTION,
            write_back=WRITE_BACK_TABLE,
            extra=BATCHED_EXTRA if batched else SINGLE_EXTRA,
        )
    )
    return root


# --------------------------------------------------------------------------------------------------
# Children: the target's ceiling, the plain loop, and our cases


def run_child(request: dict, label: str, target_pid: int | None = None) -> dict:
    """Run one measurement in a fresh interpreter; the request goes through stdin (the URL may hold a password)."""
    target_cpu = process_cpu_seconds(target_pid) if target_pid else None
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
        raise RuntimeError(f"{label} failed (exit {process.returncode}):\n{process.stderr.strip()[-6000:]}")
    if target_pid and target_cpu is not None:
        after = process_cpu_seconds(target_pid)
        if after is not None:
            # The target is idle outside the timed span (imports, checks), so this is its CPU during the span.
            report["target_cpu_s"] = after - target_cpu
    return report


def child_main(request: dict) -> None:
    kind = request["kind"]
    if kind == "ceiling":
        child_ceiling(request)
    elif kind == "baseline":
        child_baseline(request)
    elif kind == "case":
        child_case(request)
    else:
        raise ValueError(f"unknown child kind {kind!r}")


def sample_payload(i: int) -> dict:
    """A payload of the same shape and size as the connector's, for the ceiling measurement."""
    return {
        "id": i,
        "name": f"GRACE HOPPER {i}",
        "contact": {"email": f"user.{i}@example.test", "label": f"Grace Hopper {i} <user.{i}@example.test>"},
        "billing": {"amount": 12345.67, "amount_text": "12,345.67", "country": "FR"},
        "customer_since": "01/02/2020",
        "updated_at": "2024-01-01T00:00:01",
        "status": "active",
    }


def child_ceiling(request: dict) -> None:
    """The target's ceiling: a tight aiohttp client, many requests in flight (uvloop when installed)."""
    import asyncio

    import aiohttp

    base = request["target_url"]
    n_single = request["single_requests"]
    n_records = request["batch_records"]
    encode = json.JSONEncoder(separators=(",", ":")).encode
    single_bodies = [encode(sample_payload(i)).encode() for i in range(n_single)]
    batch_bodies = [
        encode({"records": [sample_payload(j) for j in range(start, min(start + BATCH_SIZE, n_records))]}).encode()
        for start in range(0, n_records, BATCH_SIZE)
    ]

    async def drive(url: str, bodies: list[bytes], concurrency: int, prefix: str) -> tuple[float, dict]:
        connector = aiohttp.TCPConnector(limit=concurrency)
        statuses: dict[int, int] = {}
        async with aiohttp.ClientSession(connector=connector) as session:
            numbers = iter(range(len(bodies)))

            async def worker() -> None:
                headers = {"Content-Type": "application/json"}
                for i in numbers:
                    headers["Idempotency-Key"] = f"{prefix}-{i}"
                    async with session.post(url, data=bodies[i], headers=dict(headers)) as response:
                        await response.read()
                        statuses[response.status] = statuses.get(response.status, 0) + 1

            # The connections open as the workers start: part of the timing, as for any client.
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - started, statuses

    target_pid = request.get("target_pid")

    async def measure() -> dict:
        target_cpu = process_cpu_seconds(target_pid) if target_pid else None
        single_s, single_statuses = await drive(f"{base}/ceiling", single_bodies, CEILING_CONCURRENCY, "ceiling")
        if target_cpu is not None:
            target_cpu = process_cpu_seconds(target_pid) - target_cpu
        batch_s, batch_statuses = await drive(
            f"{base}/ceiling_batch/batch", batch_bodies, CEILING_BATCH_CONCURRENCY, "ceiling-batch"
        )
        return {
            "single_requests": n_single,
            "single_seconds": single_s,
            "single_statuses": single_statuses,
            "target_cpu_single_s": target_cpu,
            "batch_records": n_records,
            "batch_requests": len(batch_bodies),
            "batch_seconds": batch_s,
            "batch_statuses": batch_statuses,
        }

    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    cpu_before = cpu_seconds()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        report = runner.run(measure())
    report["client_cpu_s"] = cpu_seconds() - cpu_before
    report["peak_rss_mb"] = peak_rss_mb()
    print(CHILD_MARKER + json.dumps(report), flush=True)


def plain_payload(row: tuple) -> dict:
    """What a hand-written script would send for one row: the connector's payload, built in plain Python."""
    id_, name, email, country, amount, created_at, updated_at, status = row
    name, email = name.strip(), email.strip().lower()
    return {
        "id": id_,
        "name": name.upper(),
        "contact": {"email": email, "label": f"{name} <{email}>"},
        "billing": {"amount": float(amount), "amount_text": f"{amount:,.2f}", "country": country.upper()},
        "customer_since": created_at.strftime("%d/%m/%Y"),
        "updated_at": updated_at.isoformat(),
        "status": status,
    }


def child_baseline(request: dict) -> None:
    """The plain loop: `requests.post(url, json=payload)` per record, no session, no threads."""
    import requests

    connection = _connect(request["pg_url"])
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, name, email, country, amount, created_at, updated_at, status FROM {SCHEMA}.{TABLE} "
                "ORDER BY id"
            )
            payloads = [plain_payload(row) for row in cursor]
    finally:
        connection.close()
    url = f"{request['target_url']}/{COLLECTION}"
    statuses: dict[int, int] = {}
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    for payload in payloads:
        response = requests.post(url, json=payload)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    seconds = time.perf_counter() - started
    report = {
        "rows": len(payloads),
        "seconds": seconds,
        "statuses": statuses,
        "cpu_s": cpu_seconds() - cpu_before,
        "peak_rss_mb": peak_rss_mb(),
    }
    print(CHILD_MARKER + json.dumps(report), flush=True)


def child_case(request: dict) -> None:
    """One run of the connector's Dagster job, in process, on an ephemeral instance; timed from start to end."""
    import functools
    import gc
    import threading
    from collections import defaultdict

    import dagster as dg

    from connector_pipelines.definitions import definitions_for
    from connector_pipelines.factories import integration as factory
    from connector_pipelines.factories.translator import connector_names
    from connector_pipelines.integration.audit import AuditFile
    from connector_pipelines.integration.delivery import IntegrationDelivery
    from connector_pipelines.integration.write_back import WriteBack
    from connector_pipelines.mapping import CompiledMapping
    from connector_pipelines.spec.loader import load_project
    from connector_pipelines.state.database import LEDGER_URL_ENV
    from connector_pipelines.state.ledger import DeliveryLedger
    from connector_pipelines.storage import STORAGE_ENV

    rss_after_imports = rss_mb()
    case = request["case"]
    os.environ[STORAGE_ENV] = request["storage"]
    if request.get("ledger_url"):
        os.environ[LEDGER_URL_ENV] = request["ledger_url"]

    # Where the time goes: wall time of a few coarse-grained calls (per batch or per run, so the wrappers cost
    # nothing measurable). Those on the ledger thread overlap with the sending.
    # CPU time (of the calling thread) as well, since the ledger thread's wall time includes waiting for the GIL.
    timers: dict[str, float] = defaultdict(float)
    timer_lock = threading.Lock()

    def timed(owner, attribute: str, label: str) -> None:
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            started, started_cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                with timer_lock:
                    timers[label] += time.perf_counter() - started
                    timers[label + "_cpu"] += time.thread_time() - started_cpu

        setattr(owner, attribute, wrapper)

    # Time spent in the cyclic garbage collector, by generation.
    gc_started = [0.0]
    gc_counts = [0, 0, 0]

    def gc_callback(phase: str, info: dict) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            timers["gc"] += time.perf_counter() - gc_started[0]
            gc_counts[info["generation"]] += 1

    gc.callbacks.append(gc_callback)

    timed(factory, "write_snapshot", "snapshot")
    timed(IntegrationDelivery, "run", "engine_run")
    timed(CompiledMapping, "map_batch", "map")
    timed(DeliveryLedger, "state", "ledger_state")
    timed(DeliveryLedger, "write", "ledger_write")
    timed(WriteBack, "drain", "write_back")
    timed(AuditFile, "append", "audit")

    started = time.perf_counter()
    root = Path(request["project"])
    project = load_project(root / "resources")
    name = connector_name(case)
    names = connector_names(project.connector(name), project.connections)
    job = definitions_for(project).resolve_job_def(names.job)
    definitions_s = time.perf_counter() - started
    instance = dg.DagsterInstance.ephemeral()

    profiler = None
    if request.get("profile_dir"):
        import cProfile

        profiler = cProfile.Profile()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    result = job.execute_in_process(instance=instance, run_config=names.run_config(), raise_on_error=False)
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - started
    cpu_s = cpu_seconds() - cpu_before
    peak = peak_rss_mb()
    if profiler is not None:
        profiler.dump_stats(str(Path(request["profile_dir"]) / f"{case}.pstats"))

    if not result.success:
        failures = [
            event.event_specific_data.error.to_string()
            for event in result.all_events
            if event.is_step_failure and event.event_specific_data and event.event_specific_data.error
        ]
        raise RuntimeError(f"{case}: the job failed:\n" + "\n".join(failures)[-4000:])
    metadata: dict = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if materialization.asset_key.path[-1] == "customers":
            metadata = {key: getattr(value, "value", value) for key, value in materialization.metadata.items()}
    checks = {
        event.asset_check_evaluation_data.check_name: event.asset_check_evaluation_data.passed
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    }

    # Step spans from the event log: the rest of the run is Dagster's own (run start, planning, events, checks).
    steps: dict[str, dict[str, float]] = {}
    first = last = None
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None:
            continue
        first = entry.timestamp if first is None else min(first, entry.timestamp)
        last = entry.timestamp if last is None else max(last, entry.timestamp)
        kind = event.event_type_value
        if kind == "STEP_START":
            steps.setdefault(entry.step_key, {})["start"] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            steps.setdefault(entry.step_key, {})["end"] = entry.timestamp
    step_seconds = {
        key.rsplit("__", 1)[-1]: span["end"] - span["start"]
        for key, span in steps.items()
        if {"start", "end"} <= set(span)
    }
    report = {
        "case": case,
        "seconds": seconds,
        "cpu_s": cpu_s,
        "peak_rss_mb": peak,
        "rss_after_imports_mb": rss_after_imports,
        "definitions_s": definitions_s,
        "counts": {k: metadata.get(k) for k in ("sent", "delivered", "failed", "skipped", "unchanged", "requests")},
        "checks": checks,
        "steps": step_seconds,
        "event_log_span_s": (last - first) if first is not None else None,
        "timers": dict(timers),
        "gc_collections": gc_counts,
        "gc_objects_after": len(gc.get_objects()),
    }
    print(CHILD_MARKER + json.dumps(report), flush=True)


# --------------------------------------------------------------------------------------------------
# Checks against the target's counts


def check_single(stats: dict, rows: int) -> list[str]:
    problems = []
    if stats["duplicates"] != 0:
        problems.append(f"{stats['duplicates']} idempotency keys applied more than once")
    if stats["applied"] != rows or stats["distinct_keys"] != rows:
        problems.append(
            f"applied {stats['applied']:,} under {stats['distinct_keys']:,} distinct keys, expected {rows:,}"
        )
    if stats["collections"].get(COLLECTION) != rows:
        problems.append(f"the target holds {stats['collections'].get(COLLECTION, 0):,} records, expected {rows:,}")
    return problems


def check_batched(stats: dict, rows: int) -> list[str]:
    """Each batch request is applied once under its own key, and every record is held once."""
    problems = []
    if stats["duplicates"] != 0:
        problems.append(f"{stats['duplicates']} batch keys applied more than once")
    requests = stats["requests"]
    if stats["applied"] != requests or stats["distinct_keys"] != requests or stats["replays"]:
        problems.append(
            f"{requests:,} batch requests, applied {stats['applied']:,} under {stats['distinct_keys']:,} keys "
            f"({stats['replays']} replays): each should be applied once under its own key"
        )
    if requests < -(-rows // BATCH_SIZE):
        problems.append(f"{requests:,} batch requests cannot carry {rows:,} records of at most {BATCH_SIZE}")
    if stats["collections"].get(COLLECTION) != rows:
        problems.append(f"the target holds {stats['collections'].get(COLLECTION, 0):,} records, expected {rows:,}")
    return problems


def stats_line(stats: dict) -> str:
    statuses = ", ".join(f"{status}: {count:,}" for status, count in stats["statuses"].items()) or "none"
    return (
        f"requests {stats['requests']:,} ({statuses}), applied {stats['applied']:,}, "
        f"distinct keys {stats['distinct_keys']:,}, duplicates {stats['duplicates']}, replays {stats['replays']}, "
        f"records held {stats['collections'].get(COLLECTION, 0):,}"
    )


# --------------------------------------------------------------------------------------------------
# Report


@dataclass
class Result:
    case: str
    rows: int
    seconds: float
    peak_rss_mb: float
    report: dict
    verified: str = ""
    detail: dict = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def print_report(
    rows: int, ceiling: dict, baseline: dict, results: list[Result], ledger: str, case_suffix: str, load: tuple
) -> None:
    baseline_rps = baseline["rows"] / baseline["seconds"]
    header = [
        "case",
        "rows",
        "seconds",
        "rows/s",
        "baseline rows/s",
        "ratio",
        "peak RSS MB",
        "target CPU",
        "target",
        "result",
    ]
    lines = [header]
    lines.append(
        [
            "plain requests.post loop",
            f"{baseline['rows']:,}",
            f"{baseline['seconds']:.2f}",
            f"{baseline_rps:,.0f}",
            f"{baseline_rps:,.0f}",
            "1.00",
            f"{baseline['peak_rss_mb']:.0f}",
            _busy(baseline),
            "-",
            "-",
        ]
    )
    for result in results:
        targets, verdicts = [], []
        ratio_text = baseline_text = "-"
        if result.case in ("single", "batched"):
            ratio = result.rows_per_s / baseline_rps
            ratio_text, baseline_text = f"{ratio:.2f}", f"{baseline_rps:,.0f}"
        if result.case == "single":
            targets.append(f">= {SINGLE_RATIO_TARGET:.0f}x")
            verdicts.append(ratio >= SINGLE_RATIO_TARGET)
        elif result.case == "batched":
            targets.append(f">= {BATCHED_ROWS_PER_S_TARGET:,}/s")
            verdicts.append(result.rows_per_s >= BATCHED_ROWS_PER_S_TARGET)
        elif result.case == "unchanged_rerun":
            # 3 s for 200,000 records; scaled to this run's size for a quick check.
            limit = RERUN_SECONDS_TARGET * rows / DEFAULT_ROWS
            targets.append(f"< {limit:.2f} s")
            verdicts.append(result.seconds < limit)
        targets.append(f"< {MEMORY_TARGET_MB:.0f} MB")
        verdicts.append(result.peak_rss_mb < MEMORY_TARGET_MB)
        lines.append(
            [
                result.case + case_suffix,
                f"{result.rows:,}",
                f"{result.seconds:.2f}",
                f"{result.rows_per_s:,.0f}",
                baseline_text,
                ratio_text,
                f"{result.peak_rss_mb:.0f}",
                _busy(result.report),
                ", ".join(targets),
                "PASS" if all(verdicts) else "MISS",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {1, 2, 3, 4, 5, 6, 7}
    single_rps = ceiling["single_requests"] / ceiling["single_seconds"]
    batch_rps = ceiling["batch_records"] / ceiling["batch_seconds"]
    print()
    print(
        f"Integration benchmark: {rows:,} records, PostgreSQL -> integration connector (Dagster job, {ledger} "
        f"ledger, write-back on) -> loopback HTTP target; {os.cpu_count()} CPUs, load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end"
    )
    capacity = ""
    if ceiling.get("target_cpu_single_s"):
        capacity = (
            f" = {ceiling['single_requests'] / ceiling['target_cpu_single_s']:,.0f} per second of target CPU "
            f"(target busy {100 * ceiling['target_cpu_single_s'] / ceiling['single_seconds']:.0f}%)"
        )
    print(
        f"target ceiling (http_target --fast in its own process, tight aiohttp client): {single_rps:,.0f} requests/s "
        f"of one record ({CEILING_CONCURRENCY} in flight){capacity}; {batch_rps:,.0f} records/s in batches of "
        f"{BATCH_SIZE} ({CEILING_BATCH_CONCURRENCY} in flight)"
    )
    print()
    for index, line in enumerate(lines):
        print("  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(line)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print()
    print("target CPU: the target process's CPU time over the case's seconds (100% = one core saturated)")
    print("checks against the target's GET /_stats after each case:")
    for result in results:
        print(f"  {result.case + case_suffix:<16} {result.verified}")
    print(
        "where the time goes, wall seconds [CPU seconds of the thread]; the ledger writes, write-back and audit "
        "run on the ledger thread:"
    )
    for result in results:
        report = result.report
        steps, timers = report["steps"], report["timers"]
        data_set_s = steps.get("data_set", 0.0)
        delivery_s = steps.get("customers", 0.0)
        engine = timers.get("engine_run", 0.0)
        snapshot = timers.get("snapshot", 0.0)
        dagster_s = result.seconds - snapshot - engine

        def part(label: str, timers: dict = timers) -> str:
            return f"{timers.get(label, 0.0):.2f} [{timers.get(label + '_cpu', 0.0):.2f}]"

        print(
            f"  {result.case + case_suffix:<16} {result.seconds:.2f} s = Dagster's own {dagster_s:.2f} "
            f"+ source -> data set snapshot {snapshot:.2f} + delivery engine {engine:.2f} "
            f"(steps: data_set {data_set_s:.2f}, delivery {delivery_s:.2f}, "
            f"outside the steps {result.seconds - data_set_s - delivery_s:.2f})"
        )
        detail = f"ledger state {part('ledger_state')}, mapping {part('map')}"
        if result.case == "unchanged_rerun":
            rest = engine - timers.get("ledger_state", 0.0) - timers.get("map", 0.0)
            detail += f", fingerprints + diff + the rest {rest:.2f}"
        else:
            detail += (
                f"; ledger thread: ledger writes {part('ledger_write')}, write-back {part('write_back')}, "
                f"audit {part('audit')}"
            )
        print(
            f"  {'':<16} engine: {detail}; garbage collector {timers.get('gc', 0.0):.2f} "
            f"({'/'.join(str(n) for n in report['gc_collections'])} collections by generation)"
        )
        print(
            f"  {'':<16} process CPU {report['cpu_s']:.2f} s; "
            f"RSS after imports {report['rss_after_imports_mb']:.0f} MB; "
            f"definitions built in {report['definitions_s']:.2f} s before the timing"
        )
    print(
        f"baseline: {baseline['rows']:,} x requests.post(url, json=payload) (no session: a new connection per "
        f"record), client CPU {baseline['cpu_s']:.1f} s over {baseline['seconds']:.1f} s; payloads built "
        "beforehand, not timed"
    )
    print()
    for result in results:
        case = result.case + case_suffix
        if result.case == "unchanged_rerun":
            print(
                f"RESULT bench={BENCH} case={case} rows={result.rows} seconds={result.seconds:.3f} "
                f"rows_per_s={result.rows_per_s:.0f} peak_rss_mb={result.peak_rss_mb:.1f}"
            )
        else:
            ratio = result.rows_per_s / baseline_rps
            print(
                f"RESULT bench={BENCH} case={case} rows={result.rows} rows_per_s={result.rows_per_s:.0f} "
                f"baseline_rows_per_s={baseline_rps:.0f} ratio={ratio:.3f} peak_rss_mb={result.peak_rss_mb:.1f}"
            )
    sys.stdout.flush()


def _busy(report: dict, seconds: float | None = None) -> str:
    cpu = report.get("target_cpu_s")
    seconds = seconds if seconds is not None else report.get("seconds")
    if cpu is None or not seconds:
        return "-"
    return f"{100 * cpu / seconds:.0f}%"


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/integration.py",
        description="Integration benchmark: PostgreSQL -> integration connector (Dagster job) -> loopback HTTP "
        "target, one record per request and batches of 500, beside a plain requests.post loop.",
        epilog="Environment: ROWS (default 200000; --rows wins), BENCH_PG_URL (default "
        f"{DEFAULT_PG_URL}). Prints a table, then one 'RESULT bench=integration case=...' line per case.",
    )
    parser.add_argument(
        "--rows", type=parse_rows, default=None, help="records to deliver (default: $ROWS or 200000); accepts 200k"
    )
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated subset of: {', '.join(CASES)} (default: all; unchanged_rerun needs single)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
        help="SQLAlchemy URL of the PostgreSQL database holding the source and write-back tables",
    )
    parser.add_argument(
        "--ledger",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="sqlite: the default ledger (a file in the run's storage folder); postgres: the ledger in the "
        f"benchmark database, schema {LEDGER_SCHEMA} (CONNECTOR_PIPELINES_LEDGER_URL); case names get _pg_ledger",
    )
    parser.add_argument(
        "--tmp-dir", default=None, help="where the project folder and storage go (default: system temp)"
    )
    parser.add_argument("--profile", default=None, help="write a cProfile of each case's run into this folder")
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
    if "unchanged_rerun" in cases and "single" not in cases:
        parser.error("unchanged_rerun reruns the single case's job: add single to --cases")
    cases = [case for case in CASES if case in cases]
    case_suffix = "_pg_ledger" if args.ledger == "postgres" else ""
    profile_dir = str(Path(args.profile).resolve()) if args.profile else None
    if profile_dir:
        Path(profile_dir).mkdir(parents=True, exist_ok=True)

    repo_root = str(Path(__file__).resolve().parent.parent)
    if repo_root not in sys.path:
        sys.path.append(repo_root)  # connector_pipelines_tests is not installed, only checked out
    from connector_pipelines_tests.servers.http_target import run_in_subprocess

    workdir = Path(tempfile.mkdtemp(prefix="bench-integration-", dir=args.tmp_dir))
    try:
        lock = RunLock(args.pg_url, BENCH, INTEGRATION_LOCK).__enter__()
    except Exception as exc:  # noqa: BLE001 - PostgreSQL unreachable: report and exit non-zero
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"error: cannot reach PostgreSQL at {args.pg_url}: {str(exc).strip()}", file=sys.stderr)
        return 1
    target = None
    load_start = os.getloadavg()[0]
    try:
        ensure_table(args.pg_url, rows)
        drop_write_back(args.pg_url)
        target = run_in_subprocess(fast=True, log_path=workdir / "target.log")
        target_pid = target.process.pid
        log(f"target (connector_pipelines_tests.servers.http_target --fast) at {target.base_url}, pid {target_pid}")

        # 1. The target's ceiling.
        ceiling = run_child(
            {
                "kind": "ceiling",
                "target_url": target.base_url,
                "single_requests": min(max(rows, 20_000), 50_000),
                "batch_records": min(max(rows, 20_000), 200_000),
                "target_pid": target_pid,
            },
            "the ceiling measurement",
            target_pid,
        )
        bad = {k: v for k, v in ceiling["single_statuses"].items() if not k.startswith("2")}
        bad |= {k: v for k, v in ceiling["batch_statuses"].items() if not k.startswith("2")}
        if bad:
            raise RuntimeError(f"the ceiling measurement got non-2xx answers: {bad}")
        log(
            f"target ceiling: {ceiling['single_requests'] / ceiling['single_seconds']:,.0f} requests/s "
            "one record each, "
            f"{ceiling['batch_records'] / ceiling['batch_seconds']:,.0f} records/s in batches of {BATCH_SIZE} "
            f"(target CPU {ceiling.get('target_cpu_single_s') or 0:.1f} s "
            f"over the {ceiling['single_seconds']:.1f} s "
            f"of single requests; client CPU {ceiling['client_cpu_s']:.1f} s in all)"
        )
        target.clear()

        # 2. The plain loop.
        log(f"plain loop: {rows:,} x requests.post(url, json=payload) (about {rows / 1000 / 60:.0f}+ minutes)...")
        baseline = run_child(
            {"kind": "baseline", "pg_url": args.pg_url, "target_url": target.base_url}, "the plain loop", target_pid
        )
        stats = target.stats()
        if baseline["rows"] != rows or stats["collections"].get(COLLECTION) != rows:
            raise RuntimeError(
                f"the plain loop posted {baseline['rows']:,} records and the target holds "
                f"{stats['collections'].get(COLLECTION, 0):,}, expected {rows:,} ({baseline['statuses']})"
            )
        log(
            f"plain loop: {baseline['seconds']:.1f}s ({rows / baseline['seconds']:,.0f} records/s); {stats_line(stats)}"
        )

        # 3. Ours.
        results: list[Result] = []
        ledger_url = postgres_ledger_url(args.pg_url) if args.ledger == "postgres" else None
        for case in cases:
            target.clear()
            fresh = case != "unchanged_rerun"
            project_case = "batched" if case == "batched" else "single"
            project = workdir / f"project-{project_case}"
            storage = workdir / f"storage-{project_case}"
            if fresh:
                shutil.rmtree(project, ignore_errors=True)
                shutil.rmtree(storage, ignore_errors=True)
                write_project(project, case, args.pg_url, target.base_url)
                if ledger_url:
                    reset_postgres_ledger(args.pg_url)
                drop_write_back(args.pg_url)
            write_back_before = write_back_rows(args.pg_url)
            request = {
                "kind": "case",
                "case": case,
                "rows": rows,
                "project": str(project),
                "storage": str(storage),
                "ledger_url": ledger_url,
                "profile_dir": profile_dir,
            }
            log(f"{case}: running the job integration_{connector_name(case)}...")
            report = run_child(request, case, target_pid)
            stats = target.stats()
            counts = report["counts"]
            problems: list[str] = []
            if case == "unchanged_rerun":
                if counts["unchanged"] != rows or counts["sent"] != 0 or stats["requests"] != 0:
                    problems.append(
                        f"expected {rows:,} unchanged and nothing sent; got {counts} and {stats['requests']:,} requests"
                    )
                verified = (
                    f"nothing sent: {counts['unchanged']:,} unchanged, {stats['requests']} requests at the target"
                )
            else:
                if counts["delivered"] != rows or counts["failed"] != 0:
                    problems.append(f"the run reports {counts}, expected {rows:,} delivered")
                if case == "single":
                    problems += check_single(stats, rows)
                else:
                    problems += check_batched(stats, rows)
                verified = stats_line(stats)
            if not all(report["checks"].values()):
                problems.append(f"asset checks failed: {report['checks']}")
            written_back = write_back_rows(args.pg_url) - write_back_before
            expected_back = 0 if case == "unchanged_rerun" else rows
            if written_back != expected_back:
                problems.append(f"write-back got {written_back:,} rows, expected {expected_back:,}")
            verified += f"; write-back rows {written_back:,}"
            if problems:
                raise RuntimeError(f"{case}: " + "; ".join(problems))
            result = Result(case, rows, report["seconds"], report["peak_rss_mb"], report, verified)
            results.append(result)
            log(
                f"{case}: {result.seconds:.2f}s ({result.rows_per_s:,.0f} records/s), peak RSS "
                f"{result.peak_rss_mb:.0f} MB, target CPU {_busy(report)}; {verified}"
            )
        print_report(rows, ceiling, baseline, results, args.ledger, case_suffix, (load_start, os.getloadavg()[0]))
    except Exception as exc:  # noqa: BLE001 - report and exit non-zero
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if target is not None:
            target.stop()
        try:
            drop_write_back(args.pg_url)
            if args.ledger == "postgres":
                connection = _connect(args.pg_url)
                with connection.cursor() as cursor:
                    cursor.execute(f"DROP SCHEMA IF EXISTS {LEDGER_SCHEMA} CASCADE")
                connection.close()
        except Exception:  # noqa: BLE001 - best effort
            pass
        lock.__exit__(None, None, None)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
