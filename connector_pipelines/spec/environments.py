"""Environments (a sandbox org beside the production one): per-environment values of connections, and which
environment a process runs in.

A connection may hold `environments: {sandbox: {...}, production: {...}}`, whose keys replace the connection's own
for that environment, and `connections.<env>.yaml` beside connections.yaml may do the same for any connection (its
`connections:` entries are merged key by key over the base ones; an entry it alone names is a new connection).
The environment is `--env` on the CLI, else `$CONNECTOR_PIPELINES_ENV`, else `production`. A project that declares
no environment and selects none has none: nothing about it changes.

What the environment changes besides the connections: every run is tagged with it, asset descriptions say it,
and the delivery ledger and import state are kept per environment (`state.database.environment_state_url`), so a
sandbox run never marks a production record as delivered.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENVIRONMENT_ENV = "CONNECTOR_PIPELINES_ENV"
DEFAULT_ENVIRONMENT = "production"
ENVIRONMENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
ENVIRONMENTS_KEY = "environments"


def selected_environment(explicit: str | None = None) -> str | None:
    """The environment asked for: `explicit`, else `$CONNECTOR_PIPELINES_ENV`; None when neither is set."""
    return explicit or os.environ.get(ENVIRONMENT_ENV) or None


def overlay_path(connections_path: Path, environment: str) -> Path:
    """`connections.<env>.yaml` beside the connections file."""
    return connections_path.with_name(f"{connections_path.stem}.{environment}{connections_path.suffix}")


def declared_in(connections: Mapping[str, Any]) -> set[str]:
    """The environments the connections' inline `environments:` blocks name."""
    found: set[str] = set()
    for entry in connections.values():
        if isinstance(entry, Mapping) and isinstance(entry.get(ENVIRONMENTS_KEY), Mapping):
            found |= {str(name) for name in entry[ENVIRONMENTS_KEY]}
    return found


@dataclass(frozen=True)
class Override:
    """Where the keys of one connection came from for the environment: for a problem's file and line."""

    connection: str
    keys: frozenset[str]
    source: str  # "inline" (connections.yaml) or "overlay" (connections.<env>.yaml)


def without_environments(connections: Mapping[str, Any]) -> dict[str, Any]:
    """The base connections: each without its `environments:` block."""
    return {
        name: {key: value for key, value in entry.items() if key != ENVIRONMENTS_KEY}
        if isinstance(entry, Mapping)
        else entry
        for name, entry in connections.items()
    }


def for_environment(
    connections: Mapping[str, Any], environment: str, overlay: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], list[Override]]:
    """The connections as `environment` sees them, and which keys each override replaced.

    Inline values first, then the overlay file's: a key is replaced whole (a new `auth:` replaces the old one,
    rather than mixing two auth modes)."""
    merged = without_environments(connections)
    overrides: list[Override] = []
    for name, entry in connections.items():
        if not isinstance(entry, Mapping):
            continue
        inline = (entry.get(ENVIRONMENTS_KEY) or {}).get(environment)
        if isinstance(inline, Mapping):
            merged[name] = {**merged[name], **inline}
            overrides.append(Override(name, frozenset(inline), "inline"))
    for name, entry in (overlay or {}).items():
        if isinstance(entry, Mapping):
            base = merged.get(name)
            merged[name] = {**base, **entry} if isinstance(base, Mapping) else dict(entry)
            overrides.append(Override(name, frozenset(entry), "overlay"))
    return merged, overrides


def is_default(environment: str | None) -> bool:
    return environment in (None, DEFAULT_ENVIRONMENT)
