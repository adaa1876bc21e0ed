"""One extract run: query a window into a local file, check it, then upload it to every destination.

The blocking checks (`not_empty`) are judged on the staged local file, before any upload: a file that fails them
never reaches a partner.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from connector_pipelines.errors import ExtractError, TransportError, redact
from connector_pipelines.extract.file_output import WrittenFile, write_extract_file
from connector_pipelines.spec.extract import ExtractConnector
from connector_pipelines.transports.base import FileTransport
from connector_pipelines.transports.sql import SqlSource, Window


@dataclass(frozen=True)
class StagedCheck:
    """One blocking check's verdict on the staged file (`kind` is the spec's name for it, e.g. not_empty)."""

    kind: str
    passed: bool
    rows: int
    reason: str | None = None


def check_staged_file(connector: ExtractConnector, rows: int) -> list[StagedCheck]:
    """The blocking checks the spec asks for, judged on the file written but not yet uploaded."""
    checks = []
    if connector.extract.checks.not_empty:
        checks.append(StagedCheck("not_empty", rows > 0, rows, None if rows else "the window holds no rows"))
    return checks


@dataclass(frozen=True)
class ExtractResult:
    """What a run produced: the file, where it went (nowhere when a blocking check failed), and how long it took."""

    connector: str
    file_name: str
    rows: int
    bytes: int
    sha256: str
    uris: list[str]
    window: Window | None
    seconds: float
    schema: pa.Schema
    preview: list[dict[str, str]] = field(default_factory=list)
    checks: list[StagedCheck] = field(default_factory=list)

    @property
    def blocked(self) -> list[StagedCheck]:
        """The blocking checks that failed: when any did, the file was not uploaded."""
        return [check for check in self.checks if not check.passed]


def render_file_name(
    connector: ExtractConnector,
    window: Window | None,
    run_id: str,
    partition_key: str | None,
    now: dt.datetime | None = None,
) -> str:
    """The file name from the spec's template (validated at load time), or a sensible default."""
    spec = connector.extract
    now = now or dt.datetime.now(dt.UTC)
    template = spec.file_name
    if template is None:
        if window is not None:
            template = "{name}_{window_start:%Y%m%dT%H%M}_{window_end:%Y%m%dT%H%M}.{ext}"
        else:
            template = "{name}_{now:%Y%m%dT%H%M%S}.{ext}"
    if window is None and ("{window_start" in template or "{window_end" in template):
        raise ExtractError(
            f"extract '{connector.name}': file_name uses the window, but this run has none; "
            "give a window or remove {window_start}/{window_end} from file_name"
        )
    values = {
        "name": connector.name,
        "window_start": window.start if window else None,
        "window_end": window.end if window else None,
        "run_id": run_id,
        "partition_key": partition_key or "",
        "now": now,
        "ext": spec.extension,
    }
    name = template.format(**values)
    if not name or "/" in name or "\\" in name or name.startswith(".") or ".." in name:
        raise ExtractError(f"extract '{connector.name}': file name '{name}' is not a plain file name")
    return name


def run_extract(
    connector: ExtractConnector,
    *,
    source: SqlSource,
    transports: Mapping[str, FileTransport],
    window: Window | None,
    run_id: str,
    staging_dir: Path,
    partition_key: str | None = None,
    secrets: tuple[str, ...] = (),
    log: Callable[[str], None] = lambda message: None,
) -> ExtractResult:
    """Query, write, check, upload. Raises ExtractError naming the connector, the system and the cause.

    When a blocking check fails on the staged file, nothing is uploaded: the result has no URIs and lists the
    failed checks in `blocked`."""
    spec = connector.extract
    name = connector.name
    if spec.source.uses_window and window is None:
        raise ExtractError(
            f"extract '{name}': the query filters by :window_start/:window_end, so a run needs a window; "
            "pass one with `connector-pipelines run NAME --window START..END` or the run config "
            "(window_start, window_end)"
        )
    if window is not None and not spec.source.uses_window:
        log(f"extract '{name}': the query does not use :window_start/:window_end; the window only names the file")

    started = time.perf_counter()
    file_name = render_file_name(connector, window, run_id, partition_key)
    run_dir = staging_dir / name / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        written = _query_to_file(connector, source, window, run_dir / file_name, secrets)
        log(f"extract '{name}': wrote {written.rows:,} rows ({written.bytes:,} bytes) to {file_name}")
        checks = check_staged_file(connector, written.rows)
        failed = [check for check in checks if not check.passed]
        if failed:
            reasons = "; ".join(f"{check.kind}: {check.reason}" for check in failed)
            log(f"extract '{name}': not uploaded, a blocking check failed ({reasons})")
            uris: list[str] = []
        else:
            uris = _upload_everywhere(connector, written, transports, secrets, log)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return ExtractResult(
        connector=name,
        file_name=file_name,
        rows=written.rows,
        bytes=written.bytes,
        sha256=written.sha256,
        uris=uris,
        window=window,
        seconds=time.perf_counter() - started,
        schema=written.schema,
        preview=written.preview,
        checks=checks,
    )


def _query_to_file(
    connector: ExtractConnector, source: SqlSource, window: Window | None, path: Path, secrets: tuple[str, ...]
) -> WrittenFile:
    spec = connector.extract
    params = source.window_parameters(spec.source.query, window)
    try:
        return write_extract_file(source, spec, params, path)
    except OSError as exc:
        raise ExtractError(f"extract '{connector.name}': writing the local file {path.name} failed: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - every driver has its own error classes; all are reported alike
        cause = redact(_first_line(exc), secrets)
        raise ExtractError(
            f"extract '{connector.name}': query on {source.display_name} (connection '{spec.source.connection}') "
            f"failed: {cause}"
        ) from None


def _upload_everywhere(
    connector: ExtractConnector,
    written: WrittenFile,
    transports: Mapping[str, FileTransport],
    secrets: tuple[str, ...],
    log: Callable[[str], None],
) -> list[str]:
    uris: list[str] = []
    for destination in connector.extract.destinations:
        transport = transports[destination.connection]
        try:
            receipt = transport.upload(written.path, written.path.name, destination)
        except TransportError as exc:
            done = f" (already delivered to: {', '.join(uris)})" if uris else ""
            raise ExtractError(
                f"extract '{connector.name}': upload to connection '{destination.connection}' failed: "
                f"{redact(str(exc), secrets)}{done}"
            ) from None
        log(f"extract '{connector.name}': uploaded to {receipt.uri}")
        uris.append(receipt.uri)
    return uris


def _first_line(exc: BaseException) -> str:
    """The driver's own message, without SQLAlchemy's statement echo and help links."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip() or type(original).__name__
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(("[SQL", "(Background"))]
    return " ".join(lines[:2]) if lines else type(original).__name__
