"""What a path a partner's client sends may name: a pure decision, before anything on disk is touched.

A partner sees one tree: `/`, `/inbox`, `/outbox` and the files directly in those two. Relative paths are relative
to `/` (every session starts there). Refused: `..` anywhere, any other top-level name, subfolders, and file names
`check_file_name` refuses (control characters, a name over 255 bytes...). A path that passes still
names something under the partner's root only: the folder is one of two fixed names and the file one plain name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from connector_pipelines.imports.files import check_file_name
from connector_pipelines.partners.layout import VISIBLE_FOLDERS


class PathRefused(Exception):
    """The path may not be used; the message says why, for the partner (it names no server path)."""


@dataclass(frozen=True)
class PartnerPath:
    """`folder` None is `/`; `name` None is the folder itself."""

    folder: str | None = None
    name: str | None = None

    @property
    def virtual(self) -> str:
        return "/" + "/".join(part for part in (self.folder, self.name) if part)

    @property
    def is_file(self) -> bool:
        return self.name is not None


def parse_path(raw: bytes | str) -> PartnerPath:
    """The partner path `raw` names, or PathRefused saying why not."""
    text = os.fsdecode(raw) if isinstance(raw, bytes) else raw
    if "\x00" in text or "\\" in text:
        raise PathRefused("a path may not contain NUL or '\\'")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PathRefused("'..' is not allowed: your folders are /inbox and /outbox")
    if not parts:
        return PartnerPath()
    if parts[0] not in VISIBLE_FOLDERS:
        raise PathRefused(f"no such folder {('/' + parts[0])!r}: your folders are /inbox and /outbox")
    if len(parts) == 1:
        return PartnerPath(parts[0])
    if len(parts) > 2:
        raise PathRefused("there are no subfolders: put files directly in /inbox")
    problem = check_file_name(parts[1])
    if problem is not None:
        raise PathRefused(f"the file name is refused: {problem}")
    return PartnerPath(parts[0], parts[1])
