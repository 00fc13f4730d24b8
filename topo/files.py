"""Which files a command reads, and a quick text scan of them: no YAML parser, no models.

Separate from topo.load so that `topo plan` can find the broker's vhosts and send its read before it
imports pydantic and the models (about 0.3 s of every start; see topo.first_read).
"""

from __future__ import annotations

import re
from pathlib import Path

from topo.errors import ConfigError, TopoError

DEFAULT_FILE = "topology.yaml"


def expand_paths(paths: list[str]) -> list[Path]:
    """A directory stands for every *.yaml / *.yml file in it, in name order."""
    if not paths:
        paths = [DEFAULT_FILE]
    result: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                raise ConfigError(f"{given}: directory holds no *.yaml or *.yml file")
            result.extend(found)
        elif path.is_file():
            result.append(path)
        else:
            hint = " (pass one with -f PATH)" if given == DEFAULT_FILE else ""
            raise ConfigError(f"{given}: no such file or directory{hint}")
    return result


_VHOSTS_BLOCK = re.compile(r"^vhosts:[ \t]*(?:#.*)?\n((?:(?:[ \t]+.*|[ \t]*(?:#.*)?)\n?)*)", re.MULTILINE)
_CHILD = re.compile(r"""^( +)(?:"([^"\\]*)"|'([^']*)'|([^\s#'"{}\[\],][^#:{}]*?))[ \t]*:(?:\s|$)""")


def guess_vhosts(paths: list[str]) -> list[str] | None:
    """The vhost names the files declare, from a quick text scan; None when unsure.

    Only a hint, to start reading the broker while the files are parsed; the real scope comes from
    the parsed model, and a wrong guess just costs the read being done again.
    """
    names: list[str] = []
    try:
        files = expand_paths(paths)
        for path in files:
            text = path.read_text(encoding="utf-8")
            match = _VHOSTS_BLOCK.search(text)
            if match is None:
                if re.search(r"^vhosts\s*:", text, re.MULTILINE):
                    return None  # a flow-style or otherwise unusual layout
                continue
            indent: str | None = None
            for line in match.group(1).splitlines():
                stripped = line.lstrip(" ")
                if not stripped or stripped.startswith("#"):
                    continue
                depth = line[: len(line) - len(stripped)]
                if indent is None:
                    indent = depth
                if depth != indent:
                    continue
                child = _CHILD.match(line)
                name = next((g for g in child.groups()[1:] if g is not None), None) if child else None
                if name is None or "$" in name:
                    return None
                names.append(name)
    except (OSError, UnicodeDecodeError, TopoError):
        return None
    return list(dict.fromkeys(names)) or None
