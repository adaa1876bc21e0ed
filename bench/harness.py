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
