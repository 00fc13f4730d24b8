"""A RabbitMQ definitions file (rabbitmqctl export_definitions, GET /api/definitions) -> actual state.

Real files vary: tags as a list, a comma-separated string or ""; the queue type at top level (3.13) or
only in x-queue-type; vhost limits as []; no `arguments`, `internal` or `hashing_algorithm`; extra keys
such as `_comment` or a per-object `description`; no `vhosts` or `users` section at all; objects without
`vhost` (a per-vhost export, meaning "/"). What RabbitMQ accepts is accepted here. What it rejects or
silently drops on import (a binding to an undeclared queue, a permission on an undeclared vhost, a hash
that is not base64, a queue without `durable`) is reported with the file, line and object instead.
"""

from __future__ import annotations

import bisect
import json
import json.decoder
import json.scanner
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topo.errors import Problem, ValidationFailed
from topo.normalize import (
    PARAMETER_SECTIONS,
    TRANSIENT_QUEUE_PREFIXES,
    is_builtin_exchange,
    permission_obj,
    topic_permission_obj,
    user_from_broker,
    user_limit_obj,
    vhost_from_broker,
)
from topo.passwords import ALGORITHMS, DEFAULT_ALGORITHM, Password, hash_problem
from topo.read import add_definitions
from topo.state import Actual, Key, Kind

SECTIONS = (
    "users", "vhosts", "permissions", "topic_permissions", "parameters", "global_parameters", "policies",
    "queues", "exchanges", "bindings",
)  # fmt: skip
VERSION_KEYS = ("rabbit_version", "rabbitmq_version", "product_name", "product_version")
DEFAULT_VHOST = "/"


class _Located(dict[str, Any]):
    line: int = 0


def _parse(text: str, filename: str) -> Any:
    """json.loads, but every object remembers its line (the pure-Python scanner lets us hook objects)."""
    line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    decoder = json.JSONDecoder()

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


@dataclass(slots=True)
class FromDefinitions:
    actual: Actual
    vhosts: list[str]
    has_users: bool  # the file has a users section: export users and permissions
    notes: list[str] = field(default_factory=list)  # what was left out, shown on stderr


class _Reader:
    def __init__(self, filename: str, data: dict[str, Any]):
        self.filename = filename
        self.data = data
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self.vhost_limits: list[dict[str, Any]] = []  # limits given on vhosts rather than as parameters

    def problem(self, item: Any, path: str, message: str) -> None:
        self.problems.append(Problem(self.filename, getattr(item, "line", None) or None, path, message))

    def items(self, section: str) -> list[tuple[str, dict[str, Any]]]:
        value = self.data.get(section)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(self.data, section, f"must be a list of objects, got {_json_type(value)}")
            return []
        out = []
        for index, item in enumerate(value):
            path = f"{section}[{index}]"
            if not isinstance(item, dict):
                self.problem(value, path, f"must be an object, got {_json_type(item)}")
            else:
                out.append((path, item))
        return out

    def require(self, item: dict[str, Any], path: str, what: str, fields: dict[str, type | tuple[type, ...]]) -> bool:
        """Fields RabbitMQ's import needs (it answers 400, or stores `undefined`, without them)."""
        ok = True
        for name, kinds in fields.items():
            if name not in item:
                self.problem(item, f"{path}.{name}", f"{what}: missing {name!r} (RabbitMQ's import rejects it)")
                ok = False
            elif not isinstance(item[name], kinds) or (kinds is not bool and isinstance(item[name], bool)):
                names = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
                got = json.dumps(item[name])
                self.problem(item, f"{path}.{name}", f"{what}: {name} must be {names}, got {got}")
                ok = False
        return ok


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (dict, "an object"), (list, "an array"), (str, "a string")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else "a number"


def read_definitions(path: str) -> FromDefinitions:
    """The actual state a definitions file describes; raises ValidationFailed naming every problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationFailed([Problem(path, None, "", f"cannot read the file: {exc}")], "file") from None
    data = _parse(text, path)
    if not isinstance(data, dict):
        raise ValidationFailed([Problem(path, 1, "", "a definitions file is a JSON object")], "file")
    reader = _Reader(path, data)
    result = _read(reader)
    if reader.problems:
        raise ValidationFailed(reader.problems, "definitions file")
    return result


def _read(reader: _Reader) -> FromDefinitions:
    data = reader.data
    ignored = sorted(k for k in data if k not in SECTIONS and k not in VERSION_KEYS)
    if ignored:
        reader.notes.append(f"ignored top-level keys RabbitMQ does not read: {', '.join(ignored)}")
    actual = Actual()
    declared_vhosts = _vhosts(reader, actual)
    # Without a vhosts section the file is part of a larger setup: its vhosts must already exist.
    vhosts = declared_vhosts if "vhosts" in data else set()
    definitions = _topology(reader, vhosts if "vhosts" in data else None)
    vhosts |= {
        item["vhost"] for section in ("queues", "exchanges", "bindings", "policies") for item in definitions[section]
    }
    vhosts |= {item["vhost"] for item in definitions["parameters"]}
    users = _users(reader, actual)
    _access(reader, actual, vhosts if "vhosts" in data else None, users if "users" in data else None)
    vhosts |= {key.vhost for key in actual.objects if key.kind in (Kind.PERMISSION, Kind.TOPIC_PERMISSION)}
    for name in vhosts - declared_vhosts:
        actual.objects[Key(Kind.VHOST, name, name)] = vhost_from_broker({"name": name})
    actual.vhosts = vhosts
    add_definitions(actual, definitions, default_vhost=DEFAULT_VHOST, keep=vhosts)
    if "global_parameters" in data:
        names = sorted(str(p.get("name")) for _, p in reader.items("global_parameters"))
        if names:
            reader.notes.append(f"left out global parameters (topo does not manage them): {', '.join(names)}")
    return FromDefinitions(actual, sorted(vhosts), "users" in data or "permissions" in data, reader.notes)


def _vhosts(reader: _Reader, actual: Actual) -> set[str]:
    names: set[str] = set()
    for path, item in reader.items("vhosts"):
        if not reader.require(item, path, "vhost", {"name": str}):
            continue
        metadata = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
        obj = vhost_from_broker({**item, "metadata": metadata})
        limits = item.get("limits")
        # 3.13 exports carry limits on the vhost ([] when there are none); older files use parameters.
        if isinstance(limits, dict) and limits:
            reader.vhost_limits.append(
                {"vhost": item["name"], "component": "vhost-limits", "name": "limits", "value": dict(limits)}
            )
        names.add(item["name"])
        actual.objects[obj.key] = obj
    return names


_OBJECT_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "queues": {"name": str, "durable": bool, "auto_delete": bool},
    "exchanges": {"name": str, "type": str, "durable": bool, "auto_delete": bool},
    "bindings": {"source": str, "destination": str, "destination_type": str, "routing_key": str},
    "policies": {"name": str, "pattern": str, "definition": dict},
}


def _topology(reader: _Reader, vhosts: set[str] | None) -> dict[str, list[dict[str, Any]]]:
    """Queues, exchanges, bindings, policies and parameters, checked, in the shape the broker exports."""
    out: dict[str, list[dict[str, Any]]] = {section: [] for section in (*_OBJECT_FIELDS, "parameters")}
    declared: dict[str, set[tuple[str, str]]] = {"queues": set(), "exchanges": set()}
    for section, fields in _OBJECT_FIELDS.items():
        for path, item in reader.items(section):
            vhost = item.get("vhost", DEFAULT_VHOST)
            what = _describe(section, item, vhost)
            if not reader.require(item, path, what, fields):
                continue
            if vhosts is not None and vhost not in vhosts:
                reader.problem(item, f"{path}.vhost", f"{what}: vhost {vhost!r} is not in the file's vhosts")
                continue
            arguments = item.get("arguments", {})
            if not isinstance(arguments, dict):
                reader.problem(item, f"{path}.arguments", f"{what}: arguments must be an object")
                continue
            entry = _Located({**item, "vhost": vhost, "arguments": arguments})
            entry.line = getattr(item, "line", 0)
            if section == "queues" and not _queue(reader, path, what, entry):
                continue
            if section == "bindings" and not _binding(reader, path, what, entry, declared):
                continue
            if section == "exchanges" and is_builtin_exchange(item["name"]):
                reader.notes.append(f"left out built-in {what}")
                continue
            if section in declared:
                declared[section].add((vhost, item["name"]))
            out[section].append(entry)
    limits_on_vhosts = [(f"vhosts[{item['vhost']!r}].limits", item) for item in reader.vhost_limits]
    for path, item in [*reader.items("parameters"), *limits_on_vhosts]:
        vhost = item.get("vhost", DEFAULT_VHOST)
        component, name = item.get("component"), item.get("name")
        what = f"parameter {component}/{name} in vhost {vhost!r}"
        if component in ("vhost-limits", "operator_policy", *PARAMETER_SECTIONS):
            if component == "vhost-limits" and not isinstance(item.get("value"), dict | list):
                reader.problem(item, f"{path}.value", f"{what}: value must be an object of limits")
            else:
                out["parameters"].append({**item, "vhost": vhost})
        else:
            reader.notes.append(f"left out {what}: topo does not manage the {component!r} component")
    return out


def _describe(section: str, item: dict[str, Any], vhost: str) -> str:
    if section == "bindings":
        return (
            f"binding from exchange {item.get('source')!r} to {item.get('destination_type', 'queue')} "
            f"{item.get('destination')!r} in vhost {vhost!r}"
        )
    return f"{section[:-1].replace('ie', 'y')} {item.get('name')!r} in vhost {vhost!r}"


def _queue(reader: _Reader, path: str, what: str, entry: dict[str, Any]) -> bool:
    name = entry["name"]
    if name.startswith(TRANSIENT_QUEUE_PREFIXES) or name.startswith("amq."):
        reader.notes.append(f"left out {what}: a server-named or transient queue (RabbitMQ's import skips it too)")
        return False
    argument_type, top_type = entry["arguments"].get("x-queue-type"), entry.get("type")
    if argument_type is not None and top_type is not None and argument_type != top_type:
        reader.problem(entry, f"{path}.type", f"{what}: type {top_type!r} contradicts x-queue-type {argument_type!r}")
        return False
    queue_type = argument_type or top_type or "classic"
    if queue_type not in ("classic", "quorum", "stream"):
        reader.problem(
            entry, f"{path}.type", f"{what}: unknown queue type {queue_type!r}; use classic, quorum or stream"
        )
        return False
    entry["type"] = queue_type
    return True


def _binding(
    reader: _Reader, path: str, what: str, entry: dict[str, Any], declared: dict[str, set[tuple[str, str]]]
) -> bool:
    vhost = entry["vhost"]
    if entry["destination_type"] not in ("queue", "exchange"):
        reader.problem(entry, f"{path}.destination_type", f"{what}: destination_type must be queue or exchange")
        return False
    ends = (
        ("source", "exchanges", entry["source"]),
        ("destination", f"{entry['destination_type']}s", entry["destination"]),
    )
    ok = True
    for role, section, name in ends:
        if section == "exchanges" and is_builtin_exchange(name):
            continue
        if (vhost, name) not in declared[section] and not _declared_later(reader, section, vhost, name):
            reader.problem(
                entry,
                f"{path}.{role}",
                f"{what}: {role} {section[:-1]} {name!r} is not declared in the file "
                "(RabbitMQ's import silently drops such a binding)",
            )
            ok = False
    return ok


def _declared_later(reader: _Reader, section: str, vhost: str, name: str) -> bool:
    # Exchanges are read before bindings but queues and exchanges may come in any order in the file.
    return any(
        item.get("vhost", DEFAULT_VHOST) == vhost and item.get("name") == name for _, item in reader.items(section)
    )


def _users(reader: _Reader, actual: Actual) -> set[str]:
    names: set[str] = set()  # every user the file declares, valid or not (permissions may name them)
    for path, item in reader.items("users"):
        if not reader.require(item, path, f"user {item.get('name')!r}", {"name": str}):
            continue
        name = item["name"]
        names.add(name)
        what = f"user {name!r}"
        if "tags" not in item:
            reader.problem(
                item, f"{path}.tags", f"{what}: missing 'tags' (RabbitMQ 3.10's import rejects it; use \"\")"
            )
            continue
        algorithm = item.get("hashing_algorithm") or DEFAULT_ALGORITHM
        if algorithm not in ALGORITHMS:
            allowed = ", ".join(ALGORITHMS)
            reader.problem(item, f"{path}.hashing_algorithm", f"{what}: unknown hashing_algorithm; allowed: {allowed}")
            continue
        if "password" in item:
            reader.notes.append(f"{what} has a plaintext password in the file: it is not copied into the export")
            obj = user_from_broker({**item, "password_hash": ""})
            obj.attrs["password"] = Password("", algorithm, str(item["password"]))
        else:
            password_hash = item.get("password_hash")
            if password_hash is not None and not isinstance(password_hash, str):
                reader.problem(item, f"{path}.password_hash", f"{what}: password_hash must be a string")
                continue
            problem = hash_problem(password_hash or "", algorithm)
            if problem:
                reader.problem(item, f"{path}.password_hash", f"{what}: password_hash {problem}")
                continue
            if password_hash is None:
                reader.notes.append(f"{what} has neither password nor password_hash: written without a password")
            obj = user_from_broker({**item, "hashing_algorithm": algorithm})
        tags = item["tags"]
        if not isinstance(tags, str) and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
            reader.problem(item, f"{path}.tags", f"{what}: tags must be a string or a list of strings")
            continue
        actual.objects[obj.key] = obj
        for limit, value in (item.get("limits") or {}).items():
            actual.objects[user_limit_obj(name, limit, value).key] = user_limit_obj(name, limit, value)
    return names


def _access(reader: _Reader, actual: Actual, vhosts: set[str] | None, users: set[str] | None) -> None:
    for section, fields in (
        ("permissions", ("configure", "write", "read")),
        ("topic_permissions", ("exchange", "write", "read")),
    ):
        for path, item in reader.items(section):
            vhost, user = item.get("vhost", DEFAULT_VHOST), item.get("user")
            what = f"{section[:-1].replace('_', ' ')} of user {user!r} on vhost {vhost!r}"
            if not reader.require(item, path, what, {"user": str, **{f: str for f in fields}}):
                continue
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
            actual.objects[obj.key] = obj
