"""The YAML of an import's `source.api`: records read from a partner's HTTP API, page after page.

    source:
      api:
        connection: partner_api          # an http connection (base_url, auth, retry)
        path: /v1/orders
        params: {status: open}
        records: data.items              # where the records are in each answer; empty: the body is the list
        pagination: {type: cursor, cursor_path: meta.next_cursor, cursor_param: cursor}
        updated_at: updated_at           # the field of each record that says when it changed
        since_param: updated_since       # the query parameter an incremental run fills from the watermark
        max_pages: 1000
        max_response_bytes: 16777216

What comes from a partner's API is bounded: pages per run, bytes per answer (and, in the engine, JSON depth).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from connector_pipelines.spec.common import StrictModel, error_at, quoted
from connector_pipelines.spec.connections import URL_SECRET_KEY
from connector_pipelines.spec.lookback import DEFAULT_LOOKBACK, LookbackText, parse_lookback

# A dotted path into a JSON answer: `data.items`, `meta.next`, `links.0.href`; names of letters, digits, _ and -.
_JSON_PATH = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\Z")
_PARAM = re.compile(r"^[A-Za-z0-9_.\[\]-]{1,100}\Z")


def _json_path(value: str, what: str) -> str:
    if not _JSON_PATH.match(value):
        raise ValueError(
            f"{quoted(value)} is not a path into the answer; write the keys joined by dots, such as data.items "
            f"or meta.next ({what})"
        )
    return value


def _param_name(value: str) -> str:
    if not _PARAM.match(value):
        raise ValueError(f"{quoted(value)} is not a query parameter name; use letters, digits, _, -, . or []")
    return value


class NextUrlPagination(StrictModel):
    """The answer's body holds the URL of the next page (absolute or relative); none or null: the last page."""

    type: Literal["next_url"]
    next_url_path: str = Field(description="Dotted path of the next page's URL in the body, e.g. links.next")

    @field_validator("next_url_path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _json_path(value, "where the next page's URL is")


class LinkHeaderPagination(StrictModel):
    """The answer's `Link: <url>; rel="next"` header names the next page (GitHub-style); none: the last page."""

    type: Literal["link_header"]


class CursorPagination(StrictModel):
    """The body holds a cursor, sent back in a query parameter for the next page; none or empty: the last page."""

    type: Literal["cursor"]
    cursor_path: str = Field(description="Dotted path of the next cursor in the body, e.g. meta.next_cursor")
    cursor_param: str = Field("cursor", description="The query parameter the cursor is sent in")

    @field_validator("cursor_path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _json_path(value, "where the next cursor is")

    @field_validator("cursor_param")
    @classmethod
    def _param(cls, value: str) -> str:
        return _param_name(value)


class OffsetPagination(StrictModel):
    """`offset` and `limit` query parameters; the last page is the one that reaches `total_path` (when given) or
    the first empty one."""

    type: Literal["offset"]
    offset_param: str = Field("offset", description="The query parameter of the first record's position (from 0)")
    limit_param: str = Field("limit", description="The query parameter of the page size")
    limit: int = Field(100, ge=1, le=100_000, description="Records asked for per page")
    total_path: str | None = Field(None, description="Dotted path of the total number of records in the body")

    @field_validator("offset_param", "limit_param")
    @classmethod
    def _params(cls, value: str) -> str:
        return _param_name(value)

    @field_validator("total_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return None if value is None else _json_path(value, "where the total number of records is")


class PageNumberPagination(StrictModel):
    """A page number query parameter, counting up from `start_page`; the last page is `total_pages_path`'s (when
    given) or the first empty one."""

    type: Literal["page_number"]
    page_param: str = Field("page", description="The query parameter of the page number")
    start_page: int = Field(1, ge=0, le=1, description="The number of the first page: 1 (most APIs) or 0")
    total_pages_path: str | None = Field(None, description="Dotted path of the number of pages in the body")

    @field_validator("page_param")
    @classmethod
    def _param(cls, value: str) -> str:
        return _param_name(value)

    @field_validator("total_pages_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return None if value is None else _json_path(value, "where the number of pages is")


class NoPagination(StrictModel):
    """One request: the answer holds every record."""

    type: Literal["none"]


ApiPagination = Annotated[
    NextUrlPagination
    | LinkHeaderPagination
    | CursorPagination
    | OffsetPagination
    | PageNumberPagination
    | NoPagination,
    Field(discriminator="type"),
]


def pagination_params(pagination: object) -> dict[str, str]:
    """The query parameters a pagination sets itself (name -> the field naming it), which `params:` may not set."""
    names = ("cursor_param", "offset_param", "limit_param", "page_param")
    return {getattr(pagination, name): name for name in names if hasattr(pagination, name)}


class ApiSource(StrictModel):
    """Records from an HTTP API on an `http` connection, page by page; incremental by an `updated_at` field."""

    connection: str
    path: str = Field("", description="Appended to the connection's base_url, e.g. /v1/orders")
    params: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Query parameters of the first request"
    )
    records: str = Field("", description="Dotted path of the list of records in each answer; empty: the body is it")
    pagination: ApiPagination = Field(description="How the next page is asked for; `type: none` for one request")
    updated_at: str | None = Field(
        None,
        description="Field of each record holding its change time (incremental runs); a dotted path for a nested field",
    )
    since_param: str | None = Field(
        None, description="Query parameter an incremental run sets to the watermark less the lookback"
    )
    lookback: LookbackText = Field(
        DEFAULT_LOOKBACK,
        description="How far before the watermark an incremental run asks again, for records changed late with an "
        "earlier updated_at: 'N seconds|minutes|hours|days' or '0'; default 5 minutes",
    )
    max_pages: int = Field(1000, ge=1, le=1_000_000, description="Most pages one run reads; more fails the run")
    max_response_bytes: int = Field(
        16 << 20, ge=1 << 10, le=1 << 30, description="Largest answer read (decompressed); default 16 MiB"
    )

    @property
    def lookback_delta(self) -> dt.timedelta:
        """The lookback as a duration."""
        return parse_lookback(self.lookback)

    @field_validator("path")
    @classmethod
    def _plain_path(cls, value: str) -> str:
        if value.startswith(("http://", "https://")):
            raise ValueError("give a path under the connection's base_url, not a URL; the connection names the host")
        if "?" in value or "#" in value:
            raise ValueError("the path holds a query string; write the query parameters under `params:`")
        if ".." in value.split("/"):
            raise ValueError("'..' is not allowed in the path; give the path under the connection's base_url")
        return value

    @field_validator("params")
    @classmethod
    def _no_secret_params(cls, params: dict) -> dict:
        for name in params:
            _param_name(name)
            if URL_SECRET_KEY.search(name):
                raise error_at(
                    (name,),
                    f"'{name[:40]}' looks like a credential; query strings end up in logs, so set it with the "
                    "connection's `auth:` (type api_key sends it in a header)",
                )
        return params

    @field_validator("records")
    @classmethod
    def _records(cls, value: str) -> str:
        return _json_path(value, "where the records are; empty when the body is the list") if value else value

    @field_validator("updated_at")
    @classmethod
    def _updated_at(cls, value: str | None) -> str | None:
        return None if value is None else _json_path(value, "the field of each record")

    @field_validator("since_param")
    @classmethod
    def _since(cls, value: str | None) -> str | None:
        return None if value is None else _param_name(value)

    @model_validator(mode="after")
    def _incremental_pair(self) -> ApiSource:
        if self.updated_at and not self.since_param:
            raise error_at(
                ("since_param",),
                "updated_at needs since_param: the query parameter the API filters by (such as updated_since), "
                "which incremental runs set to the watermark less the lookback",
            )
        if self.since_param and not self.updated_at:
            raise error_at(
                ("updated_at",),
                "since_param needs updated_at: the field of each record whose highest value becomes the watermark",
            )
        taken = pagination_params(self.pagination)
        for name in self.params:
            if name in taken:
                raise error_at(
                    ("params", name),
                    f"'{name}' is the pagination's {taken[name]}, which each request sets itself; remove it from "
                    "params",
                )
        if self.since_param and self.since_param in taken:
            raise error_at(
                ("since_param",),
                f"'{self.since_param}' is also the pagination's {taken[self.since_param]}; give each its own parameter",
            )
        if self.since_param and self.since_param in self.params:
            raise error_at(
                ("params", self.since_param),
                f"'{self.since_param}' is the since_param, which incremental runs set; remove it from params",
            )
        return self
