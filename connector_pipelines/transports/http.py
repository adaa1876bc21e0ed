"""The asynchronous HTTP client integrations deliver records with.

One `HttpDeliveryClient` per run and connection: it keeps one aiohttp session (keep-alive connections), limits the
requests in flight and the requests started per second across all its callers, retries what may pass on its own
(429, 5xx, timeouts, dropped connections) with exponential backoff and full jitter, honours `Retry-After`, renews
a fetched token once when the target answers 401, and never raises for a failed request: `send` always returns an
`HttpOutcome` for the caller to record. Only configuration errors (a missing environment variable, an unreadable
CA file) raise, when the client is entered. When to retry and how long to wait is `retry_policy.next_step`'s
decision; `send` runs the tries, keeps the counters and sleeps.

Every request of one record carries the same `Idempotency-Key` on every attempt, so a target that honours it
applies a retried request once.

What comes from a target is read within bounds: at most `RESPONSE_BODY_LIMIT` bytes of an answer, counted after
decompression (a small gzip body may inflate a thousandfold); `bounded_json.parse_json` refuses a document
nested deeper than `MAX_JSON_DEPTH` instead of recursing into it. What goes to a target is sent as built: the
URL is not normalised, so a `..` that reached a path (templates refuse those) could not silently move the request
elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import ssl
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from importlib import metadata
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from connector_pipelines.errors import TransportError
from connector_pipelines.spec.connections import HttpConnection, RetryPolicy
from connector_pipelines.transports.http_auth import AuthProvider, TokenRequestError, auth_provider, make_auth_provider
from connector_pipelines.transports.retry_policy import (
    FINAL,
    RETRY_AFTER_STATUSES,
    AttemptOutcome,
    RandomSource,
    next_step,
)

# The response text kept in an outcome (and so in the ledger): enough for any error message, bounded per record.
# For a compressed answer it bounds the decompressed bytes.
RESPONSE_BODY_LIMIT = 64 * 1024
# The encodings the client decodes itself (bounded), and so the only ones it asks for.
ACCEPT_ENCODING = "gzip, deflate"
# How much compressed input is read at a time, and at most in all: deflate never makes data much more than a
# little larger, so more input than twice the cap can only mean an answer past the cap (or a crafted stream).
_COMPRESSED_CHUNK = 16 * 1024
_COMPRESSED_LIMIT = 2 * RESPONSE_BODY_LIMIT
EMPTY_HEADERS: Mapping[str, str] = MappingProxyType({})
# Answers from a gateway whose backend may have applied the request before it failed or went silent.
IN_DOUBT_STATUSES = frozenset({502, 504})
# The 4xx answers that are about the request itself (and so about its key), unlike 408 and 429.
SETTLING = frozenset(range(400, 500)) - {408, 429}
# The request URLs a client keeps built (yarl's URL is immutable, and caches what aiohttp reads of it on every
# request): one per distinct path, up to this many, so `POST /contacts` is built once while a run of
# `PUT /contacts/{id}`, every path new, stops adding once the table is full.
_URL_CACHE_SIZE = 1024
# The statuses the retry policy takes as final (most answers: 2xx, 3xx, the 4xx about the request), asked of it
# once here instead of on every request. Its rule for an answer depends on the status alone ("any other answer is
# final"), not on the try or the policy, so one question per status holds for all.
_FINAL_STATUSES = frozenset(
    status for status in range(100, 600) if next_step(AttemptOutcome(status=status), 1, RetryPolicy(), random) is FINAL
)


def _package_version() -> str:
    try:
        return metadata.version("connector-pipelines")
    except metadata.PackageNotFoundError:
        return "0"


USER_AGENT = f"connector-pipelines/{_package_version()}"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request to deliver: the body is already encoded JSON; the path is appended to the base URL."""

    method: str
    path: str  # "/contacts/42", appended to base_url; or an absolute http(s) URL
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: EMPTY_HEADERS)
    idempotency_key: str | None = None  # sent as the Idempotency-Key header, the same on every attempt
    # Whether to try again after a try that may have been applied without an answer (timed out, dropped after the
    # request went out, 502/504). False for a target that may apply a repeat twice: the outcome is then in doubt,
    # and the delivery's recovery rule (probe or hold) decides, not a blind retry.
    retry_in_doubt: bool = True


@dataclass(frozen=True, slots=True)
class HttpOutcome:
    """What became of one request after its retries.

    `status` is the last HTTP status received (None when no attempt got a response). `error` is None when the
    client accepted a response as final; otherwise it says why the request did not get one (timed out, the
    connection dropped, retries exhausted on 503, a Retry-After too long to wait for), with secrets redacted.
    Whether the delivery counts is decided by the success criteria (`delivery.success`), not here.
    """

    status: int | None
    body: str  # response text, at most RESPONSE_BODY_LIMIT bytes of it
    headers: Mapping[str, str]
    error: str | None
    attempts: int  # requests actually sent to the target for this outcome
    elapsed_seconds: float
    started_at: datetime  # aware UTC
    finished_at: datetime
    # The target may have applied the request, but no answer about its key says so or not: a try got no answer
    # after the request went out (timed out, the connection dropped, a gateway's 502/504, an unreadable 2xx) and
    # no later try under the same key was answered 2xx or 4xx (a target that honours the key replays what it
    # applied). A 5xx, 429 or 408 after it settles nothing: it may come from in front of the key check.
    in_doubt: bool = False
    # Some try may have been applied without an answer, settled since or not: a 2xx whose body then fails the
    # success criteria does not prove the earlier try was not applied (the caller keeps the record in doubt).
    doubted: bool = False

    @property
    def responded(self) -> bool:
        """True when the target answered (status known), whatever the answer."""
        return self.status is not None


class _RateLimiter:
    """At most `rate` starts per second, spread evenly, shared by every caller; waiting sleeps, never spins.

    Each caller books the next free slot (no burst: slots are 1/rate apart) and sleeps until it. Booking needs
    no lock: nothing awaits between reading and moving the next slot.
    """

    __slots__ = ("interval", "next_slot")

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self.next_slot = 0.0

    async def wait(self) -> float:
        now = time.monotonic()
        slot = self.next_slot if self.next_slot > now else now
        self.next_slot = slot + self.interval
        delay = slot - now
        if delay > 0:
            await asyncio.sleep(delay)
        return delay


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class HttpDeliveryClient:
    """One per run and connection; an async context manager owning an aiohttp session with keep-alive.

    `send` may be called by many tasks at once: at most `max_concurrency` requests are in flight and at most
    `rate_limit_per_second` start per second, across all of them. Redirects are not followed (a redirected POST
    would silently become a GET): a 3xx is returned as the outcome.
    """

    def __init__(
        self,
        connection: HttpConnection,
        base_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        jitter: RandomSource = random,
        auth: AuthProvider | None = None,
    ):
        """`auth` holds credentials already resolved (see `http_client`); without it the provider is built from
        `connection.auth` when the client is entered, its `${NAME}` references read from `environ` (default: the
        process environment)."""
        self.connection = connection
        self.base_dir = base_dir
        self.environ = environ
        self._resolved_auth = auth
        self.base_url = connection.base_url.rstrip("/")
        self._retry = connection.retry
        self._jitter = jitter  # the backoff's random source (a test passes a seeded random.Random)
        self._timeout_text = f"{connection.timeout_seconds:g}s"
        self._session: aiohttp.ClientSession | None = None
        self._auth: AuthProvider | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._redact_bodies = False
        self._rate = _RateLimiter(connection.rate_limit_per_second) if connection.rate_limit_per_second else None
        # A 429 with Retry-After pauses every caller, not only the one that was told: the others would be too.
        self._resume_at = 0.0
        # The origin and path of base_url in their encoded form, normalised once: each request's path is appended
        # to it as it is (see `request_url`).
        self._base_url = str(URL(self.base_url))
        # Accept-Encoding: the codings `_read_body` decodes; a connection may ask for another (identity, say).
        self._base_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING, **connection.headers}
        self._headers_generation = -1
        self._auth_headers: dict[str, str] = {}
        # Case-insensitive already: aiohttp would convert a plain dict on every request.
        self._merged: CIMultiDict[str] = CIMultiDict()
        self._merged_json: CIMultiDict[str] = CIMultiDict()
        self._urls: dict[str, URL] = {}
        self.requests_sent = 0
        self.retries = 0
        self.throttled_429 = 0
        self.server_errors = 0
        self.timeouts = 0
        self.connection_errors = 0
        self.waited_seconds = 0.0
        self.rate_limited_seconds = 0.0

    # Lifecycle -----------------------------------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.connection.verify_tls:
            return False
        if self.connection.ca_file is None:
            return True
        path = Path(self.connection.ca_file).expanduser()
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        try:
            return ssl.create_default_context(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(
                f"http {self.base_url}: cannot load ca_file {path}: {exc.strerror or exc}; point ca_file at a PEM "
                "bundle of the CA that signed the server's certificate"
            ) from None

    async def __aenter__(self) -> HttpDeliveryClient:
        connection = self.connection
        if self._resolved_auth is not None:
            self._auth = self._resolved_auth
        else:
            self._auth = make_auth_provider(connection.auth, self.base_url, self.environ, connection.timeout_seconds)
        ssl_setting = self._ssl()
        self._semaphore = asyncio.Semaphore(connection.max_concurrency)
        self._redact_bodies = bool(self._auth.secrets) or self._auth.refreshable
        # One connection more than the delivery limit, so that a token renewal never queues behind deliveries.
        connector = aiohttp.TCPConnector(limit=connection.max_concurrency + 1, ssl=ssl_setting, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Set once for the session: building a timeout object per request costs throughput.
            timeout=aiohttp.ClientTimeout(total=connection.timeout_seconds),
            auto_decompress=True,
            raise_for_status=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # deliveries are stateless: no cookie may change a later request
        )
        if not self._auth.refreshable:
            await self._request_headers(self._session)  # fixed credentials: their headers are merged once, here
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session and its connections (idempotent)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # Authentication ------------------------------------------------------------------------------------------

    @property
    def auth(self) -> AuthProvider:
        """The connection's auth provider (available once the client is entered)."""
        if self._auth is None:
            raise RuntimeError("enter the HttpDeliveryClient (`async with`) before using it")
        return self._auth

    @property
    def secrets(self) -> list[str]:
        """The secret values this client knows, to redact from anything it reports."""
        return self._auth.secrets if self._auth is not None else []

    def redact(self, message: str) -> str:
        """The message with every known secret replaced by '***'."""
        return self._auth.redact(message) if self._auth is not None else message

    async def authenticate(self) -> None:
        """Fetch a token now (the token and oauth2 auths), raising `TransportError` when the endpoint refuses.

        Optional: `send` fetches tokens by itself. A run may call this first to stop at once on wrong credentials
        instead of recording one failed outcome per record.
        """
        session = self._require_session()
        await self.auth.headers(session)

    async def _request_headers(self, session: aiohttp.ClientSession) -> int:
        """Refresh the merged headers when the credentials changed; returns the auth generation they hold."""
        auth = self._auth
        assert auth is not None
        auth_headers = await auth.headers(session)
        generation = auth.generation
        if generation != self._headers_generation:
            self._auth_headers = auth_headers
            merged = {**self._base_headers, **auth_headers}
            self._merged = CIMultiDict(merged)
            self._merged_json = CIMultiDict({**merged, "Content-Type": "application/json"})
            self._headers_generation = generation
        return generation

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("enter the HttpDeliveryClient (`async with`) before sending")
        return self._session

    # Sending -------------------------------------------------------------------------------------------------

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = request_url(self._base_url, path)
            if len(self._urls) < _URL_CACHE_SIZE:
                self._urls[path] = url
        return url

    def _headers_for(self, request: HttpRequest) -> CIMultiDict[str]:
        extra = request.headers
        if not extra:
            headers = (self._merged_json if request.body is not None else self._merged).copy()
        else:
            # Request headers override the connection's and credentials override both, whatever their case.
            headers = CIMultiDict(self._base_headers)
            headers.update(extra)
            headers.update(self._auth_headers)
            if request.body is not None and "Content-Type" not in headers:
                headers["Content-Type"] = "application/json"
        if request.idempotency_key is not None:
            headers["Idempotency-Key"] = request.idempotency_key
        return headers

    async def send(self, request: HttpRequest) -> HttpOutcome:
        """Send one request with retries and return its outcome; never raises for a failed request."""
        session = self._session
        if session is None:
            raise RuntimeError("enter the HttpDeliveryClient (`async with`) before sending")
        semaphore = self._semaphore
        assert semaphore is not None
        auth = self._auth
        assert auth is not None
        # Fixed credentials never change: their headers were merged once, no need to ask the provider each time.
        static_auth = not auth.refreshable
        started_at = datetime.now(UTC)
        start = time.monotonic()
        url = self._url(request.path)
        method = request.method.upper()
        body = request.body

        attempts = 0  # requests sent to the target
        tries = 0  # turns of the retry policy (a token failure takes one; the 401 renewal does not)
        renewed_after_401 = False
        status: int | None = None
        text = ""
        response_headers: Mapping[str, str] = EMPTY_HEADERS
        error: str | None = None
        in_doubt = False  # whether a try since the last answer may have been applied (see HttpOutcome.in_doubt)
        doubted = False  # whether any try may have been applied without an answer

        while True:
            tries += 1
            failure: AttemptOutcome | None = None  # why this try got no response
            doubtful = False  # this try may have been applied without an answer
            # Wait out a pause a 429 imposed on every caller.
            pause = self._resume_at - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
                self.waited_seconds += pause
            # acquire/release rather than `async with`: the same, without two coroutines per request.
            await semaphore.acquire()
            try:
                if self._rate is not None:
                    self.rate_limited_seconds += await self._rate.wait()
                # Credentials are read at the last moment, after any queueing behind the limits: a request that
                # waited for a slot must not leave with a token that expired meanwhile.
                try:
                    generation = 0 if static_auth else await self._request_headers(session)
                except TransportError as exc:  # the token endpoint refused or could not be reached
                    retryable = isinstance(exc, TokenRequestError) and exc.retryable
                    failure = AttemptOutcome(error=self.redact(str(exc)), retryable=retryable)
                else:
                    headers = self._headers_for(request)
                    attempts += 1
                    self.requests_sent += 1
                    try:
                        # Decompression is `_read_body`'s, bounded: aiohttp's would inflate a whole body first.
                        response = await session.request(
                            method, url, data=body, headers=headers, allow_redirects=False, auto_decompress=False
                        )
                        try:
                            status = response.status
                            response_headers = response.headers
                            if _plain_within_limit(response):  # the common answer: one read takes all of it
                                received, refused = await response.read(), None
                            else:
                                received, refused = await _read_body(response)
                            text = _decode_text(response, received)
                        finally:
                            # What `async with` would do: back to the pool when read to its end, else dropped.
                            response.release()
                        if self._redact_bodies and text:
                            # A target that echoes a credential must not get it into the ledger.
                            text = self.redact(text)
                        doubtful = status in IN_DOUBT_STATUSES
                        if status in SETTLING or 200 <= status < 300:
                            # An answer about this key settles what earlier tries under it left in doubt; a 5xx,
                            # 429 or 408 may come from in front of the target's key check, and settles nothing.
                            in_doubt = False
                        if refused is not None:
                            # The target answered, but not an answer this client accepts: the same next time. Its
                            # status says it applied the request, its body cannot be read to judge it: in doubt.
                            failure = AttemptOutcome(error=refused, retryable=False)
                            doubtful = doubtful or status < 300
                    except aiohttp.ClientConnectorCertificateError as exc:
                        # The certificate will not change between attempts: a configuration problem.
                        message = self.redact(
                            f"TLS certificate verification failed for {exc.host}:{exc.port} "
                            f"({exc.certificate_error}); set ca_file to the CA that signed the server's certificate"
                        )
                        failure = AttemptOutcome(error=message, retryable=False)
                    except TimeoutError:
                        self.timeouts += 1
                        doubtful = True  # the request may have reached the target, which may be applying it
                        failure = AttemptOutcome(error=f"timed out after {self._timeout_text}", retryable=True)
                    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
                        self.connection_errors += 1
                        # Refused or unreachable: nothing left; anything else broke after the request went out.
                        doubtful = not isinstance(exc, aiohttp.ClientConnectorError)
                        failure = AttemptOutcome(error=self.redact(_connection_error(exc)), retryable=True)
                    except Exception as exc:  # an invalid URL, a malformed response: retrying will not help
                        message = self.redact(f"request failed ({type(exc).__name__}: {exc})")
                        failure = AttemptOutcome(error=message, retryable=False)
            finally:
                semaphore.release()
            if doubtful:
                in_doubt = doubted = True
                if not request.retry_in_doubt:
                    why = failure.error if failure is not None else str(status)
                    error = f"{why}; not retried: the target may have applied it, and a repeat could apply it twice"
                    break
            if failure is not None:
                outcome = failure
            else:
                assert status is not None
                if status == 401 and not (renewed_after_401 or static_auth):
                    # The token may have been revoked or expired early: renew it once and resend at once.
                    renewed_after_401 = True
                    auth.invalidate(generation)
                    tries -= 1
                    continue
                if status in _FINAL_STATUSES:
                    break  # what `next_step` answers for it, without building its question and answer
                if status == 429:
                    self.throttled_429 += 1
                elif status >= 500:
                    self.server_errors += 1
                retry_after = (
                    parse_retry_after(response_headers.get("Retry-After")) if status in RETRY_AFTER_STATUSES else None
                )
                outcome = AttemptOutcome(status=status, retry_after=retry_after)
            step = next_step(outcome, tries, self._retry, self._jitter)
            if step.pause_all_seconds is not None:
                self._resume_at = max(self._resume_at, time.monotonic() + step.pause_all_seconds)
            if not step.retry:
                error = step.error
                break
            self.retries += 1
            if step.delay > 0:
                await asyncio.sleep(step.delay)
                self.waited_seconds += step.delay

        elapsed = time.monotonic() - start
        return HttpOutcome(
            status=status,
            body=text,
            headers=response_headers,
            error=error,
            attempts=attempts,
            elapsed_seconds=elapsed,
            started_at=started_at,
            finished_at=started_at + timedelta(seconds=elapsed),
            in_doubt=in_doubt,
            doubted=doubted,
        )

    @property
    def stats(self) -> dict[str, Any]:
        """Counters over the client's life: requests sent, retries, why they happened, tokens fetched, time waited."""
        return {
            "requests_sent": self.requests_sent,
            "retries": self.retries,
            "throttled_429": self.throttled_429,
            "server_errors": self.server_errors,
            "timeouts": self.timeouts,
            "connection_errors": self.connection_errors,
            "tokens_fetched": self._auth.tokens_fetched if self._auth is not None else 0,
            "waited_seconds": round(self.waited_seconds, 3),
            "rate_limited_seconds": round(self.rate_limited_seconds, 3),
        }


# Characters a URL may hold as they are (RFC 3986: unreserved, reserved, and `%` of an escape); anything else in a
# path (a space, a non-ASCII letter, a lone `%`) is percent-encoded, as a browser would before sending it.
_NOT_IN_URL = re.compile(r"[^A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]|%(?![0-9A-Fa-f]{2})")


def _escape(match: re.Match[str]) -> str:
    return quote(match.group(), safe="")


def request_url(base_url: str, path: str) -> URL:
    """The URL a request goes to: `path` appended to `base_url` (already in encoded form), or `path` itself when
    it is an absolute http(s) URL.

    Built with `encoded=True`, so nothing decodes an escape or normalises a dot segment: what the templates
    encoded (`%2F` in one segment) is what the target receives, and `/contacts/..` is sent as written, never
    turned into `/` (yarl's default for text URLs). Characters a URL may not hold are escaped, nothing else.
    """
    if path.startswith(("http://", "https://")):
        parts = urlsplit(path)
        origin = f"{parts.scheme}://{parts.netloc}"
        base_url, path = str(URL(origin)).rstrip("/"), path[len(origin) :]
    if path and not path.startswith(("/", "?")):
        path = "/" + path
    if _NOT_IN_URL.search(path):
        path = _NOT_IN_URL.sub(_escape, path)
    return URL(base_url + path, encoded=True)


def _plain_within_limit(response: aiohttp.ClientResponse) -> bool:
    """Whether the answer is uncompressed and declares a length within the cap: then one read takes all of it
    (`_read_body`'s first case, checked without a coroutine)."""
    coding = response.headers.get("Content-Encoding")
    if coding and coding.strip().lower() != "identity":
        return False
    length = response.content_length
    return length is not None and length <= RESPONSE_BODY_LIMIT


async def _read_body(response: aiohttp.ClientResponse) -> tuple[bytes, str | None]:
    """At most RESPONSE_BODY_LIMIT bytes of the answer, decoded from its Content-Encoding, and why it is refused
    (None when it is not).

    A plain answer over the cap keeps its first RESPONSE_BODY_LIMIT bytes and is judged on them. A compressed
    one is inflated a chunk at a time, never past the cap: past it the answer is refused (a target that sends a
    small body inflating to gigabytes is not answering a delivery), and so is one in an encoding the client did
    not ask for. Either way the connection is dropped, not drained.
    """
    coding = response.headers.get("Content-Encoding", "").strip().lower()
    content = response.content
    if not coding or coding == "identity":
        length = response.content_length
        if length is not None and length <= RESPONSE_BODY_LIMIT:
            return await response.read(), None
        chunks: list[bytes] = []
        kept = 0
        while kept < RESPONSE_BODY_LIMIT:
            chunk = await content.read(RESPONSE_BODY_LIMIT - kept)
            if not chunk:
                break
            chunks.append(chunk)
            kept += len(chunk)
        return b"".join(chunks), None
    if coding not in ("gzip", "x-gzip", "deflate"):
        return b"", (
            f"the target answered in Content-Encoding '{coding[:40]}', which the client does not decode "
            f"(it asks for {ACCEPT_ENCODING}); the answer is not accepted"
        )
    inflater = _Inflater(coding)
    out: list[bytes] = []
    kept = 0
    read = 0
    try:
        while True:
            chunk = await content.read(_COMPRESSED_CHUNK)
            if not chunk:
                break
            read += len(chunk)
            piece = inflater.feed(chunk, RESPONSE_BODY_LIMIT + 1 - kept)
            out.append(piece)
            kept += len(piece)
            if kept > RESPONSE_BODY_LIMIT or read > _COMPRESSED_LIMIT:
                data = b"".join(out)[:RESPONSE_BODY_LIMIT]
                return data, (
                    f"the target's {coding} answer is larger than {RESPONSE_BODY_LIMIT // 1024} KiB once "
                    "decompressed, more than the client reads of an answer; it was not decompressed further and "
                    "is not accepted"
                )
    except zlib.error as exc:
        return b"".join(out), f"the target's {coding} answer is not valid {coding} data ({exc}); it is not accepted"
    return b"".join(out), None


class _Inflater:
    """Decompresses gzip or deflate input a chunk at a time, never returning more than asked (zlib's
    `max_length`), across the members of a multi-member gzip stream."""

    __slots__ = ("_coding", "_object")

    def __init__(self, coding: str):
        self._coding = coding
        self._object: Any = None

    def _new(self, first: bytes) -> Any:
        if self._coding == "deflate" and first[0] & 0x0F != 8:
            return zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, without the zlib header some servers omit
        return zlib.decompressobj(zlib.MAX_WBITS | (16 if self._coding != "deflate" else 0))

    def feed(self, data: bytes, max_length: int) -> bytes:
        """At most `max_length` bytes from `data`; input that would give more stays unread (the caller stops)."""
        pieces: list[bytes] = []
        while data and max_length > 0:
            if self._object is None:
                self._object = self._new(data)
            piece = self._object.decompress(data, max_length)
            pieces.append(piece)
            max_length -= len(piece)
            if self._object.eof:  # a gzip member ended: what follows is the next member (or trailing bytes)
                data = self._object.unused_data
                self._object = None
                if self._coding == "deflate":
                    break  # a deflate stream has one member; bytes after it are ignored, as aiohttp does
            else:
                data = self._object.unconsumed_tail
        return b"".join(pieces)


def _decode_text(response: aiohttp.ClientResponse, data: bytes) -> str:
    if not data:
        return ""
    # Parsing the content type for its charset costs time on every response; most declare none.
    charset = response.charset if "charset" in response.headers.get("Content-Type", "") else None
    return data.decode(charset or "utf-8", errors="replace")


def _connection_error(exc: BaseException) -> str:
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return f"connection dropped ({name})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return f"connection refused by {exc.host}:{exc.port} ({name})"
        return f"could not connect to {exc.host}:{exc.port} ({name}: {exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, ConnectionResetError | aiohttp.ClientOSError) and getattr(exc, "errno", None) == 104:
        return f"connection reset ({name})"
    detail = str(exc)
    return f"connection error ({name}: {detail})" if detail else f"connection error ({name})"


def http_client(auth: Mapping[str, Any], logger: logging.Logger | None = None, **settings: Any) -> HttpDeliveryClient:
    """A client for an http connection's settings whose secrets are values, not references.

    This is what an `HttpResource` (its `dg.EnvVar` fields read by Dagster) and `registry.client_for` (the
    environment read there) both build: `auth` as `http_auth.auth_settings` gives it, and the other settings as
    the fields of `HttpConnection`, a `ca_file` already resolved to an absolute path. `logger` gets what the auth
    provider reports on its own (a rotated refresh token).
    """
    # The connection keeps its default `auth:` (none): the credentials are the provider's, built here from values.
    connection = HttpConnection(type="http", **settings)
    provider = auth_provider(auth, connection.base_url, connection.timeout_seconds, logger)
    return HttpDeliveryClient(connection, auth=provider)
