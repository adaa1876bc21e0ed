"""Request templates: `{{field}}` placeholders in a path and a JSON body, filled from one mapped record.

In a body, a string that is exactly one placeholder (`"amount": "{{amount}}"`) takes the field's typed value: a
number stays a number, null stays null. A placeholder inside other text (`"Hello {{name}}"`) is inserted as text,
and the JSON encoder escapes it. So the template is valid JSON before and after, checked when the spec loads.
Templates are compiled once into closures; rendering a record is a handful of dict lookups.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
WHOLE_PLACEHOLDER = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
SPECIAL_FIELDS = ("key", "target_ref")
RECORDS = "records"

Renderer = Callable[[Mapping[str, Any]], Any]


class TemplateError(ValueError):
    """A placeholder names a field the mapping does not produce, or a value cannot go where it is placed."""


def placeholders(template: object) -> set[str]:
    """Every field name a path or body template refers to."""
    found: set[str] = set()
    if isinstance(template, str):
        found.update(PLACEHOLDER.findall(template))
    elif isinstance(template, Mapping):
        for key, value in template.items():
            found |= placeholders(key) | placeholders(value)
    elif isinstance(template, list):
        for item in template:
            found |= placeholders(item)
    return found


# A decimal of at most this many significant digits survives a float exactly (IEEE double: 15 decimal digits).
_FLOAT_SAFE_DIGITS = 15
# The json module writes a number only from an int or a float, so a longer decimal goes through the encoder as a
# marked string, unmarked afterwards. The marker holds a per-process random part, so no text from a source can
# pass for one: only the encoder's own marks become numbers.
_EXACT_MARK = f"\x00{secrets.token_hex(8)}"
_EXACT_NUMBER = re.compile(r'"\\u0000' + _EXACT_MARK[1:] + r'([-+0-9.Ee]+)\\u0000"')


def json_default(value: object) -> object:
    """What JSON has no type for: dates as ISO 8601, decimals as numbers, with every digit (a NUMERIC(20,2)
    amount has more than a float keeps)."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite() or len(value.as_tuple().digits) <= _FLOAT_SAFE_DIGITS:
            return float(value)
        return f"{_EXACT_MARK}{value}\x00"
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=json_default)


def encode_json(value: object) -> str:
    """`value` as compact JSON; decimals keep every digit."""
    text = _encoder.encode(value)
    if "\\u0000" in text:  # only when a string held NUL or a long decimal was marked
        text = _EXACT_NUMBER.sub(r"\1", text)
    return text


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def compile_body(template: object) -> Renderer:
    """A function from a record (field -> value) to the body as Python data, ready for `encode_json`."""
    if isinstance(template, str):
        whole = WHOLE_PLACEHOLDER.match(template)
        if whole:
            name = whole.group(1)
            return lambda record: record.get(name)
        if PLACEHOLDER.search(template):
            parts = PLACEHOLDER.split(template)  # text, name, text, name, ..., text

            def interpolate(record: Mapping[str, Any]) -> str:
                return "".join(part if i % 2 == 0 else _text(record.get(part)) for i, part in enumerate(parts))

            return interpolate
        return lambda record: template
    if isinstance(template, Mapping):
        items = [(key, compile_body(value)) for key, value in template.items()]
        if all(not PLACEHOLDER.search(key) for key, _ in items):
            return lambda record: {key: render(record) for key, render in items}
        keyed = [(compile_body(key), render) for key, render in items]
        return lambda record: {str(k(record)): render(record) for k, render in keyed}
    if isinstance(template, list):
        renders = [compile_body(item) for item in template]
        return lambda record: [render(record) for render in renders]
    return lambda record: template


# A segment the target reads as "this folder" or "the parent folder" (RFC 3986 5.2.4), not as a name.
DOT_SEGMENTS = frozenset({".", ".."})


def compile_path(template: str) -> Callable[[Mapping[str, Any]], str]:
    """A function from a record to the request path, each value percent-encoded so it stays one segment.

    Encoding keeps `/`, `?`, `#` and `%` of a value from changing the path's structure, but `.` and `..` are
    left as they are by every encoder, and a target (or a client library) reads them as moves up the path: a
    `DELETE /contacts/{{target_ref}}` with the id `..` would become `DELETE /`. So a segment that a value turns
    into a dot segment is refused for that record (a `TemplateError`), never sent. Literal dot segments written
    in the template itself are the configuration's own choice and are sent as written.
    """
    parts = PLACEHOLDER.split(template)
    if len(parts) == 1:
        return lambda record: template
    # The segments (of the path, before any query) that hold a placeholder: values contain no `/` once encoded,
    # so the rendered path has the same segments at the same positions.
    segments = template.partition("?")[0].split("/")
    checked = [(i, PLACEHOLDER.findall(segment)) for i, segment in enumerate(segments) if PLACEHOLDER.search(segment)]

    def render(record: Mapping[str, Any]) -> str:
        out = []
        for i, part in enumerate(parts):
            if i % 2 == 0:
                out.append(part)
                continue
            value = record.get(part)
            if value is None or value == "":
                raise TemplateError(f"the path needs {{{{{part}}}}}, which is empty for this record")
            out.append(quote(_text(value), safe=""))
        path = "".join(out)
        if "." in path:
            rendered = path.partition("?")[0].split("/")
            for index, names in checked:
                if rendered[index] in DOT_SEGMENTS:
                    raise TemplateError(_dot_segment_reason(names, rendered[index]))
        return path

    return render


def _dot_segment_reason(names: list[str], segment: str) -> str:
    fields = " ".join(f"{{{{{name}}}}}" for name in names)
    return (
        f"the path segment {fields} is '{segment}' for this record, which the target would read as a move up the "
        "path, not as a name: the request would reach another resource, so the record is not sent; fix the value "
        "at its source (the data set, or the id the target answered for {{target_ref}})"
    )


def compile_headers(headers: Mapping[str, str]) -> Callable[[Mapping[str, Any]], dict[str, str]]:
    compiled = [(name, compile_body(value)) for name, value in headers.items()]
    if not any(PLACEHOLDER.search(value) for value in headers.values()):
        fixed = dict(headers)
        return lambda record: fixed
    return lambda record: {name: _text(render(record)) for name, render in compiled}


def check_fields(template: object, known: set[str], where: str) -> list[str]:
    """Problems for placeholders that name no mapped field."""
    problems = []
    for name in sorted(placeholders(template) - known - set(SPECIAL_FIELDS)):
        from difflib import get_close_matches

        hint = get_close_matches(name, sorted(known), n=1)
        problems.append(
            f"{where}: {{{{{name}}}}} is not a mapped target field"
            + (f" (did you mean {{{{{hint[0]}}}}}?)" if hint else "")
            + f"; fields: {', '.join(sorted(known)) or 'none'}, plus {{{{key}}}} and {{{{target_ref}}}}"
        )
    return problems
