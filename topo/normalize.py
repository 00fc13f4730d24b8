"""The only place that knows the broker's quirks: both sides become the same canonical attributes.

Quirks handled here: the queue type lives in x-queue-type (or a top-level `type` in 3.13 exports) and
defaults to classic; vhost tags come as a list or a comma-separated string in any order; definitions may
omit `arguments` or `internal`; built-in and transient objects are out of scope.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from topo.model import ExchangeSpec, PolicySpec, VhostSpec
from topo.passwords import DEFAULT_ALGORITHM, Password
from topo.state import Key, Kind, Obj, binding_key, canonical

# Declared by plugins, not by people: the MQTT plugin's session queues, and the federation plugin's
# queue and internal exchange on the upstream side of each link ("federation: events -> node:vhost:events").
PLUGIN_PREFIX = "federation: "
TRANSIENT_QUEUE_PREFIXES = ("amq.gen-", "mqtt-subscription-", PLUGIN_PREFIX)


def is_builtin_exchange(name: str) -> bool:
    """Exchanges topo never manages: the broker's own and those the federation plugin declares."""
    return name == "" or name.startswith(("amq.", PLUGIN_PREFIX))


def is_transient_queue(name: str, exclusive: bool = False) -> bool:
    return exclusive or name.startswith(TRANSIENT_QUEUE_PREFIXES) or name.startswith("amq.")


def tags_of(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = value.split(",")
    return sorted({str(tag).strip() for tag in value if str(tag).strip()})


# ---- desired side: models -> objects -------------------------------------------------------------


def vhost_from_spec(name: str, spec: VhostSpec) -> Obj:
    # Only the metadata the file sets is managed; the rest is filled in from the broker when updating.
    attrs: dict[str, Any] = {}
    for field in ("description", "tracing", "default_queue_type", "protected_from_deletion"):
        if field in spec.model_fields_set:
            attrs[field] = getattr(spec, field)
    if "tags" in spec.model_fields_set:
        attrs["tags"] = tags_of(spec.tags)
    return Obj(Key(Kind.VHOST, name, name), attrs)


def exchange_from_spec(vhost: str, name: str, spec: ExchangeSpec) -> Obj:
    return Obj(
        Key(Kind.EXCHANGE, vhost, name),
        {
            "type": spec.type,
            "durable": spec.durable,
            "auto_delete": spec.auto_delete,
            "internal": spec.internal,
            "arguments": dict(spec.arguments),
        },
    )


def queue_from_spec(vhost: str, name: str, spec: Any) -> Obj:
    return Obj(
        Key(Kind.QUEUE, vhost, name),
        {
            "type": spec.type,
            "durable": spec.durable,
            "auto_delete": getattr(spec, "auto_delete", False),
            "arguments": dict(spec.arguments),
        },
    )


def binding_from_fields(
    vhost: str, source: str, destination_type: str, destination: str, routing_key: str, arguments: dict[str, Any]
) -> Obj:
    return Obj(
        binding_key(vhost, source, destination_type, destination, routing_key, arguments),
        {
            "source": source,
            "destination_type": destination_type,
            "destination": destination,
            "routing_key": routing_key,
            "arguments": arguments,
        },
    )


def policy_from_spec(kind: Kind, vhost: str, name: str, spec: PolicySpec) -> Obj:
    return Obj(
        Key(kind, vhost, name),
        {
            "pattern": spec.pattern,
            "apply-to": spec.apply_to,
            "priority": spec.priority,
            "definition": dict(spec.definition),
        },
    )


def set_limits(limits: Any) -> list[tuple[str, Any]]:
    """The limits a broker's record really sets: it keeps -1 ("no limit") after a limit is removed."""
    if not isinstance(limits, dict):
        return []
    return [(name, value) for name, value in limits.items() if not (type(value) is int and value < 0)]


def limit_obj(vhost: str, name: str, value: int) -> Obj:
    return Obj(Key(Kind.VHOST_LIMIT, vhost, name), {"value": value})


# ---- actual side: broker JSON -> objects ---------------------------------------------------------


def vhost_from_broker(item: dict[str, Any]) -> Obj:
    metadata = item.get("metadata") or {}
    default_type = item.get("default_queue_type") or metadata.get("default_queue_type")
    if default_type == "undefined":
        default_type = None
    attrs = {
        "description": item.get("description") or metadata.get("description") or "",
        "tags": tags_of(item.get("tags", metadata.get("tags"))),
        "tracing": bool(item.get("tracing", False)),
        "default_queue_type": default_type,
    }
    if "protected_from_deletion" in item:  # 4.0.6+ only (and not settable through the vhost PUT; see apply)
        attrs["protected_from_deletion"] = bool(item["protected_from_deletion"])
    return Obj(Key(Kind.VHOST, item["name"], item["name"]), attrs)


def exchange_from_broker(vhost: str, item: dict[str, Any]) -> Obj | None:
    name = item["name"]
    if is_builtin_exchange(name):
        return None
    return Obj(
        Key(Kind.EXCHANGE, vhost, name),
        {
            "type": item.get("type", "direct"),
            "durable": bool(item.get("durable", True)),
            "auto_delete": bool(item.get("auto_delete", False)),
            "internal": bool(item.get("internal", False)),
            "arguments": dict(item.get("arguments") or {}),
        },
    )


def queue_from_broker(vhost: str, item: dict[str, Any]) -> Obj | None:
    name = item["name"]
    if is_transient_queue(name, bool(item.get("exclusive", False))):
        return None
    arguments = dict(item.get("arguments") or {})
    queue_type = arguments.pop("x-queue-type", None) or item.get("type") or "classic"
    return Obj(
        Key(Kind.QUEUE, vhost, name),
        {
            "type": queue_type,
            "durable": bool(item.get("durable", True)),
            "auto_delete": bool(item.get("auto_delete", False)),
            "arguments": arguments,
        },
    )


def binding_from_broker(vhost: str, item: dict[str, Any]) -> Obj | None:
    source, destination = item.get("source", ""), item["destination"]
    destination_type = item.get("destination_type", "queue")
    if source == "" or source.startswith(PLUGIN_PREFIX):
        return None  # implicit default-exchange bindings are the broker's, federation links the plugin's
    if destination_type == "queue" and is_transient_queue(destination):
        return None
    if destination_type == "exchange" and destination.startswith(PLUGIN_PREFIX):
        return None
    return binding_from_fields(
        vhost, source, destination_type, destination, item.get("routing_key", ""), dict(item.get("arguments") or {})
    )


def policy_from_broker(kind: Kind, vhost: str, item: dict[str, Any]) -> Obj:
    return Obj(
        Key(kind, vhost, item["name"]),
        {
            "pattern": item.get("pattern", ""),
            "apply-to": item.get("apply-to", "all"),
            "priority": item.get("priority", 0),
            "definition": dict(item.get("definition") or {}),
        },
    )


# ---- access control -------------------------------------------------------------------------------


def user_from_spec(name: str, spec: Any) -> Obj:
    if spec.password is not None:
        pinned = "hashing_algorithm" in spec.model_fields_set
        password = Password("", spec.hashing_algorithm, spec.password, algorithm_pinned=pinned)
    else:
        password = Password(spec.password_hash or "", spec.hashing_algorithm)
    return Obj(Key(Kind.USER, "", name), {"tags": tags_of(spec.tags), "password": password})


def user_from_broker(item: dict[str, Any]) -> Obj:
    algorithm = item.get("hashing_algorithm") or DEFAULT_ALGORITHM
    password = Password(item.get("password_hash") or "", algorithm)
    return Obj(Key(Kind.USER, "", item["name"]), {"tags": tags_of(item.get("tags")), "password": password})


def permission_obj(vhost: str, user: str, configure: str, write: str, read: str) -> Obj:
    return Obj(Key(Kind.PERMISSION, vhost, user), {"configure": configure, "write": write, "read": read})


def topic_permission_obj(vhost: str, user: str, exchange: str, write: str, read: str) -> Obj:
    # Identified by user and exchange together, like a binding by its ends.
    key = Key(Kind.TOPIC_PERMISSION, vhost, canonical([user, exchange]))
    return Obj(key, {"user": user, "exchange": exchange, "write": write, "read": read})


# ---- runtime parameters of plugins ----------------------------------------------------------------

# Component name on the broker -> section of a vhost in the topology file.
PARAMETER_SECTIONS = {
    "shovel": "shovels",
    "federation-upstream": "federation_upstreams",
    "federation-upstream-set": "federation_upstream_sets",
}


def strings_in(value: Any) -> Iterator[str]:
    """Every string inside a JSON value (to find the URIs, and so the credentials, in a parameter)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def parameter_obj(vhost: str, component: str, name: str, value: Any) -> Obj:
    key = Key(Kind.PARAMETER, vhost, canonical([component, name]))
    return Obj(key, {"component": component, "name": name, "value": value})


def parameter_from_spec(vhost: str, component: str, name: str, spec: Any) -> Obj:
    if component == "federation-upstream-set":
        return parameter_obj(vhost, component, name, [dict(entry) for entry in spec.upstreams])
    return parameter_obj(vhost, component, name, spec.value())


def user_limit_obj(user: str, name: str, value: int) -> Obj:
    return Obj(Key(Kind.USER_LIMIT, "", canonical([user, name])), {"user": user, "name": name, "value": value})
