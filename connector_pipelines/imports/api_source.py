"""Import from an HTTP API (`source.api`): pages of JSON records, mapped, checked and upserted like a warehouse read.

    access = api_access(**http_resource.model_dump())      # or open_api(connection, base_dir): secrets from the env
    report = run_api_import(connector, access, target_url, state, storage_dir, run_id)

Paging is dlt's (`dlt.sources.helpers.rest_client`): its `RESTClient.paginate` and one of its paginators per
`pagination.type` (JSONLinkPaginator, HeaderLinkPaginator, JSONResponseCursorPaginator, OffsetPaginator,
PageNumberPaginator, SinglePagePaginator). Under it, a requests adapter of ours (`_GuardedAdapter`) does what the
connection says and what untrusted input needs, per request:
- the connection's credentials: its `AuthProvider` (transports/http_auth.py, every auth mode, the fetched tokens
  cached and renewed once after a 401), run on a private event loop since the providers are asynchronous;
- retries: 429 (its Retry-After honoured), 5xx, timeouts and dropped connections, decided by the connection's
  `retry:` policy (`transports.retry_policy.next_step`, as deliveries are), and its `rate_limit_per_second`;
- bounds: no request leaves the connection's origin (a next link elsewhere would carry the credentials there),
  redirects are not followed, an answer is read up to `max_response_bytes` (decompressed) and its JSON parsed
  once, depth-capped (`bounded_json.parse_json`); `max_pages` stops a run whose API never stops paging.

Records stream page by page: each page's records become text columns (nested values as JSON text, a dotted source
column such as `customer.id` read from the nested object) in Arrow batches, through `imports.run`'s snapshot,
mapping, expectations, staging and merge. Incremental: `since_param` is sent as the watermark less the lookback,
and the watermark (the highest `updated_at` read) moves only after the merge succeeded. A failed request fails the
run before anything is merged. Messages never hold a secret: every one goes through the provider's `redact`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import requests
import urllib3
from requests.adapters import HTTPAdapter

from connector_pipelines.errors import TransportError
from connector_pipelines.imports.run import (
    ImportPipeline,
    ImportReport,
    SnapshotWriter,
    build_upsert,
    gate_and_merge,
    run_paths,
    staged_path_for,
)
from connector_pipelines.imports.source_query import later_watermark, read_from
from connector_pipelines.mapping.engine import CompiledMapping, MappingError
from connector_pipelines.mapping.suggest import did_you_mean
from connector_pipelines.progress import Pacer
from connector_pipelines.spec.api_source import ApiSource
from connector_pipelines.spec.connections import HttpConnection
from connector_pipelines.spec.imports import ImportConnector
from connector_pipelines.state.import_state import ImportState
from connector_pipelines.transports.bounded_json import UnreadableJson, parse_json
from connector_pipelines.transports.http import USER_AGENT, parse_retry_after
from connector_pipelines.transports.http_auth import AuthProvider, auth_provider, dotted_get, make_auth_provider
from connector_pipelines.transports.retry_policy import RETRY_AFTER_STATUSES, AttemptOutcome, RandomSource, next_step

log = logging.getLogger(__name__)

# Records per Arrow batch: pages are small (tens to thousands of records), Parquet row groups should not be.
BATCH_RECORDS = 10_000
# How much of a refusal's body goes into the error: enough for the API's reason, not a page.
ERROR_EXCERPT = 200
_CHUNK = 64 * 1024


class ApiSourceError(TransportError):
    """The API could not be read as the spec says: refused, unreachable after the retries, past a bound, or an
    answer that is not what `records` and `pagination` describe. Nothing was merged."""


@dataclass
class ApiAccess:
    """What reading an API needs of its http connection: the settings (`connection`; its `auth:` unused) and the
    credentials, resolved (`auth`)."""

    connection: HttpConnection
    auth: AuthProvider
    auth_type: str = "none"  # the connection's auth mode, for messages


def api_access(auth: Mapping[str, Any], **settings: Any) -> ApiAccess:
    """The access for an http connection's settings whose secrets are values (an `HttpResource`'s model_dump(),
    as `transports.http.http_client` takes them)."""
    connection = HttpConnection(type="http", **settings)
    provider = auth_provider(auth, connection.base_url, connection.timeout_seconds)
    return ApiAccess(connection, provider, str(auth.get("type", "none")))


def open_api(connection: HttpConnection, base_dir: Path | None = None) -> ApiAccess:
    """The access for a connection of connections.yaml, its secrets read from the environment now (the CLI's path;
    an unset variable raises TransportError naming it)."""
    if connection.ca_file and base_dir is not None and not Path(connection.ca_file).expanduser().is_absolute():
        connection = connection.model_copy(update={"ca_file": str((base_dir / connection.ca_file).resolve())})
    provider = make_auth_provider(connection.auth, connection.base_url, timeout_seconds=connection.timeout_seconds)
    return ApiAccess(connection, provider, connection.auth.type)


# --------------------------------------------------------------------------------------------------
# Credentials: the asynchronous providers, for a blocking client


class _AuthBridge:
    """Runs the connection's `AuthProvider` on a private event loop (a daemon thread), with an aiohttp session of
    its own for token requests: the providers (and the token modes added to them) are shared with deliveries."""

    def __init__(self, provider: AuthProvider, connection: HttpConnection):
        self.provider = provider
        self._connection = connection
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: Any = None

    def _run(self, make: Callable[[], Any]) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="api-source-auth", daemon=True)
            self._thread.start()
            self._session = asyncio.run_coroutine_threadsafe(self._open_session(), self._loop).result()
        return asyncio.run_coroutine_threadsafe(make(), self._loop).result()

    async def _open_session(self) -> Any:
        import ssl

        import aiohttp

        connection = self._connection
        verify: ssl.SSLContext | bool = connection.verify_tls
        if connection.verify_tls and connection.ca_file:
            verify = ssl.create_default_context(cafile=connection.ca_file)
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=verify), cookie_jar=aiohttp.DummyCookieJar())

    def headers(self) -> tuple[dict[str, str], int]:
        """The credentials' headers for the next request, and the generation they belong to."""
        headers = self._run(lambda: self.provider.headers(self._session))
        return dict(headers), self.provider.generation

    def invalidate(self, generation: int) -> None:
        self.provider.invalidate(generation)

    def close(self) -> None:
        if self._loop is None:
            return
        if self._session is not None:
            asyncio.run_coroutine_threadsafe(self._session.close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None


# --------------------------------------------------------------------------------------------------
# Requests: retries, bounds, credentials


class _BoundedJsonResponse(requests.Response):
    """A response whose JSON is parsed once and depth-capped: dlt asks for `json()` two or three times a page."""

    def json(self, **kwargs: Any) -> Any:
        cached = self.__dict__.get("_cp_json", _UNSET)
        if cached is _UNSET:
            cached = self.__dict__["_cp_json"] = parse_json(self.text)
        return cached


_UNSET = object()


@dataclass
class FetchStats:
    """What reading the API took."""

    requests: int = 0
    retries: int = 0
    throttled_429: int = 0
    server_errors: int = 0
    pages: int = 0
    waited_seconds: float = 0.0


class _GuardedAdapter(HTTPAdapter):
    """Every request of one read: the credentials applied, retried by the connection's policy, bounded."""

    def __init__(self, reader: ApiReader):
        super().__init__(max_retries=0)
        self.reader = reader
        self._next_start = 0.0

    def build_response(self, req: Any, resp: Any) -> requests.Response:
        response = super().build_response(req, resp)
        response.__class__ = _BoundedJsonResponse  # requests builds plain responses; the class adds the cache only
        return response

    def _pace(self) -> None:
        rate = self.reader.connection.rate_limit_per_second
        if not rate:
            return
        now = time.monotonic()
        start = max(now, self._next_start)
        self._next_start = start + 1.0 / rate
        if start > now:
            self.reader.sleep(start - now)

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None, **kwargs: Any):
        reader = self.reader
        reader.check_origin(request.url or "")
        timeout = timeout or reader.connection.timeout_seconds
        tries = 0
        renewed = False
        while True:
            tries += 1
            self._pace()
            outcome: AttemptOutcome
            try:
                auth_headers, generation = reader.bridge.headers()
            except TransportError as exc:  # the token endpoint refused or could not be reached
                outcome = AttemptOutcome(error=reader.redact(str(exc)), retryable=getattr(exc, "retryable", False))
            else:
                request.headers.update(auth_headers)
                reader.stats.requests += 1
                try:
                    response = super().send(request, stream=True, timeout=timeout, **kwargs)
                except requests.exceptions.SSLError as exc:
                    raise ApiSourceError(reader.redact(f"{reader.where(request)}: TLS failed ({exc})")) from None
                except requests.exceptions.Timeout:
                    outcome = AttemptOutcome(error=f"timed out after {timeout:g}s", retryable=True)
                except requests.exceptions.ConnectionError as exc:
                    outcome = AttemptOutcome(error=reader.redact(f"connection error ({exc})"), retryable=True)
                else:
                    status = response.status_code
                    if status == 401 and reader.bridge.provider.refreshable and not renewed:
                        # A token revoked or expired early: renew it once and ask again at once.
                        renewed = True
                        response.close()
                        reader.bridge.invalidate(generation)
                        tries -= 1
                        continue
                    if status != 429 and status < 500:
                        try:
                            reader.read_body(response, request)
                            return response
                        except (urllib3.exceptions.HTTPError, OSError) as exc:
                            # The answer broke off while read: a GET may be asked again.
                            response.close()
                            why = f"the answer broke off ({type(exc).__name__})"
                            outcome = AttemptOutcome(error=reader.redact(why), retryable=True)
                    else:
                        reader.stats.throttled_429 += status == 429
                        reader.stats.server_errors += status >= 500
                        retry_after = (
                            parse_retry_after(response.headers.get("Retry-After"))
                            if status in RETRY_AFTER_STATUSES
                            else None
                        )
                        response.close()
                        outcome = AttemptOutcome(status=status, retry_after=retry_after)
            step = next_step(outcome, tries, reader.connection.retry, reader.rng)
            if not step.retry:
                raise ApiSourceError(f"{reader.where(request)}: {step.error}")
            reader.stats.retries += 1
            if step.delay > 0:
                reader.stats.waited_seconds += step.delay
                reader.sleep(step.delay)


class ApiReader:
    """One read of an API source: its pages of records (`pages()`), within the source's bounds."""

    def __init__(
        self,
        source: ApiSource,
        access: ApiAccess,
        since: str | None = None,
        *,
        max_pages: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: RandomSource = random,
    ):
        self.source = source
        self.connection = access.connection
        self.auth_type = access.auth_type
        self.bridge = _AuthBridge(access.auth, access.connection)
        self.since = since
        self.max_pages = max_pages or source.max_pages
        self.sleep = sleep
        self.rng = rng
        self.stats = FetchStats()
        origin = urlsplit(self.connection.base_url)
        self._origin = (origin.scheme, origin.hostname, origin.port or _DEFAULT_PORTS.get(origin.scheme))

    # What the adapter asks -----------------------------------------------------------------------------

    def redact(self, message: str) -> str:
        return self.bridge.provider.redact(message)

    def where(self, request: requests.PreparedRequest) -> str:
        return f"GET {_without_query(request.url or '')} (page {self.stats.pages + 1})"

    def check_origin(self, url: str) -> None:
        parts = urlsplit(url)
        if (parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)) != self._origin:
            raise ApiSourceError(
                f"page {self.stats.pages + 1}: the API's link to the next page leads to another host "
                f"({parts.scheme}://{parts.netloc}), not the connection's base_url; it was not followed, so the "
                "connection's credentials stay with the API they are for"
            )

    def read_body(self, response: requests.Response, request: requests.PreparedRequest) -> None:
        """Read the answer into the response, up to max_response_bytes decompressed; a larger success fails the
        read, a larger refusal is cut (only its first bytes are quoted)."""
        refusal = response.status_code >= 300
        # A refusal is read only as far as its first bytes are quoted (and the connection then dropped).
        limit = min(self.source.max_response_bytes, _CHUNK) if refusal else self.source.max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if not refusal and declared.isdigit() and int(declared) > limit and "Content-Encoding" not in response.headers:
            response.close()
            raise self._too_large(request)
        chunks, size = [], 0
        for chunk in response.raw.stream(_CHUNK, decode_content=True):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                response.close()
                if refusal:
                    break
                raise self._too_large(request)
        response._content = b"".join(chunks)[: limit if refusal else None]
        response._content_consumed = True
        response.raw.release_conn()

    def _too_large(self, request: requests.PreparedRequest) -> ApiSourceError:
        return ApiSourceError(
            f"{self.where(request)}: the answer is larger than max_response_bytes "
            f"({self.source.max_response_bytes:,} bytes); ask for smaller pages (the pagination's limit) or raise "
            "max_response_bytes if the API's pages are that large"
        )

    # Pages ---------------------------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = requests.Session()
        adapter = _GuardedAdapter(self)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.verify = (self.connection.ca_file or True) if self.connection.verify_tls else False
        session.max_redirects = 0
        session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json", **self.connection.headers})
        return session

    def _refuse(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """dlt's response hook: an answer other than 2xx ends the read, saying why, without any secret."""
        status = response.status_code
        if 200 <= status < 300:
            return
        excerpt = " ".join(response.content[:ERROR_EXCERPT].decode("utf-8", "replace").split())
        where = f"GET {_without_query(response.url)} (page {self.stats.pages + 1})"
        if status in (401, 403):
            why = (
                f"the API refused the connection's credentials (auth type {self.auth_type}); check them, and "
                "that they may read this path"
            )
        elif 300 <= status < 400:
            why = "the API redirects; redirects are not followed: give the path it redirects to"
        else:
            why = "the API refused the request"
        message = f"{where} answered {status}: {why}" + (f"; it said: {excerpt}" if excerpt else "")
        raise ApiSourceError(self.redact(message))

    def _params(self) -> dict[str, str]:
        params = {name: _param_text(value) for name, value in self.source.params.items()}
        if self.source.since_param and self.since is not None:
            params[self.source.since_param] = self.since
        return params

    def pages(self) -> Iterator[list[Any]]:
        """The records of each page, in order; ApiSourceError when a request fails or a bound is reached."""
        from dlt.common.configuration.specs.runtime_configuration import RuntimeConfiguration
        from dlt.sources.helpers.rest_client import RESTClient

        session = self._session()
        client = RESTClient(
            base_url=self.connection.base_url,
            session=session,
            paginator=_paginator(self.source.pagination),
            data_selector=self.source.records or "$",
            config=RuntimeConfiguration(),  # dlt's defaults; nothing read from a dlt project's config files
        )
        paging = client.paginate(
            self.source.path, params=self._params(), hooks={"response": [self._refuse]}, allow_redirects=False
        )
        try:
            while True:
                try:
                    page = next(paging)
                except StopIteration:
                    return
                except ApiSourceError:
                    raise
                except UnreadableJson as exc:
                    raise ApiSourceError(f"page {self.stats.pages + 1}: the answer is not read: {exc}") from None
                except json.JSONDecodeError as exc:
                    # The body itself is not quoted: an API's error page may echo what it was sent.
                    raise ApiSourceError(
                        f"page {self.stats.pages + 1}: the answer is not JSON ({exc.msg} at character {exc.pos})"
                    ) from None
                except (ValueError, KeyError, TypeError, requests.RequestException) as exc:
                    # A paginator that cannot read the answer (a total that is not a number, JSON that is not).
                    raise ApiSourceError(
                        self.redact(f"page {self.stats.pages + 1}: the answer cannot be paged: {_short(exc)}")
                    ) from None
                self.stats.pages += 1
                records = self._records(page.response)
                yield records
                if self.stats.pages >= self.max_pages and page.paginator.has_next_page:
                    raise ApiSourceError(
                        f"the API has more than max_pages ({self.max_pages:,}) pages for one run; nothing was "
                        "merged. Check the pagination settings (an API that keeps answering the same page never "
                        "ends), or raise max_pages"
                    )
        finally:
            paging.close()
            session.close()

    def _records(self, response: requests.Response) -> list[Any]:
        document = response.json()
        path = self.source.records
        records = dotted_get(document, path) if path else document
        if isinstance(records, list):
            return records
        page = f"page {self.stats.pages}"
        if path and records is None:
            keys = ", ".join(sorted(document)[:10]) if isinstance(document, dict) else type(document).__name__
            raise ApiSourceError(f"{page}: the answer has no '{path}' (records:); it has: {keys}")
        shape = type(records).__name__.replace("dict", "an object").replace("str", "a string")
        where = f"'{path}'" if path else "the body"
        hint = "" if path else "; set records: to where the list of records is, such as data"
        raise ApiSourceError(f"{page}: {where} is {shape}, not a list of records{hint}")

    def close(self) -> None:
        self.bridge.close()


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _paginator(pagination: Any) -> Any:
    from dlt.sources.helpers.rest_client import paginators

    kind = pagination.type
    if kind == "next_url":
        return paginators.JSONLinkPaginator(next_url_path=pagination.next_url_path)
    if kind == "link_header":
        return paginators.HeaderLinkPaginator()
    if kind == "cursor":
        return paginators.JSONResponseCursorPaginator(
            cursor_path=pagination.cursor_path, cursor_param=pagination.cursor_param
        )
    if kind == "offset":
        return paginators.OffsetPaginator(
            limit=pagination.limit,
            offset=0,
            offset_param=pagination.offset_param,
            limit_param=pagination.limit_param,
            total_path=pagination.total_path,  # None: dlt's default ("total") would be looked for and missed
            stop_after_empty_page=True,
        )
    if kind == "page_number":
        return paginators.PageNumberPaginator(
            base_page=pagination.start_page,
            page=pagination.start_page,
            page_param=pagination.page_param,
            total_path=pagination.total_pages_path,
            stop_after_empty_page=True,
        )
    return paginators.SinglePagePaginator()


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _without_query(url: str) -> str:
    return url.split("?", 1)[0]


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------------
# Records -> Arrow


def _text(value: object) -> str | None:
    """A JSON value as the text the mapping parses: numbers as written, booleans as true/false, nested as JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _value(record: Any, name: str) -> Any:
    if not isinstance(record, dict):
        return None
    if name in record:
        return record[name]
    return dotted_get(record, name) if "." in name else None


@dataclass
class RecordColumns:
    """The columns of an API read: fixed by its first records (their top-level fields, then the fields the mapping
    and `updated_at` read), so that every batch has the snapshot's schema. A field first seen later is not kept
    unless the mapping reads it."""

    expected: Sequence[str]
    names: list[str] = field(default_factory=list)

    def fix(self, records: Sequence[Any]) -> None:
        seen: dict[str, None] = {}
        for record in records:
            if isinstance(record, dict):
                seen.update(dict.fromkeys(record))
        present = set(seen) | {name for name in self.expected if any(_value(r, name) is not None for r in records)}
        absent = [name for name in self.expected if name not in present]
        # JSON writers leave out null fields: an absent field is a column of nulls, unless one that looks like it
        # is there (then it was renamed, and every record would fail to map).
        renamed = [(name, did_you_mean(name, [key for key in seen if key not in self.expected])) for name in absent]
        problems = [
            f"the mapping reads field '{name}', which the API's records do not have{hint}"
            for name, hint in renamed
            if hint
        ]
        if problems:
            raise MappingError(problems)
        self.names = list(dict.fromkeys([*seen, *self.expected]))

    def batch(self, records: Sequence[Any]) -> pa.RecordBatch:
        arrays = [pa.array([_text(_value(record, name)) for record in records], pa.string()) for name in self.names]
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema([pa.field(n, pa.string()) for n in self.names]))


def record_batches(
    pages: Iterator[list[Any]], columns: RecordColumns, size: int = BATCH_RECORDS
) -> Iterator[tuple[pa.RecordBatch, dict[int, str]]]:
    """The pages' records as Arrow batches of about `size` records, each with the positions of the records that are
    not JSON objects (and what they are): memory holds one batch, never the whole read."""
    pending: list[Any] = []
    for records in pages:
        if not records:
            continue
        if not columns.names:
            columns.fix(records)
        pending.extend(records)
        while len(pending) >= size:
            yield columns.batch(pending[:size]), _not_objects(pending[:size])
            del pending[:size]
    if pending:
        yield columns.batch(pending), _not_objects(pending)


def _not_objects(records: Sequence[Any]) -> dict[int, str]:
    return {index: _json_kind(record) for index, record in enumerate(records) if not isinstance(record, dict)}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    kinds = {str: "a string", int: "a number", float: "a number", list: "a list"}
    return kinds.get(type(value), type(value).__name__)


def _explain_not_objects(pipeline: ImportPipeline, offset: int, since: int, not_objects: dict[int, str]) -> None:
    """A record that is not an object maps as a row of nulls, rejected for its empty key: say what it was."""
    for index in range(since, len(pipeline.rejected)):
        row, key, reason = pipeline.rejected[index]
        kind = not_objects.get(row - 1 - offset)
        if kind is not None:
            pipeline.rejected[index] = (row, key, f"the record is {kind}, not a JSON object")


def _expected_columns(mapping: CompiledMapping, source: ApiSource) -> list[str]:
    names = sorted(mapping.source_columns)
    if source.updated_at and source.updated_at not in names:
        names.append(source.updated_at)
    return names


# --------------------------------------------------------------------------------------------------
# The import run


def run_api_import(
    connector: ImportConnector,
    access: ApiAccess,
    target_url,
    state: ImportState,
    storage_dir: Path,
    run_id: str,
    full: bool = False,
    logger: logging.Logger | Any = log,
    *,
    sleep: Callable[[float], None] = time.sleep,
    open_source: Callable[[str], Any] | None = None,
) -> ImportReport:
    """Read the API (from the watermark less the lookback, unless `full` or none is saved), map, check, and merge
    when no blocking expectation failed; the watermark moves only after the merge.

    Raises ApiSourceError (nothing merged, the watermark as it was), and UpsertError / UpsertConfigError /
    MappingError as they come. `open_source(connection)` opens the sql connections the mapping's lookups read.
    """
    started = time.perf_counter()
    spec = connector.import_
    api = spec.source.api
    if api is None:
        raise ValueError(f"connector '{connector.name}' imports from {spec.source.kind}, not from an API")
    previous = state.watermark(connector.name) if api.updated_at else None
    since = read_from(previous, api.lookback_delta) if api.updated_at and previous is not None and not full else None

    snapshot_path, rejections_path = run_paths(storage_dir, connector, run_id)
    staged_path = staged_path_for(snapshot_path)
    snapshot, staged = SnapshotWriter(snapshot_path), SnapshotWriter(staged_path)
    mapping, upsert = build_upsert(spec, target_url, open_source)
    pipeline = ImportPipeline(spec, mapping, upsert, source_time=api.updated_at)
    columns = RecordColumns(_expected_columns(mapping, api))
    reader = ApiReader(api, access, since, sleep=sleep)
    highest: str | None = None
    report = ImportReport(snapshot_path=snapshot_path)
    pacer = Pacer()
    logger.info(
        f"{connector.name}: reading {connector_url(access, api)}"
        + (f" with {api.since_param}={since}" if since is not None else " (everything)")
    )
    try:
        try:
            batches = record_batches(reader.pages(), columns, min(BATCH_RECORDS, spec.target.batch_rows))
            for batch, not_objects in batches:
                batch = snapshot.write(batch)
                if api.updated_at:
                    for value in batch.column(api.updated_at).to_pylist():
                        if value is not None:
                            highest = later_watermark(highest, value)
                offset, rejected = pipeline.rows_read, len(pipeline.rejected)
                rows = pipeline.process(batch)
                if not_objects:
                    _explain_not_objects(pipeline, offset, rejected, not_objects)
                if rows.num_rows:
                    staged.write(rows)
                if pacer.due():
                    logger.info(
                        f"{connector.name}: {pipeline.rows_read:,} records read in {reader.stats.pages:,} pages, "
                        f"{len(pipeline.rejected):,} rejected so far"
                    )
        except BaseException:
            upsert.close()
            raise
        finally:
            snapshot.close()
            staged.close()
            reader.close()
        stats = reader.stats
        logger.info(
            f"{connector.name}: {pipeline.rows_read:,} records read in {stats.pages:,} pages ({stats.requests:,} "
            f"requests, {stats.retries:,} retried: {stats.throttled_429:,} throttled, {stats.server_errors:,} server "
            "errors); checking the expectations, then merging"
        )
        gate_and_merge(spec, pipeline, upsert, staged_path, rejections_path, report)
    finally:
        staged_path.unlink(missing_ok=True)

    report.watermark = previous
    if report.merged:
        report.watermark = later_watermark(previous, highest)
        if api.updated_at and report.watermark != previous:
            state.set_watermark(connector.name, report.watermark, run_id)  # only now: the whole merge succeeded
    report.seconds = time.perf_counter() - started
    return report


def connector_url(access: ApiAccess, source: ApiSource) -> str:
    """Where an API source reads, for messages: the base URL and the path (never the credentials)."""
    path = source.path if not source.path or source.path.startswith("/") else "/" + source.path
    return access.connection.base_url + path


def first_records(source: ApiSource, access: ApiAccess, rows: int, expected: Sequence[str] = ()) -> pa.Table:
    """The first `rows` records of the API's first page (unfiltered) as text columns: their top-level fields, and
    the `expected` ones (dotted paths into nested objects) that some record has (the CLI's preview, validate)."""
    reader = ApiReader(source, access, max_pages=1)
    try:
        records: list[Any] = []
        pages = reader.pages()
        try:
            records = next(pages, [])[:rows]
        finally:
            pages.close()
    finally:
        reader.close()
    if not records:
        return pa.table({})
    columns = RecordColumns([])
    columns.fix(records)
    columns.names += [n for n in expected if n not in columns.names and any(_value(r, n) is not None for r in records)]
    return pa.Table.from_batches([columns.batch(records)])
