"""Every name the Dagster layer gives, derived here and nowhere else.

Asset keys come from the translator (a user may override them). Everything that hangs off an asset, above all the
op that materializes it (and so the run config a sensor, a schedule or the CLI sends), is derived from the key the
translator *returned*, through `ConnectorNames`. Job, schedule, sensor, pool, check, resource and tag names are
derived from the connector's kind and name, which no translator changes, so that the CLI, the demo and scripts
can find them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import dagster as dg

from connector_pipelines.spec.common import PLATFORM_RESOURCE_PREFIX

# Run tags. Dagster's own partition-range tags are read by `RunRequest.partition_key_range`.
TRIGGER_TAG = "connector_pipelines/trigger"  # what started a run (schedule, files, change_log, cli, ingest, ...)
# Every run of a project with environments: which one it ran in (its ledger, its connections' values).
ENVIRONMENT_TAG = "connector_pipelines/environment"
HOST_TAG = "connector_pipelines/host"  # which machine and process run an in-process run (see runs.reap_dead_runs)
PID_TAG = "connector_pipelines/pid"
RUN_KEY_TAG = "dagster/run_key"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

# The parts of a connector's asset graph: the last segment of each default key.
DATA_SET = "data_set"  # integration: the records read this run
FILE = "file"  # extract: the file of the (latest) window
CUSTOM_FILE = "custom_file"  # partitioned extract: a file for a window given in run config

# The platform's own resources. The loader refuses connection names with this prefix, so they cannot clash.
STORAGE_RESOURCE = f"{PLATFORM_RESOURCE_PREFIX}storage"
LEDGER_RESOURCE = f"{PLATFORM_RESOURCE_PREFIX}ledger"
IMPORT_STATE_RESOURCE = f"{PLATFORM_RESOURCE_PREFIX}import_state"
RESERVED_RESOURCE_KEYS = (STORAGE_RESOURCE, LEDGER_RESOURCE, IMPORT_STATE_RESOURCE)

# Asset checks whose names do not depend on the spec.
NOT_EMPTY_CHECK = "not_empty"
NO_DUPLICATE_DELIVERY_CHECK = "no_duplicate_delivery"
REJECTED_RATE_CHECK = "rejected_rate"

# The sensor that evaluates every connector's `automation:` condition (one per set of definitions).
AUTOMATION_SENSOR = "connector_pipelines_automation"
# The sensor that sends the alerts of resources/notifications.yaml.
ALERTS_SENSOR = "connector_pipelines_alerts"

_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_]")


def default_asset_key(kind: str, connector: str, part: str) -> dg.AssetKey:
    """`[kind, name, part]`: the key `ConnectorTranslator` gives unless a subclass changes it."""
    return dg.AssetKey([kind, connector, part])


def op_name(key: dg.AssetKey) -> str:
    """The op that materializes `key`: its path joined by `__`, with anything an op name cannot hold as `_`."""
    return _NOT_IN_NAME.sub("_", "__".join(key.path))


def job_name(kind: str, connector: str) -> str:
    return f"{kind}_{connector}"


def custom_window_job_name(connector: str) -> str:
    """A partitioned extract's second job: one file for a window passed in run config."""
    return f"{job_name('extract', connector)}_custom"


def schedule_name(kind: str, connector: str) -> str:
    return f"{job_name(kind, connector)}_schedule"


def change_sensor_name(connector: str) -> str:
    """An integration's record-change sensor."""
    return f"{job_name('integration', connector)}_changes"


def once_sensor_name(kind: str, connector: str) -> str:
    """The sensor of `cadence: once` (an integration's or an import's; an import's `sync_on_save` too)."""
    return f"{job_name(kind, connector)}_once"


def file_sensor_name(connector: str) -> str:
    """An import's file-arrival sensor (file and email sources)."""
    return f"{job_name('import', connector)}_files"


def connector_pool(kind: str, connector: str) -> str:
    """Two runs of one connector's step never overlap (dagster.yaml: default_limit 1)."""
    return f"{kind}_{connector}"


def target_pool(connection: str) -> str:
    """Deliveries to one HTTP target queue behind each other, so its rate and concurrency limits hold."""
    return f"target_{connection}"


def expectation_check_name(expect: str, column: str, index: int) -> str:
    """`expect_<kind>_<column>_<n>`: a valid check name however the column is spelled, unique per position."""
    return f"expect_{expect}_{_NOT_IN_NAME.sub('_', column)}_{index + 1}"


def connector_parts(connector) -> list[str]:
    """The parts of a connector's asset graph, in order (the first one is what its job starts with)."""
    if connector.kind == "integration":
        return [DATA_SET, *(c.name for c in connector.integration.configurations)]
    if connector.kind == "import":
        return [connector.import_.target.table]
    return [FILE, CUSTOM_FILE] if connector.extract.partitioned else [FILE]


@dataclass(frozen=True)
class ConnectorNames:
    """One connector's names: its asset keys per part as the translator returned them, and all that is derived."""

    kind: str
    connector: str
    keys: Mapping[str, dg.AssetKey]
    environment: str | None = None  # the project's (sandbox, production...), when it has environments

    @property
    def run_tags(self) -> dict[str, str]:
        """What every run of the connector is tagged with: its environment, when the project has them."""
        return {ENVIRONMENT_TAG: self.environment} if self.environment else {}

    @property
    def job(self) -> str:
        return job_name(self.kind, self.connector)

    @property
    def schedule(self) -> str:
        return schedule_name(self.kind, self.connector)

    @property
    def once_sensor(self) -> str:
        return once_sensor_name(self.kind, self.connector)

    @property
    def pool(self) -> str:
        return connector_pool(self.kind, self.connector)

    def key(self, part: str) -> dg.AssetKey:
        return self.keys[part]

    def part_of(self, key: dg.AssetKey) -> str:
        """Which part an asset key of this connector stands for."""
        return next(part for part, known in self.keys.items() if known == key)

    def op(self, part: str) -> str:
        return op_name(self.keys[part])

    def run_config(self, parts: Iterable[str] | None = None, **config) -> dict:
        """Run config giving the same values to the ops of `parts` (default: every part). Empty values are left
        out, so a run started by hand, by a sensor or from the Launchpad's defaults looks the same."""
        values = {name: value for name, value in config.items() if value not in (None, [], False)}
        return {"ops": {self.op(part): {"config": dict(values)} for part in (parts or self.keys)}}
