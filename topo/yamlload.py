"""Read YAML the strict way: line numbers for every key, duplicate keys rejected, ${VAR} interpolation.

PyYAML's safe_load silently keeps the last of two duplicate keys and forgets where things came from;
both would make errors impossible to point at, so this loader remembers the line of every key and item.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from topo.errors import Problem

try:  # libyaml parses several times faster; the pure-Python parser is the fallback.
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _BaseLoader = yaml.SafeLoader

# ${VAR}, ${VAR:-default} (default when unset or empty), ${VAR-default} (default when unset); $${ escapes.
_VARIABLE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


class LocDict(dict[Any, Any]):
    """A mapping that remembers the line of each key (1-based)."""

    line: int
    lines: dict[Any, int]


class LocList(list[Any]):
    """A sequence that remembers the line of each item (1-based)."""

    line: int
    lines: list[int]


def interpolate(text: str, env: Mapping[str, str], missing: list[str]) -> str:
    """Substitute ${VAR} forms; names of unset variables without a default are appended to `missing`."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, operator, default = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if operator == ":-" and not value:
            return default or ""
        if operator == "-" and value is None:
            return default or ""
        if value is None:
            missing.append(name)
            return ""
        return value

    return _VARIABLE.sub(substitute, text)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    def __init__(self, stream: str, filename: str, env: Mapping[str, str]):
        super().__init__(stream)
        self.filename = filename
        self.env = env
        self.problems: list[Problem] = []
        self._building: set[int] = set()
        self._built: dict[int, Any] = {}

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        # PyYAML's generic resolve (path resolvers, wildcard lists) costs half of all loading time on
        # large files; this does the same implicit typing for the cases YAML's core schema has.
        if kind is yaml.ScalarNode:
            if implicit[0]:
                for tag, pattern in _IMPLICIT.get(value[:1], ()):
                    if pattern.match(value):
                        return tag
            return "tag:yaml.org,2002:str"
        if kind is yaml.SequenceNode:
            return "tag:yaml.org,2002:seq"
        return "tag:yaml.org,2002:map"

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        return None if node is None else self._build(node)

    def _build(self, node: yaml.Node) -> Any:
        """Node -> value. A direct walk: PyYAML's generic construct_object machinery (state for deep
        and recursive construction) costs as much again as parsing on large files."""
        kind = type(node)
        if kind is yaml.ScalarNode:
            if node.tag == _STR:
                return self.construct_interpolated_str(node) if "$" in node.value else node.value
            return self.construct_object(node)  # numbers, booleans, null, dates; unknown tags fail here
        if node.tag == _MAP and kind is yaml.MappingNode:
            return self._guarded(node, self._build_mapping)
        if node.tag == _SEQ and kind is yaml.SequenceNode:
            return self._guarded(node, self._build_sequence)
        return self.construct_object(node, deep=True)  # explicit tags such as !!omap, or an error

    def _guarded(self, node: yaml.Node, build: Any) -> Any:
        # An alias is the same node again: build it once and share the value, as PyYAML does (building
        # it anew each time is exponential for nested aliases, and a merge flattens a node only once).
        if id(node) in self._built:
            return self._built[id(node)]
        # An alias inside its own anchor would make an endless structure.
        if id(node) in self._building:
            raise yaml.constructor.ConstructorError(None, None, "recursive alias", node.start_mark)
        self._building.add(id(node))
        try:
            value = build(node)
        finally:
            self._building.discard(id(node))
        self._built[id(node)] = value
        return value

    def _build_mapping(self, node: yaml.MappingNode) -> LocDict:
        merged: set[int] = set()
        if any(key.tag == _MERGE for key, _ in node.value):
            own = {id(key) for key, _ in node.value if key.tag != _MERGE}
            self.flatten_mapping(node)  # merged pairs (<<: *anchor) come first; own keys override them
            merged = {id(key) for key, _ in node.value if id(key) not in own}
        overridable: set[Any] = set()  # keys that came in through a merge: the node's own keys win
        result = LocDict()
        result.line = node.start_mark.line + 1
        lines: dict[Any, int] = {}
        result.lines = lines
        build = self._build
        for key_node, value_node in node.value:
            key = build(key_node)
            line = key_node.start_mark.line + 1
            if key is None or not isinstance(key, (str, int, float, bool)):
                self.problems.append(Problem(self.filename, line, "", "mapping keys must be plain scalars"))
                continue
            if key in result and key not in overridable and self._is_duplicate(result, key):
                first = lines[key]
                self.problems.append(
                    Problem(self.filename, line, str(key), f"duplicate key (first defined at line {first})")
                )
                continue
            result[key] = build(value_node)
            lines[key] = line
            if merged and id(key_node) in merged:
                overridable.add(key)
            else:
                overridable.discard(key)  # the node's own key: a second one is a duplicate again
        return result

    def _is_duplicate(self, result: LocDict, key: Any) -> bool:
        # 1 and true are equal in Python but different keys in YAML; a merged key is overridden instead.
        existing = next(k for k in result if k == key)
        return type(existing) is type(key)

    def _build_sequence(self, node: yaml.SequenceNode) -> LocList:
        result = LocList(self._build(child) for child in node.value)
        result.line = node.start_mark.line + 1
        result.lines = [child.start_mark.line + 1 for child in node.value]
        return result

    def construct_interpolated_str(self, node: yaml.ScalarNode) -> Any:
        raw = self.construct_scalar(node)
        if "$" not in raw:
            return raw
        missing: list[str] = []
        value = interpolate(raw, self.env, missing)
        for name in missing:
            self.problems.append(
                Problem(
                    self.filename,
                    node.start_mark.line + 1,
                    "",
                    f"environment variable {name} is not set and has no default (use ${{{name}:-default}})",
                )
            )
        if not node.style and value != raw:
            # An unquoted `${MAX:-100}` means the number 100, as if it had been written there;
            # quote it ("${MAX}") to keep a string.
            try:
                resolved = yaml.safe_load(value) if value.strip() else value
            except yaml.YAMLError:
                return value  # not a YAML scalar of its own (e.g. "*s3cret"): keep the string
            if isinstance(resolved, (int, float, bool)):
                return resolved
        return value


_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"

# The same implicit resolvers PyYAML registers (bool, int, float, null, timestamp, merge, ...), by first
# character; "" stands for the empty scalar.
_IMPLICIT: dict[str, list[tuple[str, re.Pattern[str]]]] = {
    ("" if first is None else first): list(resolvers)
    for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
}

_Loader.add_constructor(_STR, _Loader.construct_interpolated_str)


def load_yaml(text: str, filename: str, env: Mapping[str, str] | None = None) -> tuple[Any, list[Problem]]:
    """Parse one YAML document; returns the data (LocDict/LocList tree) and every problem found."""
    loader = _Loader(text, filename, os.environ if env is None else env)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = " ".join(part for part in (exc.context, exc.problem) if part) or str(exc)
        return None, [Problem(filename, line, "", f"YAML syntax error: {message}")]
    except yaml.YAMLError as exc:
        return None, [Problem(filename, None, "", f"YAML error: {exc}")]
    finally:
        loader.dispose()
    return data, loader.problems


def line_of(root: Any, path: tuple[Any, ...]) -> int | None:
    """The line of the deepest element of `path` that exists in a LocDict/LocList tree."""
    line = getattr(root, "line", None)
    node = root
    for element in path:
        if isinstance(node, LocDict) and element in node:
            line = node.lines.get(element, line)
            node = node[element]
        elif isinstance(node, LocList) and isinstance(element, int) and 0 <= element < len(node):
            line = node.lines[element]
            node = node[element]
        # Elements that are not in the data (pydantic's union tags, missing keys) are skipped.
    return line


def resolves_as_string(text: str) -> bool:
    """Whether `text`, written unquoted, would load as that string (not a number, boolean, null, date...)."""
    return not any(pattern.match(text) for _, pattern in _IMPLICIT.get(text[:1], ()))
