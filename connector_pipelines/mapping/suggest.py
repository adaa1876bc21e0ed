"""Did-you-mean suggestions for names a user typed in a mapping (functions, columns, target fields)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, choices: Iterable[object]) -> str:
    """' (did you mean 'x'?)' when one of `choices` is close to `name` (ignoring case), else ''."""
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(str(choice).lower(), str(choice))
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean '{by_lower[close[0]]}'?)" if close else ""
