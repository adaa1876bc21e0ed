"""YAML parsing that remembers where every value came from, so errors can name the line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from connector_pipelines.errors import ConnectorConfigError

MERGE_TAG = "tag:yaml.org,2002:merge"
# At most this many anchor/alias problems are listed per file; a file built to expand has thousands of them.
MAX_ALIAS_PROBLEMS = 10


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that an alias is never resolved to the node it names.

    An alias repeats a whole node, and aliases of aliases repeat it exponentially: a file of a few hundred bytes
    (the "billion laughs") becomes billions of values for pydantic to validate and for the spec fingerprint to
    hash, though the node tree PyYAML composes stays small (it shares the nodes). So while composing, each alias
    becomes an empty placeholder node and each anchored node is noted; `read_yaml` refuses the file if any was
    found, before anything walks or builds the expanded data.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self.anchored: dict[int, str] = {}  # id(node) -> the anchor written on it (`&base`)
        self.aliases: dict[int, str] = {}  # id(placeholder node) -> the anchor an alias named (`*base`)

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()
            placeholder = yaml.ScalarNode("tag:yaml.org,2002:null", "", event.start_mark, event.end_mark)
            self.aliases[id(placeholder)] = event.anchor
            return placeholder
        anchor = self.peek_event().anchor
        node = super().compose_node(parent, index)
        if anchor is not None:
            self.anchored[id(node)] = anchor
        return node


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file plus the node tree, for mapping a field path back to a line."""

    path: Path
    data: Any
    root: yaml.Node | None

    def line_of(self, location: tuple[str | int, ...]) -> int:
        """The 1-based line of the deepest node on `location` that exists in the file.

        A step the file does not have (a missing field, a default) is skipped, so the line is that of the
        nearest written ancestor: where the user has to add the missing key.
        """
        node = self.root
        if node is None:
            return 1
        line = node.start_mark.line + 1
        for step in location:
            child = _child(node, step)
            if child is None:
                continue
            key_node, node = child
            line = (key_node or node).start_mark.line + 1
        return line

    def has(self, location: tuple[str | int, ...]) -> bool:
        """Whether every step of `location` is written in the file."""
        node = self.root
        for step in location:
            child = _child(node, step) if node is not None else None
            if child is None:
                return False
            node = child[1]
        return node is not None


def _child(node: yaml.Node, step: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(step):
                return key_node, value_node
    elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
        return None, node.value[step]
    return None


def _duplicate_keys(root: yaml.Node | None) -> list[tuple[str, int, int]]:
    """(dotted path, line, first line) of every key written twice in one mapping.

    PyYAML keeps the last value silently, so a duplicated key is a setting the user believes in but that
    never applies. Checked on the node tree, which still has both keys and knows their paths.
    """
    found: list[tuple[str, int, int]] = []
    seen_nodes: set[int] = set()

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if id(node) in seen_nodes:  # an alias points back at a node already walked
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict[tuple[str, str], int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == MERGE_TAG:
                    continue
                key = (key_node.tag, key_node.value)
                line = key_node.start_mark.line + 1
                if key in first_line:
                    found.append((".".join((*path, key_node.value)), line, first_line[key]))
                else:
                    first_line[key] = line
                walk(value_node, (*path, key_node.value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, str(index)))

    if root is not None:
        walk(root, ())
    return found


def _alias_problems(root: yaml.Node | None, loader: _SpecLoader, where: str) -> list[str]:
    """One `file:line field:` line per anchor and alias (the first MAX_ALIAS_PROBLEMS of them, in file order)."""
    if root is None or not (loader.anchored or loader.aliases):
        return []
    found: list[tuple[int, str, str]] = []  # (line, dotted field, message)

    def walk(node: yaml.Node, path: tuple[str, ...], merged: bool = False) -> None:
        line = node.start_mark.line + 1
        field = ".".join(path) or "(top level)"
        if id(node) in loader.aliases:
            name = _short(loader.aliases[id(node)])
            what, value = ("merge key `<<: *", "keys") if merged else ("alias *", "value")
            found.append(
                (
                    line,
                    field,
                    f"YAML {what}{name}{'`' if merged else ''} is not allowed in spec files (aliases can make a small "
                    f"file expand into a huge one); write the {value} of &{name} out here instead",
                )
            )
            return
        if id(node) in loader.anchored:
            name = _short(loader.anchored[id(node)])
            found.append(
                (
                    line,
                    field,
                    f"YAML anchor &{name} is not allowed in spec files (anchors and aliases can make a small file "
                    "expand into a huge one); remove it, and write the value out wherever *"
                    f"{name} is used",
                )
            )
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                walk(key_node, path)
                if key_node.tag == MERGE_TAG:  # `<<: *base` merges into this mapping: the field is the mapping
                    walk(value_node, path, merged=True)
                    continue
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                walk(value_node, (*path, str(key)))
        elif isinstance(node, yaml.SequenceNode):
            for position, item in enumerate(node.value):  # `<<: [*a, *b]` merges each into the same mapping
                walk(item, path if merged else (*path, str(position)), merged)

    walk(root, ())  # aliases are placeholders, so this is a tree: every node is walked once
    found.sort(key=lambda item: item[0])
    lines = [f"{where}:{line} {field}: {message}" for line, field, message in found[:MAX_ALIAS_PROBLEMS]]
    if len(found) > MAX_ALIAS_PROBLEMS:
        lines[-1] += f" ({len(found) - MAX_ALIAS_PROBLEMS} more anchors or aliases follow in this file)"
    return lines


def _short(anchor: str) -> str:
    """An anchor name for a message, cut short: it is text from the file, and may be long."""
    return anchor if len(anchor) <= 40 else anchor[:37] + "..."


def display_path(path: Path) -> str:
    """A path relative to the working directory when it lies below it, for short error messages."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _syntax_problem(exc: yaml.MarkedYAMLError) -> tuple[int, str]:
    """The line to blame and a message that says what to change, for PyYAML's terse parser errors."""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 1
    column = f" (column {mark.column + 1})" if mark else ""
    problem = exc.problem or "invalid YAML"
    context = exc.context or ""
    if "quoted scalar" in context and "end of stream" in problem and exc.context_mark is not None:
        # The parser only notices at the end of the file; the user needs the line the quote opened on.
        return exc.context_mark.line + 1, "a quoted value starts here and its closing quote is missing; close it"
    if problem.startswith("mapping values are not allowed here"):
        return line, (
            f"unexpected ':'{column}; this line is indented deeper than the key above it, "
            "or an unquoted value contains ': ' and needs quotes"
        )
    if "but found '<block mapping start>'" in problem or "but found '?'" in problem:
        return line, (
            f"this line{column} does not line up with the keys around it; indent each key by the same "
            "number of spaces as its siblings"
        )
    if "but found '<scalar>'" in problem:
        return line, f"unexpected text{column} after a value; quote the whole value"
    if problem.startswith("found unknown escape character"):
        return line, (
            f"a backslash{column} starts an unknown escape in a double-quoted value; use single quotes, "
            "or write the backslash twice"
        )
    if "'\\t'" in problem:
        return line, f"a tab character{column}; YAML indents with spaces only"
    return line, f"{problem}{column}; check indentation (spaces), quoting and colons"


def read_yaml(path: Path) -> YamlDocument:
    """Parse one YAML file; syntax errors and duplicate keys become a ConnectorConfigError naming the line."""
    where = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConnectorConfigError([f"{where}:1 (file): cannot be read: {reason}; save it as UTF-8 text"]) from None
    loader = _SpecLoader(text)
    try:
        root = loader.get_single_node()
        aliases = _alias_problems(root, loader, where)
        if aliases:
            raise ConnectorConfigError(aliases)
        duplicates = _duplicate_keys(root)
        if duplicates:
            raise ConnectorConfigError(
                [
                    f"{where}:{line} {field}: key written twice (first on line {first}); YAML keeps only the "
                    "last value, so remove one of them"
                    for field, line, first in duplicates
                ]
            )
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        line, message = _syntax_problem(exc)
        raise ConnectorConfigError([f"{where}:{line} YAML syntax: {message}"]) from None
    except yaml.YAMLError as exc:
        raise ConnectorConfigError([f"{where}:1 YAML syntax: {exc}"]) from None
    finally:
        loader.dispose()
    return YamlDocument(path=path, data=data, root=root)
