"""What imports remember between runs, in the ledger database: each connector's watermark and every file seen.

- `cp_import_watermarks`: the highest `updated_at` a warehouse import has loaded (its next run starts there).
- `cp_import_files`: one row per file and outcome an import saw (name, size, modification time, checksum, status
  imported/rejected/duplicate, reason, run), so a file is processed once across sensor ticks and restarts,
  and the same bytes under a new name are recognised.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from connector_pipelines.state.database import state_engine
from connector_pipelines.state.ledger import utc_now
from connector_pipelines.state.locks import schema_lock

metadata = sa.MetaData()
watermarks_table = sa.Table(
    "cp_import_watermarks",
    metadata,
    sa.Column("connector", sa.String(64), primary_key=True),
    sa.Column("watermark", sa.String(64)),
    sa.Column("run_id", sa.String(64)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
files_table = sa.Table(
    "cp_import_files",
    metadata,
    sa.Column("connector", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("modified", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(16), primary_key=True),  # imported | rejected | duplicate
    sa.Column("reason", sa.Text),
    sa.Column("rows", sa.BigInteger),
    sa.Column("run_id", sa.String(64)),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_cp_import_files_checksum", "connector", "sha256"),
)

previews_table = sa.Table(
    "cp_import_previews",
    metadata,
    sa.Column("connector", sa.String(64), primary_key=True),
    sa.Column("source_hash", sa.String(64), primary_key=True),
    sa.Column("previewed_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class FileRecord:
    name: str
    sha256: str
    size: int
    status: str
    reason: str | None
    rows: int | None
    run_id: str | None
    processed_at: dt.datetime


class ImportState:
    """Watermarks and file records for imports; SQLite by default, PostgreSQL like the delivery ledger."""

    def __init__(self, url: str):
        self.engine = state_engine(url)
        with schema_lock(self.engine):
            metadata.create_all(self.engine, checkfirst=True)

    def dispose(self) -> None:
        self.engine.dispose()

    def watermark(self, connector: str) -> str | None:
        t = watermarks_table
        with self.engine.connect() as conn:
            return conn.execute(sa.select(t.c.watermark).where(t.c.connector == connector)).scalar()

    def set_watermark(self, connector: str, watermark: str | None, run_id: str) -> None:
        t = watermarks_table
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.connector == connector))
            if watermark is not None:
                conn.execute(
                    t.insert().values(connector=connector, watermark=watermark, run_id=run_id, updated_at=utc_now())
                )

    def file_with_checksum(self, connector: str, sha256: str) -> FileRecord | None:
        """An earlier file with the same bytes that was imported: a re-delivery is not imported twice."""
        t = files_table
        query = (
            sa.select(t)
            .where(t.c.connector == connector, t.c.sha256 == sha256, t.c.status == "imported")
            .order_by(t.c.processed_at)
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _record(row) if row else None

    def record_file(
        self,
        connector: str,
        *,
        name: str,
        sha256: str,
        size: int,
        modified: dt.datetime | None,
        status: str,
        reason: str | None,
        rows: int | None,
        run_id: str,
    ) -> None:
        t = files_table
        values = {
            "connector": connector,
            "name": name,
            "sha256": sha256,
            "size": size,
            "modified": modified,
            "status": status,
            "reason": reason,
            "rows": rows,
            "run_id": run_id,
            "processed_at": utc_now(),
        }
        # One row per name, checksum and outcome: the same bytes delivered again under the same name add a
        # `duplicate` row beside the `imported` one, which stays, so every later delivery is recognised too.
        same = (t.c.connector == connector, t.c.name == name, t.c.sha256 == sha256, t.c.status == status)
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(*same))
            conn.execute(t.insert().values(**values))

    def files(self, connector: str) -> list[FileRecord]:
        t = files_table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.connector == connector).order_by(t.c.processed_at))
            return [_record(row) for row in rows]

    def forget(self, connector: str, *, previews: bool = False) -> int:
        """Forget the watermark and the file records (rebuild), and with `previews` the previews (delete --purge)."""
        with self.engine.begin() as conn:
            count = conn.execute(files_table.delete().where(files_table.c.connector == connector)).rowcount
            conn.execute(watermarks_table.delete().where(watermarks_table.c.connector == connector))
            if previews:
                conn.execute(previews_table.delete().where(previews_table.c.connector == connector))
        return count

    def record_preview(self, connector: str, source_hash: str) -> None:
        """A preview of this source (connection + query or folder/pattern) succeeded: the import may be scheduled."""
        t = previews_table
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.connector == connector, t.c.source_hash == source_hash))
            conn.execute(t.insert().values(connector=connector, source_hash=source_hash, previewed_at=utc_now()))

    def previewed(self, connector: str, source_hash: str) -> bool:
        t = previews_table
        query = sa.select(t.c.previewed_at).where(t.c.connector == connector, t.c.source_hash == source_hash)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None


def _record(row) -> FileRecord:
    m = row._mapping
    return FileRecord(
        m["name"], m["sha256"], m["size"], m["status"], m["reason"], m["rows"], m["run_id"], m["processed_at"]
    )
