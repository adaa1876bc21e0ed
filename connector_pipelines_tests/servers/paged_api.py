"""A loopback JSON API that serves records page by page, for the imports' `source.api` tests.

    with PagedApi(records=make_records(25)) as api:
        api.base_url  # http://127.0.0.1:PORT

It serves `records` (dicts with at least `id` and `updated_at`), filtered by `updated_since` (records whose
`updated_at` >= the value, compared as text: ISO timestamps of one form order as text), in the list's order, in pages of
`per_page` (a query parameter, default 10), one path per way of paging:

- `GET /next_url/items`: `{"data": {"items": [...]}, "links": {"next": "/next_url/items?...page=N"}}` (relative,
  or under `link_origin` when set; the filter carried along), `next` null on the last page;
- `GET /link_header/items`: the list as the body, `Link: <absolute url>; rel="next"` while there are more;
- `GET /cursor/items?cursor=C`: `{"items": [...], "meta": {"next_cursor": "C" | null}}`;
- `GET /offset/items?offset=O&limit=L`: `{"results": [...], "total": N}`;
- `GET /page/items?page=P` (from 1): `{"data": [...], "total_pages": N}`;
- `GET /all/items`: every record as one list;
- `GET /endless/items?cursor=C`: always a page and a next cursor (an API that never stops paging);
- `GET /big/items`: every record and 200 KB of padding in one answer; `GET /html/items`: an HTML page;
- `POST /oauth/token`: client credentials (form) -> `{"access_token": ..., "expires_in": 3600}`.

Faults: `inject(n, status, retry_after=None)` answers the n-th data request (counted from 1 since `clear()`) with
`status` (and a Retry-After header) instead of its page; `delay(n, seconds)` answers it late. Auth:
`require_bearer(token)`, `require_basic(user, password)` or `require_oauth(client_id, secret)` (a bearer token
issued by /oauth/token): others get 401 with a body that echoes the Authorization header (a careless API does), so
a test can check the client never repeats it.
`requests` records every data request (path, query, whether it was authorised, the status answered).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web

from connector_pipelines.demo.crm_api import LOOPBACK, BackgroundApp

T0 = dt.datetime(2026, 3, 1, 9, 0, 0)


def make_records(count: int, start: int = 1, at: dt.datetime = T0, step: dt.timedelta = dt.timedelta(minutes=1)):
    """`count` records with ids from `start`, each `step` later than the one before (updated_at as ISO text)."""
    return [
        {
            "id": index,
            "name": f"Record {index}",
            "amount": f"{index}.50",
            "updated_at": (at + step * (index - start)).isoformat(),
            "customer": {"id": f"C{index % 3}"},
        }
        for index in range(start, start + count)
    ]


@dataclass
class SeenRequest:
    path: str
    query: dict[str, str]
    authorised: bool
    status: int


class PagedApi(BackgroundApp):
    """The API in a background thread on a free loopback port (see the module's docstring)."""

    def __init__(self, records: list[dict] | None = None):
        super().__init__(LOOPBACK, 0)
        self.records: list[dict] = list(records or [])
        self.clear()

    # What a test sets ---------------------------------------------------------------------------------------

    def clear(self) -> None:
        self.requests: list[SeenRequest] = []
        self._faults: dict[int, tuple[int, float | None]] = {}
        self._delays: dict[int, float] = {}
        self._auth: tuple[str, ...] | None = None
        self._issued: set[str] = set()
        self.token_requests = 0
        self.link_origin = ""  # what next_url links start with: empty (a relative link) or another origin

    def inject(self, request_number: int, status: int, retry_after: float | None = None) -> None:
        """Answer the `request_number`-th data request with `status` instead of its page."""
        self._faults[request_number] = (status, retry_after)

    def delay(self, request_number: int, seconds: float) -> None:
        """Answer the `request_number`-th data request only after `seconds` (a client's timeout is shorter)."""
        self._delays[request_number] = seconds

    def require_bearer(self, token: str) -> None:
        self._auth = ("bearer", token)

    def require_basic(self, user: str, password: str) -> None:
        self._auth = ("basic", base64.b64encode(f"{user}:{password}".encode()).decode())

    def require_oauth(self, client_id: str, secret: str) -> None:
        self._auth = ("oauth", client_id, secret)

    def issued_tokens(self) -> int:
        return len(self._issued)

    # Serving ------------------------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        if self._auth is None:
            return True
        header = request.headers.get("Authorization", "")
        kind = self._auth[0]
        if kind == "bearer":
            return header == f"Bearer {self._auth[1]}"
        if kind == "basic":
            return header == f"Basic {self._auth[1]}"
        return header.startswith("Bearer ") and header[7:] in self._issued

    def _selected(self, request: web.Request) -> list[dict]:
        since = request.query.get("updated_since")
        # In the list's order; a record that is not an object (a test's bad record) is never filtered out.
        return [r for r in self.records if since is None or not isinstance(r, dict) or r["updated_at"] >= since]

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        if (
            self._auth is None
            or self._auth[0] != "oauth"
            or (
                form.get("client_id"),
                form.get("client_secret"),
            )
            != self._auth[1:]
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = secrets.token_hex(8)
        self._issued.add(token)
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    async def _data(self, request: web.Request) -> web.StreamResponse:
        number = len(self.requests) + 1
        authorised = self._authorised(request)
        seen = SeenRequest(request.path, dict(request.query), authorised, 0)
        self.requests.append(seen)
        if number in self._delays:
            await asyncio.sleep(self._delays[number])
        if number in self._faults:
            status, retry_after = self._faults[number]
            seen.status = status
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            return web.json_response({"error": f"injected {status}"}, status=status, headers=headers)
        if not authorised:
            seen.status = 401
            echoed = request.headers.get("Authorization", "")
            return web.json_response({"error": "unauthorised", "you_sent": echoed}, status=401)
        seen.status = 200
        style = request.match_info["style"]
        records = self._selected(request)
        per_page = int(request.query.get("per_page", "10"))
        kept = {k: v for k, v in request.query.items() if k in ("updated_since", "per_page")}
        if style == "all":
            return web.json_response(records)
        if style == "next_url":
            page = int(request.query.get("page", "1"))
            chunk = records[(page - 1) * per_page : page * per_page]
            more = page * per_page < len(records)
            link = f"{self.link_origin}/next_url/items?{urlencode({**kept, 'page': page + 1})}" if more else None
            return web.json_response({"data": {"items": chunk}, "links": {"next": link}})
        if style == "link_header":
            page = int(request.query.get("page", "1"))
            chunk = records[(page - 1) * per_page : page * per_page]
            headers = {}
            if page * per_page < len(records):
                url = f"{self.base_url}/link_header/items?{urlencode({**kept, 'page': page + 1})}"
                headers["Link"] = f'<{url}>; rel="next", <{self.base_url}/link_header/items>; rel="first"'
            return web.json_response(chunk, headers=headers)
        if style == "cursor":
            start = int(request.query.get("cursor", "0"))
            chunk = records[start : start + per_page]
            more = start + per_page < len(records)
            return web.json_response({"items": chunk, "meta": {"next_cursor": str(start + per_page) if more else None}})
        if style == "offset":
            offset, limit = int(request.query.get("offset", "0")), int(request.query.get("limit", "10"))
            return web.json_response({"results": records[offset : offset + limit], "total": len(records)})
        if style == "page":
            page = int(request.query.get("page", "1"))
            chunk = records[(page - 1) * per_page : page * per_page]
            pages = max(1, -(-len(records) // per_page))
            return web.json_response({"data": chunk, "total_pages": pages})
        if style == "endless":
            start = int(request.query.get("cursor", "0"))
            return web.json_response({"items": records[:1], "meta": {"next_cursor": str(start + 1)}})
        if style == "html":
            return web.Response(text="<html><body>Maintenance</body></html>", content_type="text/html")
        if style == "big":
            body = json.dumps({"items": records, "padding": "x" * 200_000})
            return web.Response(text=body, content_type="application/json")
        seen.status = 404
        return web.json_response({"error": "no such style"}, status=404)

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/oauth/token", self._token)
        app.router.add_get("/{style}/items", self._data)
        return app

    def _runner(self) -> web.AppRunner:
        return web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
