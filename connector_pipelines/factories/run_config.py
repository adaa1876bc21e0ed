"""Run config as typed: a run's own settings (window, keys, files) must arrive as literal values.

Dagster's Pythonic config types `str`, `int` and `bool` fields as *sources*: a run config may write
`window_start: {env: AWS_SECRET_ACCESS_KEY}` and Dagster reads that variable of the worker. A value that then appears
in an error message or in metadata would show a worker's secret to whoever launched the run. None of our run config
fields is a mapping, so any mapping among the values the launcher sent is such a reference; the run is refused
before the value is used, and the message names the field only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg


def refuse_sourced_values(context: dg.AssetExecutionContext) -> None:
    """Fail the step when the op's config, as the launcher wrote it, holds an `{env: ...}` (or any mapping) value."""
    raw = (context.run.run_config.get("ops") or {}).get(context.op_execution_context.op.name) or {}
    fields = sorted(set(sourced_fields(raw.get("config") or {})))
    if fields:
        raise dg.Failure(
            f"run config {', '.join(fields)}: write the value itself; a reference such as {{env: ...}} is refused "
            "(it would read a variable of the worker)",
            allow_retries=False,
        )


def sourced_fields(config: Mapping[str, Any]) -> Iterator[str]:
    """The names of the fields whose value (or an item of whose list) is a mapping rather than a literal."""
    for name, value in config.items():
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, Mapping) for item in items):
            yield name


def tag_run(context: dg.AssetExecutionContext, names) -> None:
    """Put the connector's run tags (its environment) on the run, however it was launched: a job's runs carry
    them already; a run the UI's asset graph started for the asset alone does not."""
    missing = {key: value for key, value in names.run_tags.items() if context.run.tags.get(key) != value}
    if missing:
        context.instance.add_run_tags(context.run.run_id, missing)
