"""Exchanges: immutable in RabbitMQ, so a changed property replaces the exchange."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from topo.apipath import api_path
from topo.emit import Commented
from topo.kinds import Kind
from topo.kinds.base import Broker, Declared, ExportContext, Items, KindDef, Phase, by_name, deep_sorted
from topo.model import ExchangeSpec
from topo.normalize import HOLD_PREFIX, LOCK_QUEUE, MIGRATE_PREFIX, is_builtin_exchange
from topo.state import Key, Obj


def from_spec(vhost: str, name: str, spec: ExchangeSpec) -> Obj:
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


def from_broker(vhost: str, item: dict[str, Any]) -> Obj | None:
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


def name_problem(what: str, name: str) -> str | None:
    """Why RabbitMQ would refuse `name` for a queue or an exchange (None: it would not)."""
    if name == "":
        return f"an {what} name must not be empty"
    if name.startswith("amq."):
        return f"{what} names starting with 'amq.' are reserved by RabbitMQ"
    if name == LOCK_QUEUE or name.startswith((HOLD_PREFIX, MIGRATE_PREFIX)):
        # topo's own objects (the apply lock, the records of interrupted replaces, a migration's temporaries):
        # declaring one would let a plan change or prune what a killed apply needs to recover.
        return (
            f"{what} names {LOCK_QUEUE!r}, {HOLD_PREFIX!r}… and {MIGRATE_PREFIX!r}… are reserved by topo "
            "(its apply lock, replace records and migrations); choose another name"
        )
    if len(name.encode("utf-8")) > 255:
        return f"{what} names are at most 255 bytes (UTF-8)"
    return None


class ExchangeDef(KindDef):
    kind = Kind.EXCHANGE
    reads = ("exchanges",)
    section = "exchanges"
    immutable = True
    # Policies apply to exchanges: written first, so a new exchange never runs without its policy.
    depends_on = (Kind.VHOST, Kind.POLICY, Kind.OPERATOR_POLICY)
    bulk_section = "exchanges"

    def declarations(self, spec: Any, vhost: str) -> Iterator[Declared]:
        for name, exchange in spec.exchanges.items():
            path = ("exchanges", name)
            if exchange.external:
                yield Declared(Obj(Key(self.kind, vhost, name), {}), path, external=True)
            else:
                yield Declared(from_spec(vhost, name, exchange), path, absent=exchange.absent)

    def name_problem(self, name: str) -> str | None:
        return name_problem("exchange", name)

    def from_definitions(self, items: Items) -> Iterator[Obj]:
        for vhost, item in items("exchanges"):
            obj = from_broker(vhost, item)
            if obj is not None:
                yield obj

    def check(self, obj: Obj) -> None:
        ExchangeSpec.model_validate(obj.attrs)

    def broker_problems(self, obj: Obj, broker: Broker) -> list[tuple[str, str]]:
        # Plugin exchange types must be enabled on the broker.
        if broker.exchange_types and obj.attrs["type"] not in broker.exchange_types:
            reason = (
                f"exchange type {obj.attrs['type']!r} is not enabled on the broker (available: "
                f"{', '.join(sorted(broker.exchange_types))}); enable the plugin that provides it"
            )
            return [(f"exchanges[{obj.key.name!r}].type", reason)]
        return []

    def path(self, key: Key, attrs: dict[str, Any], phase: Phase) -> str:
        return api_path("exchanges", key.vhost, key.name)

    def bulk_definition(self, key: Key, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"name": key.name, **attrs}

    def export(self, objects: list[Obj], context: ExportContext) -> dict[str, Any]:
        exchanges = {o.key.name: _exchange(o, context.capabilities) for o in objects}
        return {"exchanges": by_name(exchanges)} if objects else {}


def _exchange(obj: Obj, broker: Broker) -> Any:
    attrs = obj.attrs
    # The type is written even when it is the default (direct): readers look for it first.
    spec: dict[str, Any] = {"type": attrs["type"]}
    for flag, default in (("durable", True), ("auto_delete", False), ("internal", False)):
        if attrs[flag] != default:
            spec[flag] = attrs[flag]
    if attrs["arguments"]:
        spec["arguments"] = deep_sorted(attrs["arguments"])
    if attrs["type"] not in broker.builtin_exchange_types:
        return Commented(spec, f"Type {attrs['type']} comes from a plugin: enable it on every target broker.")
    return spec


DEFINITION = ExchangeDef()
