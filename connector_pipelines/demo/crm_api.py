"""The demo's CRM: a small in-memory REST store on loopback (aiohttp.web) that the demo's integrations deliver to.
`connector-pipelines demo` and `connector-pipelines ui --demo-target` start it in a thread (`with CrmApi(port=...)`).

By path:

- `POST /{collection}` creates (or replaces, by `id`) a record from a JSON object: 201 (200 when it replaced one)
  with `{"id": ..., ...record}`; without `id` in the body the store makes one up.
- `PUT /{collection}/{id}` replaces or creates (200/201), `PATCH` merges into an existing record (404 if none),
  `DELETE` removes (204, 404 if none), `GET /{collection}/{id}` reads (200/404), `GET /{collection}` lists
  (`{"records": [...], "count": n}`).
- `POST /{collection}/batch` with `{"records": [...]}` upserts each record by id and answers 200
  `{"results": [{"id": ...}, ...]}`. A batch is atomic: one refused record refuses the whole batch (422) and
  nothing in it is applied.

Record ids are kept as strings in URLs and as the store's keys; a record keeps the `id` value its body gave.

Idempotency (like Stripe): a POST/PUT/PATCH/DELETE whose `Idempotency-Key` was already answered with a 2xx is not
applied again; the stored response is replayed with the header `Idempotent-Replayed: true`. Reusing a key for a
different request (method, path or body bytes) is answered 409 and not applied. Non-2xx answers are not stored,
so a retry after one is applied normally. `stats()["duplicates"]` counts the keys applied more than once (what
the demo prints as "records applied twice"), which idempotent delivery keeps at 0.

The demo's `crm` connection needs no login, so this store asks for none. The fault-injecting, recording target
that the tests and the benchmark use (`connector_pipelines_tests.servers.http_target.RecordingTarget`) extends
this class: its own data handler adds auth, faults and the recording around this store's steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any, Self

from aiohttp import web

__all__ = ["JSON_HEADERS", "LOOPBACK", "Answer", "CrmApi", "encode_json", "json_response"]

LOOPBACK = "127.0.0.1"
JSON_HEADERS = {"Content-Type": "application/json"}
REPLAYED_JSON_HEADERS = (("Content-Type", "application/json"), ("Idempotent-Replayed", "true"))
IDEMPOTENT_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# (status, body bytes, headers): what a data request is answered.
Answer = tuple[int, bytes, Mapping[str, str]]

# The 2xx answer to an idempotency key, replayed to its later requests: (status, body, headers as pairs,
# fingerprint = (method, path, hash of the body bytes)). A plain tuple of strings, bytes and ints, because the
# garbage collector stops tracking such tuples: with 200,000 keys a class instance each would slow every full
# collection down.
_StoredAnswer = tuple[int, bytes, tuple[tuple[str, str], ...], tuple[str, str, int]]

# json.dumps(obj, separators=...) builds a new encoder on every call; one shared encoder is measurably cheaper.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode_json(obj: Any) -> bytes:
    """`obj` as compact JSON bytes."""
    return _ENCODER.encode(obj).encode()


def json_response(status: int, body: bytes, headers: Mapping[str, str]) -> web.Response:
    """The response for an answer; a 204 has no body, hence no Content-Type either."""
    return web.Response(status=204) if status == 204 else web.Response(status=status, body=body, headers=headers)


class BackgroundApp:
    """An aiohttp application served in a background thread with its own event loop: `start()`/`stop()`, or
    `with`. A subclass gives its runner (`_runner()`); `base_url` is known once started."""

    def __init__(self, host: str = LOOPBACK, port: int = 0):
        self.host = host
        self.port = port  # 0: a free one, known (with `base_url`) once started
        self.base_url = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _runner(self) -> web.AppRunner:
        raise NotImplementedError

    def start(self) -> Self:
        """Serve on `host` (loopback) and `port` (0: a free one) in a background thread; sets `base_url`."""
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            runner = self._runner()
            try:
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, self.host, self.port)
                loop.run_until_complete(site.start())
                self.port = runner.addresses[0][1]
                self.base_url = f"http://{self.host}:{self.port}"
                self._loop = loop
            except BaseException as exc:  # reported by start() in the caller's thread
                failure.append(exc)
                with contextlib.suppress(Exception):
                    loop.run_until_complete(runner.cleanup())
                loop.close()
                started.set()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=serve, name=f"{type(self).__name__}-server", daemon=True)
        self._thread.start()
        if not started.wait(30):
            raise RuntimeError(f"{type(self).__name__} did not start within 30 s")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop the background server; safe to call when it is not running."""
        if self._thread is None:
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class CrmApi(BackgroundApp):
    """The in-memory REST store, served by aiohttp in a background thread (`start()`/`stop()`, or `with`).

    Read what it holds with `records(collection)` and `stats()`. Every method is thread-safe: the server runs
    in its own thread with its own event loop, and a request is checked and applied under one hold of the lock
    (so a batch is applied all at once).
    """

    def __init__(self, *, host: str = LOOPBACK, port: int = 0, access_log: bool = False):
        super().__init__(host, port)
        self.access_log = access_log
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._reset_locked()
        self.app = self._make_app()

    def _reset_locked(self) -> None:
        self._store: dict[str, dict[str, Any]] = {}
        self._answered: dict[str, _StoredAnswer] = {}
        self._request_count = 0
        self._applied: Counter[str] = Counter()
        self._duplicates = 0

    # ------------------------------------------------------------------------------------------------
    # what it holds

    def records(self, collection: str) -> dict[str, Any]:
        """Id -> a copy of the record, for one collection."""
        with self._lock:
            stored = self._store.get(collection, {})
            return {key: self._view(key, record) for key, record in stored.items()}

    def stats(self) -> dict[str, Any]:
        """Requests received, keys applied more than once, records held (in all and per collection)."""
        with self._lock:
            return self._stats_locked()

    def _stats_locked(self) -> dict[str, Any]:
        return {
            "requests": self._request_count,
            "duplicates": self._duplicates,
            "records": sum(len(records) for records in self._store.values()),
            "collections": {name: len(records) for name, records in sorted(self._store.items())},
        }

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    # ------------------------------------------------------------------------------------------------
    # the web application

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(self._routes())
        return app

    def _routes(self) -> list[web.RouteDef]:
        """Every path is a data request; a subclass puts its own paths before this catch-all."""
        return [web.route("*", "/{tail:.*}", self._data)]

    async def _data(self, request: web.Request) -> web.Response:
        raw, body, parsed = await self._read_body(request)
        with self._lock:
            self._request_count += 1
            status, data, headers, _ = self._commit_locked(
                request, request.headers.get("Idempotency-Key"), raw, body, parsed
            )
        return json_response(status, data, headers)

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[bytes, Any, bool]:
        """(the body's bytes, its JSON, whether it parsed); an empty body is None, and parses."""
        raw = await request.read()
        if not raw:
            return raw, None, True
        try:
            return raw, json.loads(raw.decode()), True  # str: skips json's guessing of the bytes' encoding
        except (ValueError, UnicodeDecodeError):
            return raw, raw.decode(errors="replace"), False

    def _commit_locked(
        self,
        request: web.Request,
        key: str | None,
        raw: bytes,
        body: Any,
        parsed: bool,
        replace_answer: Answer | None = None,
    ) -> tuple[int, bytes, Mapping[str, str], str]:
        """The idempotency check and the store: (status, body, headers, outcome). `outcome` is "applied",
        "replayed", "conflict" (the key was used for another request), "read" (a GET) or "rejected" (a 4xx).

        `replace_answer` is sent instead of the store's own answer (the request is still applied); a 2xx one is
        what the key then replays."""
        if not parsed:
            return 400, encode_json({"error": "the body is not JSON"}), JSON_HEADERS, "rejected"
        method = request.method
        if method not in IDEMPOTENT_METHODS:
            key = None
        fingerprint = (method, request.path, hash(raw))
        if key is not None:
            stored = self._answered.get(key)
            if stored is not None:
                if stored[3] != fingerprint:
                    error = {"error": "this Idempotency-Key was used for a different request"}
                    return 409, encode_json(error), JSON_HEADERS, "conflict"
                return stored[0], stored[1], dict(stored[2]), "replayed"
        status, payload, applied = self._apply_locked(method, request.path, body)
        data = b"" if payload is None else payload if type(payload) is bytes else encode_json(payload)
        headers: Mapping[str, str] = JSON_HEADERS
        if replace_answer is not None:
            status, data, headers = replace_answer
        if applied and key is not None:
            count = self._applied[key] = self._applied[key] + 1
            if count == 2:
                self._duplicates += 1
        if key is not None and 200 <= status < 300:
            replayed = (
                REPLAYED_JSON_HEADERS
                if headers is JSON_HEADERS
                else tuple({**headers, "Idempotent-Replayed": "true"}.items())
            )
            self._answered[key] = (status, data, replayed, fingerprint)
        if applied:
            return status, data, headers, "applied"
        return status, data, headers, "read" if method == "GET" and status < 400 else "rejected"

    # ------------------------------------------------------------------------------------------------
    # the store (called with the lock held)

    def _view(self, key: str, record: Any) -> dict[str, Any]:
        """A copy of a stored record, so a caller cannot change the store through it."""
        return json.loads(json.dumps(record))

    def _refusal(self, record: dict[str, Any]) -> str | None:
        """Why the store refuses a record (answered 422), or None; this store takes every JSON object."""
        return None

    def _put_locked(self, collection: str, key: str, record: dict[str, Any]) -> tuple[bool, Any]:
        """Store a record, replacing any under `key`; returns whether it is new and what to answer."""
        records = self._store.setdefault(collection, {})
        created = key not in records
        records[key] = record
        return created, record

    def _apply_locked(self, method: str, path: str, body: Any) -> tuple[int, Any, bool]:
        """Returns (status, answer: JSON-able, bytes already encoded, or None for no body; whether the store
        changed)."""
        parts = path.strip("/").split("/")
        if not parts[0] or len(parts) > 2:
            return 404, {"error": f"no route for {path}"}, False
        collection = parts[0]
        item = parts[1] if len(parts) == 2 else None
        if item is None or (item == "batch" and method == "POST"):
            if method == "GET":
                stored = self._store.get(collection, {})
                listed = [self._view(key, record) for key, record in stored.items()]
                return 200, {"records": listed, "count": len(listed)}, False
            if method != "POST":
                return 405, {"error": f"{method} is not allowed on a collection"}, False
            if item == "batch":
                return self._batch_locked(collection, body)
            if not isinstance(body, dict):
                return 400, {"error": "the body must be a JSON object"}, False
            if (error := self._refusal(body)) is not None:
                return 422, {"error": error}, False
            record = self._with_id(body, None)
            created, answer = self._put_locked(collection, str(record["id"]), record)
            return (201 if created else 200), answer, True
        stored = self._store.get(collection, {})
        if method == "GET":
            if item not in stored:
                return 404, {"error": "not found"}, False
            return 200, self._view(item, stored[item]), False
        if method == "DELETE":
            if item not in stored:
                return 404, {"error": "not found"}, False
            del stored[item]
            return 204, None, True
        if method not in ("PUT", "PATCH"):
            return 405, {"error": f"{method} is not allowed on a record"}, False
        if not isinstance(body, dict):
            return 400, {"error": "the body must be a JSON object"}, False
        if "id" in body and str(body["id"]) != item:
            return 400, {"error": "the id in the body does not match the URL"}, False
        if (error := self._refusal(body)) is not None:
            return 422, {"error": error}, False
        if method == "PATCH":
            if item not in stored:
                return 404, {"error": "not found"}, False
            _, answer = self._put_locked(collection, item, self._view(item, stored[item]) | body)
            return 200, answer, True
        created, answer = self._put_locked(collection, item, self._with_id(body, item))
        return (201 if created else 200), answer, True

    def _batch_locked(self, collection: str, body: Any) -> tuple[int, Any, bool]:
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
            return 400, {"error": 'the body must be {"records": [JSON objects]}'}, False
        for index, record in enumerate(records):
            if (error := self._refusal(record)) is not None:
                return 422, {"error": error, "index": index}, False
        results = []
        for record in records:
            record = self._with_id(record, None)
            self._put_locked(collection, str(record["id"]), record)
            results.append({"id": record["id"]})
        return 200, {"results": results}, True

    def _with_id(self, body: dict[str, Any], key: str | None) -> dict[str, Any]:
        """The record to store: `id` first, from the body, else the URL, else a new one."""
        if "id" in body:
            return {"id": body["id"], **body}
        return {"id": key if key is not None else f"r{next(self._ids)}", **body}

    # ------------------------------------------------------------------------------------------------
    # running it

    def _runner(self) -> web.AppRunner:
        # A delayed request must not hold stop() for long; handler_cancellation stays off (aiohttp's default)
        # so a request whose client went away is still applied, as a real server would.
        return web.AppRunner(
            self.app,
            access_log=logging.getLogger("aiohttp.access") if self.access_log else None,
            shutdown_timeout=1.0,
        )
