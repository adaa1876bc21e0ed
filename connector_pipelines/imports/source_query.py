"""The SQL of an incremental warehouse read: the import's own query, filtered by `updated_at >= :since`.

    sql = incremental_query(spec.query, quote("updated_at"))       # binds :since
    since = read_from(watermark="2024-03-01 10:00:00", lookback=dt.timedelta(minutes=5))  # '2024-03-01 09:55:00'

Why `>=` and a lookback: a strict `> watermark` skips rows committed after the read with an `updated_at` equal to
the watermark (two rows stamped in the same second, only one visible at read time) or earlier than it (a long
transaction stamps its rows at its start and commits after the read). Reading again from `watermark - lookback`
picks those up on the next run; the rows read again are merged like any other (one per key, the most recent by
`updated_at`), so they are neither duplicated nor allowed to overwrite newer values.

Why a query of its own for WITH: `SELECT * FROM (WITH ... SELECT ...) q` is refused by databases that take no
WITH inside a derived table (SQL Server, older MySQL). A query that starts with WITH keeps its CTE list, and its
final SELECT becomes one more CTE, which the filter reads from: `WITH a AS (...), cp_import_source AS (<final>)
SELECT * FROM cp_import_source WHERE ...`. Other queries are wrapped as a derived table, which every database
takes. The query is closed on a new line, so a trailing `-- comment` cannot swallow the wrapper.

Pure text functions; nothing here talks to a database.
"""

from __future__ import annotations

import datetime as dt
import re

SOURCE_ALIAS = "cp_import_source"
SINCE_PARAMETER = "since"
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_TEMPORAL = re.compile(r"^\d{4}-\d{2}-\d{2}")


def incremental_query(query: str, quoted_column: str) -> str:
    """`query` restricted to rows whose `quoted_column` (already quoted by the dialect) is >= `:since`."""
    body = strip_query_end(query)
    condition = f"{SOURCE_ALIAS}.{quoted_column} >= :{SINCE_PARAMETER}"
    split = split_with(body)
    if split is None:
        return f"SELECT * FROM (\n{body}\n) {SOURCE_ALIAS} WHERE {condition}"
    header, ctes, final = split
    return f"{header} {ctes},\n{SOURCE_ALIAS} AS (\n{final}\n)\nSELECT * FROM {SOURCE_ALIAS} WHERE {condition}"


def read_from(watermark: str, lookback: dt.timedelta) -> str:
    """Where an incremental read starts: the watermark moved back by the lookback, in the watermark's own form.

    Dates and date-times (ISO text, as the watermark is saved) are moved back; a plain date goes back to the day
    that holds `watermark 00:00 - lookback`. Anything else (a number, a version string) is read from the
    watermark itself: `>=` still reads rows equal to it again.
    """
    if not lookback or not _TEMPORAL.match(watermark):
        return watermark
    if len(watermark) == 10:
        try:
            day = dt.date.fromisoformat(watermark)
        except ValueError:
            return watermark
        return (dt.datetime.combine(day, dt.time()) - lookback).date().isoformat()
    try:
        instant = dt.datetime.fromisoformat(watermark)
    except ValueError:
        return watermark
    moved = instant - lookback
    separator = "T" if "T" in watermark[:11] else " "
    # Keep the watermark's precision: on text columns (SQLite) '10:00:00' and '10:00:00.000000' compare differently.
    fractional = re.search(r":\d{2}\.\d", watermark) is not None or moved.microsecond
    return moved.isoformat(sep=separator, timespec="microseconds" if fractional else "seconds")


def later_watermark(previous: str | None, candidate: str | None) -> str | None:
    """The watermark to keep: `candidate` (the highest value this read saw) unless it is older than `previous`.

    With `>=` and a lookback a read may see nothing newer than the watermark (the row at it was deleted): the
    watermark never moves back.
    """
    if candidate is None:
        return previous
    if previous is None:
        return candidate
    return candidate if _order_key(candidate) >= _order_key(previous) else previous


def _order_key(text: str) -> tuple:
    if _TEMPORAL.match(text):
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            return (2, text)
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return (0, value)
    try:
        return (1, float(text))
    except ValueError:
        return (2, text)


# --------------------------------------------------------------------------------------------------
# A small SQL scanner: enough to find the end of a WITH clause's CTE list, never a parser


def strip_query_end(query: str) -> str:
    """The query without what follows its last token: whitespace, comments and semicolons."""
    end = 0
    position = 0
    length = len(query)
    while position < length:
        skipped = _skip_space(query, position)
        if skipped >= length:
            break
        if query[skipped] == ";":
            position = skipped + 1
            continue
        position = _skip_token(query, skipped)
        end = position
    return query[:end]


def split_with(query: str) -> tuple[str, str, str] | None:
    """("WITH" or "WITH RECURSIVE", the CTE list, the final statement) of a query that starts with WITH, else None.

    None too for anything this scanner does not follow (PostgreSQL's SEARCH/CYCLE clauses, unbalanced
    parentheses): the caller then wraps the whole query as a derived table.
    """
    position = _skip_space(query, 0)
    word = _word_at(query, position)
    if word is None or word.upper() != "WITH":
        return None
    position = _skip_space(query, position + len(word))
    header = "WITH"
    word = _word_at(query, position)
    if word is not None and word.upper() == "RECURSIVE":
        header = "WITH RECURSIVE"
        position = _skip_space(query, position + len(word))
    start = position
    while True:
        position = _skip_name(query, position)
        if position is None:
            return None
        position = _skip_space(query, position)
        if query.startswith("(", position):  # a column list
            position = _skip_parentheses(query, position)
            if position is None:
                return None
            position = _skip_space(query, position)
        word = _word_at(query, position)
        if word is None or word.upper() != "AS":
            return None
        position = _skip_space(query, position + 2)
        for optional in ("NOT", "MATERIALIZED"):
            word = _word_at(query, position)
            if word is not None and word.upper() == optional:
                position = _skip_space(query, position + len(word))
        if not query.startswith("(", position):
            return None
        position = _skip_parentheses(query, position)
        if position is None:
            return None
        end = position
        position = _skip_space(query, position)
        word = _word_at(query, position)
        if word is not None and word.upper() in ("SEARCH", "CYCLE"):
            return None
        if query.startswith(",", position):
            position = _skip_space(query, position + 1)
            continue
        final = query[position:]
        if not final.strip():
            return None
        return header, query[start:end], final


def _word_at(query: str, position: int) -> str | None:
    match = _WORD.match(query, position)
    return match.group(0) if match else None


def _skip_name(query: str, position: int) -> int | None:
    if position >= len(query):
        return None
    if query[position] in '"`[':
        return _skip_token(query, position)
    word = _word_at(query, position)
    return None if word is None else position + len(word)


def _skip_space(query: str, position: int) -> int:
    """Past whitespace and comments."""
    length = len(query)
    while position < length:
        if query[position].isspace():
            position += 1
        elif query.startswith("--", position):
            newline = query.find("\n", position)
            position = length if newline < 0 else newline + 1
        elif query.startswith("/*", position):
            close = query.find("*/", position + 2)
            position = length if close < 0 else close + 2
        else:
            break
    return position


def _skip_token(query: str, position: int) -> int:
    """Past one token: a quoted string or name, a dollar-quoted string, or one other character."""
    char = query[position]
    closing = {"'": "'", '"': '"', "`": "`", "[": "]"}.get(char)
    if closing is not None:
        index = position + 1
        while index < len(query):
            if query[index] == closing:
                if closing != "]" and query.startswith(closing, index + 1):
                    index += 2  # '' inside a string, "" inside a name
                    continue
                return index + 1
            if char == "'" and query[index] == "\\" and query[position - 1 : position] in ("E", "e"):
                index += 2
                continue
            index += 1
        return len(query)
    if char == "$":
        tag = _DOLLAR_TAG.match(query, position)
        if tag is not None and not (position and (query[position - 1].isalnum() or query[position - 1] == "_")):
            close = query.find(tag.group(0), tag.end())
            return len(query) if close < 0 else close + len(tag.group(0))
    word = _word_at(query, position)
    return position + len(word) if word else position + 1


def _skip_parentheses(query: str, position: int) -> int | None:
    """Past the parenthesis at `position` and everything up to its match; None when it is never closed."""
    depth = 0
    length = len(query)
    while position < length:
        position = _skip_space(query, position)
        if position >= length:
            break
        char = query[position]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return position + 1
        position = _skip_token(query, position)
    return None
