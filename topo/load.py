"""Files -> validated models -> one merged desired state, with every problem reported at once."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from topo import preflight
from topo.arguments import QUEUE_TYPES
from topo.errors import Problem, ValidationFailed
from topo.files import expand_paths
from topo.kinds import registry
from topo.kinds.base import Declared, KindDef, Scope
from topo.kinds.vhost import from_spec as vhost_from_spec
from topo.model import BrokerSpec, Topology, allowed_keys, model_at
from topo.ownership import ignored_by
from topo.salvage import in_file, salvage
from topo.state import Desired, Key, Kind, Location, Obj
from topo.yamlload import line_of, load_yaml


@dataclass(frozen=True, slots=True)
class Source:
    """A topology document held in memory: `name` stands for the file in messages."""

    name: str
    text: str


@dataclass(slots=True)
class SourceFile:
    path: str
    raw: Any
    model: Topology
    # Objects declared in the file but left out of `model` for schema errors: references to them stand.
    broken: set[Key] = field(default_factory=set)


@dataclass(slots=True)
class Loaded:
    desired: Desired
    broker: BrokerSpec | None
    files: list[str] = field(default_factory=list)


def format_path(loc: tuple[Any, ...]) -> str:
    """vhosts["/"].queues["orders.created"].arguments: readable, and unambiguous for names with dots."""
    text = ""
    for element in loc:
        if isinstance(element, int):
            text += f"[{element}]"
        elif isinstance(element, str) and element.replace("_", "").replace("-", "").isalnum():
            text += f".{element}" if text else element
        else:
            text += f"[{element!r}]".replace("'", '"')
    return text


_UNION_MEMBER = re.compile(r"^(int|float|str|bool|none|dict\[.*\]|list\[.*\]|literal\[.*\]|function-.*)$")


def _clean_loc(loc: tuple[Any, ...], raw: Any = None) -> tuple[Any, ...]:
    """pydantic's error location without its union tags (queues.q.quorum, timeout.float), which are
    not keys in the file; an element that is a key in the file is always kept."""
    cleaned: list[Any] = []
    node = raw
    for index, element in enumerate(loc):
        is_key = isinstance(node, dict) and element in node
        if not is_key:
            if element in QUEUE_TYPES and index >= 2 and loc[index - 2] == "queues":
                continue
            if isinstance(element, str) and _UNION_MEMBER.match(element) and index > 0:
                continue
        cleaned.append(element)
        if is_key or (isinstance(node, list) and isinstance(element, int) and 0 <= element < len(node)):
            node = node[element]
        else:
            node = None
    return tuple(cleaned)


def _problems_from_validation(error: ValidationError, filename: str, raw: Any) -> list[Problem]:
    problems = _problems_by_error(error, filename, raw)
    # A value that fits no member of a union (float | int) gets one error per member: keep the first.
    seen: set[str] = set()
    unique = []
    for problem in problems:
        if problem.path not in seen or not problem.path:
            unique.append(problem)
            seen.add(problem.path)
    return unique


def _problems_by_error(error: ValidationError, filename: str, raw: Any) -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False):
        raw_loc = tuple(item["loc"])
        loc = _clean_loc(raw_loc, raw)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            model = model_at(raw_loc[:-1])
            if model is not None:
                message = (
                    f"unknown key {raw_loc[-1]!r} in {model.describe()}; allowed: {', '.join(allowed_keys(model))}"
                )
            problems.append(Problem(filename, line_of(raw, loc), format_path(loc), message))
            continue
        if item["type"] == "bad_arguments":
            for name, reason in item.get("ctx", {}).get("problems", []):
                path = (*loc, name) if loc and loc[-1] == "arguments" else (*loc, "arguments", name)
                problems.append(Problem(filename, line_of(raw, path), format_path(path), reason))
            continue
        if raw_loc and raw_loc[-1] == "[key]":
            loc = tuple(part for part in loc if part != "[key]")
            name = loc[-1] if loc else "?"
            problems.append(
                Problem(filename, line_of(raw, loc), format_path(loc), f"name {name!r} must be a string: quote it")
            )
            continue
        sensitive = any("password" in str(part) for part in loc)
        value = item.get("input")
        if sensitive and item["type"] == "string_type":
            message = f'{message}: quote it ("..."); a ${{VARIABLE}} there is always read as text'
        if (
            (item["type"].endswith("_type") or item["type"] in ("literal_error", "enum"))
            and not sensitive
            and isinstance(value, (str, int, float, bool))
        ):
            message = f"{message}; got {type(value).__name__} {value!r}"
        problems.append(Problem(filename, line_of(raw, loc), format_path(loc), message))
    return problems


def read_file(path: Path, env: Mapping[str, str]) -> tuple[SourceFile | None, list[Problem]]:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(name, None, "", f"cannot read file: {exc}")]
    return read_source(Source(name, text), env)


def read_source(source: Source, env: Mapping[str, str]) -> tuple[SourceFile | None, list[Problem]]:
    """One topology document, from a file or from memory: parsed and validated, with its problems."""
    name, text = source.name, source.text
    raw, problems = load_yaml(text, name, env)
    if raw is None and not problems:
        raw = {}
    if problems and raw is None:
        return None, problems
    if not isinstance(raw, dict):
        return None, [*problems, Problem(name, 1, "", "the file must be a mapping with keys such as vhosts:")]
    try:
        model = Topology.model_validate(raw)
    except ValidationError as exc:
        problems = problems + _problems_from_validation(exc, name, raw)
        # Every problem at once: the objects that failed are set aside and the rest is checked on, so
        # a reference error elsewhere is not hidden behind a schema error (see salvage.py).
        salvaged = salvage(raw, exc, lambda error: _problems_from_validation(error, name, raw))
        if salvaged is None:
            return None, problems
        model, broken, more = salvaged
        known = {(p.line, p.path, p.message) for p in problems}
        problems += [p for p in more if (p.line, p.path, p.message) not in known]
        return SourceFile(name, raw, model, broken), problems
    return SourceFile(name, raw, model), problems


class _Builder:
    """Merges validated files into one Desired, remembering where each object was declared."""

    def __init__(self) -> None:
        self.desired = Desired()
        self.problems: list[Problem] = []
        self.vhost_fields: dict[tuple[str, str], Location] = {}
        self.paths: dict[Key, tuple[Any, ...]] = {}
        self.top_prune: tuple[bool, Location] | None = None
        # (vhost, or None for the top level) -> ignore patterns with where each was written.
        self.ignore: dict[str | None, list[tuple[str, Location]]] = {}
        self.prune_non_durable: dict[str, Location] = {}
        self.broken: set[Key] = set()

    def _add(self, obj: Obj, where: Location, path: tuple[Any, ...], absent: bool = False) -> None:
        key = obj.key
        if key in self.desired.objects or key in self.desired.absent or key in self.desired.external:
            first = self.desired.locations[key]
            self.problems.append(
                Problem(where.file, where.line, format_path(path), f"declared twice (first at {first})")
            )
            return
        self.desired.locations[key] = where
        self.paths[key] = path
        if absent:
            self.desired.absent.add(key)
        else:
            self.desired.objects[key] = obj

    def add_file(self, source: SourceFile) -> None:
        raw, model = source.raw, source.model
        self.broken |= source.broken
        if "prune" in model.model_fields_set:
            where = Location(source.path, raw, ("prune",))
            if self.top_prune and self.top_prune[0] != model.prune:
                self.problems.append(
                    Problem(where.file, where.line, "prune", f"conflicts with prune at {self.top_prune[1]}")
                )
            self.top_prune = (model.prune, where)
        for index, pattern in enumerate(model.ignore):
            self.ignore.setdefault(None, []).append((pattern, Location(source.path, raw, ("ignore", index))))
        for vhost, spec in model.vhosts.items():
            self.add_vhost(source, vhost, spec)
        for kind in registry():
            if kind.scope is Scope.GLOBAL:
                for declared in kind.declarations(model, ""):
                    self._declare(kind, source, (), declared)

    def _declare(self, kind: KindDef, source: SourceFile, base: tuple[Any, ...], declared: Declared) -> None:
        """One declared object (or external or absent key), checked and added at its place in the file."""
        path = (*base, *declared.path)
        where = Location(source.path, source.raw, path)
        for below, message in declared.warnings:
            self.desired.warnings.append(f"{Location(source.path, source.raw, (*path, *below))}: {message}")
        # Items set aside for schema errors (salvage.py) leave gaps: messages keep the index the file has.
        shown = in_file(source.raw, path)
        problem = kind.name_problem(declared.obj.key.name)
        if problem is not None:
            self.problems.append(Problem(where.file, where.line, format_path(shown), problem))
        if declared.external:
            self._external(declared.obj.key, where, shown)
        else:
            self._add(declared.obj, where, shown, declared.absent)
            if declared.migrate:
                self.desired.migrate.add(declared.obj.key)

    def add_vhost(self, source: SourceFile, vhost: str, spec: Any) -> None:
        def at(*path: Any) -> Location:
            return Location(source.path, source.raw, ("vhosts", vhost, *path))

        base: tuple[Any, ...] = ("vhosts", vhost)
        if vhost == "":
            self.problems.append(Problem(source.path, at().line, "vhosts", "a vhost name must not be empty"))
            return
        if spec.absent:
            if vhost in self.desired.vhosts:
                first = self.desired.locations[Key(Kind.VHOST, vhost, vhost)]
                self.problems.append(Problem(source.path, at().line, format_path(base), f"declared at {first}"))
                return
            self._add(vhost_from_spec(vhost, spec), at(), base, absent=True)
            if vhost not in self.desired.absent_vhosts:
                self.desired.absent_vhosts.append(vhost)
            return
        if Key(Kind.VHOST, vhost, vhost) in self.desired.absent:
            first = self.desired.locations[Key(Kind.VHOST, vhost, vhost)]
            self.problems.append(Problem(source.path, at().line, format_path(base), f"declared absent at {first}"))
            return
        if vhost not in self.desired.vhosts:
            self.desired.vhosts.append(vhost)
        self._merge_vhost_metadata(source, vhost, spec, at)
        for index, pattern in enumerate(spec.ignore):
            self.ignore.setdefault(vhost, []).append((pattern, at("ignore", index)))
        if spec.prune_non_durable:
            self.prune_non_durable.setdefault(vhost, at("prune_non_durable"))
        for kind in registry():
            if kind.scope is not Scope.VHOST or kind.kind is Kind.VHOST:
                continue
            if kind.manages(spec):
                self.desired.access.add((kind.kind, vhost))
            for declared in kind.declarations(spec, vhost):
                self._declare(kind, source, base, declared)

    def _merge_vhost_metadata(self, source: SourceFile, vhost: str, spec: Any, at: Any) -> None:
        incoming = vhost_from_spec(vhost, spec)
        key = incoming.key
        existing = self.desired.objects.get(key)
        if existing is None:
            self.desired.objects[key] = incoming
            self.desired.locations[key] = at()
        settings = [(f, incoming.attrs.get(f)) for f in incoming.attrs]
        if "prune" in spec.model_fields_set:
            settings.append(("prune", spec.prune))
            self.desired.prune[vhost] = bool(spec.prune)
        for field_name, value in settings:
            first = self.vhost_fields.get((vhost, field_name))
            where = at(field_name)
            if first is not None:
                path = format_path(("vhosts", vhost, field_name))
                self.problems.append(Problem(where.file, where.line, path, f"set twice (first at {first})"))
                continue
            self.vhost_fields[(vhost, field_name)] = where
            if existing is not None and field_name != "prune":
                existing.attrs[field_name] = value

    def _external(self, key: Key, where: Location, path: tuple[Any, ...]) -> None:
        if key in self.desired.locations:
            first = self.desired.locations[key]
            self.problems.append(
                Problem(where.file, where.line, format_path(path), f"declared twice (first at {first})")
            )
            return
        self.desired.locations[key] = where
        self.desired.external.add(key)

    def finish(self, check_references: bool) -> Desired:
        top = self.top_prune[0] if self.top_prune else False
        for vhost in self.desired.vhosts:
            self.desired.prune.setdefault(vhost, top)
        self._scope()
        if check_references:
            self._check_references()
            self._check_exchange_arguments()
        self.problems.extend(preflight.offline(self.desired))
        return self.desired

    def _scope(self) -> None:
        """Ignore patterns per vhost (with the top level's), and prune_non_durable only beside prune."""
        desired = self.desired
        for vhost, where in self.prune_non_durable.items():
            if desired.prune.get(vhost):
                desired.prune_non_durable.add(vhost)
            else:
                reason = "needs prune: true (on the vhost or at the top level): it widens what prune deletes"
                self.problems.append(Problem(where.file, where.line, format_path(where.path), reason))
        patterns = {v: [*self.ignore.get(None, []), *self.ignore.get(v, [])] for v in desired.vhosts}
        desired.ignore = {vhost: [p for p, _ in found] for vhost, found in patterns.items() if found}
        for key, obj in desired.objects.items():
            for pattern, where in patterns.get(key.vhost, []):
                if key.kind is not Kind.BINDING and ignored_by(obj, [pattern]):
                    declared = desired.locations[key]
                    reason = (
                        f"{key.kind.value} {obj.attrs.get('name', key.name)!r} (declared at {declared}) matches this "
                        "pattern: topo cannot both manage and ignore it; narrow the pattern or drop the declaration"
                    )
                    self.problems.append(Problem(where.file, where.line, format_path(where.path), reason))

    def _check_exchange_arguments(self) -> None:
        """Dead-letter and alternate exchanges that are not declared: the broker silently drops instead."""
        desired = self.desired
        references = (
            (Kind.QUEUE, "x-dead-letter-exchange", "arguments", "dead-letters to"),
            (Kind.EXCHANGE, "alternate-exchange", "arguments", "sends unroutable messages to"),
            (Kind.POLICY, "dead-letter-exchange", "definition", "dead-letters to"),
            (Kind.POLICY, "alternate-exchange", "definition", "sends unroutable messages to"),
        )
        for key, obj in desired.objects.items():
            for kind, argument, section, verb in references:
                if key.kind is not kind:
                    continue
                target = obj.attrs.get(section, {}).get(argument)
                if not isinstance(target, str) or target == "" or target.startswith("amq."):
                    continue
                exchange = Key(Kind.EXCHANGE, key.vhost, target)
                if exchange in desired.objects or exchange in desired.external or exchange in self.broken:
                    continue
                desired.warnings.append(
                    f"{desired.locations[key]}: {key.kind.value} {key.name!r} {verb} exchange {target!r}, which "
                    f"is not declared in vhost {key.vhost!r}: RabbitMQ would drop those messages "
                    "(declare it, or mark it external: true)"
                )

    def _check_references(self) -> None:
        """Bindings must name objects that the files declare or mark external (or built-in exchanges), and
        topic permissions no exchange the files declare absent."""
        desired = self.desired
        for key, obj in [*desired.objects.items(), *((k, None) for k in desired.absent)]:
            if key.kind is Kind.TOPIC_PERMISSION and obj is not None:
                self._check_topic_permission(key, obj)
            if key.kind is not Kind.BINDING or obj is None:
                continue
            ends = (
                ("source", Kind.EXCHANGE, obj.attrs["source"]),
                ("destination", Kind(obj.attrs["destination_type"]), obj.attrs["destination"]),
            )
            for role, kind, name in ends:
                if kind is Kind.EXCHANGE and name.startswith("amq."):
                    continue
                target = Key(kind, key.vhost, name)
                if target in desired.objects or target in desired.external or target in self.broken:
                    continue
                where = desired.locations[key]
                if target in desired.absent:
                    reason = f"{role} {kind.value} {name!r} is declared absent"
                else:
                    reason = (
                        f"{role} {kind.value} {name!r} is not declared in vhost {key.vhost!r}; "
                        f"declare it, or mark it `external: true` if it is managed elsewhere"
                    )
                path = format_path((*self.paths.get(key, ()), role))
                self.problems.append(Problem(where.file, where.line, path, reason))

    def _check_topic_permission(self, key: Key, obj: Obj) -> None:
        name = obj.attrs["exchange"]
        target = Key(Kind.EXCHANGE, key.vhost, name)
        if name == "" or name.startswith("amq.") or target in self.desired.objects or target in self.desired.external:
            return
        if target not in self.desired.absent:
            return  # it may exist on the broker: plan knows (preflight), and whether the version refuses it
        reason = f"exchange {name!r} is declared absent"
        where = self.desired.locations[key]
        self.problems.append(Problem(where.file, where.line, format_path(self.paths.get(key, ())), reason))


def load_topology(
    paths: Sequence[str],
    env: Mapping[str, str] | None = None,
    sources: Sequence[Source] = (),
    every_version: bool = False,
) -> Loaded:
    """Read, validate and merge topology files (and documents held in memory, after them); raises
    ValidationFailed with every problem found. With only `sources`, no file is read. `every_version`
    (`validate`): also refuse what no RabbitMQ version would take (policy definitions), which the other
    commands check for one version (plan: the broker's; lint: the target)."""
    environment = os.environ if env is None else env
    files = expand_paths(list(paths)) if paths or not sources else []
    problems: list[Problem] = []
    read: list[SourceFile] = []
    incomplete = False
    documents: list[Callable[[], tuple[SourceFile | None, list[Problem]]]] = [
        *(partial(read_file, path, environment) for path in files),
        *(partial(read_source, source, environment) for source in sources),
    ]
    for document in documents:
        source, found = document()
        problems.extend(found)
        if source is not None:
            read.append(source)
        else:
            incomplete = True
    builder = _Builder()
    broker: BrokerSpec | None = None
    for source in read:
        builder.add_file(source)
        if source.model.broker is not None:
            if broker is not None:
                line = line_of(source.raw, ("broker",))
                problems.append(Problem(source.path, line, "broker", "the broker section may appear in one file only"))
            broker = source.model.broker
    # A file that failed its schema is missing from the merge: references into it would look broken.
    desired = builder.finish(check_references=not incomplete)
    problems.extend(builder.problems)
    if every_version:
        problems.extend(preflight.policy_problems_offline(desired))
    if problems:
        raise ValidationFailed(problems, warnings=desired.warnings)
    return Loaded(desired, broker, [*map(str, files), *(source.name for source in sources)])
