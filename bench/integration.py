#!/usr/bin/env python
"""Integration benchmark: PostgreSQL rows -> the real connector, run through Dagster -> a loopback HTTP target,
each case beside a baseline measured in the same run.

ROWS records (default 200,000; id, name, email, country, amount numeric(12,2), created_at, updated_at, status)
are read from a PostgreSQL table and delivered by an integration connector declared in YAML (a realistic mapping:
upper/lower/trim/concat/date_format/number_format expressions, typed fields, a nested body template, target_ref,
write-back to the source database, the default SQLite ledger), run as the Dagster job `integration_<name>` with
`execute_in_process` on an ephemeral instance. The timed span is the whole job: reading the source into the data
set snapshot, mapping, fingerprints, the ledger writes before and after every chunk, the requests, the audit file
and the write-back.

Cases, each in its own subprocess (which reports its own peak RSS):

- `single`: one request per record (POST /customers, max_concurrency 64), with the ledger on. Baseline: the plain
  loop below.
- `unchanged_rerun`: the same job again with nothing changed, a scheduled run (empty run config): with the data
  set's `updated_at`, it reads only the rows updated since the last run (less the data set's `overlap`), finds them
  unchanged and sends nothing. Reported in seconds.
- `full_diff_rerun`: the same unchanged rerun with run config `full_diff: true`: every record read, mapped,
  fingerprinted and found unchanged in the ledger; nothing sent. Reported in seconds.
- `batched`: batches of 500 records per request (POST /customers/batch), fresh ledger. Baseline: a bare aiohttp
  client posting the same batches.

Scale cases, on a PostgreSQL table of SCALE_ROWS records (default 10,000,000; about 100 bytes a row: id bigint
primary key, name, email, country char(2), amount numeric(12,2), updated_at timestamptz with an index), built once
and reused while its size and generator version hold, and a connector with batches of 500 and no write-back. Their
delivered state is set up first by delivering every record through the connector (a scheduled run on a fresh
SQLite ledger in the scale folder: not a case, its seconds and records/s are printed):

- `scale_unchanged`: a scheduled run with nothing changed (it reads only what was updated since the setup). Baseline:
  `psql -c "COPY (<the data set query>) TO STDOUT" > /dev/null` of the whole data set; ratio = COPY's seconds / ours.
- `scale_changed`: 1% of the rows changed (`amount + 1`, `updated_at = now()` where `id % 100 = 0`), then a scheduled
  run delivers them in batches of 500: changed records/s end to end. The target must have applied each changed
  record exactly once (and nothing else).
- `push_one`: a push of one key (run config `keys: ["777"]`) in the SCALE_ROWS data set. Baseline: the same push in
  a 1,000-record data set (its own table, connector and ledger, delivered first); ratio = baseline seconds / ours.

Baselines, measured in the same run against the same target:

- the plain loop (`single`): `requests.post(url, json=payload)` per record, no session, no threads: what a
  hand-written script does. The payloads are built from the same rows beforehand; only the loop of posts is timed.
- aiohttp batches (`batched`): the same rows' payloads (the connector's shape) in batches of 500 records, posted
  to POST /customers/batch by one aiohttp session, 8 in flight, on asyncio's own loop (as the connector's):
  no mapping, no ledger. The JSON encoding of each batch is timed, the payloads are built beforehand.
- COPY (`scale_unchanged`): what reading the whole data set costs PostgreSQL and a client that does nothing with
  it; the better of two runs.

The target is the demo CRM's aiohttp REST store under the tests' recording layer
(`connector_pipelines_tests.servers.http_target --fast`, uvloop when installed) in its own process; the scale cases
have their own (`--record-counts`: it also counts applications per record). The first target's ceiling is
measured first with a tight aiohttp client (256 requests in flight, and batches of 500) so that the figures can be
read against what the target itself can answer. After each case the target's `/_stats` must show every record
applied exactly once (and, for the unchanged runs, no request).

    python bench/integration.py                                  # 200,000 records; scale cases at 10,000,000
    ROWS=20000 SCALE_ROWS=50000 python bench/integration.py      # a quick check
    python bench/integration.py --cases single,unchanged_rerun,full_diff_rerun --ledger postgres
    python bench/integration.py --cases scale_unchanged,scale_changed,push_one

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
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import INTEGRATION_LOCK, RunLock, libpq_args, parse_rows, peak_rss_mb, progress, status_mb


def log(message: str) -> None:
    progress("integration", message)


BENCH = "integration"
DEFAULT_ROWS = 200_000
DEFAULT_SCALE_ROWS = 10_000_000
SMALL_CASES = ("single", "unchanged_rerun", "full_diff_rerun", "batched")
SCALE_CASES = ("scale_unchanged", "scale_changed", "push_one")
CASES = SMALL_CASES + SCALE_CASES
RERUNS = ("unchanged_rerun", "full_diff_rerun")  # rerun the single case's job, in its storage
BATCH_SIZE = 500
MAX_CONCURRENCY = 64
SINGLE_RATIO_TARGET = 8.0  # x the plain loop
BATCHED_RATIO_TARGET = 0.3  # x the bare aiohttp client
RERUN_SECONDS_TARGET = 3.0  # for 200,000 records
SCALE_UNCHANGED_RATIO_TARGET = 0.25  # COPY's seconds / ours
PUSH_RATIO_TARGET = 0.67  # the push in 1,000 records' seconds / ours
MEMORY_TARGET_MB = 500.0
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
SCHEMA = "bench"
TABLE = "bench_integration_records"
WRITE_BACK_TABLE = "bench_integration_outcomes"
SCALE_TABLE = "bench_integration_scale"
PUSH_SMALL_TABLE = "bench_integration_scale_small"
PUSH_SMALL_ROWS = 1_000
PUSH_KEY = 777  # in both data sets, and not among the changed rows
CHANGE_EVERY = 100  # scale_changed changes the rows whose id is a multiple of this: 1%
LEDGER_SCHEMA = "bench_integration_ledger"  # --ledger postgres: the ledger's tables live in this schema
DATA_VERSION = 1  # bump when the generated data changes, so an existing table of the right size is rebuilt
SCALE_DATA_VERSION = 1  # the same for the scale tables
COLLECTION = "customers"
CONFIGURATION = "customers"
CEILING_CONCURRENCY = 256
CEILING_BATCH_CONCURRENCY = 8
CHILD_MARKER = "BENCH_CHILD_RESULT "
MIB = 1024 * 1024
# Until the integration's run config has full_diff, `{"full": True}` exercises the same path (but resends all).
FULL_DIFF_RUN_CONFIG = {"full_diff": True}


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


# The scale tables: values are functions of the id, so a changed row can be put back as it was generated.
SCALE_AMOUNT = "((id * 7919) % 2000000) / 100.0"
SCALE_UPDATED_AT = "timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => id)"


def scale_query(table: str) -> str:
    """The data set query the connector's read of the whole data set issues (DataSetReader.read), for COPY."""
    return f"SELECT ds.* FROM (SELECT * FROM {SCHEMA}.{table}) ds"


def ensure_scale_table(url: str, table: str, rows: int) -> float:
    """Create bench.<table> with `rows` rows unless it already holds exactly that (its comment says the size and
    the generator's version); a reused table first gets back the rows an earlier scale_changed changed."""
    tag = f"bench-integration-scale rows={rows} v={SCALE_DATA_VERSION}"
    connection = _connect(url)
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (f"{SCHEMA}.{table}",))
            if cursor.fetchone()[0] == tag:
                cursor.execute(f"SELECT count(*) FROM {SCHEMA}.{table}")
                if cursor.fetchone()[0] == rows:
                    restored = restore_scale_rows(cursor, table, rows)
                    log(
                        f"table {SCHEMA}.{table} already holds {rows:,} rows; reusing it"
                        + (f" ({restored:,} changed rows put back as generated)" if restored else "")
                    )
                    return 0.0
            log(f"creating {SCHEMA}.{table} with {rows:,} rows (generate_series)...")
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            cursor.execute(f"DROP TABLE IF EXISTS {SCHEMA}.{table}")
            cursor.execute(
                f"""
                CREATE TABLE {SCHEMA}.{table} (
                    id bigint NOT NULL,
                    name text NOT NULL,
                    email text NOT NULL,
                    country char(2) NOT NULL,
                    amount numeric(12,2) NOT NULL,
                    updated_at timestamptz NOT NULL
                )
                """
            )
            # No bind parameters, so psycopg2 leaves the % signs alone; `rows` is an int.
            cursor.execute(
                f"""
                INSERT INTO {SCHEMA}.{table}
                SELECT
                    id,
                    (ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Frances','Ken'])[1 + id % 8]
                        || ' ' || (ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Knuth','Allen',
                                         'Thompson','Ritchie','Hamilton'])[1 + (id * 7) % 10] || ' ' || id,
                    'User.' || id || '@Example.TEST',
                    (ARRAY['fr','de','us','gb','es','it','nl','se'])[1 + (id * 13) % 8],
                    {SCALE_AMOUNT},
                    {SCALE_UPDATED_AT}
                FROM generate_series(1::bigint, {int(rows)}::bigint) AS id
                """
            )
            cursor.execute(f"ALTER TABLE {SCHEMA}.{table} ADD PRIMARY KEY (id)")
            cursor.execute(f"CREATE INDEX ON {SCHEMA}.{table} (updated_at)")
            cursor.execute(f"COMMENT ON TABLE {SCHEMA}.{table} IS %s", (tag,))
            cursor.execute(f"VACUUM ANALYZE {SCHEMA}.{table}")
    finally:
        connection.close()
    seconds = time.perf_counter() - started
    log(f"table {SCHEMA}.{table} ready in {seconds:.1f}s")
    return seconds


def restore_scale_rows(cursor, table: str, rows: int) -> int:
    """Put back the rows changed after generation (their updated_at is past the generated ones: the index finds
    them), so every run's unchanged case starts from the same data."""
    cursor.execute(
        f"UPDATE {SCHEMA}.{table} SET amount = {SCALE_AMOUNT}, updated_at = {SCALE_UPDATED_AT} "
        f"WHERE updated_at > timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => {int(rows)})"
    )
    restored = cursor.rowcount
    if restored:
        cursor.execute(f"VACUUM ANALYZE {SCHEMA}.{table}")
    return restored


def change_scale_rows(url: str, table: str) -> int:
    """scale_changed's change: 1% of the rows, amount + 1 and updated_at now()."""
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {SCHEMA}.{table} SET amount = amount + 1, updated_at = now() WHERE id % {CHANGE_EVERY} = 0"
            )
            return cursor.rowcount
    finally:
        connection.close()


def put_back_scale_rows(url: str, table: str, rows: int) -> None:
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            restore_scale_rows(cursor, table, rows)
    finally:
        connection.close()


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


# The scale cases' connector: a smaller mapping over the scale table, batches of 500, no write-back (10,000,000
# write-back rows would be a benchmark of their own).
SCALE_CONNECTOR_YAML = """\
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
      - {{name: updated_at, type: datetime}}
  configurations:
    - name: customers
      mapping:
        - {{target: id, source: id}}
        - {{target: name, expression: "upper(trim(name))"}}
        - {{target: email, expression: "lower(trim(email))"}}
        - {{target: country, expression: "upper(country)"}}
        - {{target: amount, source: amount}}
        - {{target: updated_at, source: updated_at}}
      request:
        method: POST
        path: /{collection}
        body:
          id: "{{{{id}}}}"
          name: "{{{{name}}}}"
          contact: {{email: "{{{{email}}}}"}}
          billing: {{amount: "{{{{amount}}}}", country: "{{{{country}}}}"}}
          updated_at: "{{{{updated_at}}}}"
{batch}"""

SCALE_CONNECTOR = "bench_scale"
PUSH_SMALL_CONNECTOR = "bench_push_small"


def connector_name(case: str) -> str:
    if case in SCALE_CASES:
        return SCALE_CONNECTOR
    return "bench_batched" if case == "batched" else "bench_single"


def small_connector_yaml(case: str) -> str:
    batched = case == "batched"
    return CONNECTOR_YAML.format(
        description=f"batches of {BATCH_SIZE}" if batched else "one request per record",
        schema=SCHEMA,
        table=TABLE,
        collection=COLLECTION,
        write_back=WRITE_BACK_TABLE,
        extra=BATCHED_EXTRA if batched else SINGLE_EXTRA,
    )


def scale_connector_yaml(table: str, rows: int) -> str:
    return SCALE_CONNECTOR_YAML.format(
        description=f"{rows:,} records in {SCHEMA}.{table}, batches of {BATCH_SIZE}",
        schema=SCHEMA,
        table=table,
        collection=COLLECTION,
        batch=BATCHED_EXTRA,
    )


def write_project(root: Path, connectors: dict[str, str], pg_url: str, target_url: str) -> Path:
    """A project folder: resources/connections.yaml and resources/connectors/<name>.yaml per connector given."""
    folder = root / "resources" / "connectors"
    folder.mkdir(parents=True, exist_ok=True)
    (root / "resources" / "connections.yaml").write_text(
        CONNECTIONS_YAML.format(pg_url=pg_url, target_url=target_url, max_concurrency=MAX_CONCURRENCY)
    )
    for name, text in connectors.items():
        (folder / f"{name}.yaml").write_text(text)
    return root


# --------------------------------------------------------------------------------------------------
# Children: the target's ceiling, the baselines, and our job runs


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
    elif kind == "batch_baseline":
        child_batch_baseline(request)
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


def read_payloads(pg_url: str) -> list[dict]:
    """Every row of the table as the connector's payload (before any clock starts)."""
    connection = _connect(pg_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, name, email, country, amount, created_at, updated_at, status FROM {SCHEMA}.{TABLE} "
                "ORDER BY id"
            )
            return [plain_payload(row) for row in cursor]
    finally:
        connection.close()


def child_baseline(request: dict) -> None:
    """The plain loop: `requests.post(url, json=payload)` per record, no session, no threads."""
    import requests

    payloads = read_payloads(request["pg_url"])
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


def child_batch_baseline(request: dict) -> None:
    """A bare aiohttp client: the same payloads in batches of 500, 8 in flight, one session, asyncio's own loop
    (as the connector's engine uses); each batch JSON-encoded as it goes out. No mapping, no ledger."""
    import asyncio

    import aiohttp

    payloads = read_payloads(request["pg_url"])
    batches = [payloads[start : start + BATCH_SIZE] for start in range(0, len(payloads), BATCH_SIZE)]
    url = f"{request['target_url']}/{COLLECTION}/batch"
    encode = json.JSONEncoder(separators=(",", ":")).encode
    statuses: dict[int, int] = {}

    async def drive() -> float:
        connector = aiohttp.TCPConnector(limit=CEILING_BATCH_CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as session:
            numbers = iter(range(len(batches)))

            async def worker() -> None:
                for i in numbers:
                    body = encode({"records": batches[i]}).encode()
                    headers = {"Content-Type": "application/json", "Idempotency-Key": f"baseline-batch-{i}"}
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        statuses[response.status] = statuses.get(response.status, 0) + 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(CEILING_BATCH_CONCURRENCY)))
            return time.perf_counter() - started

    cpu_before = cpu_seconds()
    seconds = asyncio.run(drive())
    report = {
        "rows": len(payloads),
        "requests": len(batches),
        "seconds": seconds,
        "statuses": statuses,
        "cpu_s": cpu_seconds() - cpu_before,
        "peak_rss_mb": peak_rss_mb(),
    }
    print(CHILD_MARKER + json.dumps(report), flush=True)


def _trace_memory(case: str, path: Path, every: float = 20.0) -> None:
    """BENCH_MEMORY_TRACE=<file>: every 20 s, append to the file the RSS, the bytes Arrow holds, glibc malloc's
    heap (in use against free but kept: RSS well above "in use" is the allocator's, not live objects) and the
    Python object types that grew most since the sample before, to find what grows with the records delivered
    (it pauses the run while it counts: for diagnosis, not for figures)."""
    import collections
    import ctypes
    import gc
    import threading

    import pyarrow as pa

    previous: collections.Counter = collections.Counter()

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        ]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def heap() -> str:
        m = libc.mallinfo2()
        sizes = {"arena": m.arena, "in use": m.uordblks, "free": m.fordblks, "mmap": m.hblkhd}
        return ", ".join(f"{name} {size / MIB:.0f}" for name, size in sizes.items())

    def sample() -> None:
        while True:
            time.sleep(every)
            kinds = collections.Counter(type(o).__name__ for o in gc.get_objects())
            grown = kinds.copy()
            grown.subtract(previous)
            previous.clear()
            previous.update(kinds)
            top = ", ".join(f"{name} {count:+,}" for name, count in grown.most_common(8))
            with path.open("a") as out:
                out.write(
                    f"{time.strftime('%H:%M:%S')} {case}: RSS {rss_mb():,.0f} MB, Arrow "
                    f"{pa.total_allocated_bytes() / MIB:,.0f} MB; malloc {heap()}; objects: {top}\n"
                )

    threading.Thread(target=sample, name="memory-trace", daemon=True).start()


def child_case(request: dict) -> None:
    """One run of a connector's Dagster job, in process, on an ephemeral instance; timed from start to end."""
    import functools
    import gc
    import inspect
    import threading
    from collections import defaultdict

    import dagster as dg

    from connector_pipelines.definitions import definitions_for
    from connector_pipelines.factories import integration as factory
    from connector_pipelines.factories.naming import DATA_SET
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

    def add(label: str | Callable[[], str], started: float, started_cpu: float) -> None:
        label = label if isinstance(label, str) else label()
        with timer_lock:
            timers[label] += time.perf_counter() - started
            timers[label + "_cpu"] += time.thread_time() - started_cpu

    def timed(owner, attribute: str, label: str | Callable[[], str]) -> None:
        """Add the calls' wall and CPU time to `label` (a callable: the label when the call ends)."""
        original = getattr(owner, attribute, None)
        if original is None:  # renamed or gone: that part is simply not shown
            return
        if inspect.isgeneratorfunction(original):

            @functools.wraps(original)
            def generator_wrapper(*args, **kwargs):
                iterator = original(*args, **kwargs)
                while True:
                    started, started_cpu = time.perf_counter(), time.thread_time()
                    try:
                        item = next(iterator)
                    except StopIteration:
                        add(label, started, started_cpu)
                        return
                    add(label, started, started_cpu)
                    yield item

            setattr(owner, attribute, generator_wrapper)
            return

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            started, started_cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                add(label, started, started_cpu)

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

    timed(factory, "write_snapshot", "snapshot")  # the data set read, the retry keys' query included
    timed(factory, "keys_to_retry", "retry_keys")
    timed(factory, "read_cursors", "read_cursors")
    timed(factory, "mapping_gate", "mapping_gate")
    # The mapping gate maps the snapshot too, before the engine: its mapping is counted apart.
    engine_running = threading.Event()
    original_run = IntegrationDelivery.run

    def engine_run(self, *args, **kwargs):
        engine_running.set()
        try:
            return original_run(self, *args, **kwargs)
        finally:
            engine_running.clear()

    IntegrationDelivery.run = engine_run
    timed(IntegrationDelivery, "run", "engine_run")
    timed(CompiledMapping, "map_batch", lambda: "map" if engine_running.is_set() else "map_outside_engine")
    for reader in ("state", "entries", "iter_entries"):
        timed(DeliveryLedger, reader, "ledger_state")
    timed(DeliveryLedger, "write", "ledger_write")
    timed(DeliveryLedger, "mark_in_flight", "ledger_write")
    timed(DeliveryLedger, "counts", "ledger_counts")
    timed(DeliveryLedger, "duplicate_deliveries", "ledger_duplicates")
    timed(WriteBack, "drain", "write_back")
    timed(AuditFile, "append", "audit")

    if os.environ.get("BENCH_MEMORY_TRACE"):
        _trace_memory(case, Path(os.environ["BENCH_MEMORY_TRACE"]))

    started = time.perf_counter()
    root = Path(request["project"])
    project = load_project(root / "resources")
    names = connector_names(project.connector(request["connector"]), project.connections)
    job = definitions_for(project).resolve_job_def(names.job)
    definitions_s = time.perf_counter() - started
    instance = dg.DagsterInstance.ephemeral()
    run_config = names.run_config(**request.get("run_config", {}))

    profiler = None
    if request.get("profile_dir"):
        import cProfile

        profiler = cProfile.Profile()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    result = job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False)
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
    data_set: dict = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        values = {key: getattr(value, "value", value) for key, value in materialization.metadata.items()}
        if materialization.asset_key.path[-1] == CONFIGURATION:
            metadata = values
        elif materialization.asset_key.path[-1] == DATA_SET:
            data_set = {key: values.get(key) for key in ("rows", "scope")}
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
        "data_set": data_set,
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


def check_applied_once(stats: dict, rows: int) -> list[str]:
    """The scale target (record_counts): `rows` records held, each applied exactly once since the last clear."""
    applications = stats.get("record_applications", {}).get(COLLECTION, {})
    if applications != ({"1": rows} if rows else {}):
        return [f"records by times applied {applications}, expected {{'1': {rows:,}}}"]
    return []


def check_nothing_sent(stats: dict, counts: dict, data_set_rows: int) -> list[str]:
    if counts["unchanged"] != data_set_rows or counts["sent"] != 0 or stats["requests"] != 0:
        return [
            f"expected the {data_set_rows:,} records read unchanged and nothing sent; got {counts} and "
            f"{stats['requests']:,} requests"
        ]
    return []


def stats_line(stats: dict) -> str:
    statuses = ", ".join(f"{status}: {count:,}" for status, count in stats["statuses"].items()) or "none"
    line = (
        f"requests {stats['requests']:,} ({statuses}), applied {stats['applied']:,}, "
        f"distinct keys {stats['distinct_keys']:,}, duplicates {stats['duplicates']}, replays {stats['replays']}, "
        f"records held {stats['collections'].get(COLLECTION, 0):,}"
    )
    if "record_applications" in stats:
        applications = stats["record_applications"].get(COLLECTION, {})
        line += ", records by times applied " + (
            ", ".join(f"{times}x: {n:,}" for times, n in applications.items()) or "none"
        )
    return line


def data_set_line(report: dict) -> str:
    read = report.get("data_set", {})
    rows = read.get("rows")
    if rows is None:
        return "data set read: unknown"
    return f"data set read {rows:,} row{'' if rows == 1 else 's'} ({read.get('scope')})"


# --------------------------------------------------------------------------------------------------
# Report


@dataclass
class Result:
    """One job run: a case, or a setup run (not a case)."""

    case: str
    rows: int  # what rows/s is over: the data set's size, or the records changed / pushed
    seconds: float
    peak_rss_mb: float
    report: dict
    verified: str = ""
    data_set_rows: int | None = None  # the data set's size when `rows` is a part of it

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class Baseline:
    name: str  # as the table shows it
    rows: int
    seconds: float
    peak_rss_mb: float | None
    report: dict
    note: str = ""  # how it was measured, printed under the table
    detail: dict = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class Assessment:
    baseline: str  # the baseline's figure, as the table shows it
    ratio: float | None
    targets: list[tuple[str, bool]]  # (the target in words, met)
    fields: str  # the RESULT line's fields between rows= and peak_rss_mb=


def memory_ok(peak_mb: float) -> bool:
    return peak_mb <= MEMORY_TARGET_MB


def assess(result: Result, baselines: dict[str, Baseline], rows: int) -> Assessment:
    """A case's ratio to its baseline and its targets (a pure function of the measurements)."""
    memory = (f"<= {MEMORY_TARGET_MB:.0f} MB", memory_ok(result.peak_rss_mb))
    case = result.case
    if case in ("single", "batched"):
        base = baselines["plain" if case == "single" else "batches"]
        goal = SINGLE_RATIO_TARGET if case == "single" else BATCHED_RATIO_TARGET
        ratio = result.rows_per_s / base.rows_per_s
        fields = f"rows_per_s={result.rows_per_s:.0f} baseline_rows_per_s={base.rows_per_s:.0f} ratio={ratio:.3f}"
        return Assessment(f"{base.rows_per_s:,.0f}/s", ratio, [(f">= {goal:g}x", ratio >= goal), memory], fields)
    if case in RERUNS:
        # 3 s for 200,000 records; scaled to this run's size for a quick check.
        limit = RERUN_SECONDS_TARGET * rows / DEFAULT_ROWS
        fields = f"seconds={result.seconds:.3f} rows_per_s={result.rows_per_s:.0f}"
        return Assessment("-", None, [(f"< {limit:.2f} s", result.seconds < limit), memory], fields)
    if case == "scale_unchanged":
        base = baselines["copy"]
        ratio = base.seconds / result.seconds
        goal = SCALE_UNCHANGED_RATIO_TARGET
        fields = f"seconds={result.seconds:.3f} baseline_seconds={base.seconds:.3f} ratio={ratio:.3f}"
        return Assessment(f"{base.seconds:.2f} s", ratio, [(f">= {goal:g}x", ratio >= goal), memory], fields)
    if case == "scale_changed":
        fields = f"data_set_rows={result.data_set_rows} seconds={result.seconds:.3f} rows_per_s={result.rows_per_s:.0f}"
        return Assessment("-", None, [memory], fields)
    if case == "push_one":
        base = baselines["push_small"]
        ratio = base.seconds / result.seconds
        goal = PUSH_RATIO_TARGET
        fields = (
            f"data_set_rows={result.data_set_rows} seconds={result.seconds:.3f} "
            f"baseline_seconds={base.seconds:.3f} ratio={ratio:.3f}"
        )
        return Assessment(f"{base.seconds:.2f} s", ratio, [(f">= {goal:g}x", ratio >= goal), memory], fields)
    raise ValueError(f"unknown case {case!r}")


@dataclass
class Run:
    """Everything one benchmark run measured, for the report."""

    rows: int
    scale_rows: int
    ledger: str
    case_suffix: str
    ceiling: dict
    baselines: dict[str, Baseline] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    setups: list[Result] = field(default_factory=list)  # runs that set a case's state up: not cases
    notes: list[str] = field(default_factory=list)  # extra lines for the report (the scale target's memory)
    load: tuple[float, float] = (0.0, 0.0)


def print_report(run: Run) -> None:
    header = [
        "case",
        "rows",
        "seconds",
        "rows/s",
        "baseline",
        "ratio",
        "peak RSS MB",
        "memory",
        "target CPU",
        "target",
        "result",
    ]
    lines = [header]
    for baseline in run.baselines.values():
        peak = f"{baseline.peak_rss_mb:.0f}" if baseline.peak_rss_mb is not None else "-"
        lines.append(
            [
                baseline.name,
                f"{baseline.rows:,}",
                f"{baseline.seconds:.2f}",
                f"{baseline.rows_per_s:,.0f}" if baseline.rows > 1 else "-",
                "-",
                "1.00",
                peak,
                "-",
                _busy(baseline.report, baseline.seconds),
                "-",
                "-",
            ]
        )
    assessments = {result.case: assess(result, run.baselines, run.rows) for result in run.results}
    for result in run.results:
        judged = assessments[result.case]
        lines.append(
            [
                result.case + run.case_suffix,
                f"{result.rows:,}",
                f"{result.seconds:.2f}",
                f"{result.rows_per_s:,.0f}" if result.case != "push_one" else "-",
                judged.baseline,
                f"{judged.ratio:.2f}" if judged.ratio is not None else "-",
                f"{result.peak_rss_mb:.0f}",
                "ok" if memory_ok(result.peak_rss_mb) else "MISS",
                _busy(result.report),
                ", ".join(text for text, _ in judged.targets),
                "PASS" if all(ok for _, ok in judged.targets) else "MISS",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {1, 2, 3, 4, 5, 6, 8}
    print()
    print(
        f"Integration benchmark: {run.rows:,} records (scale cases: {run.scale_rows:,}), PostgreSQL -> integration "
        f"connector (Dagster job, {run.ledger} ledger) -> loopback HTTP target; {os.cpu_count()} CPUs, load average "
        f"{run.load[0]:.1f} at the start, {run.load[1]:.1f} at the end"
    )
    ceiling = run.ceiling
    single_rps = ceiling["single_requests"] / ceiling["single_seconds"]
    batch_rps = ceiling["batch_records"] / ceiling["batch_seconds"]
    capacity = ""
    if ceiling.get("target_cpu_single_s"):
        capacity = (
            f" = {ceiling['single_requests'] / ceiling['target_cpu_single_s']:,.0f} per second of target CPU "
            f"(target busy {100 * ceiling['target_cpu_single_s'] / ceiling['single_seconds']:.0f}%)"
        )
    print(
        f"target ceiling (http_target --fast in its own process, tight aiohttp client, uvloop): {single_rps:,.0f} "
        f"requests/s of one record ({CEILING_CONCURRENCY} in flight){capacity}; {batch_rps:,.0f} records/s in "
        f"batches of {BATCH_SIZE} ({CEILING_BATCH_CONCURRENCY} in flight)"
    )
    print()
    for index, line in enumerate(lines):
        print("  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(line)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print()
    print(
        "ratio: ours / the baseline in records/s (single, batched); the baseline's seconds / ours (scale_unchanged, "
        "push_one). target CPU: the target process's CPU time over the case's seconds (100% = one core saturated)"
    )
    for baseline in run.baselines.values():
        if baseline.note:
            print(f"baseline {baseline.name}: {baseline.note}")
    for setup in run.setups:
        print(
            f"setup {setup.case} (not a case): {setup.rows:,} records delivered in {setup.seconds:.1f} s "
            f"({setup.rows_per_s:,.0f} records/s), peak RSS {setup.peak_rss_mb:.0f} MB "
            f"({'ok' if memory_ok(setup.peak_rss_mb) else 'MISS'}: <= {MEMORY_TARGET_MB:.0f} MB)"
        )
    for note in run.notes:
        print(note)
    # Every job run: the setups, the baselines that are runs of ours (the push in 1,000 records), the cases.
    jobs = run.setups + [b.detail["job"] for b in run.baselines.values() if "job" in b.detail] + run.results
    width = max([len(job.case + run.case_suffix) for job in jobs] + [16])
    print("checks against the target's GET /_stats after each run:")
    for result in jobs:
        print(f"  {result.case + run.case_suffix:<{width}} {result.verified}")
    print(
        "where the time goes, wall seconds [CPU seconds of the thread]; the ledger writes and audit run on the "
        "ledger thread, the write-back on its own:"
    )
    for result in jobs:
        for line in time_lines(result.case + run.case_suffix, result, width):
            print(line)
    print()
    for result in run.results:
        judged = assessments[result.case]
        print(
            f"RESULT bench={BENCH} case={result.case + run.case_suffix} rows={result.rows} {judged.fields} "
            f"peak_rss_mb={result.peak_rss_mb:.1f}"
        )
    sys.stdout.flush()


def time_lines(name: str, result: Result, width: int) -> list[str]:
    """Where one run's time went: the data set read, the engine (ledger, mapping, sending), Dagster's own."""
    report = result.report
    steps, timers = report["steps"], report["timers"]

    def seconds(label: str) -> float:
        return timers.get(label, 0.0)

    def part(label: str) -> str:
        return f"{seconds(label):.2f} [{seconds(label + '_cpu'):.2f}]"

    snapshot, engine = seconds("snapshot"), seconds("engine_run")
    gate, duplicates = seconds("mapping_gate"), seconds("ledger_duplicates")
    rest = result.seconds - snapshot - engine - gate - duplicates
    data_set_s, delivery_s = steps.get("data_set", 0.0), steps.get(CONFIGURATION, 0.0)
    counts = report["counts"]
    pad = " " * width
    lines = [
        f"  {name:<{width}} {result.seconds:.2f} s = source -> data set snapshot {snapshot:.2f} + mapping gate "
        f"{gate:.2f} (its mapping {part('map_outside_engine')}) + delivery engine {engine:.2f} + duplicate check "
        f"{duplicates:.2f} + Dagster's own and the rest {rest:.2f}",
        f"  {pad} {data_set_line(report)}, retry keys {part('retry_keys')} of it; steps: data_set {data_set_s:.2f}, "
        f"delivery {delivery_s:.2f}, outside the steps {result.seconds - data_set_s - delivery_s:.2f}",
    ]
    detail = f"ledger reads {part('ledger_state')}, ledger counts {part('ledger_counts')}, mapping {part('map')}"
    if not counts.get("sent"):
        other = engine - seconds("ledger_state") - seconds("ledger_counts") - seconds("map")
        detail += f", fingerprints + diff + the rest {other:.2f}"
    else:
        detail += (
            f"; ledger thread: ledger writes {part('ledger_write')}, write-back {part('write_back')}, "
            f"audit {part('audit')}"
        )
    if "read_cursors" in timers:
        detail += f"; read cursors {part('read_cursors')}"
    lines.append(
        f"  {pad} engine: {detail}; garbage collector {seconds('gc'):.2f} "
        f"({'/'.join(str(n) for n in report['gc_collections'])} collections by generation)"
    )
    lines.append(
        f"  {pad} process CPU {report['cpu_s']:.2f} s; RSS after imports {report['rss_after_imports_mb']:.0f} MB; "
        f"definitions built in {report['definitions_s']:.2f} s before the timing"
    )
    return lines


def _busy(report: dict, seconds: float | None = None) -> str:
    cpu = report.get("target_cpu_s")
    seconds = seconds if seconds is not None else report.get("seconds")
    if cpu is None or not seconds:
        return "-"
    return f"{100 * cpu / seconds:.0f}%"


# --------------------------------------------------------------------------------------------------
# Running the cases


def copy_baseline(url: str, query: str, attempts: int = 2) -> list[float]:
    """`psql -c "COPY (<query>) TO STDOUT" > /dev/null`, `attempts` times: each run's seconds."""
    args = libpq_args(url)
    command = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(args["host"]), "-p", str(args["port"])]
    command += ["-U", args.get("user", "postgres"), "-d", args.get("dbname", "postgres")]
    command += ["-c", f"COPY ({query}) TO STDOUT"]
    env = dict(os.environ)
    if "password" in args:
        env["PGPASSWORD"] = args["password"]
    times = []
    for attempt in range(attempts):
        with open(os.devnull, "wb") as sink:
            started = time.perf_counter()
            process = subprocess.run(command, stdout=sink, stderr=subprocess.PIPE, env=env)
            seconds = time.perf_counter() - started
        if process.returncode != 0:
            error = process.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"the COPY baseline failed (exit {process.returncode}): {error}")
        times.append(seconds)
        log(f"COPY baseline attempt {attempt + 1}: {seconds:.2f}s")
    return times


@dataclass
class Context:
    pg_url: str
    workdir: Path
    ledger_url: str | None
    profile_dir: str | None


def job_run(label: str, connector: str, project: Path, storage: Path, run_config: dict, context: Context, target):
    """One run of a connector's job in a child process; its report (with the target's CPU over the run)."""
    request = {
        "kind": "case",
        "case": label,
        "connector": connector,
        "project": str(project),
        "storage": str(storage),
        "run_config": run_config,
        "ledger_url": context.ledger_url,
        "profile_dir": context.profile_dir,
    }
    config = f"run config {json.dumps(run_config)}" if run_config else "a scheduled run: empty run config"
    log(f"{label}: running the job integration_{connector} ({config})...")
    return run_child(request, label, target.process.pid)


def fresh_folders(context: Context, name: str) -> tuple[Path, Path]:
    """A new project folder and storage folder (so a new SQLite ledger) for `name`."""
    project, storage = context.workdir / f"project-{name}", context.workdir / f"storage-{name}"
    shutil.rmtree(project, ignore_errors=True)
    shutil.rmtree(storage, ignore_errors=True)
    return project, storage


def finish(label: str, report: dict, problems: list[str], verified: str) -> None:
    if not all(report["checks"].values()):
        problems.append(f"asset checks failed: {report['checks']}")
    if problems:
        raise RuntimeError(f"{label}: " + "; ".join(problems))
    log(
        f"{label}: {report['seconds']:.2f}s, peak RSS {report['peak_rss_mb']:.0f} MB, target CPU {_busy(report)}; "
        f"{verified}"
    )


def measure_baselines(cases: list[str], run: Run, context: Context, target, rows: int) -> None:
    """The plain loop (for single) and the bare aiohttp batches (for batched), against the first target."""
    if "single" in cases:
        log(f"plain loop: {rows:,} x requests.post(url, json=payload) (about {rows / 1000 / 60:.0f}+ minutes)...")
        target.clear()
        report = run_child(
            {"kind": "baseline", "pg_url": context.pg_url, "target_url": target.base_url},
            "the plain loop",
            target.process.pid,
        )
        stats = target.stats()
        if report["rows"] != rows or stats["collections"].get(COLLECTION) != rows:
            raise RuntimeError(
                f"the plain loop posted {report['rows']:,} records and the target holds "
                f"{stats['collections'].get(COLLECTION, 0):,}, expected {rows:,} ({report['statuses']})"
            )
        log(f"plain loop: {report['seconds']:.1f}s ({rows / report['seconds']:,.0f} records/s); {stats_line(stats)}")
        run.baselines["plain"] = Baseline(
            "plain requests.post loop",
            rows,
            report["seconds"],
            report["peak_rss_mb"],
            report,
            f"{rows:,} x requests.post(url, json=payload) (no session: a new connection per record), client CPU "
            f"{report['cpu_s']:.1f} s over {report['seconds']:.1f} s; payloads built beforehand, not timed",
        )
    if "batched" in cases:
        log(f"aiohttp batches: {rows:,} records in batches of {BATCH_SIZE}, {CEILING_BATCH_CONCURRENCY} in flight...")
        target.clear()
        report = run_child(
            {"kind": "batch_baseline", "pg_url": context.pg_url, "target_url": target.base_url},
            "the aiohttp batches",
            target.process.pid,
        )
        stats = target.stats()
        problems = check_batched(stats, rows)
        if report["rows"] != rows or set(report["statuses"]) != {"200"}:
            problems.append(f"posted {report['rows']:,} records, answers {report['statuses']}")
        if problems:
            raise RuntimeError("the aiohttp batches: " + "; ".join(problems))
        log(f"aiohttp batches: {report['seconds']:.2f}s ({rows / report['seconds']:,.0f} records/s)")
        run.baselines["batches"] = Baseline(
            f"aiohttp batches of {BATCH_SIZE}",
            rows,
            report["seconds"],
            report["peak_rss_mb"],
            report,
            f"{report['requests']:,} POST /{COLLECTION}/batch of {BATCH_SIZE} records (the connector's payload "
            f"shape), one aiohttp session, {CEILING_BATCH_CONCURRENCY} in flight, asyncio's own loop; JSON encoded "
            f"in the timing, payloads built beforehand; client CPU {report['cpu_s']:.1f} s",
        )


def run_small_cases(cases: list[str], run: Run, context: Context, target, rows: int) -> None:
    for case in cases:
        target.clear()
        project_case = "batched" if case == "batched" else "single"
        if case in RERUNS:  # the single case's project and storage (its ledger), again
            project, storage = context.workdir / "project-single", context.workdir / "storage-single"
        else:
            project, storage = fresh_folders(context, project_case)
            write_project(project, {connector_name(case): small_connector_yaml(case)}, context.pg_url, target.base_url)
            if context.ledger_url:
                reset_postgres_ledger(context.pg_url)
            drop_write_back(context.pg_url)
        write_back_before = write_back_rows(context.pg_url)
        run_config = FULL_DIFF_RUN_CONFIG if case == "full_diff_rerun" else {}
        report = job_run(case, connector_name(case), project, storage, run_config, context, target)
        stats = target.stats()
        counts = report["counts"]
        problems: list[str] = []
        if case in RERUNS:
            read = report["data_set"].get("rows")
            problems += check_nothing_sent(stats, counts, read)
            if case == "full_diff_rerun" and read != rows:
                problems.append(f"a full diff read {read} rows of the data set's {rows:,}")
            verified = (
                f"nothing sent: {counts['unchanged']:,} unchanged, {stats['requests']} requests at the target; "
                f"{data_set_line(report)}"
            )
        else:
            if counts["delivered"] != rows or counts["failed"] != 0:
                problems.append(f"the run reports {counts}, expected {rows:,} delivered")
            problems += check_single(stats, rows) if case == "single" else check_batched(stats, rows)
            verified = stats_line(stats)
        written_back = write_back_rows(context.pg_url) - write_back_before
        expected_back = 0 if case in RERUNS else rows
        if written_back != expected_back:
            problems.append(f"write-back got {written_back:,} rows, expected {expected_back:,}")
        verified += f"; write-back rows {written_back:,}"
        finish(case, report, problems, verified)
        run.results.append(Result(case, rows, report["seconds"], report["peak_rss_mb"], report, verified))


def list_ids(target) -> set[str]:
    """The ids the target holds (fast mode lists ids only); read after /_stats, since it is a request too."""
    with urllib.request.urlopen(target.url(f"/{COLLECTION}"), timeout=300) as response:
        return {str(record["id"]) for record in json.loads(response.read())["records"]}


def check_push(stats: dict, counts: dict, target) -> list[str]:
    problems = check_applied_once(stats, 1)
    if counts["delivered"] != 1 or counts["sent"] != 1 or stats["requests"] != 1:
        problems.append(f"expected one record sent in one request; got {counts} and {stats['requests']} requests")
    if not problems and list_ids(target) != {str(PUSH_KEY)}:
        problems.append(f"the target holds other records than {PUSH_KEY}")
    return problems


def deliver_all(label: str, connector: str, folders: tuple[Path, Path], rows: int, context: Context, target):
    """A setup run: a scheduled run on a fresh ledger delivers every record; each must be applied once."""
    target.clear()
    report = job_run(label, connector, *folders, {}, context, target)
    stats = target.stats()
    counts = report["counts"]
    problems = check_batched(stats, rows) + check_applied_once(stats, rows)
    if counts["delivered"] != rows or counts["failed"] != 0:
        problems.append(f"the run reports {counts}, expected {rows:,} delivered")
    verified = stats_line(stats)
    finish(label, report, problems, verified)
    return Result(label, rows, report["seconds"], report["peak_rss_mb"], report, verified)


def run_scale_cases(cases: list[str], run: Run, context: Context, start_target, scale_rows: int) -> None:
    """The delivered state of SCALE_ROWS records (a setup run), then the scale cases, on a target of their own."""
    target = start_target(fast=True, record_counts=True, log_path=context.workdir / "scale-target.log")
    changed_rows = False
    try:
        pid = target.process.pid
        rss_at_start = status_mb(pid, "VmRSS:")
        log(f"scale target (http_target --record-counts) at {target.base_url}, pid {pid}")
        folders = fresh_folders(context, "scale")
        write_project(
            folders[0],
            {SCALE_CONNECTOR: scale_connector_yaml(SCALE_TABLE, scale_rows)},
            context.pg_url,
            target.base_url,
        )
        if context.ledger_url:
            reset_postgres_ledger(context.pg_url)  # one schema for both scale connectors, set up below
        setup = deliver_all("scale_setup", SCALE_CONNECTOR, folders, scale_rows, context, target)
        run.setups.append(setup)
        rss_held = status_mb(pid, "VmRSS:")
        if rss_at_start is not None and rss_held is not None:
            per_record = (rss_held - rss_at_start) * MIB / scale_rows
            run.notes.append(
                f"scale target: RSS {rss_held:,.0f} MB holding {scale_rows:,} records after the setup "
                f"({rss_at_start:.0f} MB at its start: about {per_record:.0f} bytes a record, so about "
                f"{rss_at_start + per_record * DEFAULT_SCALE_ROWS / MIB:,.0f} MB at {DEFAULT_SCALE_ROWS:,})"
            )

        if "scale_unchanged" in cases:
            times = copy_baseline(context.pg_url, scale_query(SCALE_TABLE))
            run.baselines["copy"] = Baseline(
                "psql COPY of the scale data set",
                scale_rows,
                min(times),
                None,
                {},
                f'psql -c "COPY ({scale_query(SCALE_TABLE)}) TO STDOUT" > /dev/null, the better of '
                + ", ".join(f"{t:.2f}" for t in times)
                + " s",
            )
            target.clear()
            report = job_run("scale_unchanged", SCALE_CONNECTOR, *folders, {}, context, target)
            stats = target.stats()
            read = report["data_set"].get("rows")
            problems = check_nothing_sent(stats, report["counts"], read)
            verified = f"nothing sent: {stats['requests']} requests at the target; {data_set_line(report)}"
            if read == scale_rows:
                verified += " (not incremental: the scheduled run read every row)"
            finish("scale_unchanged", report, problems, verified)
            run.results.append(
                Result("scale_unchanged", scale_rows, report["seconds"], report["peak_rss_mb"], report, verified)
            )

        if "scale_changed" in cases:
            expected = {str(i) for i in range(CHANGE_EVERY, scale_rows + 1, CHANGE_EVERY)}
            changed_rows = True
            changed = change_scale_rows(context.pg_url, SCALE_TABLE)
            if changed != len(expected):
                raise RuntimeError(f"scale_changed: the UPDATE changed {changed:,} rows, expected {len(expected):,}")
            log(f"scale_changed: {changed:,} rows changed (amount + 1, updated_at = now())")
            target.clear()
            report = job_run("scale_changed", SCALE_CONNECTOR, *folders, {}, context, target)
            stats = target.stats()
            counts = report["counts"]
            problems = check_batched(stats, changed) + check_applied_once(stats, changed)
            if counts["delivered"] != changed or counts["failed"] != 0:
                problems.append(f"the run reports {counts}, expected {changed:,} delivered")
            if not problems and list_ids(target) != expected:
                problems.append(f"the target holds other records than the {changed:,} changed ones")
            verified = f"{stats_line(stats)}; the changed ids exactly; {data_set_line(report)}"
            finish("scale_changed", report, problems, verified)
            run.results.append(
                Result("scale_changed", changed, report["seconds"], report["peak_rss_mb"], report, verified, scale_rows)
            )

        if "push_one" in cases:
            small = fresh_folders(context, "push-small")
            small_yaml = scale_connector_yaml(PUSH_SMALL_TABLE, PUSH_SMALL_ROWS)
            write_project(small[0], {PUSH_SMALL_CONNECTOR: small_yaml}, context.pg_url, target.base_url)
            run.setups.append(
                deliver_all("push_small_setup", PUSH_SMALL_CONNECTOR, small, PUSH_SMALL_ROWS, context, target)
            )
            keys = {"keys": [str(PUSH_KEY)]}
            pushes = {}
            for label, connector, where, size in (
                ("push_one_small", PUSH_SMALL_CONNECTOR, small, PUSH_SMALL_ROWS),
                ("push_one", SCALE_CONNECTOR, folders, scale_rows),
            ):
                target.clear()
                report = job_run(label, connector, *where, keys, context, target)
                stats = target.stats()
                verified = f"{stats_line(stats)}; {data_set_line(report)}"
                finish(label, report, check_push(stats, report["counts"], target), verified)
                pushes[label] = Result(label, 1, report["seconds"], report["peak_rss_mb"], report, verified, size)
            baseline = pushes["push_one_small"]
            run.baselines["push_small"] = Baseline(
                f"push of one key in {PUSH_SMALL_ROWS:,}",
                1,
                baseline.seconds,
                baseline.peak_rss_mb,
                baseline.report,
                f'run config keys: ["{PUSH_KEY}"] in a {PUSH_SMALL_ROWS:,}-record data set (its own table '
                f"{SCHEMA}.{PUSH_SMALL_TABLE}, connector and ledger, delivered first)",
                {"job": baseline},
            )
            run.results.append(pushes["push_one"])
    finally:
        target.stop()
        if changed_rows:
            try:
                put_back_scale_rows(context.pg_url, SCALE_TABLE, scale_rows)
            except Exception as exc:  # noqa: BLE001 - the next run puts them back as well
                log(f"could not put the changed rows back yet ({exc}); the next run will")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/integration.py",
        description="Integration benchmark: PostgreSQL -> integration connector (Dagster job) -> loopback HTTP "
        "target: one record per request, batches of 500, unchanged reruns, and at scale an unchanged scheduled "
        "run, 1% changed, a push of one key; each beside a baseline measured in the same run.",
        epilog="Environment: ROWS (default 200000; --rows wins), SCALE_ROWS (default 10000000; --scale-rows wins), "
        f"BENCH_PG_URL (default {DEFAULT_PG_URL}). Prints a table, then one 'RESULT bench=integration case=...' "
        "line per case.",
    )
    parser.add_argument(
        "--rows", type=parse_rows, default=None, help="records of the first four cases (default: $ROWS or 200000)"
    )
    parser.add_argument(
        "--scale-rows",
        type=lambda text: parse_rows(text, minimum=PUSH_SMALL_ROWS),
        default=None,
        help="records of the scale cases' data set (default: $SCALE_ROWS or 10000000; at least 1000)",
    )
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated subset of: {', '.join(CASES)} (default: all; the reruns need single)",
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
        "--tmp-dir", default=None, help="where the project folders and storage go (default: system temp)"
    )
    parser.add_argument("--profile", default=None, help="write a cProfile of each job run into this folder")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        child_main(json.loads(sys.stdin.read()))
        return 0

    try:
        rows = args.rows or parse_rows(os.environ.get("ROWS") or str(DEFAULT_ROWS))
    except argparse.ArgumentTypeError as exc:
        parser.error(f"ROWS: {exc}")
    try:
        scale_rows = args.scale_rows or parse_rows(
            os.environ.get("SCALE_ROWS") or str(DEFAULT_SCALE_ROWS), minimum=PUSH_SMALL_ROWS
        )
    except argparse.ArgumentTypeError as exc:
        parser.error(f"SCALE_ROWS: {exc}")
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown or not cases:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    for rerun in RERUNS:
        if rerun in cases and "single" not in cases:
            parser.error(f"{rerun} reruns the single case's job: add single to --cases")
    small_cases = [case for case in SMALL_CASES if case in cases]
    scale_cases = [case for case in SCALE_CASES if case in cases]
    if scale_cases and shutil.which("psql") is None and "scale_unchanged" in scale_cases:
        print("error: psql is not on PATH; it runs scale_unchanged's COPY baseline", file=sys.stderr)
        return 1
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
    ledger_url = postgres_ledger_url(args.pg_url) if args.ledger == "postgres" else None
    context = Context(args.pg_url, workdir, ledger_url, profile_dir)
    try:
        if small_cases:
            ensure_table(args.pg_url, rows)
            drop_write_back(args.pg_url)
        if scale_cases:
            ensure_scale_table(args.pg_url, SCALE_TABLE, scale_rows)
            if "push_one" in scale_cases:
                ensure_scale_table(args.pg_url, PUSH_SMALL_TABLE, PUSH_SMALL_ROWS)
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
        run = Run(
            rows=rows,
            scale_rows=scale_rows,
            ledger=args.ledger,
            case_suffix="_pg_ledger" if args.ledger == "postgres" else "",
            ceiling=ceiling,
        )

        # 2. The baselines against the first target, then ours.
        measure_baselines(small_cases, run, context, target, rows)
        run_small_cases(small_cases, run, context, target, rows)
        target.stop()  # the scale cases have a target of their own
        target = None
        # 3. The scale cases.
        if scale_cases:
            run_scale_cases(scale_cases, run, context, run_in_subprocess, scale_rows)
        run.load = (load_start, os.getloadavg()[0])
        print_report(run)
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
