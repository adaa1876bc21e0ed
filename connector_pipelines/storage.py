"""Where runs keep their working files: staging, data set snapshots, audit files, import runs, inboxes, the
default ledger. One root folder (`$CONNECTOR_PIPELINES_STORAGE`, default `var/storage` under the project), laid
out by `Storage`; the Dagster layer provides it as a resource (`state.resources.StorageResource`), so a test or a
deployment points it elsewhere without environment variables.

Beyond one machine (a pod per run, the CLI on a laptop) the folder is not shared. Either it is a shared volume, or
an `Archive` (an S3 bucket or any S3-compatible store) keeps the files that outlive a run: a run `keep`s each file
once it is complete (data set snapshots, audit files, an import run's folder), and whoever needs one that was
written elsewhere `fetch`es it into its own folder first. The local folder is then a cache and a scratch space.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from connector_pipelines.errors import TransportError

if TYPE_CHECKING:
    from connector_pipelines.transports.s3 import S3Client

STORAGE_ENV = "CONNECTOR_PIPELINES_STORAGE"
# The name of an `s3` connection of connections.yaml that keeps the lasting files (see `Archive`).
ARCHIVE_ENV = "CONNECTOR_PIPELINES_ARCHIVE"


def default_storage_root(base_dir: Path) -> Path:
    """`$CONNECTOR_PIPELINES_STORAGE`, else var/storage under the project."""
    return Path(os.environ.get(STORAGE_ENV) or Path(base_dir) / "var" / "storage")


@dataclass(frozen=True)
class StoredFile:
    """A file of the storage, wherever it is (here, in the archive or both)."""

    path: Path  # where it is, or would be, in the local folder
    size: int
    modified: dt.datetime  # aware UTC


class Archive:
    """The lasting files of the storage folder, under the same relative paths, in an S3 bucket (an `s3` connection
    of connections.yaml, its prefix included)."""

    def __init__(self, client: S3Client):
        self.client = client

    @property
    def system(self) -> str:
        return self.client.system

    def put(self, relative: PurePosixPath, local: Path) -> str:
        return self.client.put_file(local, str(relative.parent), relative.name)

    def get(self, relative: PurePosixPath, local: Path) -> bool:
        """Download into `local` (atomically); False when the archive does not hold it."""
        if not self.client.exists(str(relative.parent), relative.name):
            return False
        self.client.download(str(relative.parent), relative.name, local)
        return True

    def files(self, relative_folder: PurePosixPath) -> list[tuple[PurePosixPath, int, dt.datetime]]:
        """Every file under the folder, at any depth: (relative path, size, modified)."""
        return [
            (relative_folder / below / file.name, file.size, file.modified)
            for below, file in self.client.list_tree(str(relative_folder))
        ]

    def delete(self, relative: PurePosixPath) -> None:
        self.client.delete(str(relative.parent), relative.name)

    def uri(self, relative: PurePosixPath) -> str:
        prefix = "/".join(part for part in self.client.prefix.split("/") if part)
        return f"s3://{self.client.bucket}/{prefix + '/' if prefix else ''}{relative}"

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class Storage:
    """The layout of the storage folder, and its archive when there is one."""

    root: Path
    archive: Archive | None = None

    @classmethod
    def for_project(cls, base_dir: Path) -> Storage:
        """The folder the project uses by default (what the CLI reads outside a run)."""
        return cls(default_storage_root(base_dir))

    @property
    def staging_dir(self) -> Path:
        """Extract files while they are written and uploaded (removed after each run)."""
        return self.root / "staging"

    def integration_dir(self, connector: str, part: str) -> Path:
        """Per integration and part (the data set or a configuration): one file per run."""
        return self.root / "integrations" / connector / part

    @property
    def imports_dir(self) -> Path:
        """Import runs keep `<this>/<connector>/<run_id>/...`."""
        return self.root / "imports"

    def import_dir(self, connector: str) -> Path:
        """Per import: one folder per run (`<run_id>/snapshot.parquet`, rejections, per-file snapshots)."""
        return self.imports_dir / connector

    def ingest_dropbox(self, connector: str) -> Path:
        """Where `ingest` places a file for the run to take: run config can name only files in here."""
        return self.import_dir(connector) / "ingest"

    def import_inbox_dir(self, connector: str) -> Path:
        """Where the email receiver saves an email import's attachments (its file sensor watches this folder)."""
        return self.root / "inboxes" / connector

    # ---- the archive: files that outlive a run ------------------------------------------------------------

    def relative(self, path: Path) -> PurePosixPath:
        """`path` under the root, as the archive names it; a path outside the root is refused."""
        absolute = Path(os.path.abspath(path))
        try:
            return PurePosixPath(absolute.relative_to(Path(os.path.abspath(self.root))).as_posix())
        except ValueError:
            raise ValueError(f"{path} is not in the storage folder {self.root}") from None

    def keep(self, *paths: Path | None) -> None:
        """Copy these complete files to the archive (nothing without one; a missing file is skipped)."""
        if self.archive is None:
            return
        for path in paths:
            if path is not None and Path(path).is_file():
                self.archive.put(self.relative(path), Path(path))

    def keep_folder(self, folder: Path) -> None:
        """Copy every file under `folder` to the archive (an import run's folder, once the run is over)."""
        if self.archive is not None and folder.is_dir():
            self.keep(*sorted(path for path in folder.rglob("*") if path.is_file() and not path.is_symlink()))

    @contextmanager
    def keeping(self, path: Path, report: Callable[[str], None]) -> Iterator[None]:
        """Keep `path` (a file, or a folder's files) in the archive when the block ends. When the block failed,
        an archive that cannot be reached is `report`ed and the block's own error goes on; when it succeeded,
        that `TransportError` is raised."""
        try:
            yield
        except BaseException:
            try:
                self._keep_any(path)
            except TransportError as exc:
                report(f"could not keep {path} in the archive: {exc}")
            raise
        self._keep_any(path)

    def _keep_any(self, path: Path) -> None:
        if Path(path).is_dir():
            self.keep_folder(path)
        else:
            self.keep(path)

    def fetch(self, path: Path) -> bool:
        """Make sure `path` is here: True when it already was or the archive had it (now downloaded)."""
        if Path(path).is_file():
            return True
        return self.archive is not None and self.archive.get(self.relative(path), Path(path))

    def fetch_folder(self, folder: Path) -> None:
        """Download every file under `folder` that the archive holds and this folder does not."""
        if self.archive is None:
            return
        for relative, _size, _modified in self.archive.files(self.relative(folder)):
            local = self.root / relative
            if not local.is_file():
                self.archive.get(relative, local)

    def files(self, folder: Path) -> list[StoredFile]:
        """The files directly in `folder`, here and in the archive (a file in both counts once, as here)."""
        found = {stored.path: stored for stored in self.archived(folder) if stored.path.parent == Path(folder)}
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            # Links are not followed (nor listed): nothing in the storage folder makes them.
            if entry.is_file(follow_symlinks=False):
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # removed since the listing
                    continue
                modified = dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC)
                found[Path(folder) / entry.name] = StoredFile(Path(folder) / entry.name, stat.st_size, modified)
        return sorted(found.values(), key=lambda stored: stored.path.name)

    def archived(self, folder: Path) -> list[StoredFile]:
        """The files the archive holds under `folder`, at any depth (none without an archive)."""
        if self.archive is None:
            return []
        return [
            StoredFile(Path(folder) / relative.relative_to(self.relative(folder)), size, modified)
            for relative, size, modified in self.archive.files(self.relative(folder))
        ]

    def remove_folder(self, folder: Path) -> bool:
        """Remove the folder here and its files from the archive; False when neither held anything."""
        archived = self.archived(folder)
        for stored in archived:
            self.archive.delete(self.relative(stored.path))
        here = Path(folder).exists()
        if here:
            shutil.rmtree(folder)
        return here or bool(archived)

    def remove(self, path: Path) -> None:
        """Remove the file here and from the archive."""
        Path(path).unlink(missing_ok=True)
        if self.archive is not None:
            self.archive.delete(self.relative(path))

    def where(self, path: Path) -> str:
        """What to show for a kept file: its archive URI, else its path."""
        return self.archive.uri(self.relative(path)) if self.archive is not None else str(path)
