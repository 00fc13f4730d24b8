"""The event walk (yamlload's fast path) builds exactly what the node walk builds: values, types, the line
of every key and item, and the problems, for every YAML file in the repository and for tricky snippets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from topo import yamlload
from topo.yamlload import LocDict, LocList, load_yaml

REPO = Path(__file__).resolve().parent.parent
FILES = sorted(p for p in (*REPO.glob("examples/**/*.y*ml"), *REPO.glob("tests/**/*.y*ml")) if p.is_file())
ENV = {"SET": "value", "NUMBER": "5", "EMPTY": ""}

SNIPPETS = [
    "a: 1\nb: [1, 2.5, true, null, ~, '', 2020-01-02, 0x1f, .inf, 1_000]\n",
    "a: 1\na: 2\n",
    "a: {x: 1}\nb: 2\na: {x: ${MISSING}}\n",  # the duplicate's value is never built: no missing-variable problem
    "1: one\ntrue: yes\n1: again\n",
    "q: '${SET}'\nn: ${NUMBER}\nm: ${MISSING}\nd: ${UNSET:-7}\ne: \"${NUMBER}\"\nl: $${SET}\n",
    "- a\n- - b\n  - c\n- {d: e}\n",
    "base: &b {x: 1}\nuse: *b\n",
    "base: &b {x: 1}\nmerged:\n  <<: *b\n  y: 2\n",
    "tagged: !!str 5\nset: !!set {a, b}\n",
    "? [complex]\n: key\n",
    "~: null key\n",
    "bad: 2020-13-45\n",
    "one: 1\n---\ntwo: 2\n",
    "",
    "# only a comment\n",
    "a: [unclosed\n",
    "a: b: c\n",
    "plain\n",
    "- " * 70 + "deep\n",
    "key: =\n",
    "x: 12345678901234567890123456789\ny: -0.0\nz: 1e3\n",
]


def node_way(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[Any]]:
    with monkeypatch.context() as patch:
        patch.setattr(yamlload, "_BaseLoader", yaml.SafeLoader)  # load_yaml then takes the node walk only
        return load_yaml(text, "f.yaml", ENV)


def same(a: Any, b: Any) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, LocDict):
        assert (a.line, a.lines) == (b.line, b.lines)
        assert list(a) == list(b)
        assert [type(k) for k in a] == [type(k) for k in b]
        for key in a:
            same(a[key], b[key])
    elif isinstance(a, LocList):
        assert (a.line, a.lines, len(a)) == (b.line, b.lines, len(b))
        for x, y in zip(a, b, strict=True):
            same(x, y)
    elif isinstance(a, float) and a != a:
        assert b != b
    else:
        assert a == b


@pytest.mark.parametrize("text", SNIPPETS)
def test_snippets_load_the_same_both_ways(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, fast_problems = load_yaml(text, "f.yaml", ENV)
    slow, slow_problems = node_way(text, monkeypatch)
    same(fast, slow)
    assert fast_problems == slow_problems


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_repository_files_load_the_same_both_ways(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = path.read_text(errors="replace")
    fast, fast_problems = load_yaml(text, str(path), ENV)
    with monkeypatch.context() as patch:
        patch.setattr(yamlload, "_BaseLoader", yaml.SafeLoader)
        slow, slow_problems = load_yaml(text, str(path), ENV)
    same(fast, slow)
    assert fast_problems == slow_problems


def test_plain_files_take_the_event_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not a silent fallback on everything: a plain file never reaches the node walk.
    def fail(self: Any) -> Any:
        raise AssertionError("node walk used")

    monkeypatch.setattr(yamlload._Loader, "get_single_data", fail)
    data, problems = load_yaml("a: {b: [1, x]}\nc: ${SET}\n", "f.yaml", ENV)
    assert data == {"a": {"b": [1, "x"]}, "c": "value"} and problems == []
