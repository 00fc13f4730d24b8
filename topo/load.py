"""Files -> validated models -> one merged desired state, with every problem reported at once."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from topo.arguments import QUEUE_TYPES
from topo.errors import ConfigError, Problem, TopoError, ValidationFailed
from topo.model import USER_TAGS, BrokerSpec, Topology, allowed_keys, model_at
from topo.normalize import (
    PARAMETER_SECTIONS,
    binding_from_fields,
    exchange_from_spec,
    limit_obj,
    parameter_from_spec,
    permission_obj,
    policy_from_spec,
    queue_from_spec,
    strings_in,
    topic_permission_obj,
    user_from_spec,
    user_limit_obj,
    vhost_from_spec,
)
from topo.redact import register_secret, register_url_secret
from topo.state import Desired, Key, Kind, Location, Obj
from topo.yamlload import line_of, load_yaml

DEFAULT_FILE = "topology.yaml"


@dataclass(slots=True)
class SourceFile:
    path: str
    raw: Any
    model: Topology


@dataclass(slots=True)
class Loaded:
    desired: Desired
    broker: BrokerSpec | None
    files: list[str] = field(default_factory=list)


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


def declared_limits(limits: Any) -> list[tuple[str, int]]:
    """(name as in the file, value) of each limit set in a vhost's or user's limits section.

    The broker stores a negative limit as no limit at all, so callers declare those absent."""
    if limits is None:
        return []
    return [
        (field.alias or name, getattr(limits, name))
        for name, field in type(limits).model_fields.items()
        if getattr(limits, name) is not None
    ]


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
        return None, problems + _problems_from_validation(exc, name, raw)
    return SourceFile(name, raw, model), problems


class _Builder:
    """Merges validated files into one Desired, remembering where each object was declared."""

    def __init__(self) -> None:
        self.desired = Desired()
        self.problems: list[Problem] = []
        self.vhost_fields: dict[tuple[str, str], Location] = {}
        self.paths: dict[Key, tuple[Any, ...]] = {}
        self.top_prune: tuple[bool, Location] | None = None

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
        if "prune" in model.model_fields_set:
            where = Location(source.path, raw, ("prune",))
            if self.top_prune and self.top_prune[0] != model.prune:
                self.problems.append(
                    Problem(where.file, where.line, "prune", f"conflicts with prune at {self.top_prune[1]}")
                )
            self.top_prune = (model.prune, where)
        for vhost, spec in model.vhosts.items():
            self.add_vhost(source, vhost, spec)
        for name, user in model.users.items():
            path = ("users", name)
            register_secret(user.password)  # scrubbed from every message, should one ever echo it
            for tag in user.tags:
                close = difflib.get_close_matches(tag, USER_TAGS, n=1, cutoff=0.75)
                if tag not in USER_TAGS and close:
                    where = Location(source.path, raw, (*path, "tags"))
                    self.desired.warnings.append(
                        f"{where}: user {name!r} has tag {tag!r}, which is not a built-in tag (did you mean "
                        f"{close[0]!r}?); RabbitMQ keeps it as a custom tag that grants nothing"
                    )
            self._add(user_from_spec(name, user), Location(source.path, raw, path), path, user.absent)
            for alias, value in declared_limits(user.limits):
                limit_path = (*path, "limits", alias)
                where = Location(source.path, raw, limit_path)
                self._add(user_limit_obj(name, alias, value), where, limit_path, absent=value < 0)

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
        for alias, value in declared_limits(spec.limits):
            path = (*base, "limits", alias)
            self._add(limit_obj(vhost, alias, value), at("limits", alias), path, absent=value < 0)
        for name, exchange in spec.exchanges.items():
            path = (*base, "exchanges", name)
            self._check_name(source, "exchange", name, path)
            if exchange.external:
                self._external(Key(Kind.EXCHANGE, vhost, name), at("exchanges", name), path)
            else:
                self._add(exchange_from_spec(vhost, name, exchange), at("exchanges", name), path, exchange.absent)
        for name, queue in spec.queues.items():
            path = (*base, "queues", name)
            self._check_name(source, "queue", name, path)
            if queue.external:
                self._external(Key(Kind.QUEUE, vhost, name), at("queues", name), path)
            else:
                self._add(queue_from_spec(vhost, name, queue), at("queues", name), path, queue.absent)
        for index, binding in enumerate(spec.bindings):
            obj = binding_from_fields(
                vhost,
                binding.source,
                binding.destination_type,
                binding.destination,
                binding.routing_key,
                dict(binding.arguments),
            )
            self._add(obj, at("bindings", index), (*base, "bindings", index), binding.absent)
        self._add_access(vhost, spec, at, base)
        for component, section in PARAMETER_SECTIONS.items():
            for name, parameter in getattr(spec, section).items():
                obj = parameter_from_spec(vhost, component, name, parameter)
                for text in strings_in(obj.attrs["value"]):
                    register_url_secret(text)
                self._add(obj, at(section, name), (*base, section, name), parameter.absent)
        for kind, section in ((Kind.POLICY, "policies"), (Kind.OPERATOR_POLICY, "operator_policies")):
            for name, policy in getattr(spec, section).items():
                obj = policy_from_spec(kind, vhost, name, policy)
                self._add(obj, at(section, name), (*base, section, name), policy.absent)

    def _add_access(self, vhost: str, spec: Any, at: Any, base: tuple[Any, ...]) -> None:
        if spec.permissions is not None:
            self.desired.access.add((Kind.PERMISSION, vhost))
            for user, permission in spec.permissions.items():
                obj = permission_obj(
                    vhost, user, permission.configure or "", permission.write or "", permission.read or ""
                )
                self._add(obj, at("permissions", user), (*base, "permissions", user), permission.absent)
        if spec.topic_permissions is not None:
            self.desired.access.add((Kind.TOPIC_PERMISSION, vhost))
            for user, exchanges in spec.topic_permissions.items():
                for exchange, topic in exchanges.items():
                    obj = topic_permission_obj(vhost, user, exchange, topic.write or "", topic.read or "")
                    path = (*base, "topic_permissions", user, exchange)
                    self._add(obj, at("topic_permissions", user, exchange), path, topic.absent)

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

    def _check_name(self, source: SourceFile, what: str, name: str, path: tuple[Any, ...]) -> None:
        where = Location(source.path, source.raw, path)
        if name == "":
            message = f"an {what} name must not be empty"
        elif name.startswith("amq."):
            message = f"{what} names starting with 'amq.' are reserved by RabbitMQ"
        elif len(name.encode("utf-8")) > 255:
            message = f"{what} names are at most 255 bytes (UTF-8)"
        else:
            return
        self.problems.append(Problem(where.file, where.line, format_path(path), message))

    def finish(self, check_references: bool) -> Desired:
        top = self.top_prune[0] if self.top_prune else False
        for vhost in self.desired.vhosts:
            self.desired.prune.setdefault(vhost, top)
        if check_references:
            self._check_references()
            self._check_exchange_arguments()
        return self.desired

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
                if exchange in desired.objects or exchange in desired.external:
                    continue
                desired.warnings.append(
                    f"{desired.locations[key]}: {key.kind.value} {key.name!r} {verb} exchange {target!r}, which "
                    f"is not declared in vhost {key.vhost!r}: RabbitMQ would drop those messages "
                    "(declare it, or mark it external: true)"
                )

    def _check_references(self) -> None:
        """Bindings and topic permissions must name objects that the files declare or mark external (or
        built-in exchanges): RabbitMQ 4.3 refuses a topic permission for a missing exchange."""
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
                if target in desired.objects or target in desired.external:
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
        if target in self.desired.absent:
            reason = f"exchange {name!r} is declared absent"
        else:
            reason = (
                f"exchange {name!r} is not declared in vhost {key.vhost!r} (RabbitMQ 4.3 refuses a topic "
                "permission for a missing exchange); declare it, or mark it `external: true` if it is managed elsewhere"
            )
        where = self.desired.locations[key]
        self.problems.append(Problem(where.file, where.line, format_path(self.paths.get(key, ())), reason))


def load_topology(paths: list[str], env: Mapping[str, str] | None = None) -> Loaded:
    """Read, validate and merge topology files; raises ValidationFailed with every problem found."""
    environment = os.environ if env is None else env
    files = expand_paths(paths)
    problems: list[Problem] = []
    sources: list[SourceFile] = []
    incomplete = False
    for path in files:
        source, found = read_file(path, environment)
        problems.extend(found)
        if source is not None:
            sources.append(source)
        else:
            incomplete = True
    builder = _Builder()
    broker: BrokerSpec | None = None
    for source in sources:
        builder.add_file(source)
        if source.model.broker is not None:
            if broker is not None:
                line = line_of(source.raw, ("broker",))
                problems.append(Problem(source.path, line, "broker", "the broker section may appear in one file only"))
            broker = source.model.broker
    # A file that failed its schema is missing from the merge: references into it would look broken.
    desired = builder.finish(check_references=not incomplete)
    problems.extend(builder.problems)
    if problems:
        raise ValidationFailed(problems)
    return Loaded(desired, broker, [str(f) for f in files])
