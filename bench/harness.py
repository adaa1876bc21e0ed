"""What every benchmark script shares: the row-count argument, progress lines, libpq arguments from a URL.

The scripts run as `python bench/NAME.py` (and re-run themselves with `--child`), so this folder is on sys.path.
"""

from __future__ import annotations

import argparse
import sys
import time


def parse_rows(text: str, minimum: int = 1) -> int:
    """`200000`, `200_000`, `200k`, `2M`."""
    cleaned = text.strip().replace("_", "").replace(",", "").lower()
    scale = 1
    if cleaned.endswith("m"):
        cleaned, scale = cleaned[:-1], 1_000_000
    elif cleaned.endswith("k"):
        cleaned, scale = cleaned[:-1], 1_000
    try:
        rows = int(float(cleaned) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a row count: {text!r}") from None
    if rows < minimum:
        wanted = "positive" if minimum == 1 else f"at least {minimum}"
        raise argparse.ArgumentTypeError(f"the row count must be {wanted}, not {text!r}")
    return rows


def progress(bench: str, message: str) -> None:
    """A timestamped progress line on stderr (stdout is the report)."""
    print(f"[bench {bench} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def libpq_args(url: str) -> dict:
    """psycopg2.connect() keyword arguments from a SQLAlchemy-style PostgreSQL URL."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    args = {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "dbname": parsed.database,
        "user": parsed.username,
        "password": parsed.password or None,
    }
    return {key: value for key, value in args.items() if value is not None}


def status_mb(pid: int | str, field_name: str) -> float | None:
    """A memory field of /proc/PID/status (`VmHWM:`, `VmRSS:`) in MiB, or None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field_name):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident set, in MiB.

    VmHWM (Linux) belongs to the current address space, which exec replaced: it counts only this program.
    getrusage's ru_maxrss is the fallback; on Linux it also carries the parent's peak across fork+exec, so a
    child started by a large parent would report the parent's size.
    """
    import resource

    value = status_mb("self", "VmHWM:")
    return value if value is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Advisory-lock keys: "bench" + a number per script.
EXTRACT_LOCK, INTEGRATION_LOCK, IMPORT_LOCK = 0x62656E6368_01, 0x62656E6368_02, 0x62656E6368_03


class RunLock:
    """PostgreSQL advisory locks held for the whole run: `key` exclusively, so two runs of one benchmark wait for
    each other instead of rebuilding shared tables under each other's feet, and `shared_keys` in shared mode,
    so that a benchmark does not measure while another one loads this machine's CPUs."""

    def __init__(self, url: str, bench: str, key: int, shared_keys: tuple[int, ...] = ()):
        self._url = url
        self._bench = bench
        self._locks = [(key, "pg_advisory_lock"), *((k, "pg_advisory_lock_shared") for k in shared_keys)]
        self._connection = None

    def __enter__(self) -> RunLock:
        import psycopg2

        self._connection = psycopg2.connect(**libpq_args(self._url))
        self._connection.autocommit = True
        with self._connection.cursor() as cursor:
            for key, lock in self._locks:
                cursor.execute(f"SELECT {lock.replace('pg_', 'pg_try_')}(%s)", (key,))
                if not cursor.fetchone()[0]:
                    progress(self._bench, "another benchmark run is going on; waiting for it to finish...")
                    cursor.execute(f"SELECT {lock}(%s)", (key,))
        return self

    def __exit__(self, *exc_info) -> None:
        if self._connection is not None:
            self._connection.close()  # ends the session, which releases the locks
