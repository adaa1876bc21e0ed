"""YAML parsing that remembers where every value came from, so errors can name the line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from connector_pipelines.errors import ConnectorConfigError


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file plus the node tree, for mapping a field path back to a line."""

    path: Path
    data: Any
    root: yaml.Node | None

    def line_of(self, location: tuple[str | int, ...]) -> int:
        """The 1-based line of the deepest node on `location` that exists in the file.

        Locations from pydantic may contain steps the YAML does not have (a union tag such as `sftp`),
        which are skipped.
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


def _child(node: yaml.Node, step: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(step):
                return key_node, value_node
    elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
        return None, node.value[step]
    return None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key written twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first written on line {seen[key]})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def display_path(path: Path) -> str:
    """A path relative to the working directory when it lies below it, for short error messages."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_yaml(path: Path) -> YamlDocument:
    """Parse one YAML file; syntax errors become a ConnectorConfigError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConnectorConfigError([f"{display_path(path)}:1 cannot be read: {exc}"]) from None
    try:
        root = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or "invalid YAML"
        raise ConnectorConfigError(
            [f"{display_path(path)}:{line} YAML syntax: {problem}; check indentation, quoting and colons"]
        ) from None
    except yaml.YAMLError as exc:
        raise ConnectorConfigError([f"{display_path(path)}:1 YAML syntax: {exc}"]) from None
    return YamlDocument(path=path, data=data, root=root)
