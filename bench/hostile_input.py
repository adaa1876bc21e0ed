"""What a few bytes from a partner cost to refuse, beside what they cost a naive reader (issue 11, item 8).

Cases, each measured in a fresh subprocess (so peak memory is the case's own):
- `long_line`: a gzip JSON Lines file of about 200 KB holding one line of SIZE_MB megabytes (default 200).
  Ours: `imports.file_reader.read_file` with its default limits. Baseline: `gzip.open` + `json.loads` per line,
  what a reader without limits does.
- `huge_exponent`: the text "1e1000000" as an integer. Ours: `mapping.conversions.to_integer`. Baseline:
  `int(Decimal(text))`, Python's exact conversion, capped at TIMEOUT seconds (it took 33 s when measured for the
  issue; a capped baseline prints as ">TIMEOUT").

Run: `make bench-hostile` (SIZE_MB=..., TIMEOUT=... to change). Prints a table, then one RESULT line per case:
    RESULT bench=hostile case=... seconds=... baseline_seconds=... ratio=... peak_rss_mb=... baseline_peak_rss_mb=...
`ratio` is the baseline's time over ours (a capped baseline gives a lower bound, written with `>`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import peak_rss_mb, progress

BENCH = "hostile"
CHILD_MARKER = "BENCH_CHILD_RESULT "


def _child(case: str, side: str, path: str) -> None:
    """One measurement, in this (fresh) process; prints seconds, outcome and peak RSS after CHILD_MARKER."""
    # Imports first: the clock measures the refusal (or the naive read), not loading the package.
    from decimal import Decimal

    from connector_pipelines.imports.file_reader import FileRejected, read_file
    from connector_pipelines.mapping.conversions import to_integer

    start = time.perf_counter()
    if case == "long_line" and side == "ours":
        try:
            outcome = f"read {sum(batch.num_rows for batch in read_file(Path(path)).batches())} rows"
        except FileRejected as exc:
            outcome = f"rejected: {exc.reason}"
    elif case == "long_line":
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            outcome = f"read {sum(1 for line in lines if json.loads(line))} rows"
    elif side == "ours":
        try:
            outcome = f"converted: {to_integer('1e1000000')}"
        except Exception as exc:  # noqa: BLE001 - the refusal is the outcome measured
            outcome = f"refused: {exc}"
    else:
        outcome = f"converted to an integer of {int(Decimal('1e1000000')).bit_length():,} bits"
    seconds = time.perf_counter() - start
    print(CHILD_MARKER + json.dumps({"seconds": seconds, "outcome": outcome[:120], "peak_rss_mb": peak_rss_mb()}))


def _measure(case: str, side: str, path: Path, timeout: float) -> dict:
    command = [sys.executable, __file__, "--child", case, side, str(path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"seconds": None, "outcome": f"still running after {timeout:.0f} s (stopped)", "peak_rss_mb": None}
    for line in done.stdout.splitlines():
        if line.startswith(CHILD_MARKER):
            return json.loads(line[len(CHILD_MARKER) :])
    raise SystemExit(f"{case}/{side} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")


def _long_line_file(folder: Path, size_mb: int) -> Path:
    path = folder / "one_long_line.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(b'{"id": 1, "name": "')
        chunk = b"a" * (1 << 20)
        for _ in range(size_mb):
            out.write(chunk)
        out.write(b'"}\n')
    return path


def _seconds(value: float | None, timeout: float) -> str:
    return f">{timeout:.0f}" if value is None else f"{value:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, metavar=("CASE", "SIDE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    size_mb = int(os.environ.get("SIZE_MB", "200"))
    timeout = float(os.environ.get("TIMEOUT", "60"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_hostile_") as folder:
        progress(BENCH, f"writing a gzip JSON Lines file with one {size_mb} MB line")
        path = _long_line_file(Path(folder), size_mb)
        label = f"long_line ({path.stat().st_size / 1000:.0f} KB gzip, {size_mb} MB line)"
        for case, name in (("long_line", label), ("huge_exponent", "huge_exponent (to_integer('1e1000000'))")):
            progress(BENCH, f"{case}: ours")
            ours = _measure(case, "ours", path, timeout)
            progress(BENCH, f"{case}: baseline (at most {timeout:.0f} s)")
            baseline = _measure(case, "baseline", path, timeout)
            rows.append((case, name, ours, baseline))
    print(f"\n{'case':<48} {'ours s':>9} {'base s':>9} {'ratio':>9} {'ours MB':>8} {'base MB':>8}  ours' outcome")
    for _case, name, ours, baseline in rows:
        bound = ">" if baseline["seconds"] is None else ""
        base_seconds = baseline["seconds"] if baseline["seconds"] is not None else timeout
        ratio = f"{bound}{base_seconds / max(ours['seconds'], 1e-6):.0f}x"
        base_mb = "-" if baseline["peak_rss_mb"] is None else f"{baseline['peak_rss_mb']:.0f}"
        print(
            f"{name:<48} {_seconds(ours['seconds'], timeout):>9} {_seconds(baseline['seconds'], timeout):>9} "
            f"{ratio:>9} {ours['peak_rss_mb']:>8.0f} {base_mb:>8}  {ours['outcome']}"
        )
    print()
    for case, _name, ours, baseline in rows:
        base_seconds = baseline["seconds"] if baseline["seconds"] is not None else timeout
        bound = ">" if baseline["seconds"] is None else ""
        print(
            f"RESULT bench={BENCH} case={case} seconds={ours['seconds']:.4f} "
            f"baseline_seconds={bound}{base_seconds:.4f} ratio={bound}{base_seconds / max(ours['seconds'], 1e-6):.0f} "
            f"peak_rss_mb={ours['peak_rss_mb']:.0f} baseline_peak_rss_mb={baseline['peak_rss_mb'] or 0:.0f}"
        )


if __name__ == "__main__":
    main()
