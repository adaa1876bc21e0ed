"""One import run over its scope, as the Dagster asset performs it: a rebuild first if asked, then one local file
(ingest), the warehouse query, the API's pages (`imports.api_source`), or the files waiting in the folder.

Plain Python: the Dagster layer turns its run config into an `ImportScope` at the op boundary and passes the
clients in. The work on one file or one query is `imports.run`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector_pipelines.errors import TransportError
from connector_pipelines.imports.api_source import ApiAccess, run_api_import
from connector_pipelines.imports.files import FilePattern, check_file_name
from connector_pipelines.imports.run import ImportReport, import_file, run_warehouse_import
from connector_pipelines.imports.upsert import UpsertConfigError
from connector_pipelines.mapping.engine import MappingError
from connector_pipelines.spec.imports import ImportConnector
from connector_pipelines.state.import_state import ImportState
from connector_pipelines.storage import Storage
from connector_pipelines.transports.base import FileSource, RemoteFile
from connector_pipelines.transports.folder import FolderClient
from connector_pipelines.transports.sql import SqlSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportScope:
    """What a run covers. Empty: what is new (rows past the watermark, or every matching file not yet imported)."""

    full: bool = False  # warehouse and api: read everything, ignoring the watermark
    files: tuple[str, ...] = ()  # file sources: only these names (a sensor's request); empty: every matching file
    local_file: Path | None = None  # `ingest`: one local file from the import's drop box
    rebuild: bool = False  # forget the watermark and the files seen, bring archived files back, import all


def folder_and_pattern(connector: ImportConnector) -> tuple[str, FilePattern]:
    """The folder an import watches and the names it takes (an email import's inbox is the client's root)."""
    source = connector.import_.source
    if source.files is not None:
        return source.files.folder, FilePattern(source.files.pattern)
    return "", FilePattern(source.email.pattern)


def matching_files(listing: Sequence[RemoteFile], pattern: FilePattern) -> list[RemoteFile]:
    """The files an import takes from a listing: names the pattern matches, and unsafe names (a path in them)
    whose last part it matches, so that they are refused with a report instead of silently ignored."""
    found = []
    for remote in listing:
        if pattern.matches(remote.name):
            found.append(remote)
        elif check_file_name(remote.name) is not None and pattern.matches(re.split(r"[/\\]", remote.name)[-1]):
            found.append(remote)
    return found


def run_import(
    connector: ImportConnector,
    scope: ImportScope,
    *,
    target_engine,
    state: ImportState,
    storage: Storage,
    run_id: str,
    open_warehouse: Callable[[], SqlSource] | None = None,
    open_files: Callable[[], FileSource] | None = None,
    logger: logging.Logger | Any = log,
    open_api: Callable[[], ApiAccess] | None = None,
    open_source: Callable[[str], SqlSource] | None = None,
) -> list[ImportReport]:
    """One run: a report per warehouse read or per file handled. `open_source(connection)` opens the sql
    connections the lookups read (each once for the run, disposed at its end)."""
    opened: dict[str, SqlSource] = {}

    def lookup_source(name: str) -> SqlSource:
        if name not in opened:
            opened[name] = open_source(name)
        return opened[name]

    try:
        return _run_import(
            connector,
            scope,
            target_engine,
            state,
            storage,
            run_id,
            open_warehouse,
            open_files,
            logger,
            open_api,
            lookup_source if open_source is not None else None,
        )
    finally:
        for source in opened.values():
            source.dispose()


def _run_import(
    connector, scope, target_engine, state, storage, run_id, open_warehouse, open_files, logger, open_api, open_source
) -> list[ImportReport]:
    source = connector.import_.source
    if scope.rebuild:
        forget_for_rebuild(connector, state, open_files, logger)
    if scope.local_file is not None:
        return [ingest_file(connector, scope.local_file, target_engine, state, storage, run_id, open_source)]
    if source.warehouse is not None:
        warehouse = open_warehouse()
        try:
            full = scope.full or scope.rebuild
            report = run_warehouse_import(
                connector,
                warehouse,
                target_engine,
                state,
                storage.imports_dir,
                run_id,
                full=full,
                logger=logger,
                open_source=open_source,
            )
        finally:
            warehouse.dispose()
        return [report]
    if source.api is not None:
        full = scope.full or scope.rebuild
        access, imports_dir = open_api(), storage.imports_dir
        report = run_api_import(
            connector, access, target_engine, state, imports_dir, run_id, full, logger, open_source=open_source
        )
        return [report]
    client = open_files()
    try:
        return import_files(connector, client, scope.files, target_engine, state, storage, run_id, logger, open_source)
    finally:
        client.close()


def forget_for_rebuild(
    connector: ImportConnector, state: ImportState, open_files: Callable[[], FileSource] | None, logger
) -> None:
    """Rebuild: the import starts over. Archived files matching the pattern go back into the folder."""
    forgotten = state.forget(connector.name)
    logger.info(f"rebuild: forgot the watermark and {forgotten:,} file record(s)")
    if connector.import_.source.kind in ("warehouse", "api"):
        return
    folder, pattern = folder_and_pattern(connector)
    files = connector.import_.source.files
    archive = files.archive_folder if files else "archive"
    client = open_files()
    try:
        archived = [remote for remote in client.list_files(archive) if pattern.matches(remote.name)]
        present = {remote.name for remote in client.list_files(folder)}
        for remote in archived:
            if remote.name in present:
                continue  # a newer delivery under the same name waits in the folder: it is the one imported
            client.move(archive, remote.name, folder)
        logger.info(f"rebuild: {len(archived):,} archived file(s) moved back to be imported again")
    finally:
        client.close()


def import_files(
    connector: ImportConnector,
    client: FileSource,
    wanted: Sequence[str],
    target_engine,
    state: ImportState,
    storage: Storage,
    run_id: str,
    logger,
    open_source: Callable[[str], SqlSource] | None = None,
) -> list[ImportReport]:
    """Every matching file in the folder (or only the `wanted` names a sensor asked for), one after another."""
    folder, pattern = folder_and_pattern(connector)
    listing = matching_files(client.list_files(folder), pattern)
    if wanted:
        names = set(wanted)
        gone = sorted(names - {remote.name for remote in listing})
        if gone:
            logger.info(f"no longer in the folder (processed by an earlier run, or removed): {', '.join(gone)}")
        listing = [remote for remote in listing if remote.name in names]
    if not listing:
        logger.info(f"no file matching {pattern.pattern!r} in {folder or 'the root folder'!r}")
    reports = []
    failed: list[tuple[str, Exception]] = []
    for index, remote in enumerate(listing, start=1):
        logger.info(f"file {index}/{len(listing)}: {remote.name} ({remote.size:,} bytes)")
        try:
            report = import_file(
                connector,
                client,
                remote.name,
                target_engine,
                state,
                storage.imports_dir,
                run_id,
                remote.modified,
                open_source=open_source,
            )
        except NOT_THE_FILES_FAULT:
            raise  # the spec, the target or a connection: every file would fail the same way
        except Exception as exc:
            # Left in the folder (it may be the environment's fault, not the file's); the files after it still
            # load, and the file sensor asks for it again at most `limits.max_failed_attempts` times.
            logger.error(f"{remote.name}: not imported, left in the folder: {type(exc).__name__}: {exc}")
            failed.append((remote.name, exc))
            continue
        outcome = report.file
        logger.info(f"{remote.name}: {outcome.status}" + (f" ({outcome.reason})" if outcome.reason else ""))
        reports.append(report)
    if failed:
        raise FilesFailed(failed, handled=reports) from failed[0][1]
    return reports


# Failures that are no file's fault and would repeat for every file: they stop the run at the first file.
NOT_THE_FILES_FAULT = (UpsertConfigError, MappingError, TransportError)


class FilesFailed(Exception):
    """Some files of a run failed in a way that is not a rejection (they stay in the folder); the others were
    handled (imported, quarantined or duplicates) and recorded in the import state."""

    def __init__(self, failed: Sequence[tuple[str, Exception]], handled: Sequence[ImportReport]):
        self.failed = list(failed)
        self.handled = list(handled)  # the reports of the files that were handled (a partner is told of those)
        imported = len(self.handled)
        shown = "; ".join(f"{name}: {type(exc).__name__}: {exc}" for name, exc in self.failed[:5])
        more = f" (and {len(self.failed) - 5} more)" if len(self.failed) > 5 else ""
        super().__init__(
            f"{len(self.failed)} file(s) could not be processed and were left in the folder: {shown}{more}; "
            f"the other {imported} file(s) were handled and recorded"
        )


def ingest_file(
    connector: ImportConnector,
    path: Path,
    target_engine,
    state: ImportState,
    storage: Storage,
    run_id: str,
    open_source: Callable[[str], SqlSource] | None = None,
) -> ImportReport:
    """One local file, imported like an arrived one: from a private folder, archived or quarantined inside it.

    The file must be in the import's ingest drop box (`ingest` copies it there): run config comes from the UI
    and the GraphQL API too, and must not be able to make a run read any file the run's process can read.
    """
    dropbox = storage.ingest_dropbox(connector.name).resolve()
    resolved = Path(path).resolve()
    # The messages never repeat the run config's value: it is whatever a UI or API user typed.
    if not resolved.is_relative_to(dropbox) or resolved == dropbox or not resolved.is_file():
        raise TransportError(
            f"local_file is not a file in the import's drop box ({dropbox}); load a local file with "
            f"`connector-pipelines ingest {connector.name} FILE`, which places it there"
        )
    problem = check_file_name(resolved.name)
    if problem is not None:
        raise TransportError(f"cannot ingest the local_file: its name is refused ({problem})")
    inbox = storage.import_dir(connector.name) / run_id / "ingest"
    inbox.mkdir(parents=True, exist_ok=True)
    modified = dt.datetime.fromtimestamp(resolved.stat().st_mtime, dt.UTC)
    shutil.move(resolved, inbox / resolved.name)
    remove_call_folder(resolved.parent, dropbox)
    return import_file(
        connector,
        FolderClient(inbox),
        resolved.name,
        target_engine,
        state,
        storage.imports_dir,
        run_id,
        modified,
        open_source=open_source,
    )


def remove_call_folder(folder: Path, dropbox: Path) -> None:
    """Remove the per-call folder `ingest` made for a file, once the file is taken: only a folder inside the drop
    box (never the drop box itself, where a file may also sit) and only when empty (never someone else's files)."""
    if folder == dropbox or not folder.is_relative_to(dropbox):
        return
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (or already gone): leave it
