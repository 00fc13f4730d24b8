"""The lint framework: findings, what rules judge, and the registry of rules.

A rule is a small function over a `LintInput` (the desired state from files, or the actual state of a
live broker) that yields `Finding`s. Rules register themselves with `@rule`; `run` calls every rule
that applies and returns the findings in a stable order. Rules never do I/O: what a live rule needs
from the broker beyond the objects (its deprecated features in use) is read beforehand into the input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from topo.compat import Version, rules_for, version_text
from topo.compat import VersionRules as CompatRules
from topo.state import Key, Kind, Location, Obj


class Level(StrEnum):
    ERROR = "error"  # the target broker would refuse it, or it loses messages: exit 1
    WARNING = "warning"  # accepted, but deprecated or probably not what you want
    INFO = "info"


LEVEL_ORDER = {Level.ERROR: 0, Level.WARNING: 1, Level.INFO: 2}

# Singular names for object kinds in messages ("vhost 'shop' operator policy 'limits'").
KIND_NAMES = {Kind.OPERATOR_POLICY: "operator policy", Kind.VHOST_LIMIT: "vhost limit"}


def kind_name(kind: Kind) -> str:
    return KIND_NAMES.get(kind, kind.value.replace("_", " "))


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    rule: str  # the rule's id, as docs/lint.md lists it
    message: str  # what is wrong
    fix: str
    vhost: str | None = None
    kind: Kind | None = None
    name: str | None = None  # the object's name (None: about the broker or a whole vhost)
    file: str | None = None
    line: int | None = None

    @property
    def obj(self) -> str:
        """The object, in words: vhost 'shop' queue 'orders'."""
        parts = []
        if self.vhost is not None:
            parts.append(f"vhost {self.vhost!r}")
        if self.kind is not None and self.name is not None:
            parts.append(f"{kind_name(self.kind)} {self.name!r}")
        return " ".join(parts)

    @property
    def where(self) -> str:
        """file:line for the files; the object for a live broker."""
        if self.file is not None:
            location = f"{self.file}:{self.line}" if self.line else self.file
            return f"{location}: {self.obj}" if self.obj else location
        return self.obj or "broker"

    def sort_key(self) -> tuple[Any, ...]:
        return (self.file or "", self.line or 0, self.vhost or "", self.name or "", LEVEL_ORDER[self.level], self.rule)

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level.value,
            "rule": self.rule,
            "file": self.file,
            "line": self.line,
            "vhost": self.vhost,
            "kind": self.kind.value if self.kind is not None else None,
            "name": self.name,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(slots=True)
class LintInput:
    """What the rules judge: one state, where it came from, and the version it must work on."""

    objects: dict[Key, Obj]
    target: Version
    live: bool = False
    locations: dict[Key, Location] = field(default_factory=dict)  # files only
    broker_version: Version | None = None  # live only
    # Live, from /api/deprecated-features/used (3.13+); None when not read.
    deprecated_used: list[dict[str, Any]] | None = None
    _compat: CompatRules | None = field(default=None, repr=False)

    @property
    def compat(self) -> CompatRules:
        if self._compat is None:
            self._compat = rules_for(self.target)
        return self._compat

    @property
    def target_text(self) -> str:
        return version_text(self.target)

    def of_kind(self, *kinds: Kind) -> Iterator[Obj]:
        wanted = set(kinds)
        for key in sorted(self.objects):
            if key.kind in wanted:
                yield self.objects[key]

    def finding(self, level: Level, rule_id: str, obj: Obj | None, message: str, fix: str, *path: Any) -> Finding:
        """A finding about `obj`, located at `path` inside its declaration (e.g. "arguments", "x-queue-mode")."""
        if obj is None:
            return Finding(level, rule_id, message, fix)
        key = obj.key
        file = line = None
        declared = self.locations.get(key)
        if declared is not None:
            at = Location(declared.file, declared.root, (*declared.path, *path))
            file, line = at.file, at.line
        return Finding(level, rule_id, message, fix, key.vhost, key.kind, _display_name(obj), file, line)


def _display_name(obj: Obj) -> str:
    if obj.kind is Kind.BINDING:
        attrs = obj.attrs
        return f"{attrs.get('source')} -> {attrs.get('destination')}"
    return obj.key.name


RuleFunc = Callable[[LintInput], Iterable[Finding]]


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    summary: str
    func: RuleFunc
    live_only: bool = False


RULES: list[Rule] = []


def rule(rule_id: str, summary: str, live_only: bool = False) -> Callable[[RuleFunc], RuleFunc]:
    """Registers a rule. `rule_id` names the rule (a rule may report findings under more specific ids)."""

    def register(func: RuleFunc) -> RuleFunc:
        if any(existing.id == rule_id for existing in RULES):
            raise ValueError(f"lint rule {rule_id!r} registered twice")
        RULES.append(Rule(rule_id, summary, func, live_only))
        return func

    return register


def run(lint_input: LintInput, rules: Iterable[Rule] | None = None) -> list[Finding]:
    findings: list[Finding] = []
    for each in RULES if rules is None else rules:
        if each.live_only and not lint_input.live:
            continue
        findings.extend(each.func(lint_input))
    return sorted(findings, key=Finding.sort_key)
