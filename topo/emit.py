"""Plain data -> YAML text that reads as if a person wrote it (for `topo export`).

PyYAML can dump, but it cannot write comments or choose flow style per mapping, and its quoting
follows YAML's rules rather than topo's loader (which also expands ${VAR}). This writer handles the small
subset topology files use: mappings, sequences, strings, numbers, booleans and null, with comments.
"""

from __future__ import annotations

import functools
import io
import re
from dataclasses import dataclass
from typing import Any

from yaml.emitter import Emitter

from topo.yamlload import resolves_as_string

INDENT = "  "


@dataclass(frozen=True, slots=True)
class Commented:
    """A value with comment lines written above its key (or list item)."""

    value: Any
    comment: str


@dataclass(frozen=True, slots=True)
class Flow:
    """A mapping or sequence written on one line: {a: 1, b: 2} / [a, b]."""

    value: Any


class Placeholder(str):
    """A ${VARIABLE} that must reach the file as is (every other "${" is escaped as "$${")."""


_analyzer = Emitter(io.StringIO(), allow_unicode=True)


def scalar(value: Any, flow: bool = False) -> str:
    """A scalar as YAML: quoted only where YAML (or topo's ${VAR} expansion) needs it."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, Placeholder):
        # Quoted: an unquoted ${VAR} is typed by its value (a password "123456" would become a number).
        return _double_quoted(str(value))
    return _string(str(value), flow)


def _float(value: float) -> str:
    """A float as YAML 1.1 reads it back as the same float (it needs a dot: 1e+20 would be a string)."""
    if value != value:
        return ".nan"
    if value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    if "e" in text and "." not in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


# Most names need no quoting: those are recognised without the YAML emitter's full analysis.
_SIMPLE = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")


@functools.lru_cache(maxsize=65536)
def _string(value: str, flow: bool) -> str:
    text = value.replace("${", "$${")
    if _SIMPLE.fullmatch(text) and resolves_as_string(text):
        return text
    if not text.isprintable():  # line breaks, tabs, control and format characters, NBSP: escaped
        return _double_quoted(text)
    analysis = _analyzer.analyze_scalar(text)
    plain = analysis.allow_flow_plain if flow else analysis.allow_block_plain
    if plain and text and resolves_as_string(text) and not _YAML_12_NUMBER.match(text):
        return text
    if analysis.allow_single_quoted:
        return "'" + text.replace("'", "''") + "'"
    return _double_quoted(text)


# Numbers in YAML 1.2 that YAML 1.1 (topo's loader) reads as strings: quoted, so that other tools
# (yq, editors) read the same string.
_YAML_12_NUMBER = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|0o[0-7]+|0x[0-9a-fA-F]+)$")


def _double_quoted(text: str) -> str:
    """A YAML double-quoted scalar; everything that is not printable is escaped."""
    out = []
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{scalar(k, flow=True)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return scalar(value, flow=True)


def _comment_lines(comment: str, depth: int) -> list[str]:
    return [f"{INDENT * depth}# {line}".rstrip() for line in comment.splitlines()]


def _inline(value: Any) -> str | None:
    """The value written after `key:` on the same line, or None when it needs a block below."""
    if isinstance(value, Flow):
        return _flow(value.value)
    if isinstance(value, dict | list):
        return _flow(value) if not value else None
    return scalar(value)


def _uncommented(value: Any, depth: int, out: list[str]) -> Any:
    """The value itself; its comment, if any, is written first (above its key or list item)."""
    if isinstance(value, Commented):
        out.extend(_comment_lines(value.comment, depth))
        return value.value
    return value


def _mapping(data: dict[Any, Any], depth: int, out: list[str]) -> None:
    pad = INDENT * depth
    for key, value in data.items():
        value = _uncommented(value, depth, out)
        inline = _inline(value)
        if inline is not None:
            out.append(f"{pad}{scalar(key)}: {inline}")
        else:
            out.append(f"{pad}{scalar(key)}:")
            _block(value, depth + 1, out)


def _sequence(data: list[Any], depth: int, out: list[str]) -> None:
    pad = INDENT * depth
    for item in data:
        item = _uncommented(item, depth, out)
        inline = _inline(item)
        if inline is not None:
            out.append(f"{pad}- {inline}")
            continue
        nested: list[str] = []
        _block(item, depth + 1, nested)
        out.append(f"{pad}- {nested[0][len(pad) + len(INDENT) :]}")
        out.extend(nested[1:])


def _block(value: Any, depth: int, out: list[str]) -> None:
    if isinstance(value, dict):
        _mapping(value, depth, out)
    else:
        _sequence(value, depth, out)


def dump(document: dict[str, Any], header: str = "") -> str:
    """The document as YAML; top-level entries are separated by a blank line."""
    out: list[str] = _comment_lines(header, 0) if header else []
    for key, value in document.items():
        if out:
            out.append("")
        _mapping({key: value}, 0, out)
    return "\n".join(out) + "\n"
