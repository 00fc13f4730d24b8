"""A RabbitMQ definitions file (rabbitmqctl export_definitions, GET /api/definitions) -> actual state.

Real files vary: tags as a list, a comma-separated string or ""; the queue type at top level (3.13) or
only in x-queue-type; vhost limits as []; no `arguments`, `internal` or `hashing_algorithm`; extra keys
such as `_comment` or a per-object `description`; no `vhosts` or `users` section at all; objects without
`vhost` (a per-vhost export, meaning "/"). What RabbitMQ accepts is accepted here. What it rejects or
silently drops on import (a binding to an undeclared queue, a permission on an undeclared vhost, a hash
that is not base64, a queue without `durable`, a second declaration of a queue) is reported with the
file, line and object instead, and so is what topo's own checks would refuse to apply.
"""

from __future__ import annotations

import bisect
import json
import json.decoder
import json.scanner
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from topo.capabilities import Capabilities
from topo.errors import Problem, ValidationFailed
from topo.kinds import definition, registry
from topo.kinds.binding import from_broker as binding_from_broker
from topo.kinds.exchange import from_broker as exchange_from_broker
from topo.kinds.parameter import PARAMETER_SECTIONS, parameter_obj
from topo.kinds.permission import permission_obj
from topo.kinds.policy import from_broker as policy_from_broker
from topo.kinds.queue import from_broker as queue_from_broker
from topo.kinds.topic_permission import topic_permission_obj
from topo.kinds.user import from_broker as user_from_broker
from topo.kinds.user_limit import user_limit_obj
from topo.kinds.vhost import from_broker as vhost_from_broker
from topo.normalize import PLUGIN_PREFIX, TRANSIENT_QUEUE_PREFIXES, is_builtin_exchange, set_limits
from topo.passwords import ALGORITHMS, DEFAULT_ALGORITHM, Password, hash_problem
from topo.read import add_definitions, broker_wide_kinds
from topo.state import OFFLINE, Actual, Key, Kind, Obj, canonical
from topo.yamlload import MAX_DEPTH

SECTIONS = (
    "users", "vhosts", "permissions", "topic_permissions", "parameters", "global_parameters", "policies",
    "queues", "exchanges", "bindings",
)  # fmt: skip
VERSION_KEYS = ("rabbit_version", "rabbitmq_version", "product_name", "product_version")
DEFAULT_VHOST = "/"
TOPOLOGY_SECTIONS = ("queues", "exchanges", "bindings", "policies", "parameters")

# JSON types, named as JSON names them.
STRING, BOOLEAN, INTEGER, OBJECT, ARRAY = "a string", "true or false", "an integer", "an object", "an array"
TAGS = "a string or an array of strings"

# Per section: required fields, then optional ones, with the JSON type RabbitMQ's import expects (without
# a required one it answers 400, or stores `undefined`).
FIELDS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "vhosts": ({"name": STRING}, {"description": STRING, "tags": TAGS, "tracing": BOOLEAN, "metadata": OBJECT}),
    "users": (
        {"name": STRING, "tags": TAGS},
        {"password": STRING, "password_hash": STRING, "hashing_algorithm": STRING, "limits": OBJECT},
    ),
    "permissions": ({"user": STRING, "configure": STRING, "write": STRING, "read": STRING}, {"vhost": STRING}),
    "topic_permissions": ({"user": STRING, "exchange": STRING, "write": STRING, "read": STRING}, {"vhost": STRING}),
    "parameters": ({"component": STRING, "name": STRING}, {"vhost": STRING}),
    "global_parameters": ({"name": STRING}, {}),
    "policies": (
        {"name": STRING, "pattern": STRING, "definition": OBJECT},
        {"vhost": STRING, "apply-to": STRING, "priority": INTEGER},
    ),
    "queues": (
        {"name": STRING, "durable": BOOLEAN, "auto_delete": BOOLEAN},
        {"vhost": STRING, "arguments": OBJECT, "type": STRING},
    ),
    "exchanges": (
        {"name": STRING, "type": STRING, "durable": BOOLEAN, "auto_delete": BOOLEAN},
        {"vhost": STRING, "internal": BOOLEAN, "arguments": OBJECT},
    ),
    "bindings": (
        {"source": STRING, "destination": STRING, "destination_type": STRING, "routing_key": STRING},
        {"vhost": STRING, "arguments": OBJECT},
    ),
}


def _is(value: Any, kind: str) -> bool:
    if kind == STRING:
        return isinstance(value, str)
    if kind == BOOLEAN:
        return isinstance(value, bool)
    if kind == INTEGER:
        return type(value) is int
    if kind == OBJECT:
        return isinstance(value, dict)
    if kind == ARRAY:
        return isinstance(value, list)
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(t, str) for t in value))


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (dict, "an object"), (list, "an array"), (str, "a string")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else "a number"


class _Located(dict[str, Any]):
    line: int = 0


def _parse(text: str, filename: str) -> Any:
    """json.loads, but every object remembers its line (the pure-Python scanner lets us hook objects)."""
    line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    _check_depth(text, filename, line_starts)

    def parse_int(digits: str) -> int:
        try:
            return int(digits)
        except ValueError:  # more digits than Python converts (4,300)
            line = bisect.bisect_right(line_starts, max(text.find(digits), 0))
            problem = Problem(filename, line, "", f"a number with {len(digits):,} digits is not a value RabbitMQ keeps")
            raise ValidationFailed([problem], "file") from None

    decoder = json.JSONDecoder(parse_int=parse_int)

    def parse_object(s_and_end: tuple[str, int], *args: Any) -> tuple[_Located, int]:
        value, end = json.decoder.JSONObject(s_and_end, *args)
        located = _Located(value)
        located.line = bisect.bisect_right(line_starts, s_and_end[1] - 1)
        return located, end

    decoder.parse_object = parse_object  # type: ignore[assignment]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    try:
        return decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed([Problem(filename, exc.lineno, "", f"not valid JSON: {exc.msg}")], "file") from None


# Strings (whose brackets do not count) and brackets; linear: a string token cannot match two ways.
_JSON_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _check_depth(text: str, filename: str, line_starts: list[int]) -> None:
    """Deep nesting is refused before parsing: the parser, and everything after it, recurses per level."""
    depth = 0
    for token in _JSON_NESTING.finditer(text):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                line = bisect.bisect_right(line_starts, token.start())
                message = f"nested more than {MAX_DEPTH} levels deep (no definitions file nests so deep)"
                raise ValidationFailed([Problem(filename, line, "", message)], "file")
        elif bracket in ("]", "}"):
            depth -= 1


@dataclass(slots=True)
class FromDefinitions:
    actual: Actual
    vhosts: list[str]
    has_users: bool  # the file has a users or permissions section: export users and permissions
    notes: list[str] = field(default_factory=list)  # what was left out, shown on stderr


@dataclass(slots=True)
class _Source:
    """Where an object came from, to name it in a problem."""

    path: str
    line: int | None
    what: str
    item: Any  # what the object declares (its canonical attributes), to compare with a second declaration


class _Reader:
    def __init__(self, filename: str, data: dict[str, Any]):
        self.filename = filename
        self.data = data
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self.sources: dict[Key, _Source] = {}
        self._items: dict[str, list[tuple[str, dict[str, Any]]]] = {}

    def problem(self, item: Any, path: str, message: str) -> None:
        self.problems.append(Problem(self.filename, getattr(item, "line", None) or None, path, message))

    def items(self, section: str) -> list[tuple[str, dict[str, Any]]]:
        """The section's objects whose fields have the types RabbitMQ's import needs (checked once)."""
        if section not in self._items:
            self._items[section] = self._checked_items(section)
        return self._items[section]

    def _checked_items(self, section: str) -> list[tuple[str, dict[str, Any]]]:
        value = self.data.get(section)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(self.data, section, f"must be an array of objects, got {_json_type(value)}")
            return []
        required, optional = FIELDS.get(section, ({}, {}))
        out = []
        for index, item in enumerate(value):
            path = f"{section}[{index}]"
            if not isinstance(item, dict):
                self.problem(value, path, f"must be an object, got {_json_type(item)}")
                continue
            if self._typed(item, path, _describe(section, item), required, optional):
                out.append((path, item))
        return out

    def _typed(
        self, item: dict[str, Any], path: str, what: str, required: dict[str, str], optional: dict[str, str]
    ) -> bool:
        ok = True
        for name in required:
            if name not in item:
                self.problem(item, f"{path}.{name}", f"{what}: missing {name!r} (RabbitMQ's import rejects it)")
                ok = False
        for name, kind in {**required, **optional}.items():
            if name in item and not _is(item[name], kind):
                self.problem(item, f"{path}.{name}", f"{what}: {name} must be {kind}, got {_json_type(item[name])}")
                ok = False
        # The default exchange ("") and its bindings are the broker's: left out later, not errors.
        for name in ("name", "user", "destination", "component", "vhost"):
            exchange_name = name == "name" and "type" in required
            if ok and item.get(name) == "" and (name in required or name == "vhost") and not exchange_name:
                self.problem(item, f"{path}.{name}", f"{what}: {name} must not be empty")
                ok = False
        return ok

    def record(self, key: Key, path: str, item: dict[str, Any], what: str, value: Any) -> bool:
        """Remembers where `key` was declared; False (and a problem) if it was declared before."""
        first = self.sources.get(key)
        if first is None:
            self.sources[key] = _Source(path, getattr(item, "line", None), what, value)
            return True
        if canonical(first.item) == canonical(value):
            return False  # an identical repeat: harmless, RabbitMQ ignores it too
        self.problem(
            item,
            path,
            f"{what}: declared again with different values (first at {first.path}, line {first.line}); "
            "RabbitMQ's import keeps one of the two without saying so",
        )
        return False


def _describe(section: str, item: dict[str, Any]) -> str:
    vhost = item.get("vhost", DEFAULT_VHOST)
    if section == "bindings":
        return (
            f"binding from exchange {item.get('source')!r} to {item.get('destination_type', 'queue')} "
            f"{item.get('destination')!r} in vhost {vhost!r}"
        )
    if section in ("permissions", "topic_permissions"):
        return f"{section[:-1].replace('_', ' ')} of user {item.get('user')!r} on vhost {vhost!r}"
    if section == "parameters" and item.get("component") == "vhost-limits":
        return f"limits of vhost {vhost!r}"
    if section == "parameters":
        return f"parameter {item.get('component')}/{item.get('name')} in vhost {vhost!r}"
    if section in ("users", "vhosts"):
        return f"{section[:-1]} {item.get('name')!r}"
    return f"{section[:-1].replace('ie', 'y')} {item.get('name')!r} in vhost {vhost!r}"


def read_definitions(path: str) -> FromDefinitions:
    """The actual state a definitions file describes; raises ValidationFailed naming every problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationFailed([Problem(path, None, "", f"cannot read the file: {exc}")], "file") from None
    data = _parse(text, path)
    if not isinstance(data, dict):
        raise ValidationFailed(
            [Problem(path, 1, "", f"a definitions file is a JSON object, not {_json_type(data)}")], "file"
        )
    reader = _Reader(path, data)
    result = _read(reader)
    if not reader.problems:
        _check_with_models(reader, result.actual)
    if reader.problems:
        raise ValidationFailed(reader.problems, "definitions file")
    return result


def _read(reader: _Reader) -> FromDefinitions:
    data = reader.data
    ignored = sorted(k for k in data if k not in SECTIONS and k not in VERSION_KEYS)
    if ignored:
        reader.notes.append(f"ignored top-level keys RabbitMQ does not read: {', '.join(ignored)}")
    _fill_in_vhosts(reader)
    actual = Actual(OFFLINE)
    # The version that wrote the file decides what its values mean (4.x writes default_queue_type: classic
    # on every vhost, set or not).
    version = str(data.get("rabbit_version") or data.get("rabbitmq_version") or "")
    actual.capabilities = Capabilities(version=version)
    actual.version = version
    declared_vhosts, vhost_limits = _vhosts(reader, actual)
    # Without a vhosts section the file is part of a larger setup: its vhosts must already exist.
    known = declared_vhosts if "vhosts" in data else None
    definitions = _topology(reader, known, vhost_limits)
    vhosts = set(declared_vhosts) | {item["vhost"] for section in TOPOLOGY_SECTIONS for item in definitions[section]}
    users = _users(reader, actual)
    _access(reader, actual, known, users if "users" in data else None)
    vhosts |= {key.vhost for key in actual.objects if definition(key.kind).access}
    for name in vhosts - declared_vhosts:
        actual.objects[Key(Kind.VHOST, name, name)] = vhost_from_broker({"name": name})
    actual.vhosts = vhosts
    add_definitions(actual, definitions, default_vhost=DEFAULT_VHOST, keep=vhosts)
    for kind in map(definition, broker_wide_kinds()):
        for obj in kind.from_definitions(lambda section: (("", item) for _, item in reader.items(section))):
            actual.objects[obj.key] = obj
    read_by_kinds = {section for kind in registry() for section in kind.reads}
    for section in SECTIONS:
        names = sorted(str(item.get("name")) for _, item in reader.items(section))
        if section not in read_by_kinds and section != "vhosts" and names:
            what = section.replace("_", " ")
            reader.notes.append(f"left out {what} (topo does not manage them): {', '.join(names)}")
    has_users = "users" in data or "permissions" in data or "topic_permissions" in data
    return FromDefinitions(actual, sorted(vhosts), has_users, reader.notes)


SCOPED = ("permissions", "topic_permissions", "parameters", "policies", "queues", "exchanges", "bindings")


def _fill_in_vhosts(reader: _Reader) -> None:
    """Objects without `vhost` come from a per-vhost export (GET /api/definitions/{vhost}), which 3.10
    writes without `vhost` on queues, exchanges and bindings but with it on policies and parameters:
    they belong to the one vhost the file names, or to "/" when it names none."""
    objects = [
        item
        for section in SCOPED
        if isinstance(reader.data.get(section), list)
        for item in reader.data[section]
        if isinstance(item, dict)
    ]
    if all("vhost" in item for item in objects):
        return
    named = {item["vhost"] for item in objects if isinstance(item.get("vhost"), str)}
    vhosts = reader.data.get("vhosts")
    if isinstance(vhosts, list):
        named |= {item["name"] for item in vhosts if isinstance(item, dict) and isinstance(item.get("name"), str)}
    default = next(iter(named)) if len(named) == 1 else DEFAULT_VHOST
    if len(named) > 1:
        reader.notes.append(f"objects without a vhost key are taken to be in {DEFAULT_VHOST!r}")
    elif named and default != DEFAULT_VHOST:
        reader.notes.append(f"objects without a vhost key are taken to be in {default!r}, the file's only vhost")
    for item in objects:
        item.setdefault("vhost", default)


def _vhosts(reader: _Reader, actual: Actual) -> tuple[set[str], list[tuple[str, dict[str, Any]]]]:
    names: set[str] = set()
    limits_on_vhosts: list[tuple[str, dict[str, Any]]] = []
    for path, item in reader.items("vhosts"):
        metadata = item.get("metadata") or {}
        bad = [k for k, kind in (("description", STRING), ("tags", TAGS), ("default_queue_type", STRING))
               if k in metadata and not _is(metadata[k], kind)]  # fmt: skip
        if bad:
            reader.problem(
                item, f"{path}.metadata.{bad[0]}", f"vhost {item['name']!r}: metadata.{bad[0]} has the wrong type"
            )
            continue
        obj = vhost_from_broker({**item, "metadata": metadata})
        if not reader.record(obj.key, path, item, f"vhost {item['name']!r}", [obj.attrs, item.get("limits")]):
            continue
        limits = item.get("limits")
        # 3.13 exports carry limits on the vhost ([] when there are none); older files use parameters.
        if isinstance(limits, dict) and limits:
            entry = _Located({"vhost": item["name"], "component": "vhost-limits", "name": "limits", "value": limits})
            entry.line = getattr(item, "line", 0)
            limits_on_vhosts.append((f"{path}.limits", entry))
        elif limits not in (None, []):
            reader.problem(item, f"{path}.limits", f"vhost {item['name']!r}: limits must be an object")
            continue
        names.add(item["name"])
        actual.objects[obj.key] = obj
    return names, limits_on_vhosts


def _topology(
    reader: _Reader, vhosts: set[str] | None, vhost_limits: list[tuple[str, dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """Queues, exchanges, bindings, policies and parameters, checked, in the shape the broker exports."""
    out: dict[str, list[dict[str, Any]]] = {section: [] for section in TOPOLOGY_SECTIONS}
    # Every queue and exchange the file names, valid or not: a binding to an invalid one is not also
    # reported as a binding to nothing.
    declared = {
        section: {
            (item.get("vhost", DEFAULT_VHOST), item.get("name"))
            for item in (reader.data.get(section) if isinstance(reader.data.get(section), list) else [])
            if isinstance(item, dict) and isinstance(item.get("vhost", ""), str) and isinstance(item.get("name"), str)
        }
        for section in ("queues", "exchanges")
    }
    readers: dict[str, Callable[[str, dict[str, Any], str], Obj | None]] = {
        "queues": lambda path, entry, what: _queue(reader, path, entry, what),
        "exchanges": lambda path, entry, what: _exchange(reader, entry, what),
        "bindings": lambda path, entry, what: _binding(reader, path, entry, what, declared),
        "policies": lambda path, entry, what: policy_from_broker(Kind.POLICY, entry["vhost"], entry),
        "parameters": lambda path, entry, what: _parameter(reader, path, entry, what),
    }
    for section, read in readers.items():
        extra = vhost_limits if section == "parameters" else []
        for path, item in [*reader.items(section), *extra]:
            vhost = item.get("vhost", DEFAULT_VHOST)
            what = _describe(section, item)
            if vhosts is not None and vhost not in vhosts:
                reader.problem(item, f"{path}.vhost", f"{what}: vhost {vhost!r} is not declared in the file")
                continue
            entry = _Located({**item, "vhost": vhost, "arguments": item.get("arguments", {})})
            entry.line = getattr(item, "line", 0)
            obj = read(path, entry, what)
            if obj is not None and reader.record(obj.key, path, item, what, obj.attrs):
                out[section].append(entry)
                if section == "parameters" and entry["component"] == "vhost-limits":
                    for limit, value in set_limits(entry["value"]):
                        where = _Source(path, entry.line or None, what, value)
                        reader.sources.setdefault(Key(Kind.VHOST_LIMIT, entry["vhost"], limit), where)
    return out


def _queue(reader: _Reader, path: str, entry: dict[str, Any], what: str) -> Obj | None:
    name = entry["name"]
    if name.startswith(TRANSIENT_QUEUE_PREFIXES) or name.startswith("amq."):
        why = (
            "RabbitMQ's import skips it too"
            if name.startswith("amq.")
            else f"the {'MQTT' if name.startswith('mqtt') else 'federation'} plugin declares it itself"
        )
        reader.notes.append(f"left out {what}: a server-named or transient queue ({why})")
        return None
    argument_type, top_type = entry["arguments"].get("x-queue-type"), entry.get("type")
    if argument_type is not None and top_type is not None and argument_type != top_type:
        reader.problem(entry, f"{path}.type", f"{what}: type {top_type!r} contradicts x-queue-type {argument_type!r}")
        return None
    queue_type = argument_type or top_type or "classic"
    if queue_type not in ("classic", "quorum", "stream"):
        reason = f"{what}: unknown queue type {queue_type!r}; use classic, quorum or stream"
        reader.problem(entry, f"{path}.type", reason)
        return None
    if queue_type != "classic" and entry["auto_delete"]:
        reader.problem(entry, f"{path}.auto_delete", f"{what}: a {queue_type} queue cannot be auto_delete")
        return None
    entry["type"] = queue_type
    return queue_from_broker(entry["vhost"], entry)


def _exchange(reader: _Reader, entry: dict[str, Any], what: str) -> Obj | None:
    if is_builtin_exchange(entry["name"]):
        if entry["name"].startswith(PLUGIN_PREFIX):
            reader.notes.append(f"left out {what}: the federation plugin declares it itself")
        else:
            reader.notes.append(f"left out built-in {what}")
        return None
    return exchange_from_broker(entry["vhost"], entry)


def _binding(
    reader: _Reader, path: str, entry: dict[str, Any], what: str, declared: dict[str, set[tuple[str, str]]]
) -> Obj | None:
    vhost = entry["vhost"]
    if entry["destination_type"] not in ("queue", "exchange"):
        reader.problem(entry, f"{path}.destination_type", f"{what}: destination_type must be queue or exchange")
        return None
    if entry["source"] == "":
        return None  # the default exchange's implicit bindings: the broker's, not the file's
    ends = (
        ("source", "exchanges", entry["source"]),
        ("destination", f"{entry['destination_type']}s", entry["destination"]),
    )
    ok = True
    for role, section, name in ends:
        if section == "exchanges" and is_builtin_exchange(name):
            continue
        if (vhost, name) not in declared[section]:
            reason = (
                f"{what}: {role} {section[:-1]} {name!r} is not declared in the file "
                "(RabbitMQ's import silently drops such a binding)"
            )
            reader.problem(entry, f"{path}.{role}", reason)
            ok = False
    return binding_from_broker(vhost, entry) if ok else None


def _parameter(reader: _Reader, path: str, entry: dict[str, Any], what: str) -> Obj | None:
    component, name, value = entry["component"], entry["name"], entry.get("value")
    expected = {"federation-upstream-set": ARRAY, "vhost-limits": OBJECT}.get(component, OBJECT)
    if component not in ("vhost-limits", "operator_policy", *PARAMETER_SECTIONS):
        reader.notes.append(f"left out {what}: topo does not manage the {component!r} component")
        return None
    if component == "vhost-limits" and value == []:
        return None  # the record a broker keeps after its last limit is removed
    at = path if path.endswith(".limits") else f"{path}.value"  # limits given on the vhost itself
    if not _is(value, expected):
        reader.problem(entry, at, f"{what}: value must be {expected}, got {_json_type(value)}")
        return None
    if component == "vhost-limits" and any(type(limit) is not int for limit in value.values()):
        reader.problem(entry, at, f"{what}: limits must be integers (-1: no limit)")
        return None
    if component == "operator_policy":
        fields = (("pattern", STRING), ("definition", OBJECT), ("apply-to", STRING), ("priority", INTEGER))
        bad = [
            k for k, kind in fields if (k in value or k in ("pattern", "definition")) and not _is(value.get(k), kind)
        ]
        if bad:
            reader.problem(entry, f"{path}.value.{bad[0]}", f"{what}: {bad[0]} is missing or has the wrong type")
            return None
        return policy_from_broker(Kind.OPERATOR_POLICY, entry["vhost"], {"name": name, **value})
    if component == "vhost-limits":
        # One record per vhost; its limits become objects of their own (see the caller).
        return Obj(Key(Kind.VHOST_LIMIT, entry["vhost"], canonical(["limits", name])), {"value": value})
    return parameter_obj(entry["vhost"], component, name, value)


def _users(reader: _Reader, actual: Actual) -> set[str]:
    names: set[str] = set()  # every user the file declares, valid or not (permissions may name them)
    # Exports from before 3.6 have no hashing_algorithm: their hashes are MD5, as RabbitMQ assumes.
    version = str(reader.data.get("rabbit_version") or reader.data.get("rabbitmq_version") or "")
    old = re.match(r"^(\d{1,9})\.(\d{1,9})(?!\d)", version)
    before_36 = old is not None and (int(old.group(1)), int(old.group(2))) < (3, 6)
    default_algorithm = "rabbit_password_hashing_md5" if before_36 else DEFAULT_ALGORITHM
    for path, item in reader.items("users"):
        name = item["name"]
        names.add(name)
        what = f"user {name!r}"
        algorithm = item.get("hashing_algorithm") or default_algorithm
        if algorithm not in ALGORITHMS:
            reason = f"{what}: unknown hashing_algorithm; allowed: {', '.join(ALGORITHMS)}"
            reader.problem(item, f"{path}.hashing_algorithm", reason)
            continue
        limits = item.get("limits") or {}
        if any(type(value) is not int for value in limits.values()):
            reader.problem(item, f"{path}.limits", f"{what}: limits must be integers")
            continue
        if "password" in item:
            reader.notes.append(f"{what} has a plaintext password in the file: it is not copied into the export")
            obj = user_from_broker({**item, "password_hash": ""})
            obj.attrs["password"] = Password("", algorithm, item["password"])
        else:
            password_hash = item.get("password_hash")
            problem = hash_problem(password_hash or "", algorithm)
            if problem:
                reader.problem(item, f"{path}.password_hash", f"{what}: password_hash {problem}")
                continue
            if password_hash is None:
                reader.notes.append(f"{what} has neither password nor password_hash: written without a password")
            obj = user_from_broker({**item, "hashing_algorithm": algorithm})
        declared = {k: item.get(k) for k in ("tags", "password", "password_hash", "hashing_algorithm", "limits")}
        if not reader.record(obj.key, path, item, what, declared):
            continue
        actual.objects[obj.key] = obj
        for limit, value in set_limits(limits):
            limit_obj = user_limit_obj(name, limit, value)
            actual.objects[limit_obj.key] = limit_obj
            reader.sources[limit_obj.key] = _Source(f"{path}.limits", getattr(item, "line", None), what, item)
    return names


def _access(reader: _Reader, actual: Actual, vhosts: set[str] | None, users: set[str] | None) -> None:
    for section in ("permissions", "topic_permissions"):
        for path, item in reader.items(section):
            vhost, user = item.get("vhost", DEFAULT_VHOST), item["user"]
            what = _describe(section, item)
            undeclared = [
                (kind, name)
                for kind, name, declared in (("vhost", vhost, vhosts), ("user", user, users))
                if declared is not None and name not in declared
            ]
            for kind, name in undeclared:
                reason = f"{kind} {name!r} is not declared in the file (RabbitMQ's import fails with no_such_{kind})"
                reader.problem(item, f"{path}.{kind}", f"{what}: {reason}")
            if undeclared:
                continue
            if section == "permissions":
                obj = permission_obj(vhost, user, item["configure"], item["write"], item["read"])
            else:
                obj = topic_permission_obj(vhost, user, item["exchange"], item["write"], item["read"])
            if reader.record(obj.key, path, item, what, obj.attrs):
                actual.objects[obj.key] = obj


def _check_with_models(reader: _Reader, actual: Actual) -> None:
    """What topo's checks would refuse to apply (an argument of the wrong type, a quorum queue that is
    not durable, an invalid regex...), named where the file declares it."""
    for key, obj in actual.objects.items():
        source = reader.sources.get(key)
        if source is None:
            continue
        try:
            _validate(obj)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"] if part not in ("classic", "quorum", "stream"))
            message = error["msg"].removeprefix("Value error, ")
            # The models' messages often name the field already ("pattern '(' is not a valid ...").
            if where and message.startswith(where.rsplit(".", 1)[-1]):
                where = ""
            reason = f"{source.what}: {where + ': ' if where else ''}{message}"
            reader.problems.append(Problem(reader.filename, source.line, source.path, reason))


def _validate(obj: Obj) -> None:
    definition(obj.kind).check(obj)
