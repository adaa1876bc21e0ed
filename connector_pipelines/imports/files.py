"""Which delivered files an import picks up, and which file names from outside are refused.

A partner names its own files, so a name read from a server is untrusted input: `check_file_name` says why one
may not be used as a local or remote path component, and `FilePattern` selects files by a simple wildcard that
the person writing the spec can read without knowing fnmatch's or regex's special characters.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

MAX_NAME_BYTES = 255  # what ext4, XFS, NTFS (in UTF-16 units, close enough) and most servers allow per name


@dataclass(frozen=True)
class FilePattern:
    """A file-name wildcard: `*` is any run of characters (also none), `?` exactly one character.

    Every other character is literal (`[`, `]`, `.` included, unlike fnmatch) and matching is case-sensitive
    on every platform, so a pattern selects the same files on a Windows share as on S3. A pattern matches a
    bare file name only: it may not contain a path separator or '..', and a name holding a separator never
    matches.
    """

    pattern: str
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problem = _pattern_problem(self.pattern)
        if problem:
            raise ValueError(f"the file pattern {self.pattern!r} {problem}")
        # Frozen dataclass: the compiled regex is set once here, bypassing the frozen __setattr__.
        object.__setattr__(self, "_regex", _compile(self.pattern))

    def matches(self, name: str) -> bool:
        """Whether the bare file name `name` matches the whole pattern."""
        if "/" in name or "\\" in name:
            return False
        return self._regex.fullmatch(name) is not None


def _pattern_problem(pattern: str) -> str | None:
    if not isinstance(pattern, str) or not pattern:
        return "is empty; give a file name wildcard such as 'orders_*.csv'"
    if "/" in pattern or "\\" in pattern:
        return "contains a path separator; a pattern matches file names only, set the folder separately"
    if ".." in pattern:
        return "contains '..'; a pattern matches file names inside the folder only"
    return None


def _compile(pattern: str) -> re.Pattern[str]:
    translated = {"*": ".*", "?": "."}
    # DOTALL: `*` and `?` stand for any character, which a name may (if oddly) contain, newline included.
    return re.compile("".join(translated.get(char) or re.escape(char) for char in pattern), re.DOTALL)


def check_file_name(name: str) -> str | None:
    """Why a file name from outside may not be used as one path component, or None when it may.

    Refused: empty names, names over 255 bytes (UTF-8), path separators ('/' and '\\'), '.' and '..', names
    starting with '..', and control characters (NUL included). A file named '../x.csv' must never decide
    where a file is written; the caller quarantines it with this reason instead.
    """
    if not name:
        return "the name is empty"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        # A name that was not valid text on the server (decoded with surrogate escapes) cannot be written back.
        return "the name is not valid UTF-8 text"
    if size > MAX_NAME_BYTES:
        return f"the name is {size} bytes long; at most {MAX_NAME_BYTES} bytes are allowed"
    if "/" in name or "\\" in name:
        return "the name contains a path separator ('/' or '\\')"
    if name in (".", ".."):
        return f"{name!r} names a folder, not a file"
    if name.startswith(".."):
        return "the name starts with '..'"
    for char in name:
        if unicodedata.category(char) == "Cc":
            return f"the name contains the control character U+{ord(char):04X}"
    return None
