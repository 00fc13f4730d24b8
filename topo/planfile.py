"""A plan as plain JSON data and back: the base for saved plans (`topo plan -out`, later).

Lossless for everything a plan holds except secrets: a password is stored as the hash apply would send
(a plaintext from the files is hashed here), never as the plaintext. `render.plan_to_json` is the other
serialisation, for people and tools: it masks secrets and URIs and cannot be read back.
"""

from __future__ import annotations

from typing import Any

from topo.diff import Action, Change
from topo.errors import TopoError
from topo.kinds import Kind
from topo.passwords import Password
from topo.plan import Held, Plan
from topo.state import Key, Obj

FORMAT = 1
_PASSWORD = "$password"


def plan_to_data(plan: Plan) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "me": plan.me,
        "changes": [
            {
                **_key(change.key),
                "action": change.action.value,
                "before": _attrs(change.before),
                "after": _attrs(change.after),
                "reason": change.reason,
            }
            for change in plan.changes
        ],
        "held": [
            {**_key(key), "messages": held.messages, "unknown": held.unknown, "consumers": held.consumers}
            for key, held in sorted(plan.held.items())
        ],
        "unmanaged": [{**_key(obj.key), "attrs": _attrs(obj.attrs)} for obj in plan.unmanaged],
        "warnings": list(plan.warnings),
        "effective_policies": [{**_key(key), "note": note} for key, note in sorted(plan.effective_policies.items())],
    }


def plan_from_data(data: dict[str, Any]) -> Plan:
    if data.get("format") != FORMAT:
        raise TopoError(f"not a saved plan of format {FORMAT} (found format {data.get('format')!r})")
    changes = [
        Change(Action(item["action"]), _key_of(item), _value(item["before"]), _value(item["after"]), item["reason"])
        for item in data["changes"]
    ]
    held = {_key_of(item): Held(item["messages"], item["unknown"], item["consumers"]) for item in data["held"]}
    unmanaged = [Obj(_key_of(item), _value(item["attrs"])) for item in data["unmanaged"]]
    policies = {_key_of(item): item["note"] for item in data.get("effective_policies", [])}
    return Plan(
        tuple(changes), tuple(unmanaged), tuple(data["warnings"]), me=data["me"], held=held, effective_policies=policies
    )


def _key(key: Key) -> dict[str, str]:
    return {"kind": key.kind.value, "vhost": key.vhost, "name": key.name}


def _key_of(item: dict[str, Any]) -> Key:
    return Key(Kind(item["kind"]), item["vhost"], item["name"])


def _attrs(attrs: dict[str, Any] | None) -> dict[str, Any] | None:
    if attrs is None:
        return None
    return {name: _encode(value) for name, value in attrs.items()}


def _encode(value: Any) -> Any:
    if isinstance(value, Password):
        password_hash, algorithm = value.to_broker()
        return {_PASSWORD: {"password_hash": password_hash, "hashing_algorithm": algorithm}}
    return value


def _value(attrs: dict[str, Any] | None) -> Any:
    if attrs is None:
        return None
    out = {}
    for name, value in attrs.items():
        if isinstance(value, dict) and set(value) == {_PASSWORD}:
            stored = value[_PASSWORD]
            value = Password(stored["password_hash"], stored["hashing_algorithm"])
        out[name] = value
    return out
