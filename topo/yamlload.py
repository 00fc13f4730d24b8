"""Read YAML the strict way: line numbers for every key, duplicate keys rejected, ${VAR} interpolation.

PyYAML's safe_load silently keeps the last of two duplicate keys and forgets where things came from;
both would make errors impossible to point at, so this loader remembers the line of every key and item.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import yaml

from topo.errors import Problem

try:  # libyaml parses several times faster; the pure-Python parser is the fallback.
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _BaseLoader = yaml.SafeLoader

# ${VAR}, ${VAR:-default} (default when unset or empty), ${VAR-default} (default when unset); $${ escapes.


class LocDict(dict[Any, Any]):
    """A mapping that remembers the line of each key (1-based): `lines` holds the keys that are not on
    the mapping's own `line` (see key_line)."""

    # Slots, not an attribute dict, and no line table for a mapping written on one line (`{type: quorum}`):
    # one LocDict per mapping in the file, 155,000 for 105,002 objects, 164 -> 113 -> ... MB (tracemalloc).
    __slots__ = ("line", "lines")
    line: int
    lines: Mapping[Any, int]


# The line table of every mapping whose keys are all on its first line: shared, and so read-only.
NO_LINES: Mapping[Any, int] = MappingProxyType({})


def key_line(mapping: LocDict, key: Any) -> int:
    return mapping.lines.get(key, mapping.line)


class LocList(list[Any]):
    """A sequence that remembers the line of each item (1-based)."""

    __slots__ = ("line", "lines", "origin")
    line: int
    lines: list[int]
    origin: list[int]  # set when items were set aside (see salvage.py): each item's index in the file


def interpolate(text: str, env: Mapping[str, str], missing: list[str]) -> str:
    """Substitute ${VAR} forms; names of unset variables without a default are appended to `missing`.

    A scan, not a regex: `${A:-` repeated without a closing brace made a regex rescan the rest of the
    value from every `${` (quadratic: 25 s for 100,000 characters).
    """
    out: list[str] = []
    done = 0
    close = -1  # the first "}" at or after the last position asked for (len(text): there is none)
    index = text.find("$")
    while index >= 0:
        if text.startswith("$${", index):
            out.append(text[done:index] + "${")
            done = index + 3
            index = text.find("$", done)
            continue
        if not text.startswith("${", index):
            index = text.find("$", index + 1)
            continue
        name_end = index + 2
        while name_end < len(text) and text[name_end] in _NAME_CHARS:
            name_end += 1
        name = text[index + 2 : name_end]
        if not name or name[0].isdigit():
            index = text.find("$", index + 1)
            continue
        operator = ":-" if text.startswith(":-", name_end) else "-" if text.startswith("-", name_end) else ""
        if operator:
            if close < name_end:
                close = text.find("}", name_end)
                close = len(text) if close < 0 else close
            if close == len(text):  # unclosed: literal text (a later $${ still counts)
                index = text.find("$", index + 1)
                continue
            end, default = close, text[name_end + len(operator) : close]
        elif text.startswith("}", name_end):
            end, default = name_end, ""
        else:
            index = text.find("$", index + 1)
            continue
        out.append(text[done:index] + _substitute(name, operator, default, env, missing))
        done = end + 1
        index = text.find("$", done)
    out.append(text[done:])
    return "".join(out)


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _substitute(name: str, operator: str, default: str, env: Mapping[str, str], missing: list[str]) -> str:
    value = env.get(name)
    if operator == ":-" and not value:
        return default
    if operator == "-" and value is None:
        return default
    if value is None:
        missing.append(name)
        return ""
    return value


# Limits that keep hostile input cheap. Aliases share one built value, but everything after loading
# (validation, diffing, output) walks the expanded tree: a 450-byte alias bomb took 49 s and 900 MB.
# Real files use aliases for a few defaults, far below this; and nothing topo reads nests deeply.
MAX_ALIAS_EXPANSION = 100_000  # nodes that aliases may add beyond those written in the file
MAX_DEPTH = 64


class _Fallback(Exception):
    """The fast event walk met something only the node walk handles (see _Loader.fast_data)."""


_MISSING = object()


class InputTooLarge(Exception):
    """A YAML document that would expand beyond the limits above; `line` is where (1-based)."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    def __init__(self, stream: str, filename: str, env: Mapping[str, str]):
        super().__init__(stream)
        self.filename = filename
        self.env = env
        self.problems: list[Problem] = []
        self._building: set[int] = set()
        self._built: dict[int, Any] = {}
        self._sizes: dict[int, int] = {}  # id of a built list or mapping -> its size, aliases expanded
        self._written = 0  # nodes written in the file so far (an alias counts once)
        self._depth = 0
        self._scalars: dict[tuple[str, str], Any] = {}  # fast_data: numbers, booleans, nulls read once

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

    def fast_data(self) -> Any:
        """The same tree as get_single_data, built from the parser's events without composing nodes first.

        PyYAML's node graph (a node and two marks per scalar) held 60 times the file's size in memory
        (470 MB for an 8 MB file of 100,000 objects) and cost as much time as parsing. This builds each
        value as its events arrive. It covers what large files are made of: plain mappings, sequences
        and scalars. Anything else (an anchor, alias, merge key, explicit tag, a non-scalar or null key,
        deep nesting, a value that cannot be read, more than one document, a syntax error) raises
        _Fallback, and load_yaml parses the file again the node way, which handles and reports all of it.
        """
        get = self.get_event
        if type(get()) is not yaml.StreamStartEvent or type(get()) is not yaml.DocumentStartEvent:
            raise _Fallback
        root = self._fast_value(get(), 0)
        if type(get()) is not yaml.DocumentEndEvent or type(get()) is not yaml.StreamEndEvent:
            raise _Fallback  # a second document: get_single_node's error
        return root

    def _fast_value(self, event: Any, depth: int, text: bool = False) -> Any:
        kind = type(event)
        if kind is yaml.ScalarEvent:
            if event.anchor is not None or event.tag is not None:
                raise _Fallback
            value = event.value
            tag = self.resolve(yaml.ScalarNode, value, event.implicit)
            if tag == _STR:
                if "$" in value:
                    node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
                    return self.construct_interpolated_str(node, resolve=not text)  # TEXT_KEYS: see _build_mapping
                return value
            if tag == _MERGE:
                raise _Fallback
            cached = self._scalars.get((tag, value), _MISSING)
            if cached is _MISSING:
                constructor = self.yaml_constructors.get(tag)
                if constructor is None:
                    raise _Fallback
                try:
                    cached = constructor(self, yaml.ScalarNode(tag, value))
                except Exception:  # a date such as 2020-13-45: the node way reports it with its line
                    raise _Fallback from None
                self._scalars[(tag, value)] = cached
            return cached
        if kind is not yaml.MappingStartEvent and kind is not yaml.SequenceStartEvent:
            raise _Fallback  # an alias
        if event.anchor is not None or event.tag is not None or depth >= MAX_DEPTH:
            raise _Fallback
        get = self.get_event
        if kind is yaml.SequenceStartEvent:
            items = LocList()
            items.line = event.start_mark.line + 1
            item_lines: list[int] = []
            items.lines = item_lines
            child = get()
            while type(child) is not yaml.SequenceEndEvent:
                item_lines.append(child.start_mark.line + 1)
                items.append(self._fast_value(child, depth + 1))
                child = get()
            return items
        result = LocDict()
        home = result.line = event.start_mark.line + 1
        lines: dict[Any, int] = {}
        key_event = get()
        while type(key_event) is not yaml.MappingEndEvent:
            if type(key_event) is not yaml.ScalarEvent:
                raise _Fallback
            key = self._fast_value(key_event, depth + 1)
            if key is None or not isinstance(key, (str, int, float, bool)):
                raise _Fallback
            line = key_event.start_mark.line + 1
            if key in result and self._is_duplicate(result, key):
                # The node way never builds a duplicate's value, so it reports nothing from inside it.
                reported = len(self.problems)
                self._fast_value(get(), depth + 1)
                del self.problems[reported:]
                self.problems.append(
                    Problem(
                        self.filename, line, str(key), f"duplicate key (first defined at line {lines.get(key, home)})"
                    )
                )
            else:
                result[key] = self._fast_value(get(), depth + 1, key in TEXT_KEYS)
                if line != home:
                    lines[key] = line
            key_event = get()
        result.lines = lines or NO_LINES
        return result

    def _build(self, node: yaml.Node) -> Any:
        """Node -> value. A direct walk: PyYAML's generic construct_object machinery (state for deep
        and recursive construction) costs as much again as parsing on large files."""
        kind = type(node)
        if kind is yaml.ScalarNode:
            if node.tag == _STR:
                return self.construct_interpolated_str(node) if "$" in node.value else node.value
            try:
                return self.construct_object(node)  # numbers, booleans, null, dates; unknown tags fail here
            except ValueError as exc:  # a date such as 2020-13-45, an integer of 5,000 digits
                shown = node.value if len(node.value) <= 40 else f"{node.value[:20]}…({len(node.value):,} characters)"
                reason = "too many digits" if "digits" in str(exc) else str(exc)
                line = node.start_mark.line + 1
                self.problems.append(Problem(self.filename, line, "", f"cannot read {shown} as a value: {reason}"))
                return None
        if node.tag == _MAP and kind is yaml.MappingNode:
            return self._guarded(node, self._build_mapping)
        if node.tag == _SEQ and kind is yaml.SequenceNode:
            return self._guarded(node, self._build_sequence)
        self._check_tagged(node)
        return self.construct_object(node, deep=True)  # explicit tags such as !!omap, or an error

    def _guarded(self, node: yaml.Node, build: Any) -> Any:
        # An alias is the same node again: build it once and share the value, as PyYAML does (building
        # it anew each time is exponential for nested aliases, and a merge flattens a node only once).
        if id(node) in self._built:
            return self._built[id(node)]
        # An alias inside its own anchor would make an endless structure.
        if id(node) in self._building:
            raise yaml.constructor.ConstructorError(None, None, "recursive alias", node.start_mark)
        if self._depth >= MAX_DEPTH:
            raise InputTooLarge(node.start_mark.line + 1, f"nested more than {MAX_DEPTH} levels deep")
        self._building.add(id(node))
        self._depth += 1
        try:
            value = build(node)
        finally:
            self._building.discard(id(node))
            self._depth -= 1
        self._built[id(node)] = value
        self._written += 1 + len(_children(node))
        sizes = self._sizes
        if isinstance(value, LocDict):  # after merging: a merged key counts once
            size = 1 + sum(1 + sizes.get(id(item), 1) for item in value.values())
        else:
            size = 1 + sum(sizes.get(id(item), 1) for item in value)
        sizes[id(value)] = size
        if size > self._written + MAX_ALIAS_EXPANSION:
            raise InputTooLarge(
                node.start_mark.line + 1,
                f"the aliases (*name) here expand to more than {MAX_ALIAS_EXPANSION:,} values beyond what the "
                "file writes out; write the content out, or refer to fewer aliases",
            )
        return value

    def _check_tagged(self, node: yaml.Node) -> None:
        """The same limits for explicitly tagged collections (!!omap, !!set), which PyYAML builds."""
        stack, seen = [(node, self._depth)], 0
        while stack:
            item, depth = stack.pop()
            seen += 1
            if depth > MAX_DEPTH:
                raise InputTooLarge(item.start_mark.line + 1, f"nested more than {MAX_DEPTH} levels deep")
            if seen > MAX_ALIAS_EXPANSION:
                raise InputTooLarge(node.start_mark.line + 1, f"expands to more than {MAX_ALIAS_EXPANSION:,} values")
            stack.extend((child, depth + 1) for child in _children(item))

    def _merge_sources(self, node: yaml.MappingNode) -> list[LocDict]:
        """The mappings `<<:` merges into `node`, lowest precedence first (PyYAML's order: a later
        `<<` key wins over an earlier one; within `<<: [*a, *b]`, a wins over b)."""
        sources: list[LocDict] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                continue
            if isinstance(value_node, yaml.MappingNode):
                group = [value_node]
            elif isinstance(value_node, yaml.SequenceNode):
                group = list(reversed(value_node.value))
            else:
                group = [value_node]
            for item in group:
                built = self._build(item) if isinstance(item, yaml.MappingNode) else None
                if not isinstance(built, LocDict):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"expected a mapping or list of mappings for merging, but found {item.id}",
                        item.start_mark,
                    )
                sources.append(built)
        return sources

    def _build_mapping(self, node: yaml.MappingNode) -> LocDict:
        result = LocDict()
        home = result.line = node.start_mark.line + 1
        lines: dict[Any, int] = {}
        overridable: set[Any] = set()  # keys that came in through a merge: the node's own keys win
        pairs = node.value
        if any(key.tag == _MERGE for key, _ in pairs):
            # Merged from the built mappings, not by flattening nodes (PyYAML's flatten_mapping copies
            # the pairs of every level into the next: exponential for a chain of merges).
            for source in self._merge_sources(node):
                for key, value in source.items():
                    result[key] = value
                    _set_line(lines, key, key_line(source, key), home)
                    overridable.add(key)
            pairs = [(key, value) for key, value in pairs if key.tag != _MERGE]
        build = self._build
        for key_node, value_node in pairs:
            key = build(key_node)
            line = key_node.start_mark.line + 1
            if key is None or not isinstance(key, (str, int, float, bool)):
                self.problems.append(Problem(self.filename, line, "", "mapping keys must be plain scalars"))
                continue
            if key in result and key not in overridable and self._is_duplicate(result, key):
                first = lines.get(key, home)
                self.problems.append(
                    Problem(self.filename, line, str(key), f"duplicate key (first defined at line {first})")
                )
                continue
            if key in TEXT_KEYS and type(value_node) is yaml.ScalarNode and value_node.tag == _STR:
                # A password is text even when its variable's value looks like a number (12345678,
                # true, 0x1F): resolving it would fail validation, or change the password (0x1F -> 31).
                result[key] = self.construct_interpolated_str(value_node, resolve=False)
            else:
                result[key] = build(value_node)
            _set_line(lines, key, line, home)
            overridable.discard(key)  # the node's own key: a second one is a duplicate again
        result.lines = lines or NO_LINES
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

    def construct_interpolated_str(self, node: yaml.ScalarNode, resolve: bool = True) -> Any:
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
        if resolve and not node.style and value != raw:
            # An unquoted `${MAX:-100}` means the number 100, as if it had been written there;
            # quote it ("${MAX}") to keep a string.
            try:
                resolved = yaml.safe_load(value) if value.strip() else value
            except yaml.YAMLError:
                return value  # not a YAML scalar of its own (e.g. "*s3cret"): keep the string
            if isinstance(resolved, (int, float, bool)):
                return resolved
        return value


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


# Keys whose values are always text, however an interpolated value looks.
TEXT_KEYS = frozenset({"password", "password_hash", "user"})
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
    env = os.environ if env is None else env
    if _BaseLoader is not yaml.SafeLoader:  # the event walk pays off only on libyaml's parser
        loader = _Loader(text, filename, env)
        try:
            return loader.fast_data(), loader.problems
        except (_Fallback, yaml.YAMLError):
            pass
        finally:
            loader.dispose()
    loader = _Loader(text, filename, env)
    try:
        data = loader.get_single_data()
    except InputTooLarge as exc:
        return None, [Problem(filename, exc.line, "", str(exc))]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = " ".join(part for part in (exc.context, exc.problem) if part) or str(exc)
        hint = _syntax_hint(text, mark.line if mark else None, message)
        return None, [Problem(filename, line, "", f"YAML syntax error: {message}{hint}")]
    except yaml.YAMLError as exc:
        return None, [Problem(filename, None, "", f"YAML error: {exc}")]
    finally:
        loader.dispose()
    return data, loader.problems


def _syntax_hint(text: str, index: int | None, message: str) -> str:
    """What usually causes a syntax error, from the line it was found on (and the one before)."""
    lines = text.splitlines()
    near = [lines[i] for i in (index, (index or 0) - 1) if i is not None and 0 <= i < len(lines)]
    if "\t" in message or any(line[: len(line) - len(line.lstrip())].count("\t") for line in near):
        return " (a tab: YAML indents with spaces only; replace the tabs with spaces)"
    if any("${" in line and re.search(r"[{\[][^}\]]*\$\{", line) for line in near):
        return (
            " (an unquoted ${VARIABLE} inside a flow mapping {...} or list [...]: its braces end the mapping;"
            ' quote it: "${VARIABLE}")'
        )
    return ""


def _set_line(lines: dict[Any, int], key: Any, line: int, home: int) -> None:
    if line != home:
        lines[key] = line
    else:
        lines.pop(key, None)  # a merged key's line, overridden by the mapping's own key on its first line


def line_of(root: Any, path: tuple[Any, ...]) -> int | None:
    """The line of the deepest element of `path` that exists in a LocDict/LocList tree."""
    line = getattr(root, "line", None)
    node = root
    for element in path:
        if isinstance(node, LocDict) and element in node:
            line = key_line(node, element)
            node = node[element]
        elif isinstance(node, LocList) and isinstance(element, int) and 0 <= element < len(node):
            line = node.lines[element]
            node = node[element]
        # Elements that are not in the data (pydantic's union tags, missing keys) are skipped.
    return line


def resolves_as_string(text: str) -> bool:
    """Whether `text`, written unquoted, would load as that string (not a number, boolean, null, date...)."""
    return not any(pattern.match(text) for _, pattern in _IMPLICIT.get(text[:1], ()))
