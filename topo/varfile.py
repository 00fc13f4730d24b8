"""Variables for ${…} from dotenv files (--var-file): one set of topology files, one file per environment.

The format is dotenv's common core, nothing more:

    # a comment
    NAME=value                 # unquoted: surrounding spaces and a trailing " # comment" are dropped
    export NAME=value          # `export ` is allowed (so the file can be sourced by a shell too)
    NAME='literal $ and #'     # single quotes: exactly what is inside
    NAME="line\\nbreak \\"q\\""  # double quotes: \\n \\t \\\\ \\" \\$ escapes

No interpolation inside the files and no multi-line values: what a line says is what the variable
holds. A later file overrides an earlier one, and the environment overrides every file. Values whose
names say they are secret (PASSWORD, SECRET, TOKEN, ...) are registered for scrubbing, and errors name
the file, line and variable, never the value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from topo.errors import Problem, ValidationFailed
from topo.redact import register_secret

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|PASS$|SECRET|TOKEN|KEY|CREDENTIAL|PRIVATE", re.IGNORECASE)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$"}


def _double_quoted(body: str) -> tuple[str, str] | None:
    """(value, rest of the line) of a "…" value, or None when the closing quote is missing."""
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == '"':
            return "".join(out), body[index + 1 :]
        if char == "\\" and index + 1 < len(body):
            following = body[index + 1]
            out.append(_ESCAPES.get(following, "\\" + following))
            index += 2
            continue
        out.append(char)
        index += 1
    return None


def parse_line(text: str) -> tuple[str, str] | str | None:
    """(name, value), None for a blank or comment line, or a string saying what is wrong."""
    line = text.strip()
    if not line or line.startswith("#"):
        return None
    if line.startswith("export ") or line.startswith("export\t"):
        line = line[len("export") :].lstrip()
    name, equals, rest = line.partition("=")
    name = name.strip()
    if not equals:
        return "expected NAME=value"
    if not _NAME.fullmatch(name):
        # Not echoed: a line that is not what it seems may be a secret.
        return "the text before = is not a variable name (letters, digits and _, not starting with a digit)"
    rest = rest.lstrip()
    if rest.startswith("'"):
        value, quote, after = rest[1:].partition("'")
        if not quote:
            return f"{name}: the single quote is not closed (values are one line)"
    elif rest.startswith('"'):
        parsed = _double_quoted(rest[1:])
        if parsed is None:
            return f"{name}: the double quote is not closed (values are one line)"
        value, after = parsed
    else:
        value = re.split(r"\s+#", rest, maxsplit=1)[0].rstrip()
        after = ""
        if "'" in value or '"' in value:
            return f"{name}: quotes inside an unquoted value; quote the whole value"
    after = after.strip()
    if after and not after.startswith("#"):
        return f"{name}: unexpected text after the closing quote"
    return name, value


def read_var_files(paths: list[str]) -> dict[str, str]:
    """The variables of the files, later files overriding earlier ones; every bad line reported at once."""
    variables: dict[str, str] = {}
    problems: list[Problem] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            problems.append(Problem(path, None, "", "no such var file"))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(path, None, "", f"cannot read the var file: {getattr(exc, 'strerror', exc)}"))
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            parsed = parse_line(line)
            if isinstance(parsed, str):
                problems.append(Problem(path, number, "", parsed))
            elif parsed is not None:
                name, value = parsed
                variables[name] = value
                if _SECRET_NAME.search(name):
                    register_secret(value)
    if problems:
        raise ValidationFailed(problems, "var files")
    return variables


def environment_with(paths: list[str] | None, environ: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """The variables ${…} sees: the var files', overridden by the environment's."""
    environ = os.environ if environ is None else environ
    if not paths:
        return environ
    return {**read_var_files(paths), **environ}
