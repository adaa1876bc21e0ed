"""A loopback HTTP target that integrations deliver records to: the demo's in-memory REST store
(`connector_pipelines.demo.crm_api.CrmApi`, whose docstring describes the store and its idempotency) with a
recording, fault-injecting layer on top: it records what it receives, counts receipts per idempotency key, can
require a login, and fails on request.

Used by the delivery engine's tests (in a thread of the test process: `RecordingTarget().start()`) and by the
benchmark (in its own process: `run_in_subprocess()` or
`python -m connector_pipelines_tests.servers.http_target --port 8765 --fast`).

Harness endpoints, never authenticated nor recorded nor subject to faults: `GET /_health`, `GET /_stats` (counts,
for another process), `POST /_control` (`{"action": "fail_next", "n": 2, ...}`: the Python methods over HTTP).
`POST /oauth/token` issues bearer tokens; it needs no bearer token itself and is recorded but never faulted.

Processing order of a data request (anything else): count the receipt of its `Idempotency-Key`, check auth
(401), take the next injected fault (a fault answers without applying, except a delay, which sleeps and then
carries on), then the store's idempotency replay check, then apply.

A delayed request (`delay_next`) sleeps first, then is applied and answered, even if its client has gone (aiohttp
does not cancel handlers when the client disconnects). That is the realistic hard case: a client that timed out
and retried with the same key must get deduplicated: whichever of the two reaches the apply step second is
replayed, not applied. `clear()` while a delayed request sleeps makes that request answer 503 unapplied and
uncounted, so it cannot leak into the next test.

`receipts[key]` counts every request carrying the key that reached the target (faulted and refused ones too),
`applied[key]` the times one was actually applied: more than 1 is a duplicate delivery.

`fast=True` (the `--fast` flag) keeps per-key receipts and applied counts and per-status counts but no list of
recorded requests and no record bodies (only ids): one core then answers about 15,000 requests/s (with uvloop,
which `main` uses when it is installed), near what aiohttp manages with a handler that only parses the JSON.

`record_counts=True` (the `--record-counts` flag; implies fast) keeps, instead of nothing, how many times each
record (collection and id) was applied, and `/_stats` adds `record_applications`: per collection, how many records
were applied how many times (`{"customers": {"1": 99000, "2": 1000}}`), so that a benchmark can check that every
record of a large delivery was applied exactly once, by record rather than by request. Same memory as fast mode
(about 110 bytes a record held).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import queue
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote_plus

from aiohttp import web

from connector_pipelines.demo.crm_api import JSON_HEADERS, LOOPBACK, CrmApi, encode_json, json_response

__all__ = [
    "DEFAULT_PORT",
    "LOOPBACK",
    "RecordedRequest",
    "RecordingTarget",
    "TargetProcess",
    "main",
    "run_in_subprocess",
]

DEFAULT_PORT = 8765
READY_PREFIX = "http-target listening on "
MODULE = "connector_pipelines_tests.servers.http_target"
# The folder that holds connector_pipelines_tests (not an installed package), for a child process started anywhere.
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

AuthMode = Literal["none", "basic", "bearer", "api_key"]


def _body_bytes(body: Any, default: Any) -> tuple[bytes, dict[str, str]]:
    """A configured response body as bytes and its content type: str and bytes are sent as they are, anything
    else as JSON."""
    if body is None:
        body = default
    if isinstance(body, bytes):
        return body, {"Content-Type": "application/octet-stream"}
    if isinstance(body, str):
        return body.encode(), {"Content-Type": "text/plain; charset=utf-8"}
    return encode_json(body), dict(JSON_HEADERS)


@dataclass(slots=True)
class RecordedRequest:
    """One request as the target saw it. `status` is None until answered, and stays None for a dropped one.

    `outcome`: "pending", "applied", "replayed", "fault", "dropped", "unauthorized", "conflict" (idempotency key
    reused for another request), "rejected" (a 4xx from the store: invalid body, rejected field, not found),
    "read" (a GET), "token" (a token request, whatever its answer), "cleared" (a delayed request that outlived
    `clear()`) or "cancelled" (a delayed request cut short by `stop()`).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lowercased
    body: Any  # parsed JSON; the form fields of a form body; otherwise the text, or None when empty
    idempotency_key: str | None
    time: float  # time.time() when it arrived
    status: int | None = None
    outcome: str = "pending"
    fault: str | None = None  # the injected fault it met, e.g. "fail:500", "rate_limit", "delay:1.5", "drop"


@dataclass(frozen=True, slots=True)
class _Fault:
    kind: Literal["fail", "delay", "drop"]
    label: str
    status: int = 500
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(slots=True)
class _Override:
    status: int
    body: bytes
    headers: dict[str, str]
    remaining: int | None  # None: until cleared
    apply: bool


@dataclass(frozen=True, slots=True)
class _Auth:
    """What data requests must show; replaced as a whole, so a handler never sees half of a change."""

    mode: AuthMode = "none"
    username: str = "pipelines"
    password: str = "pw-http-5d81c2"
    client_id: str = "connector-pipelines"
    client_secret: str = "cs-http-9a04e7"
    header: str = "X-API-Key"
    value: str = "key-http-37be10"
    refresh_token: str = "rt-http-6c2e18"


class RecordingTarget(CrmApi):
    """The demo's REST store, recording and fault-injecting. Configure it from the test (methods below) or over
    `POST /_control`; read what it received from `requests`, `receipts`, `applied`, `records()` and `stats()`.
    Every method is thread-safe: the server runs in its own thread with its own event loop (or, from `main`, in
    the foreground).

    `reject_field=(name, value)`: a record whose body has that field equal to that value is refused with 422
    `{"error": "invalid <name>"}`, and so is every batch holding one. `clear()` restores the constructor's
    settings (reject_field, token_ttl) and forgets everything else.
    """

    def __init__(
        self,
        *,
        fast: bool = False,
        record_counts: bool = False,
        access_log: bool = False,
        reject_field: tuple[str, Any] | None = None,
        token_ttl: float = 3600.0,
        host: str = LOOPBACK,
        port: int = 0,
    ):
        # Set before the store's constructor, which resets the state (and that reads these).
        self.fast = fast or record_counts
        self.record_counts = record_counts
        self._default_reject_field = tuple(reject_field) if reject_field is not None else None
        self._default_token_ttl = token_ttl
        self._in_flight = 0
        super().__init__(host=host, port=port, access_log=access_log)

    # ------------------------------------------------------------------------------------------------
    # state

    def _reset_locked(self) -> None:
        super()._reset_locked()
        # A generation number lets a request that waited across clear() (a delay) notice and stay out of the
        # new state.
        self._generation = getattr(self, "_generation", 0) + 1
        self._requests: list[RecordedRequest] = []
        self._statuses: Counter[int] = Counter()
        self._dropped = 0
        self._receipts: Counter[str] = Counter()
        self._receipts_total = 0
        self._applied_total = 0
        self._applied_without_key = 0
        self._replays = 0
        self._conflicts = 0
        self._faults: deque[_Fault] = deque()
        self._override: _Override | None = None
        self._failure_p = 0.0
        self._failure_drop_fraction = 0.0
        self._failure_status = 500
        self._rng = random.Random(0)
        self._auth = _Auth()
        self._tokens: dict[str, float] = {}  # token -> time.monotonic() it expires at
        self._tokens_issued = 0
        self._token_ttl = self._default_token_ttl
        self._reject_field = self._default_reject_field

    def clear(self) -> None:
        """Forget the store, the recording, the counts, the faults, the auth mode and the tokens."""
        with self._lock:
            self._reset_locked()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Copies of the recorded requests (data and token requests), in the order they arrived."""
        with self._lock:
            return [replace(record) for record in self._requests]

    @property
    def receipts(self) -> dict[str, int]:
        """Idempotency key -> requests carrying it that reached the target (faulted and refused ones too)."""
        with self._lock:
            return dict(self._receipts)

    @property
    def applied(self) -> dict[str, int]:
        """Idempotency key -> times a request carrying it was actually applied (more than 1 is a duplicate)."""
        with self._lock:
            return dict(self._applied)

    @property
    def tokens_issued(self) -> int:
        with self._lock:
            return self._tokens_issued

    @property
    def in_flight(self) -> int:
        """Requests being handled right now (a delayed one counts until it is answered)."""
        with self._lock:
            return self._in_flight

    @property
    def reject_field(self) -> tuple[str, Any] | None:
        with self._lock:
            return self._reject_field

    @reject_field.setter
    def reject_field(self, value: tuple[str, Any] | None) -> None:
        with self._lock:
            self._reject_field = tuple(value) if value is not None else None  # type: ignore[assignment]

    @property
    def token_ttl(self) -> float:
        with self._lock:
            return self._token_ttl

    @token_ttl.setter
    def token_ttl(self, seconds: float) -> None:
        with self._lock:
            self._token_ttl = float(seconds)

    def record(self, collection: str, record_id: str) -> dict[str, Any] | None:
        """A copy of one record (in fast mode `{"id": id}`), or None."""
        with self._lock:
            stored = self._store.get(collection, {})
            return self._view(record_id, stored[record_id]) if record_id in stored else None

    def _stats_locked(self) -> dict[str, Any]:
        """The counts that `GET /_stats` returns."""
        return {
            "requests": self._request_count,
            "statuses": {str(status): count for status, count in sorted(self._statuses.items())},
            "dropped": self._dropped,
            "receipts": self._receipts_total,
            "applied": self._applied_total,
            "applied_without_key": self._applied_without_key,
            "duplicates": self._duplicates,
            "distinct_keys": len(self._receipts),
            "replays": self._replays,
            "conflicts": self._conflicts,
            "records": sum(len(records) for records in self._store.values()),
            "collections": {name: len(records) for name, records in sorted(self._store.items())},
            "tokens_issued": self._tokens_issued,
            "in_flight": self._in_flight,
            "fast": self.fast,
            **({"record_applications": self._record_applications_locked()} if self.record_counts else {}),
        }

    def _record_applications_locked(self) -> dict[str, dict[str, int]]:
        """Per collection: times applied -> records applied that many times (record_counts mode)."""
        return {
            name: {str(times): n for times, n in sorted(Counter(records.values()).items())}
            for name, records in sorted(self._store.items())
        }

    def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll `condition` until it holds or `timeout` seconds pass; returns whether it held."""
        deadline = time.monotonic() + timeout
        while True:
            if condition():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being handled (e.g. a delayed one whose client timed out)."""
        return self.wait_until(lambda: self.in_flight == 0, timeout)

    # ------------------------------------------------------------------------------------------------
    # faults: each data request takes the next queued fault, else the `respond_with` override, else the random
    # failure rate; queued faults run in the order they were added

    def fail_next(
        self, n: int = 1, status: int = 500, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> None:
        """The next `n` data requests are answered `status` (with `body`, JSON unless str/bytes), not applied."""
        data, content = _body_bytes(body, {"error": "injected failure"})
        self._queue(n, _Fault("fail", f"fail:{status}", status, data, content | dict(headers or {})))

    def rate_limit_next(self, n: int = 1, retry_after: float | str | None = 1, status: int = 429) -> None:
        """The next `n` data requests are answered 429 with `Retry-After: <retry_after>`, not applied. A str is
        sent as it is (e.g. an HTTP date); a float such as 0.2 is sent as "0.2" (not standard, but quick to test);
        None sends no Retry-After."""
        data, headers = _body_bytes(None, {"error": "rate limited"})
        if retry_after is not None:
            if isinstance(retry_after, float) and retry_after.is_integer():
                retry_after = int(retry_after)
            headers["Retry-After"] = str(retry_after)
        self._queue(n, _Fault("fail", "rate_limit", status, data, headers))

    def delay_next(self, n: int = 1, seconds: float = 1.0) -> None:
        """The next `n` data requests sleep `seconds`, then are applied and answered as usual."""
        self._queue(n, _Fault("delay", f"delay:{seconds:g}", seconds=float(seconds)))

    def drop_next(self, n: int = 1) -> None:
        """The next `n` data requests get their connection closed without any answer; they are not applied."""
        self._queue(n, _Fault("drop", "drop"))

    def failure_rate(self, p: float, seed: int = 0, *, drop_fraction: float = 0.0, status: int = 500) -> None:
        """Each data request fails with probability `p` (0 turns it off): a dropped connection with probability
        `drop_fraction`, else `status`. The draws come from `random.Random(seed)`, so a run of sequential
        requests fails the same way every time."""
        if not 0.0 <= p <= 1.0 or not 0.0 <= drop_fraction <= 1.0:
            raise ValueError("p and drop_fraction are probabilities, between 0 and 1")
        with self._lock:
            self._failure_p = float(p)
            self._failure_drop_fraction = float(drop_fraction)
            self._failure_status = int(status)
            self._rng = random.Random(seed)

    def respond_with(
        self,
        status: int,
        body: Any = None,
        *,
        times: int | None = None,
        apply: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer data requests with `status` and `body` (e.g. 200 `{"ok": false}`), for `times` requests or until
        cleared. With `apply=False` the request is not applied (an injected fault); with `apply=True` it is
        applied and only its answer replaced (stored for its idempotency key if 2xx)."""
        data, content = _body_bytes(body, {})
        with self._lock:
            self._override = _Override(int(status), data, content | dict(headers or {}), times, apply)

    def clear_faults(self) -> None:
        """Drop queued faults, the override and the failure rate; keeps the store and the recording."""
        with self._lock:
            self._faults.clear()
            self._override = None
            self._failure_p = 0.0

    def _queue(self, n: int, fault: _Fault) -> None:
        if n < 0:
            raise ValueError("n must not be negative")
        with self._lock:
            self._faults.extend([fault] * n)

    def _take_fault_locked(self) -> tuple[_Fault | None, _Override | None]:
        if self._faults:
            return self._faults.popleft(), None
        override = self._override
        if override is not None:
            if override.remaining is not None:
                override.remaining -= 1
                if override.remaining <= 0:
                    self._override = None
            if not override.apply:
                return _Fault("fail", "respond_with", override.status, override.body, override.headers), None
            return None, override
        if self._failure_p and self._rng.random() < self._failure_p:
            if self._failure_drop_fraction and self._rng.random() < self._failure_drop_fraction:
                return _Fault("drop", "random:drop"), None
            status = self._failure_status
            data, headers = _body_bytes(None, {"error": "injected failure"})
            return _Fault("fail", f"random:{status}", status, data, headers), None
        return None, None

    # ------------------------------------------------------------------------------------------------
    # auth

    def set_auth(
        self,
        mode: AuthMode,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        header: str | None = None,
        value: str | None = None,
        refresh_token: str | None = None,
        token_ttl: float | None = None,
    ) -> None:
        """Require a login on data requests: "none", "basic" (username, password), "bearer" (a token from
        `POST /oauth/token`, got with client_id/client_secret, username/password or a refresh token) or "api_key"
        (header, value). Values not given keep their defaults (see `_Auth`)."""
        if mode not in ("none", "basic", "bearer", "api_key"):
            raise ValueError(f"unknown auth mode {mode!r}")
        given = {
            "username": username,
            "password": password,
            "client_id": client_id,
            "client_secret": client_secret,
            "header": header,
            "value": value,
            "refresh_token": refresh_token,
        }
        with self._lock:
            self._auth = replace(_Auth(), mode=mode, **{k: v for k, v in given.items() if v is not None})
            if token_ttl is not None:
                self._token_ttl = float(token_ttl)

    def require_basic(self, username: str = "pipelines", password: str = "pw-http-5d81c2") -> None:
        self.set_auth("basic", username=username, password=password)

    def require_bearer(
        self,
        *,
        client_id: str = "connector-pipelines",
        client_secret: str = "cs-http-9a04e7",
        username: str = "pipelines",
        password: str = "pw-http-5d81c2",
        refresh_token: str = "rt-http-6c2e18",
        token_ttl: float | None = None,
    ) -> None:
        self.set_auth(
            "bearer",
            client_id=client_id,
            client_secret=client_secret,
            username=username,
            password=password,
            refresh_token=refresh_token,
            token_ttl=token_ttl,
        )

    def require_api_key(self, value: str = "key-http-37be10", header: str = "X-API-Key") -> None:
        self.set_auth("api_key", header=header, value=value)

    @property
    def auth(self) -> dict[str, Any]:
        """The current auth settings (mode and credentials), for building a client's configuration."""
        with self._lock:
            auth = self._auth
        return {
            "mode": auth.mode,
            "username": auth.username,
            "password": auth.password,
            "client_id": auth.client_id,
            "client_secret": auth.client_secret,
            "header": auth.header,
            "value": auth.value,
            "token_url": self.url("/oauth/token"),
        }

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (401) now."""
        with self._lock:
            for token in self._tokens:
                self._tokens[token] = 0.0

    def _auth_failure_locked(self, headers: Mapping[str, str]) -> tuple[int, bytes, dict[str, str]] | None:
        auth = self._auth
        if auth.mode == "none":
            return None
        given = headers.get("Authorization", "")
        if auth.mode == "basic":
            if _basic_credentials(given) == (auth.username, auth.password):
                return None
            challenge = {"WWW-Authenticate": 'Basic realm="target"'}
            return 401, encode_json({"error": "unauthorized"}), JSON_HEADERS | challenge
        if auth.mode == "api_key":
            if headers.get(auth.header) == auth.value:
                return None
            return 401, encode_json({"error": "invalid api key"}), dict(JSON_HEADERS)
        scheme, _, token = given.partition(" ")
        expires = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expires is not None and time.monotonic() < expires:
            return None
        description = "no bearer token" if expires is None and not token else "the access token expired or is unknown"
        challenge = f'Bearer realm="target", error="invalid_token", error_description="{description}"'
        return 401, encode_json({"error": "invalid_token"}), JSON_HEADERS | {"WWW-Authenticate": challenge}

    # ------------------------------------------------------------------------------------------------
    # /_control: the Python methods over HTTP, for a target in another process

    def control(self, action: str, **options: Any) -> None:
        """Run one `POST /_control` action: clear, clear_faults, fail_next, rate_limit_next, delay_next,
        drop_next, failure_rate, respond_with, reject_field (name, value; no name turns it off), auth (mode, ...),
        expire_tokens, token_ttl (seconds)."""
        simple: dict[str, Callable[..., None]] = {
            "clear": self.clear,
            "clear_faults": self.clear_faults,
            "fail_next": self.fail_next,
            "rate_limit_next": self.rate_limit_next,
            "delay_next": self.delay_next,
            "drop_next": self.drop_next,
            "failure_rate": self.failure_rate,
            "respond_with": self.respond_with,
            "auth": self.set_auth,
            "expire_tokens": self.expire_tokens,
        }
        if action in simple:
            simple[action](**options)
        elif action == "reject_field":
            name = options.pop("name", None)
            value = options.pop("value", None)
            if options:
                raise TypeError(f"unexpected options {sorted(options)}")
            self.reject_field = (name, value) if name is not None else None
        elif action == "token_ttl":
            self.token_ttl = options.pop("seconds")
            if options:
                raise TypeError(f"unexpected options {sorted(options)}")
        else:
            raise ValueError(f"unknown action {action!r}")

    # ------------------------------------------------------------------------------------------------
    # the web application: the harness endpoints and the token endpoint before the store's catch-all

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_health", self._health),
            web.get("/_stats", self._stats),
            web.post("/_control", self._control),
            web.post("/oauth/token", self._token),
            *super()._routes(),
        ]

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"ok":true}', headers=JSON_HEADERS)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.Response(body=encode_json(self.stats()), headers=JSON_HEADERS)

    async def _control(self, request: web.Request) -> web.Response:
        try:
            options = json.loads(await request.read())
            if not isinstance(options, dict) or not isinstance(options.get("action"), str):
                raise ValueError('the body must be a JSON object with an "action"')
            # JSON has no tuples; a list is fine where a method wants one
            self.control(options.pop("action"), **options)
        except (ValueError, TypeError, KeyError) as exc:
            return web.Response(status=400, body=encode_json({"error": str(exc)}), headers=JSON_HEADERS)
        return web.Response(body=b'{"ok":true}', headers=JSON_HEADERS)

    def _arrive_locked(self, request: web.Request, key: str | None, body: Any) -> tuple[int, RecordedRequest | None]:
        """Count and record a request as it arrives; returns the generation it belongs to and its record."""
        self._in_flight += 1
        self._request_count += 1
        if key is not None:
            self._receipts[key] += 1
            self._receipts_total += 1
        if self.fast:
            return self._generation, None
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=headers,
            body=body,
            idempotency_key=key,
            time=time.time(),
        )
        self._requests.append(record)
        return self._generation, record

    def _finish_locked(
        self,
        generation: int,
        record: RecordedRequest | None,
        status: int | None,
        outcome: str,
        fault: _Fault | None = None,
    ) -> None:
        self._in_flight -= 1
        if generation != self._generation:
            return
        if status is None:
            self._dropped += 1
        else:
            self._statuses[status] += 1
        if record is not None:
            record.status = status
            record.outcome = outcome
            record.fault = fault.label if fault is not None else None

    async def _token(self, request: web.Request) -> web.Response:
        raw = await request.read()
        is_json = request.content_type == "application/json"
        try:
            body: Any = json.loads(raw) if is_json else dict(parse_qsl(raw.decode(), keep_blank_values=True))
        except (ValueError, UnicodeDecodeError):
            body = raw.decode(errors="replace")
        with self._lock:
            generation, record = self._arrive_locked(request, request.headers.get("Idempotency-Key"), body)
        status, payload, headers = self._issue_token(request.headers.get("Authorization", ""), body, is_json)
        with self._lock:
            self._finish_locked(generation, record, status, "token")
        return web.Response(status=status, body=encode_json(payload), headers=JSON_HEADERS | headers)

    def _issue_token(self, authorization: str, body: Any, is_json: bool) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            auth = self._auth
        if not isinstance(body, dict):
            return 400, {"error": "invalid_request"}, {}
        if is_json:
            # A plain JSON login, as many non-OAuth APIs have.
            if (body.get("username"), body.get("password")) != (auth.username, auth.password):
                return 401, {"error": "invalid_grant", "error_description": "bad username or password"}, {}
        else:
            grant = body.get("grant_type")
            if grant == "client_credentials":
                # RFC 6749 2.3.1: client authentication by HTTP basic, or else by form fields.
                basic = _basic_credentials(authorization)
                client = basic if basic is not None else (body.get("client_id"), body.get("client_secret"))
                if client != (auth.client_id, auth.client_secret):
                    challenge = {"WWW-Authenticate": 'Basic realm="target"'} if basic is not None else {}
                    return 401, {"error": "invalid_client"}, challenge
            elif grant == "password":
                if (body.get("username"), body.get("password")) != (auth.username, auth.password):
                    return 400, {"error": "invalid_grant"}, {}
            elif grant == "refresh_token":
                # The client names itself in the body (a public client) or with its secret; no rotation here.
                if body.get("client_id") != auth.client_id:
                    return 401, {"error": "invalid_client"}, {}
                if body.get("refresh_token") != auth.refresh_token:
                    return 400, {"error": "invalid_grant", "error_description": "expired or revoked"}, {}
            else:
                return 400, {"error": "unsupported_grant_type"}, {}
        token = secrets.token_urlsafe(24)
        with self._lock:
            ttl = self._token_ttl
            self._tokens[token] = time.monotonic() + ttl
            self._tokens_issued += 1
        expires_in: float = int(ttl) if float(ttl).is_integer() else ttl
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}, {}

    async def _data(self, request: web.Request) -> web.Response:
        raw, body, parsed = await self._read_body(request)
        key = request.headers.get("Idempotency-Key")
        # Everything but a delay happens under one hold of the lock: the common case must stay cheap (fast mode
        # serves the benchmark) and a request is counted, checked and applied as one step.
        with self._lock:
            generation, record = self._arrive_locked(request, key, body)
            denied = self._auth_failure_locked(request.headers)
            if denied is not None:
                self._finish_locked(generation, record, denied[0], "unauthorized")
                return web.Response(status=denied[0], body=denied[1], headers=denied[2])
            fault, override = self._take_fault_locked()
            if fault is None:
                status, data, headers, outcome = self._commit_counted_locked(
                    request, key, raw, body, parsed, generation, override
                )
                self._finish_locked(generation, record, status, outcome)
                return json_response(status, data, headers)
            if fault.kind == "fail":
                self._finish_locked(generation, record, fault.status, "fault", fault)
                return web.Response(status=fault.status, body=fault.body, headers=fault.headers)
            if fault.kind == "drop":
                self._finish_locked(generation, record, None, "dropped", fault)
        if fault.kind == "drop":
            if request.transport is not None:
                request.transport.close()
            # Nothing can be written any more: aiohttp fails to send this, sees the closed transport and ends the
            # connection quietly.
            return web.Response(status=204)
        status: int | None = None
        outcome = "cancelled"  # stays so only if stop() cancels the sleep
        try:
            await asyncio.sleep(fault.seconds)
            with self._lock:
                status, data, headers, outcome = self._commit_counted_locked(
                    request, key, raw, body, parsed, generation, None
                )
        finally:
            with self._lock:
                self._finish_locked(generation, record, status, outcome, fault)
        return json_response(status, data, headers)

    def _commit_counted_locked(
        self,
        request: web.Request,
        key: str | None,
        raw: bytes,
        body: Any,
        parsed: bool,
        generation: int,
        override: _Override | None,
    ) -> tuple[int, bytes, Mapping[str, str], str]:
        """The store's commit (idempotency check and apply), unless `clear()` came in between, with the
        override's answer and the counts the store itself does not keep: (status, body, headers, outcome)."""
        if generation != self._generation:
            error = {"error": "the target was cleared while this request waited"}
            return 503, encode_json(error), JSON_HEADERS, "cleared"
        answer = None if override is None else (override.status, override.body, override.headers)
        status, data, headers, outcome = self._commit_locked(request, key, raw, body, parsed, answer)
        if outcome == "applied":
            # Only a POST/PUT/PATCH/DELETE is applied, and the store counts those per key.
            if key is not None:
                self._applied_total += 1
            else:
                self._applied_without_key += 1
        elif outcome == "replayed":
            self._replays += 1
        elif outcome == "conflict":
            self._conflicts += 1
        return status, data, headers, outcome

    # ------------------------------------------------------------------------------------------------
    # the store: a field value it refuses, and fast mode's ids-only records

    def _refusal(self, record: dict[str, Any]) -> str | None:
        rule = self._reject_field
        if rule is not None and rule[0] in record and record[rule[0]] == rule[1]:
            return f"invalid {rule[0]}"
        return None

    def _view(self, key: str, record: Any) -> dict[str, Any]:
        # Fast mode holds None per record; record_counts mode the times it was applied.
        return {"id": key} if record is None or type(record) is int else super()._view(key, record)

    def _put_locked(self, collection: str, key: str, record: dict[str, Any]) -> tuple[bool, Any]:
        if not self.fast:
            return super()._put_locked(collection, key, record)
        records = self._store.setdefault(collection, {})
        created = key not in records
        if self.record_counts:
            records[key] = (records.get(key) or 0) + 1
        else:
            records[key] = None  # fast mode keeps ids only
        return created, b'{"id":%b}' % json.dumps(record["id"]).encode()  # json.dumps(scalar): a quick path

    # ------------------------------------------------------------------------------------------------
    # running it in the foreground (`main`)

    async def serve_forever(self, stop: asyncio.Event | None = None) -> None:
        """Serve in the current event loop until `stop` is set (or forever); prints the ready line on stdout."""
        runner = self._runner()
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            self.port = runner.addresses[0][1]
            self.base_url = f"http://{self.host}:{self.port}"
            print(f"{READY_PREFIX}{self.base_url}", flush=True)
            await (stop or asyncio.Event()).wait()
        finally:
            await runner.cleanup()


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    # OAuth clients form-encode the client id and secret before base64 (RFC 6749 2.3.1); plain ones do not,
    # and decoding leaves those unchanged unless they hold % or +.
    return (unquote_plus(user), unquote_plus(password)) if sep else None


# ----------------------------------------------------------------------------------------------------
# its own process


def main(argv: Sequence[str] | None = None) -> int:
    """Run the target in the foreground until interrupted: `python -m connector_pipelines_tests.servers.http_target`."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Run the loopback HTTP target in the foreground until interrupted.",
    )
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port (printed when ready)")
    parser.add_argument("--fast", action="store_true", help="count per key and status only; no per-request list")
    parser.add_argument(
        "--record-counts",
        action="store_true",
        help="as --fast, and count the times each record was applied (/_stats: record_applications)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request on stderr")
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's own event loop even if uvloop is here")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when stdin closes (parent gone)")
    args = parser.parse_args(argv)
    if args.access_log:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    target = RecordingTarget(
        fast=args.fast, record_counts=args.record_counts, access_log=args.access_log, host=args.host, port=args.port
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
                loop.add_signal_handler(signum, stop.set)
        if args.exit_on_stdin_eof:
            # The parent holds our stdin open; when it dies without stop(), EOF here ends us too, so an orphan
            # never keeps the port.
            def watch() -> None:
                sys.stdin.buffer.read()
                loop.call_soon_threadsafe(stop.set)

            threading.Thread(target=watch, name="stdin-watch", daemon=True).start()
        await target.serve_forever(stop)

    loop_factory = None
    if not args.no_uvloop:
        try:
            import uvloop  # optional: not a dependency, but roughly doubles what one core answers

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run())
    return 0


class TargetProcess:
    """A target running in a child process (see `run_in_subprocess`): `base_url`, `stats()`, `control()`,
    `stop()`; its stderr (the access log, errors) goes to `log_path`."""

    def __init__(self, process: subprocess.Popen[bytes], base_url: str, log_path: Path):
        self.process = process
        self.base_url = base_url
        self.log_path = log_path

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def _call(self, path: str, payload: Any = None, timeout: float = 10.0) -> Any:
        data = None if payload is None else encode_json(payload)
        request = urllib.request.Request(self.url(path), data=data, headers=JSON_HEADERS)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        return self._call("/_stats")

    def control(self, action: str, **options: Any) -> None:
        self._call("/_control", {"action": action, **options})

    def clear(self) -> None:
        self.control("clear")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> TargetProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run_in_subprocess(
    port: int | None = None,
    fast: bool = True,
    *,
    record_counts: bool = False,
    access_log: bool = False,
    log_path: Path | None = None,
    timeout: float = 30.0,
) -> TargetProcess:
    """Start `python -m connector_pipelines_tests.servers.http_target` (port None: a free one) and wait until
    `/_health` answers. The child stops by itself if this process dies. `record_counts`: see the module docstring."""
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="http-target-", suffix=".log")
        with open(handle, "wb"):
            pass
        log_path = Path(name)
    command = [sys.executable, "-m", MODULE, "--port", str(port or 0)]
    command += ["--exit-on-stdin-eof"] + (["--fast"] if fast else []) + (["--access-log"] if access_log else [])
    command += ["--record-counts"] if record_counts else []
    # The tests package is not installed: the child finds it through PYTHONPATH, whatever its working directory.
    search_path = [str(REPOSITORY_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    environment = os.environ | {"PYTHONPATH": os.pathsep.join(search_path)}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=environment)
    lines: queue.Queue[str | None] = queue.Queue()

    def read_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:  # keeps draining after the ready line, so the child never blocks on it
            lines.put(line.decode(errors="replace").strip())
        lines.put(None)

    threading.Thread(target=read_stdout, name="http-target-stdout", daemon=True).start()
    deadline = time.monotonic() + timeout

    def fail(reason: str) -> RuntimeError:
        TargetProcess(process, "", log_path).stop()
        tail = log_path.read_text(errors="replace")[-2000:]
        return RuntimeError(f"the HTTP target process {reason}; its log ({log_path}):\n{tail}")

    base_url = None
    while base_url is None:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise fail(f"did not start within {timeout:g} s") from None
        if line is None:
            raise fail(f"exited with status {process.wait()}")
        if line.startswith(READY_PREFIX):
            base_url = line.removeprefix(READY_PREFIX)
    target = TargetProcess(process, base_url, log_path)
    while True:
        try:
            if target._call("/_health", timeout=2.0).get("ok"):
                return target
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise fail(f"did not answer /_health within {timeout:g} s")
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
