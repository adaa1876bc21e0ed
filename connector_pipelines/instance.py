"""Prepare DAGSTER_HOME: the project's dagster.yaml, plus PostgreSQL storage when DAGSTER_PG_URL is set."""

from __future__ import annotations

import os
from pathlib import Path

PG_URL_ENV = "DAGSTER_PG_URL"
POSTGRES_STORAGE = """
# Added because DAGSTER_PG_URL is set: runs, events and schedules are stored in PostgreSQL.
storage:
  postgres:
    postgres_url:
      env: DAGSTER_PG_URL
"""


def ensure_dagster_home(base_dir: Path) -> Path:
    """Use $DAGSTER_HOME (default var/dagster_home under the project) and write its dagster.yaml.

    The file is rewritten on every call so switching DAGSTER_PG_URL on or off takes effect at once.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or base_dir / "var" / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    template = base_dir / "dagster.yaml"
    text = template.read_text(encoding="utf-8") if template.exists() else ""
    if os.environ.get(PG_URL_ENV):
        text += POSTGRES_STORAGE
    target = home / "dagster.yaml"
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home)
    return home
