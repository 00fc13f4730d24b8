"""Bindings: identified by all their fields (no name), so only ever created or deleted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from topo.apipath import api_path
from topo.emit import Flow
from topo.kinds import Kind
from topo.kinds.base import Declared, ExportContext, Items, KindDef, Phase, deep_sorted
from topo.model import BindingSpec
from topo.normalize import PLUGIN_PREFIX, is_transient_queue
from topo.state import Key, Obj, binding_key, canonical, same_value

if TYPE_CHECKING:
    from topo.client import ManagementClient
    from topo.diff import Change


def from_fields(
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


def from_broker(vhost: str, item: dict[str, Any]) -> Obj | None:
    source, destination = item.get("source", ""), item["destination"]
    destination_type = item.get("destination_type", "queue")
    if source == "" or source.startswith(PLUGIN_PREFIX):
        return None  # implicit default-exchange bindings are the broker's, federation links the plugin's
    if destination_type == "queue" and is_transient_queue(destination):
        return None
    if destination_type == "exchange" and destination.startswith(PLUGIN_PREFIX):
        return None
    return from_fields(
        vhost, source, destination_type, destination, item.get("routing_key", ""), dict(item.get("arguments") or {})
    )


class BindingDef(KindDef):
    kind = Kind.BINDING
    reads = ("queues", "bindings")
    section = "bindings"
    identity = True
    depends_on = (Kind.EXCHANGE, Kind.QUEUE)
    bulk_section = "bindings"

    def display(self, key: Key, attrs: dict[str, Any] | None) -> str:
        # Bindings have no name, so their ends and key stand in.
        attrs = attrs or {}
        text = f"{attrs['source']} → {attrs['destination']} ({attrs['destination_type']})"
        if attrs.get("routing_key"):
            text += f" routing_key={json.dumps(attrs['routing_key'], ensure_ascii=False)}"
        if attrs.get("arguments"):
            text += f" arguments={json.dumps(attrs['arguments'], sort_keys=True, ensure_ascii=False)}"
        return text

    def declarations(self, spec: Any, vhost: str) -> Iterator[Declared]:
        for index, binding in enumerate(spec.bindings):
            obj = from_fields(
                vhost,
                binding.source,
                binding.destination_type,
                binding.destination,
                binding.routing_key,
                dict(binding.arguments),
            )
            yield Declared(obj, ("bindings", index), absent=binding.absent)

    def from_definitions(self, items: Items) -> Iterator[Obj]:
        exported_queues = {(vhost, item["name"]) for vhost, item in items("queues") if not item.get("exclusive")}
        for vhost, item in items("bindings"):
            # Definitions leave out exclusive queues but not their bindings: a binding to a queue that is not
            # listed belongs to a connected client's exclusive queue, which topo never touches.
            if item.get("destination_type") == "queue" and (vhost, item["destination"]) not in exported_queues:
                continue
            obj = from_broker(vhost, item)
            if obj is not None:
                yield obj

    def check(self, obj: Obj) -> None:
        BindingSpec.model_validate(obj.attrs)

    def path(self, key: Key, attrs: dict[str, Any], phase: Phase) -> str:
        short = "q" if attrs["destination_type"] == "queue" else "e"
        return api_path("bindings", key.vhost, "e", attrs["source"], short, attrs["destination"])

    def body(self, key: Key, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"routing_key": attrs["routing_key"], "arguments": attrs["arguments"]}

    def write(
        self,
        client: ManagementClient,
        change: Change,
        phase: Phase,
        what: str,
        allow_data_loss: bool,
        allow_disruption: bool = False,
    ) -> None:
        if phase is Phase.WRITE:
            path = self.path(change.key, change.after or {}, phase)
            client.request("POST", path, what=what, body=self.body(change.key, change.after or {}), idempotent=True)
            return
        # Bindings are deleted by properties_key, which for bindings with arguments only the broker can
        # compute: list the bindings between the two ends and pick the matching one.
        attrs = change.before or {}
        path = self.path(change.key, attrs, phase)
        existing = client.get_or_none(path, what=what) or []
        for item in existing:
            if item.get("routing_key", "") == attrs["routing_key"] and same_value(
                item.get("arguments") or {}, attrs["arguments"]
            ):
                client.delete(f"{path}/{quote(item['properties_key'], safe='')}", what=what)
                return

    def bulk_definition(self, key: Key, attrs: dict[str, Any]) -> dict[str, Any]:
        return dict(attrs)

    def export(self, objects: list[Obj], context: ExportContext) -> dict[str, Any]:
        return {"bindings": [_binding(o) for o in sorted(objects, key=_binding_order)]} if objects else {}


def _binding_order(obj: Obj) -> tuple[str, ...]:
    attrs = obj.attrs
    return (
        attrs["source"],
        attrs["destination_type"],
        attrs["destination"],
        attrs["routing_key"],
        canonical(attrs["arguments"]),
    )


def _binding(obj: Obj) -> Flow:
    attrs = obj.attrs
    spec: dict[str, Any] = {"source": attrs["source"], "destination": attrs["destination"]}
    if attrs["destination_type"] != "queue":
        spec["destination_type"] = attrs["destination_type"]
    if attrs["routing_key"]:
        spec["routing_key"] = attrs["routing_key"]
    if attrs["arguments"]:
        spec["arguments"] = deep_sorted(attrs["arguments"])
    return Flow(spec)


DEFINITION = BindingDef()
