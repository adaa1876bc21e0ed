"""JSON from outside (a target's answer, a token endpoint's), parsed within bounds.

`json.loads` recurses once per level of nesting: a small answer of 100,000 `[` would raise RecursionError (or, where
the recursion limit was raised, overflow the C stack) in the middle of a delivery. `parse_json` measures the
nesting first, C-fast, and refuses what is deeper than `MAX_JSON_DEPTH` with `UnreadableJson`, a ValueError whose
message says why; every ordinary answer is parsed at `json.loads`'s own speed.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

# The deepest JSON `parse_json` parses: far beyond any API's answer, far below where the parser would recurse
# out of the interpreter's stack (a RecursionError, or worse where the recursion limit was raised).
MAX_JSON_DEPTH = 256


class UnreadableJson(ValueError):
    """A target's answer that `parse_json` refuses to parse (its message says why)."""


# A JSON string (its closing quote optional, so an unterminated one is one match to the end and the scan stays
# linear), and what is neither a string nor a bracket.
_JSON_STRING = re.compile(r'"(?:[^"\\]+|\\.)*"?')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deeply the arrays and objects of a JSON text nest, brackets left open counting (a parser recurses
    into them before it finds the text cut short); brackets inside strings do not count. C-fast: regular
    expressions and `accumulate`, no Python loop per character."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


def parse_json(text: str) -> Any:
    """A target's JSON answer as Python data; raises ValueError when it is not JSON, and `UnreadableJson` when it
    nests deeper than MAX_JSON_DEPTH (the parser would recurse once per level, out of the stack).

    Counting the brackets is C-fast and settles every ordinary answer; only an answer with more brackets than
    the limit has its nesting measured.
    """
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        depth = json_depth(text)
        if depth > MAX_JSON_DEPTH:
            raise UnreadableJson(f"the answer nests {depth:,} levels deep, more than the {MAX_JSON_DEPTH} parsed")
    try:
        return json.loads(text)
    except RecursionError:  # a parser whose stack is shallower than MAX_JSON_DEPTH (it should never be)
        raise UnreadableJson(f"the answer nests too deeply to parse (over {MAX_JSON_DEPTH} levels)") from None
