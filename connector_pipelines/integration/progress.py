"""Progress lines for a long delivery, at a steady pace, so that the UI's run page shows a long run moving.

Pure: `Progress.line(counts)` says what to log when a line is due (see `connector_pipelines.progress`), or None.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from connector_pipelines.progress import Pacer, duration


class Progress:
    def __init__(
        self, label: str, total: int | None, clock: Callable[[], float] = time.monotonic, every: float | None = None
    ):
        self.label = label  # the configuration delivered
        self.total = total  # records in the data set this run reads, when known
        self.pacer = Pacer(every, clock)

    def line(self, counts: Mapping[str, int]) -> str | None:
        if not self.pacer.due():
            return None
        return describe(self.label, counts, self.total, self.pacer.elapsed())


def describe(label: str, counts: Mapping[str, int], total: int | None, elapsed: float) -> str:
    """`profiles: 120,000 of 200,000 records done (60%): 79,500 delivered, 500 failed, 40,000 unchanged, 0 skipped;
    150,000 read; 6,000 records/s, about 13 s left`. Done: sent (whatever the answer), unchanged, skipped, held
    or waiting for their retry time."""
    done = sum(counts.get(name, 0) for name in ("sent", "unchanged", "skipped", "held", "backoff"))
    rate = done / elapsed if elapsed > 0 else 0.0
    of = f" of {total:,}" if total else ""
    share = f" ({min(done / total, 1):.0%})" if total else ""
    left = ""
    if total and rate > 0 and done < total:
        left = f", about {duration((total - done) / rate)} left"
    return (
        f"{label}: {done:,}{of} records done{share}: {counts.get('delivered', 0):,} delivered, "
        f"{counts.get('failed', 0):,} failed, {counts.get('unchanged', 0):,} unchanged, "
        f"{counts.get('skipped', 0):,} skipped; {counts.get('read', 0):,} read; {rate:,.0f} records/s{left}"
    )
